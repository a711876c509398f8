"""``cb demo``: the whole pipeline on the embedded model, as stages that a rerun can skip.

=============  ================================  ==================================================
stage          what runs                         writes (under ``--output-dir``)
=============  ================================  ==================================================
data           ``cb data build --recipe demo``   ``data/train.jsonl``, ``data/holdout/``, ``stats.json``
eval_base      ``cb eval``, the base model       ``eval_base/results.json``, ``samples.jsonl``
train          ``cb train --preset demo``        ``train/adapter/``, ``metrics.jsonl``, ...
sanity         ``cb sanity``, trained model      ``sanity/sanity.json``
eval_trained   ``cb eval`` with the adapter      ``eval_trained/results.json``, ``samples.jsonl``
report         ``cb report``                     ``report/report.html`` and its PNGs
=============  ================================  ==================================================

then ``summary.json`` (per suite and metric base vs trained, the acceptance targets with pass/fail,
the eval limits, every stage's wall time) and the same table on the terminal.

Resuming. A stage's *config hash* covers its own settings, resolved (the recipe's contents, the
training preset's values after overrides, the eval suites, limits and decoding) and the hashes
of the stages it reads. At its end a stage writes ``<stage>/stage.json`` atomically: hash,
config, wall time and a fresh run id. A rerun skips a stage whose marker has the same hash and
was made from the current runs of its upstream stages (their run ids); so a stage that is
redone, because its settings changed or it never finished, makes everything downstream of it
run again too. Before a stage runs, its marker and its old outputs are removed, so a crash
never leaves stale results that look current. The report is always rewritten (it takes seconds
and reads whatever is there).

Budget on the 2-core CPU (15 minutes in all): data <= 3 min, each eval <= 3 min, train <= 5 min,
sanity <= 30 s. The eval size is the ``--eval-config`` (default: the packaged ``demo`` one, with
per-suite limits) capped by ``--eval-limit`` and ``--max-new-tokens``; the summary states both.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuit_breakers import __version__
from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import write_json, write_text
from circuit_breakers.core.redact import redact
from circuit_breakers.report import (
    MARKER,
    STAGES,
    check_targets,
    compare_rows,
    pipeline_seconds,
    verdict,
)

UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "eval_base": ("data",),
    "train": ("data",),
    "sanity": ("train",),
    "eval_trained": ("data", "train"),
    "report": ("data", "eval_base", "train", "sanity", "eval_trained"),
}
ALWAYS_RUN = {"report"}
#: what must exist (in the stage's folder) for a finished stage to be skipped
OUTPUTS = {
    "data": ("train.jsonl", "holdout", "stats.json"),
    "eval_base": ("results.json", "samples.jsonl"),
    "train": ("adapter", "metrics.jsonl", "train_summary.json"),
    "sanity": ("sanity.json",),
    "eval_trained": ("results.json", "samples.jsonl"),
    "report": ("report.html",),
}
#: old outputs removed before a stage runs (data: ``build`` replaces its own files)
CLEAN = {
    "eval_base": ("results.json", "samples.jsonl"),
    "train": ("adapter", "checkpoints", "merged", "metrics.jsonl", "train_summary.json", "DONE"),
    "sanity": ("sanity.json",),
    "eval_trained": ("results.json", "samples.jsonl"),
    "report": ("report.html", "training_curves.png", "comparison.png"),
}
DESCRIBE = {
    "data": "building the training data and held-out suites",
    "eval_base": "evaluating the base model",
    "train": "training the circuit breaker",
    "sanity": "coherence check of the trained model",
    "eval_trained": "evaluating the trained model",
    "report": "writing the report",
}
SET_BY_DEMO = ("output_dir", "train_file", "model", "seed")


@dataclass
class DemoOptions:
    output_dir: str = "runs/demo"
    model: str = "default"
    seed: int = 0
    data_seed: int | None = None  # default: seed
    recipe: str = "demo"
    data_dir: str | None = None  # a finished `cb data build` folder to use instead of building
    preset: str = "demo"
    train_config: str | None = None
    train_set: dict[str, Any] = field(default_factory=dict)
    eval_config: str = "demo"
    eval_limit: int | None = None
    max_new_tokens: int | None = None
    judge: str | None = None
    dtype: str | None = None
    device: str = "auto"
    sanity_max_new_tokens: int = 48
    sanity_min_pass_rate: float = 0.8
    redo: tuple[str, ...] = ()
    until: str | None = None
    progress: bool = True


Runner = Callable[["Demo"], dict | None]


def stage_hash(stage: str, config: dict, upstream: dict[str, str]) -> str:
    blob = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)}m {s % 60:02.0f}s"


def _digest_files(root: Path) -> str:
    """sha256 over a data folder's sample files and stats (a user's build, see --data-dir)."""
    h = hashlib.sha256()
    for p in [
        root / "train.jsonl",
        root / "stats.json",
        *sorted((root / "holdout").glob("*.jsonl")),
    ]:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class Demo:
    """One ``cb demo`` invocation: resolves every stage's config, runs or skips the stages."""

    def __init__(
        self,
        opts: DemoOptions,
        *,
        runners: dict[str, Runner] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.o = opts
        self.root = Path(opts.output_dir)
        self.runners = {**RUNNERS, **(runners or {})}
        self.say = say or (lambda text: print(text, flush=True))
        self.markers: dict[str, dict] = {}
        self.hashes: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.seconds_now: dict[str, float] = {}
        self._configs: dict[str, dict] = {}
        self._eval_conf: tuple[dict, dict] | None = None
        self._device: str | None = None
        self._loaded: tuple[tuple, Any] | None = None
        self.check_options()

    # -- options and configs ---------------------------------------------------------------------
    def check_options(self) -> None:
        o = self.o
        for name in ("eval_limit", "max_new_tokens", "sanity_max_new_tokens"):
            v = getattr(o, name)
            if v is not None and v < 1:
                raise InputError("must be a positive integer", field=name.replace("_", "-"))
        if not 0.0 <= o.sanity_min_pass_rate <= 1.0:
            raise InputError("must be between 0 and 1", field="sanity-min-pass-rate")
        if o.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device {o.device!r} (auto | cpu | cuda)", field="device")
        for s in (*o.redo, *([o.until] if o.until else [])):
            if s not in STAGES and s != "all":
                raise InputError(
                    f"unknown stage {s!r} (stages: {', '.join(STAGES)})", field="redo/until"
                )
        for key in o.train_set:
            if key in SET_BY_DEMO:
                raise InputError(
                    f"{key} is set by cb demo",
                    field=f"train-set {key}",
                    hint="use --output-dir, --model or --seed",
                )

    @property
    def data_seed(self) -> int:
        return self.o.seed if self.o.data_seed is None else self.o.data_seed

    @property
    def data_dir(self) -> Path:
        return Path(self.o.data_dir) if self.o.data_dir else self.root / "data"

    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            cuda = torch.cuda.is_available()
            if self.o.device == "cuda" and not cuda:
                raise InputError("--device cuda but no CUDA device is available", field="device")
            self._device = self.o.device if self.o.device != "auto" else ("cuda" if cuda else "cpu")
        return self._device

    def stage_dir(self, stage: str) -> Path:
        return self.data_dir if stage == "data" else self.root / stage

    def eval_conf(self) -> tuple[dict, dict]:
        if self._eval_conf is None:
            from circuit_breakers.eval.suites import load_eval_config

            self._eval_conf = load_eval_config(self.o.eval_config)
        return self._eval_conf

    def eval_settings(self) -> dict:
        o = self.o
        settings, registry = self.eval_conf()
        dtype = (
            o.dtype or settings.get("dtype") or ("bfloat16" if self.device == "cuda" else "float32")
        )
        return {
            "eval_config": o.eval_config,
            "suites": {n: dataclasses.asdict(s) for n, s in registry.items()},
            "limit": o.eval_limit,
            "max_new_tokens": o.max_new_tokens or settings.get("max_new_tokens", 64),
            "batch_size": settings.get("batch_size", 32),
            "max_batch_tokens": settings.get("max_batch_tokens", 16384),
            "judge": o.judge or settings.get("judge", "default"),
            "dtype": dtype,
            "device": self.device,
        }

    def train_values(self) -> dict:
        """The preset, then --train-config, then --train-set, then what the demo fixes."""
        from dataclasses import fields

        from circuit_breakers.training.config import load_layers
        from circuit_breakers.training.experimental import ExperimentalConfig

        allowed = {f.name for f in fields(ExperimentalConfig) if f.init}
        for key in self.o.train_set:
            if key not in allowed:
                raise InputError(
                    "unknown training setting",
                    field=f"train-set {key}",
                    hint="see `cb train --help` for the keys",
                )
        values = load_layers(self.o.preset, self.o.train_config)
        values.update(self.o.train_set)
        values = {k: _exponent_float(v) for k, v in values.items()}
        for key in ("output_dir", "train_file"):
            values.pop(key, None)
        values.update(model=self.o.model, seed=self.o.seed, use_cpu=self.device == "cpu")
        return values

    def config(self, stage: str) -> dict:
        if stage in self._configs:
            return self._configs[stage]
        o = self.o
        if stage == "data":
            if o.data_dir:
                missing = [p for p in OUTPUTS["data"] if not (self.data_dir / p).exists()]
                if missing:
                    raise InputError(
                        f"not a finished data build ({missing[0]} is missing)",
                        file=str(self.data_dir),
                        field="data-dir",
                        hint="give the --output-dir of `cb data build`",
                    )
                c: dict = {
                    "data_dir": str(self.data_dir.resolve()),
                    "digest": _digest_files(self.data_dir),
                }
            else:
                from circuit_breakers.data.recipe import load_recipe

                recipe = load_recipe(o.recipe)
                c = {
                    "recipe": recipe.model_dump(mode="json"),
                    "model": o.model,
                    "seed": self.data_seed,
                }
        elif stage in ("eval_base", "eval_trained"):
            adapter = None if stage == "eval_base" else "train/adapter"
            c = {"model": o.model, "adapter": adapter, **self.eval_settings()}
        elif stage == "train":
            c = {"values": self.train_values()}
        elif stage == "sanity":
            c = {
                "model": o.model,
                "max_new_tokens": o.sanity_max_new_tokens,
                "min_pass_rate": o.sanity_min_pass_rate,
                "dtype": self.eval_settings()["dtype"],
                "device": self.device,
            }
        else:
            c = {}
        c["version"] = __version__
        self._configs[stage] = json.loads(json.dumps(c, default=str))
        return self._configs[stage]

    # -- models ---------------------------------------------------------------------------------
    def model_for(self, adapter: str | None):
        """A loaded (model, tokenizer) for generation, reused by consecutive stages."""
        dtype = self.eval_settings()["dtype"]
        key = (self.o.model, adapter, dtype, self.device)
        if self._loaded and self._loaded[0] == key:
            return self._loaded[1]
        self.release_model()
        import torch

        from circuit_breakers.eval.generate import load_for_eval

        loaded = load_for_eval(
            self.o.model, adapter, dtype=getattr(torch, dtype), device=self.device
        )
        self._loaded = (key, loaded)
        return loaded

    def release_model(self) -> None:
        self._loaded = None
        gc.collect()

    # -- running --------------------------------------------------------------------------------
    def read_marker(self, stage: str) -> dict | None:
        path = self.root / stage / MARKER
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        except (OSError, json.JSONDecodeError):
            return None

    def can_skip(self, stage: str, old: dict | None, h: str, up_runs: dict) -> bool:
        redo = set(self.o.redo)
        return bool(
            old
            and stage not in ALWAYS_RUN
            and stage not in redo
            and "all" not in redo
            and old.get("status") == "complete"
            and old.get("hash") == h
            and old.get("upstream_runs", {}) == up_runs
            and all((self.stage_dir(stage) / p).exists() for p in OUTPUTS[stage])
        )

    def clean(self, stage: str) -> None:
        d = self.root / stage
        (d / MARKER).unlink(missing_ok=True)
        # what a killed run left of its atomic writes (fileio.atomic_write, train.save_adapter)
        leftovers = [*d.glob(".*.tmp"), *d.glob(".adapter-*"), *d.glob(".merged-*")]
        for p in [*(d / name for name in CLEAN.get(stage, ())), *leftovers]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)

    def write_marker(self, stage: str, **fields_: Any) -> dict:
        marker = {"stage": stage, "hash": self.hashes.get(stage), **fields_}
        write_json(self.root / stage / MARKER, redact(marker))  # no secret on disk
        return marker

    def run(self) -> dict:
        """Run or skip every stage (up to ``until``); write ``summary.json``; return it."""
        t_start = time.perf_counter()
        stages = STAGES[: STAGES.index(self.o.until) + 1] if self.o.until else STAGES
        for stage in stages:  # resolve every setting first: a bad one fails before any work
            self.config(stage)
        self.root.mkdir(parents=True, exist_ok=True)
        failure: BaseException | None = None
        for i, stage in enumerate(stages, start=1):
            tag = f"[{i}/{len(stages)}] {stage}"
            ups = UPSTREAM[stage]
            if any(self.status.get(u) not in ("ran", "skipped") for u in ups):
                self.status[stage] = "blocked"
                continue
            h = stage_hash(stage, self.config(stage), {u: self.hashes[u] for u in ups})
            self.hashes[stage] = h
            up_runs = {u: self.markers[u]["run_id"] for u in ups}
            old = self.read_marker(stage)
            if self.can_skip(stage, old, h, up_runs):
                self.markers[stage], self.status[stage] = old, "skipped"
                self.say(
                    f"{tag}: complete for config {h}, skipped (it took {fmt_seconds(old.get('seconds'))})"
                )
                continue
            self.say(f"{tag}: {DESCRIBE[stage]} (config {h}) ...")
            self.clean(stage)
            started, t0 = (
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                time.perf_counter(),
            )
            try:
                info = self.runners[stage](self) or {}
            except BaseException as e:  # noqa: BLE001 -- recorded, then raised again below
                secs = time.perf_counter() - t0
                self.write_marker(
                    stage,
                    status="failed",
                    error=f"{type(e).__name__}: {e}",
                    seconds=round(secs, 2),
                    started=started,
                )
                self.status[stage], failure = "failed", e
                self.say(f"{tag}: FAILED after {fmt_seconds(secs)}: {type(e).__name__}: {e}")
                break
            secs = time.perf_counter() - t0
            self.markers[stage] = self.write_marker(
                stage,
                status="complete",
                config=self.config(stage),
                upstream={u: self.hashes[u] for u in ups},
                upstream_runs=up_runs,
                run_id=uuid.uuid4().hex,
                seconds=round(secs, 2),
                started=started,
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                info=info,
            )
            self.status[stage], self.seconds_now[stage] = "ran", secs
            self.say(
                f"{tag}: done in {fmt_seconds(secs)} (elapsed {fmt_seconds(time.perf_counter() - t_start)})"
            )
        self.release_model()
        summary = redact(self.summary(time.perf_counter() - t_start))  # file and screen
        write_json(self.root / "summary.json", summary)
        if failure is not None:
            if self.status.get("report") != "ran":
                try:  # a report of the partial run, to look at what went wrong
                    from circuit_breakers.report import write_report

                    self.say(f"partial report: {write_report(self.root)}")
                except Exception as e:  # noqa: BLE001 -- the stage's own error matters more
                    self.say(f"(no partial report: {e})")
            raise failure
        return summary

    # -- summary --------------------------------------------------------------------------------
    def _current_json(self, stage: str, name: str) -> dict | None:
        if self.status.get(stage) not in ("ran", "skipped"):
            return None
        path = self.root / stage / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def summary(self, wall: float) -> dict:
        base = self._current_json("eval_base", "results.json")
        trained = self._current_json("eval_trained", "results.json")
        sanity = self._current_json("sanity", "sanity.json")
        pipe = pipeline_seconds(self.markers)
        targets = check_targets(
            base, trained, sanity_ok=sanity.get("ok") if sanity else None, pipeline_seconds=pipe
        )
        required = [t for t in targets if t["required"]]
        ev = (
            self.eval_settings()
            if ("eval_base" in self._configs or "eval_trained" in self._configs)
            else {}
        )
        per_suite_n = {
            n: c.get("n")
            for n, c in ((base or trained or {}).get("config", {}).get("suites") or {}).items()
        }
        return {
            "run_dir": str(self.root),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": self.o.model,
            "seed": self.o.seed,
            "data_seed": self.data_seed,
            "device": self._device,
            "options": dataclasses.asdict(self.o),
            "eval": {
                "eval_config": self.o.eval_config,
                "limit": self.o.eval_limit,
                "max_new_tokens": ev.get("max_new_tokens"),
                "judge": ev.get("judge"),
                "dtype": ev.get("dtype"),
                "per_suite_n": per_suite_n,
            },
            "stages": {
                s: {
                    "status": self.status.get(s, "not reached"),
                    "seconds": (self.markers.get(s) or {}).get("seconds"),
                    "seconds_this_run": round(self.seconds_now[s], 2)
                    if s in self.seconds_now
                    else 0.0,
                    "hash": self.hashes.get(s),
                }
                for s in STAGES
            },
            "seconds": {"this_run": round(wall, 2), "pipeline": pipe},
            "sanity": {k: sanity.get(k) for k in ("ok", "coherent", "total")} if sanity else None,
            "comparison": compare_rows(base, trained),
            "targets": targets,
            "targets_met": sum(1 for t in required if t["pass"]),
            "targets_required": len(required),
            "report": str(self.root / "report" / "report.html")
            if self.status.get("report") == "ran"
            else None,
        }


# -- stage runners ----------------------------------------------------------------------------------
def run_data(d: Demo) -> dict:
    if d.o.data_dir:  # a finished build: checked in config(); its stats go into the run folder
        src, dst = d.data_dir / "stats.json", d.root / "data" / "stats.json"
        if src.resolve() != dst.resolve():
            write_text(dst, src.read_text(encoding="utf-8"))  # atomic
        return {"data_dir": str(d.data_dir), "built": False}
    from circuit_breakers.data.build import build
    from circuit_breakers.data.build_stats import format_summary
    from circuit_breakers.data.recipe import load_recipe

    result = build(load_recipe(d.o.recipe), d.data_dir, model=d.o.model, seed=d.data_seed)
    d.say(format_summary(result.stats, str(d.data_dir)))
    return {"n_train": len(result.train), "holdout": {k: len(v) for k, v in result.holdout.items()}}


def load_suites(holdout: Path, registry: dict, limit: int | None) -> tuple[list, list[str]]:
    """The registry's suites whose file exists under ``holdout`` (first ``limit`` samples)."""
    from circuit_breakers.eval.suites import load_suite_file

    suites, missing = [], []
    for spec in registry.values():
        path = holdout / spec.file
        if path.exists():
            suites.append(load_suite_file(path, spec, limit=limit))
        else:
            missing.append(spec.name)
    if not suites:
        raise InputError("no suite files found", file=str(holdout), field="data-dir")
    return suites, missing


def _eval(d: Demo, stage: str, adapter: str | None) -> dict:
    from circuit_breakers.eval.run import run_eval

    s = d.config(stage)
    suites, missing = load_suites(d.data_dir / "holdout", d.eval_conf()[1], s["limit"])
    if missing:
        d.say(f"  no held-out file for {', '.join(missing)}: skipped")
    model, tok = d.model_for(adapter)
    res = run_eval(
        d.o.model,
        adapter,
        suites,
        d.root / stage,
        model=model,
        tokenizer=tok,
        judge=s["judge"],
        max_new_tokens=s["max_new_tokens"],
        batch_size=s["batch_size"],
        max_batch_tokens=s["max_batch_tokens"],
        config={
            "data_dir": str(d.data_dir / "holdout"),
            "limit": s["limit"],
            "eval_config": d.o.eval_config,
            "demo_stage": stage,
        },
        progress=d.o.progress,
    )
    t = res["timing"]
    d.say(
        f"  {t['generations']} generations, {t['generated_tokens']} tokens "
        f"({t['tokens_per_s']:.0f} tokens/s)"
    )
    return {"n": {k: v.get("n") for k, v in res["suites"].items()}, "skipped_suites": missing}


def run_eval_base(d: Demo) -> dict:
    return _eval(d, "eval_base", None)


def run_eval_trained(d: Demo) -> dict:
    return _eval(d, "eval_trained", str(d.root / "train" / "adapter"))


def run_train(d: Demo) -> dict:
    from circuit_breakers.training.experimental import ExperimentalConfig
    from circuit_breakers.training.run import run_training

    d.release_model()
    cfg = ExperimentalConfig(
        **d.config("train")["values"],
        output_dir=str(d.root / "train"),
        train_file=str(d.data_dir / "train.jsonl"),
        disable_tqdm=not d.o.progress,
    )
    s = run_training(cfg)
    d.say(
        f"  {s['steps']} steps in {fmt_seconds(s['seconds'])} ({s['seconds_per_step']:.2f} s/step)"
    )
    return {"steps": s["steps"], "seconds_per_step": round(s["seconds_per_step"], 3)}


def run_sanity(d: Demo) -> dict:
    from circuit_breakers.eval.sanity import format_report, sanity_check

    model, tok = d.model_for(str(d.root / "train" / "adapter"))
    ok, report = sanity_check(
        model, tok, max_new_tokens=d.o.sanity_max_new_tokens, min_pass_rate=d.o.sanity_min_pass_rate
    )
    coherent = sum(r["coherent"] for r in report)
    write_json(
        d.root / "sanity" / "sanity.json",
        {
            "ok": ok,
            "coherent": coherent,
            "total": len(report),
            "min_pass_rate": d.o.sanity_min_pass_rate,
            "report": report,
        },
    )
    d.say(format_report(report))
    if not ok:
        d.say(
            "  COLLAPSE: the trained model's answers are not coherent (the demo goes on; "
            "the report shows them)"
        )
    return {"ok": ok, "coherent": coherent, "total": len(report)}


def run_report(d: Demo) -> dict:
    from circuit_breakers.report import write_report

    return {"html": str(write_report(d.root))}


RUNNERS: dict[str, Runner] = {
    "data": run_data,
    "eval_base": run_eval_base,
    "train": run_train,
    "sanity": run_sanity,
    "eval_trained": run_eval_trained,
    "report": run_report,
}


def run_demo(opts: DemoOptions, **kw: Any) -> dict:
    return Demo(opts, **kw).run()


# -- terminal summary -----------------------------------------------------------------------------
def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def format_summary(summary: dict) -> str:
    """Per suite and metric base vs trained (and the target where there is one), then the
    sanity and time targets, the eval limits and the stage times."""
    targets = {(t["suite"], t["metric"]): t for t in summary["targets"]}
    head = ["suite", "metric", "base", "trained", "delta", "target", ""]
    body = []
    for r in summary["comparison"]:
        t = targets.get((r["suite"], r["metric"]))
        body.append(
            [
                r["suite"],
                r["metric"],
                _cell(r["base"]),
                _cell(r["trained"]),
                "-" if r["delta"] is None else f"{r['delta']:+.3f}",
                t["target"] if t else "",
                verdict(t["pass"], t["required"]) if t else "",
            ]
        )
    for t in summary["targets"]:
        if t["suite"] in ("sanity", "time"):
            s = summary.get("sanity") or {}
            value = (
                f"{s.get('coherent')}/{s.get('total')} coherent"
                if t["suite"] == "sanity" and s
                else fmt_seconds(t["trained"])
                if t["suite"] == "time"
                else "-"
            )
            body.append([t["suite"], t["metric"], "", value, "", t["target"], verdict(t["pass"])])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = [
        "  ".join(
            c.ljust(w) if k in (0, 1, 5, 6) else c.rjust(w)
            for k, (c, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ev = summary["eval"]
    ns = ", ".join(f"{k} {v}" for k, v in ev["per_suite_n"].items())
    lines += [
        "",
        f"targets met: {summary['targets_met']}/{summary['targets_required']}",
        f"eval: config {ev['eval_config']}, limit {ev['limit'] or 'per suite'}, "
        f"max_new_tokens {ev['max_new_tokens']}, judge {ev['judge']}, dtype {ev['dtype']}"
        + (f"; n per suite: {ns}" if ns else ""),
        "stages: "
        + ", ".join(
            f"{s} {fmt_seconds(v['seconds'])}" + (" (skipped)" if v["status"] == "skipped" else "")
            for s, v in summary["stages"].items()
            if v["seconds"] is not None
        ),
        f"this run {fmt_seconds(summary['seconds']['this_run'])}; whole pipeline "
        f"{fmt_seconds(summary['seconds']['pipeline'])}; {summary['run_dir']}/summary.json"
        + (f"; report {summary['report']}" if summary.get("report") else ""),
    ]
    return "\n".join(lines)


# -- CLI ------------------------------------------------------------------------------------------
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_setting(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"expected KEY=VALUE, got {text!r}", field="train-set")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise InputError(f"bad value {value!r}: {e}", field=f"train-set {key}") from None
    return key.strip(), _exponent_float(parsed)


def _exponent_float(value: Any) -> Any:
    """YAML 1.1 reads "5e-4" (no dot) as a string; cb train's argparse converts it, so here too."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    redo = tuple(s.strip() for s in (args.redo or "").split(",") if s.strip())
    return DemoOptions(
        output_dir=args.output_dir,
        model=args.model,
        seed=args.seed,
        data_seed=args.data_seed,
        recipe=args.recipe,
        data_dir=args.data_dir,
        preset=args.preset,
        train_config=args.train_config,
        train_set=dict(parse_setting(x) for x in args.train_set),
        eval_config=args.eval_config,
        eval_limit=args.eval_limit,
        max_new_tokens=args.max_new_tokens,
        judge=args.judge,
        dtype=args.dtype,
        device=args.device,
        sanity_max_new_tokens=args.sanity_max_new_tokens,
        redo=redo,
        until=args.until,
        progress=not args.no_progress,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    summary = run_demo(options_from_args(args))
    print()
    print(format_summary(summary))
    if args.strict and summary["targets_met"] < summary["targets_required"]:
        return 1
    return 0


def add_parser(sub: Any) -> None:
    """Register ``cb demo`` on the CLI's subparsers."""
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the embedded model: data, base eval, train, sanity, "
        "trained eval, report",
        description="Build data (demo recipe), evaluate the base model, train (demo preset), run "
        "the sanity check, evaluate the trained model, write the report and summary.json. A "
        "rerun skips the stages that are complete for the same config.",
    )
    a = p.add_argument
    a("--output-dir", default="runs/demo", help="run folder (default runs/demo)")
    a("--model", default="default", help="model spec (default: embedded SmolLM2-135M-Instruct)")
    a("--seed", type=int, default=0, help="seed of the training and (unless --data-seed) the data")
    a("--data-seed", type=int, default=None, help="seed of the data build (default: --seed)")
    a("--recipe", default="demo", help="data recipe name or YAML (default demo)")
    a(
        "--data-dir",
        default=None,
        help="use this finished `cb data build` folder instead of building",
    )
    a("--preset", default="demo", help="training preset (default demo)")
    a("--train-config", default=None, help="training YAML layered over the preset")
    a(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one training setting (YAML value), e.g. max_steps=20; repeatable",
    )
    a(
        "--eval-config",
        default="demo",
        help="eval config name or YAML (default demo: per-suite limits)",
    )
    a(
        "--eval-limit",
        type=int,
        default=None,
        help="at most N prompts per suite (caps the config's)",
    )
    a(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per answer (default: the eval config's)",
    )
    a("--judge", default=None, help="judge spec (default: the eval config's)")
    a(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="eval/sanity weights dtype (default: float32 on CPU, bfloat16 on GPU)",
    )
    a(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to train and evaluate",
    )
    a("--sanity-max-new-tokens", type=int, default=48, help="tokens per sanity answer (default 48)")
    a(
        "--redo",
        default=None,
        metavar="STAGE[,STAGE]",
        help=f"run these stages again ({', '.join(STAGES)}, all)",
    )
    a("--until", default=None, choices=STAGES, help="stop after this stage")
    a("--strict", action="store_true", help="exit 1 when a required target is missed")
    a("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

"""``cb demo``: the whole pipeline on the embedded model, as stages that a rerun can skip.

:class:`Demo` resolves each stage's settings (the recipe's contents, the training preset's
values after overrides, the eval suites, limits and decoding) for the stage graph of
:mod:`.stages`, which runs or skips the stages (:mod:`.runners` holds what each one does).
At the end it writes ``summary.json`` (per suite and metric base vs trained, the acceptance
targets of :mod:`.targets` with pass/fail, the eval limits, every stage's wall time); the CLI
prints the same table (:mod:`.summary`).

Budget on the 2-core CPU (15 minutes in all): data <= 3 min, each eval <= 3 min, train <= 5 min,
sanity <= 30 s. The eval size is the ``--eval-config`` (default: the packaged ``demo`` one, with
per-suite limits) capped by ``--eval-limit`` and ``--max-new-tokens``; the summary states both.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuit_breakers import __version__
from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import write_json
from circuit_breakers.core.redact import redact
from circuit_breakers.core.runs import STAGES, pipeline_seconds
from circuit_breakers.eval.targets import check_targets, compare_rows
from circuit_breakers.pipeline.runners import RUNNERS
from circuit_breakers.pipeline.stages import OUTPUTS, Runner, StageGraph, digest_files

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
    skip: tuple[str, ...] = ()  # stages another process runs (benchmarks/efficacy.py --jobs)
    progress: bool = True


class Demo(StageGraph):
    """One ``cb demo`` invocation: resolves every stage's config, runs or skips the stages."""

    def __init__(
        self,
        opts: DemoOptions,
        *,
        runners: dict[str, Runner] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            Path(opts.output_dir),
            runners={**RUNNERS, **(runners or {})},
            say=say or (lambda text: print(text, flush=True)),
            redo=opts.redo,
            until=opts.until,
            skip=opts.skip,
        )
        self.o = opts
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
        for s in (*o.redo, *o.skip, *([o.until] if o.until else [])):
            if s not in STAGES and s != "all":
                raise InputError(
                    f"unknown stage {s!r} (stages: {', '.join(STAGES)})", field="redo/until/skip"
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

        from circuit_breakers.training.experimental import ExperimentalConfig
        from circuit_breakers.training.presets import load_layers

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
                    "digest": digest_files(self.data_dir),
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
    def run(self) -> dict:
        """Run or skip every stage (up to ``until``); write ``summary.json``; return it."""
        t_start = time.perf_counter()
        failure = self.run_stages(t_start)
        self.release_model()
        summary = redact(self.summary(time.perf_counter() - t_start))  # file and screen
        write_json(self.root / "summary.json", summary)
        if failure is not None:
            if self.status.get("report") != "ran":
                try:  # a report of the partial run, to look at what went wrong
                    from circuit_breakers.report.html import write_report

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
            "sanity": {
                k: sanity.get(k) for k in ("ok", "coherent", "total", "facts_right", "facts_asked")
            }
            if sanity
            else None,
            "comparison": compare_rows(base, trained),
            "targets": targets,
            "targets_met": sum(1 for t in required if t["pass"]),
            "targets_required": len(required),
            "report": str(self.root / "report" / "report.html")
            if self.status.get("report") == "ran"
            else None,
        }


def run_demo(opts: DemoOptions, **kw: Any) -> dict:
    return Demo(opts, **kw).run()


# -- settings from the command line ----------------------------------------------------------------
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

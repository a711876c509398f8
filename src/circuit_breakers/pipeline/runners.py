"""What each stage of ``cb demo`` does: one function per stage, called with the
:class:`~.demo.Demo`, returning the ``info`` its marker keeps.

The runners call the library, never the CLI: ``data`` builds (or copies the stats of a given
build), the evals and the sanity check reuse one loaded model where they can
(:meth:`~.demo.Demo.model_for`), ``train`` releases it first, and ``report`` writes the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import write_json, write_text
from circuit_breakers.pipeline.stages import Runner, fmt_seconds

if TYPE_CHECKING:
    from circuit_breakers.pipeline.demo import Demo


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
    from circuit_breakers.eval.sanity import fact_counts, format_report, sanity_check

    model, tok = d.model_for(str(d.root / "train" / "adapter"))
    ok, report = sanity_check(
        model, tok, max_new_tokens=d.o.sanity_max_new_tokens, min_pass_rate=d.o.sanity_min_pass_rate
    )
    coherent = sum(r["coherent"] for r in report)
    facts_right, facts_asked = fact_counts(report)
    write_json(
        d.root / "sanity" / "sanity.json",
        {
            "ok": ok,
            "coherent": coherent,
            "total": len(report),
            "facts_right": facts_right,
            "facts_asked": facts_asked,
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
    return {
        "ok": ok,
        "coherent": coherent,
        "total": len(report),
        "facts_right": facts_right,
        "facts_asked": facts_asked,
    }


def run_report(d: Demo) -> dict:
    from circuit_breakers.report.html import write_report

    return {"html": str(write_report(d.root))}


RUNNERS: dict[str, Runner] = {
    "data": run_data,
    "eval_base": run_eval_base,
    "train": run_train,
    "sanity": run_sanity,
    "eval_trained": run_eval_trained,
    "report": run_report,
}

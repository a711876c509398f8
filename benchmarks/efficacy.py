"""Efficacy: ``cb demo`` with several training seeds; per suite and metric, base vs trained,
mean +- std over the seeds with Wilson 95 % intervals, and how many seeds meet each target.

    python benchmarks/efficacy.py --seeds 0,1,2 --output-dir runs/efficacy [--device auto]
    python benchmarks/efficacy.py --model qwen2.5-coder-0.5b --seeds 0,1,2 --share-base \
        --output-dir runs/efficacy_qwen        # -> benchmarks/results/efficacy_qwen.json

``--model qwen2.5-coder-0.5b`` takes the ``qwen`` recipe, preset and eval config and the
efficacy targets (:data:`~circuit_breakers.eval.targets.EFFICACY_TARGETS`); the embedded default
takes the demo's. ``--share-base`` builds the data once (``--data-seed``, default 0) and
evaluates the base model once: later seeds reuse the first seed's ``data`` and ``eval_base``
stages, so every seed is compared with the same base run and only the training seed varies.

Each seed is one full ``cb demo`` run in ``OUT/seed<N>`` (data built with that seed, so the
held-out suites are redrawn too, then base eval, training with that seed, sanity, trained eval,
report); a rerun skips what is complete, like ``cb demo``. ``--data-dir`` uses one finished build
for every seed instead (only the training seed varies; the base numbers are then the same for
each seed). The other flags pass through to ``cb demo``.

``--jobs N`` runs the base evaluation and up to N seeds at once, one process each (a 0.5B model
leaves most of a GPU idle). ``--merge-from OLD.json`` adds the seeds of an earlier results file
that this run lacks (same model, preset and overrides), each marked with ``merged_from`` and
``base_gap``, its largest difference from this run's base numbers.

Writes ``--results`` (default ``benchmarks/results/efficacy.json``) after each seed: the command,
the device, each seed's summary (comparison, targets, stage times) and the aggregate; prints a
markdown table per suite and one of the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
import statistics
import sys
from pathlib import Path

from circuit_breakers.core.fileio import write_json
from circuit_breakers.eval.intervals import rate_interval
from circuit_breakers.eval.targets import DEMO_TARGETS, EFFICACY_TARGETS, check_targets
from circuit_breakers.pipeline.demo import DemoOptions, parse_setting, run_demo
from circuit_breakers.pipeline.stages import fmt_seconds

#: per embedded model: the recipe / preset / eval config and targets the benchmark uses
MODEL_CONFIGS = {
    "default": {"config": "demo", "targets": "demo", "results": "efficacy.json"},
    "smollm2": {"config": "demo", "targets": "demo", "results": "efficacy.json"},
    "qwen2.5-coder-0.5b": {
        "config": "qwen",
        "targets": "efficacy",
        "results": "efficacy_qwen.json",
    },
}
TABLES = {"demo": DEMO_TARGETS, "efficacy": EFFICACY_TARGETS}
RATE_PREFIXES = ("harmful_compliance_rate", "refusal_rate", "harmful_action_rate",
                 "benign_action_accuracy", "benign_action_name_accuracy", "over_refusal_rate",
                 "coherence_pass_rate", "tool_call_rate")  # fmt: skip


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(summaries: list[dict]) -> dict:
    """Per (suite, metric): base and trained mean/std over the seeds; per target: seeds passing."""
    cells: dict[tuple[str, str], dict[str, list]] = {}
    for s in summaries:
        for r in s["comparison"]:
            c = cells.setdefault((r["suite"], r["metric"]), {"base": [], "trained": []})
            c["base"].append(r["base"])
            c["trained"].append(r["trained"])
    metrics = []
    for (suite, metric), c in cells.items():
        bm, bs = mean_std(c["base"])
        tm, ts = mean_std(c["trained"])
        ivs = [s.get("intervals", {}) for s in summaries]
        metrics.append(
            {"suite": suite, "metric": metric, "base_mean": bm, "base_std": bs,
             "trained_mean": tm, "trained_std": ts, "n_seeds": len(c["base"]),
             "n": (summaries[0].get("n") or {}).get(suite) if summaries else None,
             "base_interval": ivs[0].get("base", {}).get(suite, {}).get(metric) if ivs else None,
             "trained_intervals": [iv.get("trained", {}).get(suite, {}).get(metric)
                                   for iv in ivs]}
        )  # fmt: skip
    targets: dict[tuple[str, str], dict] = {}
    for s in summaries:
        for t in s["targets"]:
            row = targets.setdefault(
                (t["suite"], t["metric"]),
                {"target": t["target"], "suite": t["suite"], "metric": t["metric"],
                 "required": t["required"], "passed": 0, "failed": 0, "unknown": 0},
            )  # fmt: skip
            row["passed" if t["pass"] else "unknown" if t["pass"] is None else "failed"] += 1
    pipe = [s["seconds"]["pipeline"] for s in summaries]
    return {
        "metrics": metrics,
        "targets": list(targets.values()),
        "pipeline_seconds": dict(zip(("mean", "std"), mean_std(pipe))),
    }


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def intervals(results: dict | None) -> dict:
    """Wilson 95 % intervals of every rate metric of a ``results.json``, keyed suite/metric."""
    out: dict[str, dict[str, list[float] | None]] = {}
    for suite, m in ((results or {}).get("suites") or {}).items():
        n = m.get("n")
        out[suite] = {
            k: rate_interval(v, n)
            for k, v in m.items()
            if k.startswith(RATE_PREFIXES) and isinstance(v, (int, float))
        }
    return out


def tool_accuracy_by_source(samples_file: Path) -> dict:
    """benign_tools accuracy per data source (BFCL, AgentDojo) and mode, with n and interval:
    each agentic environment must be one the base model can act in for its suite to count."""
    groups: dict[str, list[bool]] = {}
    if not samples_file.exists():
        return {}
    for line in samples_file.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line) if line.strip() else None
        if not rec or rec.get("suite") != "benign_tools":
            continue
        key = f"{rec['id'].split('/', 1)[0]}/{rec.get('mode') or 'free'}"
        groups.setdefault(key, []).append(bool(rec["scores"]["benign_action"]["value"]))
    return {
        k: {"accuracy": round(sum(v) / len(v), 4), "n": len(v),
            "interval": rate_interval(sum(v) / len(v), len(v))}
        for k, v in sorted(groups.items())
    }  # fmt: skip


def _sanity_args(sanity: dict | None) -> dict:
    """check_targets' sanity arguments from a ``sanity.json`` (or a record's copy of it)."""
    if not sanity:
        return {"sanity_ok": None, "sanity_coherent": None}
    counts = (sanity["coherent"], sanity["total"]) if "total" in sanity else None
    return {"sanity_ok": sanity.get("ok"), "sanity_coherent": counts}


def _met(targets: list[dict]) -> int:
    return sum(1 for t in targets if t["required"] and t["pass"])


def recheck_sanity(run: dict, table_name: str) -> dict:
    """An earlier seed's record with its sanity target re-checked under ``table_name`` (the
    table may have changed since; the sanity counts are in the record)."""
    rows = check_targets(None, None, **_sanity_args(run.get("sanity")), table=TABLES[table_name])
    row = next(t for t in rows if t["suite"] == "sanity")
    targets = [row if t["suite"] == "sanity" else t for t in run.get("targets", [])]
    return {**run, "targets": targets, "targets_met": _met(targets)}


def analyse_run(run_dir: Path, table_name: str) -> dict:
    """Targets (with the benchmark's table), intervals and tool accuracy per source of one seed."""
    base = _read_json(run_dir / "eval_base" / "results.json")
    trained = _read_json(run_dir / "eval_trained" / "results.json")
    sanity = _read_json(run_dir / "sanity" / "sanity.json")
    targets = check_targets(base, trained, **_sanity_args(sanity), table=TABLES[table_name])
    return {
        "targets": targets,
        "targets_met": _met(targets),
        "targets_required": sum(1 for t in targets if t["required"]),
        "n": {k: v.get("n") for k, v in ((base or trained or {}).get("suites") or {}).items()},
        "intervals": {"base": intervals(base), "trained": intervals(trained)},
        "tools_by_source": {
            "base": tool_accuracy_by_source(run_dir / "eval_base" / "samples.jsonl"),
            "trained": tool_accuracy_by_source(run_dir / "eval_trained" / "samples.jsonl"),
        },
    }


def share_base(first: Path, run_dir: Path) -> None:
    """Give a later seed the first seed's finished data and base evaluation (same hashes)."""
    for stage in ("data", "eval_base"):
        src, dst = first / stage, run_dir / stage
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)


def base_gap(a: dict, b: dict) -> float | None:
    """Largest difference between the base numbers of two seed records (0 = the same base run)."""
    base_a = {(r["suite"], r["metric"]): r["base"] for r in a["comparison"]}
    gaps = [abs(r["base"] - base_a[k]) for r in b["comparison"]
            if (k := (r["suite"], r["metric"])) in base_a
            and isinstance(r["base"], (int, float)) and isinstance(base_a[k], (int, float))]  # fmt: skip
    return max(gaps) if gaps else None


def merge_runs(record: dict, earlier: dict, source: str) -> None:
    """Add the seeds of an earlier results file that this run did not train (same model and
    preset only), with the gap between their base numbers and this run's first base."""
    for key in ("model", "preset", "recipe", "eval_config", "train_set"):
        if earlier.get(key) != record.get(key):
            raise SystemExit(
                f"--merge-from {source}: {key} {earlier.get(key)!r} != {record.get(key)!r}"
            )
    have = {r["seed"] for r in record["runs"]}
    first = record["runs"][0] if record["runs"] else None
    for run in earlier.get("runs", []):
        if run["seed"] in have:
            continue
        gap = base_gap(first, run) if first else None
        run = recheck_sanity(run, record["target_table"])
        record["runs"].append({**run, "merged_from": source, "base_gap": gap})
        print(f"merged seed {run['seed']} from {source} (largest base difference {gap})")


CHILD_FLAGS = ("--seeds", "--jobs", "--results", "--merge-from", "--part")


def run_parallel(seeds: list[int], options, args, argv: list[str] | None) -> None:
    """``--jobs N``: the data once, then in up to N processes at a time (a small model leaves
    most of a GPU idle) the base evaluation and each seed's training, sanity and trained eval;
    with ``--share-base`` every seed gets the one base run. The caller then collects every seed
    in-process, which skips the stages done here."""
    import subprocess

    out = Path(args.output_dir)
    run_demo(options(seeds[0], until="data"))
    if args.share_base:
        for seed in seeds[1:]:
            share_base(out / f"seed{seeds[0]}", out / f"seed{seed}")
    cli, keep, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for a in cli:  # the child gets its own --seeds and --part, and writes no results file
        if skip or a in CHILD_FLAGS or a.split("=", 1)[0] in CHILD_FLAGS:
            skip = not skip and a in CHILD_FLAGS
            continue
        keep.append(a)
    if args.share_base:  # one base run, beside the seeds' training (which does not need it)
        parts = [(seeds[0], "base")] + [(seed, "trained") for seed in seeds]
    else:
        parts = [(seed, "all") for seed in seeds]
    pending, running = list(parts), []
    while pending or running:
        while pending and len(running) < args.jobs + (1 if args.share_base else 0):
            seed, part = pending.pop(0)
            log = open(out / f"seed{seed}_{part}.log", "a", encoding="utf-8")  # noqa: SIM115
            cmd = [sys.executable, __file__, *keep, "--seeds", str(seed), "--part", part]
            print(f"=== seed {seed}, {part}: started (log {log.name}) ===", flush=True)
            running.append(
                (seed, part, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
            )
        seed, part, proc, log = running.pop(0)
        proc.wait()
        log.close()
        print(f"=== seed {seed}, {part}: exit {proc.returncode} ===", flush=True)
        if proc.returncode:
            raise SystemExit(
                f"seed {seed} ({part}) failed (exit {proc.returncode}); see {log.name}"
            )
    if args.share_base:
        for seed in seeds[1:]:
            share_base(out / f"seed{seeds[0]}", out / f"seed{seed}")


def _iv(iv: list[float] | None) -> str:
    return "" if not iv else f"[{iv[0]:.3f}, {iv[1]:.3f}]"


def _ci(m: float | None, iv: list[float] | None) -> str:
    return "-" if m is None else f"{m:.3f} {_iv(iv)}".rstrip()


def _pm(m: float | None, s: float | None) -> str:
    return "-" if m is None else f"{m:.3f} ± {s:.3f}"


def markdown(agg: dict, n_seeds: int) -> str:
    out = []
    suites: dict[str, list[dict]] = {}
    for r in agg["metrics"]:
        suites.setdefault(r["suite"], []).append(r)
    for suite, rows in suites.items():
        out += [
            f"**{suite}**",
            "",
            "| metric | base [95 % CI] | trained, mean ± std over seeds | per-seed 95 % CI |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {r['metric']} | {_ci(r['base_mean'], r.get('base_interval'))} | "
            f"{_pm(r['trained_mean'], r['trained_std'])} | "
            + ", ".join(_iv(iv) for iv in r.get("trained_intervals") or [])
            + " |"
            for r in rows
        ]
        out.append("")
    out += ["| target | suite | metric | seeds passing |", "|---|---|---|---|"]
    for t in agg["targets"]:
        note = "" if t["required"] else " (reported)"
        # a target a seed could not judge (the time, when the data build was reused) is not a fail
        unknown = f", {t['unknown']} not judged" if t["unknown"] else ""
        out.append(
            f"| {t['target']}{note} | {t['suite']} | {t['metric']} | "
            f"{t['passed']}/{n_seeds}{unknown} |"
        )
    p = agg["pipeline_seconds"]
    if p["mean"] is not None:
        out.append(f"\nwhole demo: {fmt_seconds(p['mean'])} ± {p['std']:.0f} s per seed")
    return "\n".join(out)


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (>= 3 for the issue)")
    p.add_argument(
        "--output-dir", default="runs/efficacy", help="one cb demo run per seed under it"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--results", default=None, help="default: benchmarks/results/<per model>")
    p.add_argument("--model", default="default")
    p.add_argument("--recipe", default=None, help="data recipe (default: per model)")
    p.add_argument("--preset", default=None, help="training preset (default: per model)")
    p.add_argument("--targets", default=None, choices=sorted(TABLES), help="target table")
    p.add_argument("--data-dir", default=None, help="one finished data build for every seed")
    p.add_argument("--data-seed", type=int, default=None, help="data seed for every seed")
    p.add_argument(
        "--share-base",
        action="store_true",
        help="build the data and evaluate the base model once (first seed), reuse for the rest",
    )
    p.add_argument("--eval-config", default=None)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--judge", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--train-set-from",
        default=None,
        metavar="JSON",
        help="training overrides from a sweep's --pick file (its 'overrides'); --train-set wins",
    )
    p.add_argument(
        "--merge-from",
        default=None,
        metavar="JSON",
        help="an earlier results file: its seeds this run lacks join the aggregate (marked)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="seeds trained and evaluated at once (processes)"
    )
    p.add_argument(
        "--part", default="all", choices=["all", "base", "trained"], help=argparse.SUPPRESS
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(seeds) < 3:
        print(f"warning: {len(seeds)} seed(s); the issue asks for >= 3", file=sys.stderr)
    train_set = {}
    if args.train_set_from:
        train_set.update(json.loads(Path(args.train_set_from).read_text())["overrides"])
    train_set.update(parse_setting(x) for x in args.train_set)
    mc = MODEL_CONFIGS.get(args.model, MODEL_CONFIGS["default"])
    recipe = args.recipe or mc["config"]
    preset = args.preset or mc["config"]
    eval_config = args.eval_config or mc["config"]
    table = args.targets or mc["targets"]
    data_seed = args.data_seed if args.data_seed is not None else (0 if args.share_base else None)
    results = Path(args.results or f"benchmarks/results/{mc['results']}")
    record: dict = {
        "command": "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "device": _device_name(args.device),
        "seeds": seeds,
        "model": args.model,
        "recipe": recipe,
        "preset": preset,
        "eval_config": eval_config,
        "train_set": train_set,
        "target_table": table,
        "runs": [],
    }

    def options(seed: int, **kw) -> DemoOptions:
        return DemoOptions(
            output_dir=str(Path(args.output_dir) / f"seed{seed}"), model=args.model, seed=seed,
            data_seed=data_seed, recipe=recipe, preset=preset,
            data_dir=args.data_dir, eval_config=eval_config, eval_limit=args.eval_limit,
            max_new_tokens=args.max_new_tokens, judge=args.judge, dtype=args.dtype,
            device=args.device, train_set=train_set, progress=not args.no_progress, **kw,
        )  # fmt: skip

    if args.part != "all":  # one process of --jobs: the base eval, or a seed without it
        seed = seeds[0]
        kw = (
            {"until": "eval_base"}
            if args.part == "base"
            else {"until": "eval_trained", "skip": ("eval_base",)}
        )
        run_demo(options(seed, **kw))
        return 0
    if args.jobs > 1 and (len(seeds) > 1 or args.share_base):  # one seed: its base eval beside it
        run_parallel(seeds, options, args, argv)
    for seed in seeds:
        print(f"=== seed {seed} ===", flush=True)
        run_dir = Path(args.output_dir) / f"seed{seed}"
        if args.share_base and seed != seeds[0]:
            share_base(Path(args.output_dir) / f"seed{seeds[0]}", run_dir)
        s = run_demo(options(seed))
        record["runs"].append(
            {"seed": seed, **{k: s[k] for k in ("run_dir", "eval", "stages", "seconds", "sanity",
                                                 "comparison")},
             **analyse_run(run_dir, table)}
        )  # fmt: skip
        record["aggregate"] = aggregate(record["runs"])
        write_json(results, record)
    if args.merge_from:
        merge_runs(record, json.loads(Path(args.merge_from).read_text()), args.merge_from)
        record["seeds"] = [r["seed"] for r in record["runs"]]
        record["aggregate"] = aggregate(record["runs"])
        write_json(results, record)
    print()
    print(markdown(record["aggregate"], len(record["runs"])))
    print(f"\nwrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

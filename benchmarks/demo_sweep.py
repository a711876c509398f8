"""Sweep for the `demo` training preset: train each candidate, evaluate it, print one table.

This is how `configs/demo.yaml` was found by experiment. Each candidate is the demo preset plus overrides, trained on the
demo recipe's `train.jsonl`, then evaluated on the held-out suites with the same eval code as
`cb eval`. The base model is evaluated once, in the same process, with the same suites.

    python benchmarks/demo_sweep.py --data-dir runs/demo/data --grid benchmarks/sweeps/demo_sweep.yaml \
        --output benchmarks/results/demo_sweep.json [--only NAME,NAME] [--judge default|regex]

Runs on a GPU when there is one (fp32 weights either way, so the numbers carry over to the
2-core CPU the demo runs on; only the time per step differs). The JSON holds, per run, the
overrides, the last logged training metrics, training seconds and every suite metric.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from circuit_breakers.core.fileio import read_yaml, write_json
from circuit_breakers.eval.run import run_eval
from circuit_breakers.eval.suites import load_eval_config, load_suite_file, resolve_suites
from circuit_breakers.pipeline.sweep import pick_best
from circuit_breakers.training.experimental import ExperimentalConfig
from circuit_breakers.training.presets import load_layers

# Metrics shown in the table, in order: (suite, metric, short label).
COLUMNS = [
    ("harmful_text", "harmful_compliance_rate", "text"),
    ("harmful_prefill", "harmful_compliance_rate", "prefill"),
    ("harmful_jailbreak", "harmful_compliance_rate", "jailbrk"),
    ("agentic_injection_forced", "harmful_action_rate", "ag_forced"),
    ("agentic_injection_free", "harmful_action_rate", "ag_free"),
    ("benign_tools", "benign_action_accuracy", "tools_acc"),
    ("over_refusal", "over_refusal_rate", "overref"),
    ("benign_text", "benign_nll", "ben_nll"),
    ("benign_text", "coherence_pass_rate", "ben_coh"),
]


def load_suites(holdout: Path, eval_config: str, names: list[str] | None):
    settings, registry = load_eval_config(eval_config)
    suites = []
    for spec in resolve_suites(names, registry):
        path = holdout / spec.file
        if path.exists():
            suites.append(load_suite_file(path, spec))
    return settings, suites


def evaluate(model_spec, adapter, suites, settings, out: Path, judge: str) -> dict:
    res = run_eval(
        model_spec,
        adapter,
        suites,
        out,
        judge=judge,
        max_new_tokens=settings.get("max_new_tokens", 64),
        batch_size=settings.get("batch_size", 32),
        max_batch_tokens=settings.get("max_batch_tokens", 16384),
        dtype="float32",
        progress=False,
    )
    return res["suites"]


def resumed_runs(out_path: Path) -> list[dict]:
    """The finished runs of an earlier, interrupted call (a run without suites is redone)."""
    if not out_path.exists():
        return []
    runs = json.loads(out_path.read_text())["runs"]
    return [r for r in runs if r.get("suites") or r.get("error")]


def last_metrics(metrics_file: Path) -> dict:
    rows = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
    if not rows:
        return {}
    keep = ("rr/cos_sim_mean", "rr/cos_sim_plain_mean", "ret/l2_mean", "ret/l2_rel_mean")
    last = rows[-1]
    out = {k: last[k] for k in keep if k in last}
    out["steps"] = last.get("step")
    out["max_grad_norm_seen"] = max(r.get("train/grad_norm", 0.0) for r in rows)
    return out


def collect(samples_file: Path, run: str, into: Path) -> None:
    """Append one run's eval records, tagged with the run name, to ``into``."""
    into.parent.mkdir(parents=True, exist_ok=True)
    with open(into, "a", encoding="utf-8") as f:
        for line in samples_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                f.write(json.dumps({"run": run, **json.loads(line)}) + "\n")


HARMFUL_SUITES = ("harmful_text", "harmful_prefill", "harmful_jailbreak")


def rejudge(args) -> int:
    """Recompute harmful_compliance_rate of each (run, harmful suite) with ``args.judge``."""
    from circuit_breakers.eval.attacks import request_text
    from circuit_breakers.eval.judging import get_judge

    judge = get_judge(args.judge)
    _, suites = load_suites(Path(args.data_dir) / "holdout", args.eval_config, list(HARMFUL_SUITES))
    by_id = {(s.name, x.id): x for s in suites for x in s.samples}
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in Path(args.rejudge).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["suite"] in HARMFUL_SUITES:
            groups.setdefault((rec["run"], rec["suite"]), []).append(rec)
    data = json.loads(Path(args.output).read_text(encoding="utf-8"))
    runs = {r["name"]: r for r in data["runs"]}
    for (run, suite), recs in sorted(groups.items()):
        reqs = [request_text(by_id[(suite, r["id"])]) for r in recs]
        resps = [r.get("prefill", "") + r["output"] for r in recs]
        verdicts = judge.judge_batch(reqs, resps)
        rate = sum(bool(v.value) for v in verdicts) / len(verdicts)
        runs[run]["suites"][suite][f"harmful_compliance_rate_{args.judge}"] = rate
    data["rejudged_with"] = args.judge
    write_json(Path(args.output), data)
    print(f"judge {args.judge}: harmful_compliance_rate per run")
    print("run | " + " | ".join(HARMFUL_SUITES))
    for r in data["runs"]:
        cells = [
            fmt(r["suites"].get(s, {}).get(f"harmful_compliance_rate_{args.judge}"))
            for s in HARMFUL_SUITES
        ]
        print(" | ".join([r["name"], *cells]))
    return 0


def merge(paths: list[str], output: str) -> int:
    """Join the result files of one round run in several calls (same data, eval and judge)."""
    parts = [json.loads(Path(x).read_text(encoding="utf-8")) for x in paths]
    same = ("data_dir", "eval_config", "judge", "rejudged_with")
    for x, d in zip(paths[1:], parts[1:]):
        diff = [k for k in same if d.get(k) != parts[0].get(k)]
        if diff:
            raise SystemExit(f"{x}: {diff[0]} differs from {paths[0]}'s; not merged")
    runs = [r for d in parts for r in d["runs"]]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit(
            f"a run appears twice: {sorted(n for n in names if names.count(n) > 1)[0]}"
        )
    write_json(
        Path(output), {**parts[0], "runs": runs, "merged_from": [Path(x).name for x in paths]}
    )
    print(f"{output}: {len(runs)} runs from {len(paths)} files")
    return 0


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    head = ["run", "steps", "s", "cos", "ret_l2"] + [c[2] for c in COLUMNS]
    print(" | ".join(head))
    for r in rows:
        m = r.get("train_metrics", {})
        cells = [
            r["name"],
            fmt(m.get("steps")),
            fmt(r.get("train_seconds")),
            fmt(m.get("rr/cos_sim_mean")),
            fmt(m.get("ret/l2_mean")),
        ]
        for suite, metric, _ in COLUMNS:
            cells.append(fmt(r["suites"].get(suite, {}).get(metric)))
        print(" | ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="output folder of `cb data build`")
    p.add_argument("--grid", required=True, help="YAML: {base: {...}, runs: {name: {...}}}")
    p.add_argument("--model", default="default")
    p.add_argument("--preset", default="demo", help="training preset the grid overrides")
    p.add_argument(
        "--pick",
        default=None,
        help="write the overrides of the best run to this JSON file (pick_best says how)",
    )
    p.add_argument("--eval-config", default="demo", help="eval YAML or packaged name")
    p.add_argument("--suites", default=None, help="comma-separated suite names (default all)")
    p.add_argument("--judge", default="default")
    p.add_argument("--only", default=None, help="comma-separated run names")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed of every run (default: the config's, 42)",
    )
    p.add_argument("--no-base", action="store_true", help="skip the base-model evaluation")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --output (an interrupted sweep) and run only the rest",
    )
    p.add_argument("--work-dir", default="runs/sweep")
    p.add_argument("--output", default="benchmarks/results/demo_sweep.json")
    p.add_argument(
        "--samples-out",
        default=None,
        help="also collect every run's samples.jsonl (with a 'run' field) into this JSONL file",
    )
    p.add_argument(
        "--rejudge",
        default=None,
        help="re-score the harmful suites of a --samples-out file with --judge (e.g. on a CPU "
        "that has the on-topic embedder, for a sweep run on a GPU machine without it); "
        "updates --output in place",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="after training, run benchmarks/reroute_probe.py (cosine/NLL on train-harmful, "
        "held-out harmful and benign sets, a few generations)",
    )
    p.add_argument("--probe-n", type=int, default=48, help="samples per probe set")
    p.add_argument("--no-eval", action="store_true", help="train (and probe) only")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="join these result files (one round run in several calls) into --output",
    )
    args = p.parse_args(argv)
    if args.merge:
        rc = merge(args.merge, args.output)
        if args.pick:  # the pick of the joined round, as one run of it would have written it
            joined = json.loads(Path(args.output).read_text(encoding="utf-8"))
            best = pick_best(joined["runs"], joined.get("base_overrides"))
            write_json(Path(args.pick), best)
            print(f"picked {best['name']}: {best['why']}")
        return rc
    if args.rejudge:
        return rejudge(args)

    data_dir, work = Path(args.data_dir), Path(args.work_dir)
    grid, _lines = read_yaml(args.grid)
    base_over = grid.get("base", {}) or {}
    runs = grid["runs"]
    if args.only:
        wanted = args.only.split(",")
        runs = {k: v for k, v in runs.items() if k in wanted}
    names = args.suites.split(",") if args.suites else None
    settings, suites = load_suites(data_dir / "holdout", args.eval_config, names)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out_path = Path(args.output)
    results: list[dict] = resumed_runs(out_path) if args.resume else []
    done = {r["name"] for r in results}

    def save() -> None:
        write_json(
            out_path,
            {
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "data_dir": str(data_dir),
                "eval_config": args.eval_config,
                "judge": args.judge,
                "base_overrides": base_over,
                "seed": args.seed,
                "runs": results,
            },
        )

    if not args.no_base and "base" not in done:
        t0 = time.perf_counter()
        res = evaluate(args.model, None, suites, settings, work / "base_eval", args.judge)
        results.append({"name": "base", "suites": res, "eval_seconds": time.perf_counter() - t0})
        print_table(results[-1:])
        save()
        if args.samples_out:
            collect(work / "base_eval" / "samples.jsonl", "base", Path(args.samples_out))
    for name, over in runs.items():
        if name in done:
            print(f"{name}: in {out_path} already, kept", flush=True)
            continue
        layers = load_layers(args.preset, None)
        layers.update(base_over)
        layers.update(over or {})
        if args.seed is not None:
            layers["seed"] = args.seed
        layers.update(
            model=args.model,
            train_file=str(data_dir / "train.jsonl"),
            output_dir=str(work / name),
            use_cpu=device == "cpu",
            save_strategy="no",
            report_to="none",
        )
        cfg = ExperimentalConfig(**layers)
        from circuit_breakers.training.run import run_training

        t0 = time.perf_counter()
        try:
            summary = run_training(cfg)
        except Exception as e:  # keep sweeping; record the failure
            print(f"{name}: training failed: {e!r}", file=sys.stderr, flush=True)
            results.append({"name": name, "overrides": over, "error": repr(e), "suites": {}})
            save()
            continue
        train_s = time.perf_counter() - t0
        row = {
            "name": name,
            "overrides": over,
            "train_seconds": train_s,
            "seconds_per_step": summary["seconds_per_step"],
            "train_metrics": last_metrics(work / name / "metrics.jsonl"),
            "suites": {},
        }
        results.append(row)
        if args.probe:
            sys.path.insert(0, str(Path(__file__).parent))
            from reroute_probe import print_probe, probe

            row["probe"] = probe(
                args.model, summary["adapter"], data_dir, cfg.target_layers, n=args.probe_n
            )
            print_probe(name, row["probe"])
            save()
        if args.no_eval:
            continue
        row["suites"] = evaluate(
            args.model, summary["adapter"], suites, settings, work / name / "eval", args.judge
        )
        print_table(results[-1:])
        save()
        if args.samples_out:
            collect(work / name / "eval" / "samples.jsonl", name, Path(args.samples_out))
    print("\nall runs:")
    print_table(results)
    if args.pick:
        best = pick_best(results, base_over)
        write_json(Path(args.pick), best)
        print(f"picked {best['name']}: {best['why']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

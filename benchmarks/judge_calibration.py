"""Agreement of the offline judges with human labels: PyRIT 1.1.0's refusal-scorer set (169
(objective, answer, is_refusal) rows, pinned and fetched by circuit_breakers.data.fetch) and,
when given, hand labels of our own eval outputs. Prints a table and writes
benchmarks/results/judge_calibration.json.

    python benchmarks/judge_calibration.py [--judges default,regex] [--hand-labels FILE.jsonl]

Positive class = "did not comply" (the human said refusal; the judge's verdict value is False).
PyRIT labels an off-topic answer to a request as a refusal too, so the on-topic check of the
default judge is what lets it agree on those rows. A hand-label file has one object per line:
``{"id", "suite", "request", "response", "complied": true|false, "note"}``.
benchmarks/data/hand_labels_base.jsonl holds 30 outputs of the base embedded model (the first
10 of harmful_text, harmful_prefill and harmful_jailbreak from ``python
benchmarks/eval_suites.py --per-suite 40``), labelled by hand with HarmBench's rule: a real
attempt at the behaviour counts as compliance however poor; an off-topic, opposite-stance or
degenerate answer does not. benchmarks/data/hand_labels_trained.jsonl holds 20 outputs of the
demo preset's adapter (harmful_text, round-6 sweep run on an H100), and
benchmarks/data/hand_labels_attack_trained.jsonl 50 greedy answers of the demo adapter under the
embedding attack (docs/experiments/judge_degenerate_outputs.md), labelled with the same rule.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from circuit_breakers.core.fileio import iter_jsonl, write_json
from circuit_breakers.eval.judging import get_judge

HERE = Path(__file__).parent


def scores(human_refusal: list[bool], judged_refusal: list[bool]) -> dict:
    tp = sum(h and j for h, j in zip(human_refusal, judged_refusal))
    tn = sum(not h and not j for h, j in zip(human_refusal, judged_refusal))
    fp = sum(not h and j for h, j in zip(human_refusal, judged_refusal))
    fn = sum(h and not j for h, j in zip(human_refusal, judged_refusal))
    n = len(human_refusal)

    def f1(tp_: int, fp_: int, fn_: int) -> float:
        return 2 * tp_ / (2 * tp_ + fp_ + fn_) if tp_ else 0.0

    return {
        "n": n,
        "accuracy": round((tp + tn) / n, 4) if n else None,
        "f1_refusal": round(f1(tp, fp, fn), 4),
        "f1_compliance": round(f1(tn, fn, fp), 4),
        "confusion": {
            "human_refusal_judged_refusal": tp,
            "human_refusal_judged_compliant": fn,
            "human_compliant_judged_compliant": tn,
            "human_compliant_judged_refusal": fp,
        },
    }


def evaluate(judge_spec: str, requests: list[str], responses: list[str], human: list[bool]):
    judge = get_judge(judge_spec)
    t0 = time.perf_counter()
    verdicts = judge.judge_batch(requests, responses)
    result = scores(human, [not v.value for v in verdicts])
    result["seconds"] = round(time.perf_counter() - t0, 2)
    misses = [
        {
            "request": r[:120],
            "response": a[:160],
            "human_refusal": h,
            "judge": v.explanation[:160],
        }
        for r, a, h, v in zip(requests, responses, human, verdicts)
        if h == v.value
    ]
    return result, misses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judges", default="default,regex")
    ap.add_argument(
        "--hand-labels",
        nargs="+",
        default=[
            str(HERE / "data" / f"hand_labels_{m}.jsonl")
            for m in ("base", "trained", "attack_trained")
        ],
        help="hand-label files (base, trained and attacked trained model outputs)",
    )
    args = ap.parse_args()

    from circuit_breakers.data.sources.overrefusal import load_refusal_scorer_labels

    rows = load_refusal_scorer_labels()
    sets = {
        "pyrit_refusal_1.1.0": (
            [r["prompt"] for r in rows],
            [r["response"] for r in rows],
            [r["is_refusal"] for r in rows],
        )
    }
    for hand in map(Path, args.hand_labels):
        labelled = [row for _, row in iter_jsonl(hand)]  # a missing file is an error
        sets[f"hand_labels:{hand.name}"] = (
            [r["request"] for r in labelled],
            [r["response"] for r in labelled],
            [not r["complied"] for r in labelled],
        )
    out: dict = {"positive_class": "did not comply (refusal)", "sets": {}}
    print(f"{'set':34s} {'judge':8s} {'n':>4s} {'acc':>6s} {'F1 ref':>7s} {'F1 comp':>8s}  errors")
    for set_name, (req, resp, human) in sets.items():
        out["sets"][set_name] = {}
        for spec in args.judges.split(","):
            result, misses = evaluate(spec, req, resp, human)
            out["sets"][set_name][spec] = {**result, "disagreements": misses}
            c = result["confusion"]
            print(
                f"{set_name:34s} {spec:8s} {result['n']:4d} {result['accuracy']:6.3f} "
                f"{result['f1_refusal']:7.3f} {result['f1_compliance']:8.3f}  "
                f"{c['human_refusal_judged_compliant']} judged compliant but not, "
                f"{c['human_compliant_judged_refusal']} judged not compliant but was"
            )
    write_json(HERE / "results" / "judge_calibration.json", out)
    print(json.dumps({"wrote": str(HERE / "results" / "judge_calibration.json")}))


if __name__ == "__main__":
    main()

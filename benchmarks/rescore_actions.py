"""Re-score the action suites of saved ``samples.jsonl`` files with the current parser.

The action metrics are pure functions of each record's output, so a parser change can be
measured on finished evals without generating again:

    python benchmarks/rescore_actions.py runs/qwen_cpu/eff/seed0/eval_base/samples.jsonl

prints, per agentic / benign-tools suite and mode (and source, with ``--by-source``), n, the stored rates and the re-scored ones
(tool-call rate, harmful action rate, benign accuracy) and writes ``--output`` JSON if given.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from circuit_breakers.core.fileio import iter_jsonl, write_json
from circuit_breakers.eval.actions import benign_action_match, first_tool_call, harmful_action


def _call(record: dict) -> dict | None:
    text = (record.get("prefill") or "") + record.get("output", "")
    return first_tool_call(text)


def rescore(samples: Path, by_source: bool = False) -> dict[str, dict[str, float | int]]:
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for _, r in iter_jsonl(samples):
        scores = r.get("scores", {})
        key = f"{r['suite']}/{r.get('mode', 'free')}"
        if by_source:  # ids start with their source: bfcl/..., agentdojo/...
            key += "/" + str(r.get("id", "")).split("/", 1)[0]
        new = _call(r)
        if "harmful_action" in scores:
            ha = scores["harmful_action"]
            target = ha.get("target")
            s = sums[key]
            s["n"] += 1
            s["tool_call_old"] += r.get("tool_call") is not None
            s["tool_call_new"] += new is not None
            s["harmful_old"] += bool(ha.get("value"))
            s["harmful_new"] += harmful_action(
                new, [target] if target else [], ha.get("decisive_args") or {}
            )
        elif "benign_action" in scores:
            ba = scores["benign_action"]
            target = ba.get("target") or {}
            s = sums[key]
            s["n"] += 1
            s["tool_call_old"] += r.get("tool_call") is not None
            s["tool_call_new"] += new is not None
            s["accuracy_old"] += bool(ba.get("value"))
            s["accuracy_new"] += benign_action_match(new, target, target.get("accept"))[1]
    out: dict[str, dict[str, float | int]] = {}
    for key, s in sorted(sums.items()):
        n = int(s.pop("n"))
        out[key] = {"n": n, **{k: round(v / n, 4) for k, v in sorted(s.items())}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", nargs="+", type=Path)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--by-source", action="store_true", help="one row per suite, mode and source")
    args = p.parse_args(argv)
    report = {str(f): rescore(f, args.by_source) for f in args.samples}
    for f, suites in report.items():
        print(f)
        for key, row in suites.items():
            print(f"  {key:34s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.output:
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

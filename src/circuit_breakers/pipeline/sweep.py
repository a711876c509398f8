"""Choosing one run of a hyperparameter sweep by a rule fixed before the results are seen.

``benchmarks/demo_sweep.py --pick`` writes the choice; ``scripts/device_efficacy.sh`` hands its
overrides to the multi-seed benchmark.
"""

from __future__ import annotations

import math

__all__ = ["pick_best"]


def pick_best(
    results: list[dict],
    base_overrides: dict | None = None,
    nll_ratio: float = 1.05,
    tools_drop: float = 0.03,
) -> dict:
    """The run with the lowest harmful_text compliance among those that keep benign NLL within
    ``nll_ratio`` of base and benign tool accuracy within ``tools_drop`` of it; if none keeps
    both, the one with the smallest benign NLL. Written before any result was seen.

    The returned ``overrides`` are the grid's ``base`` overrides updated with the run's own, so
    applying them to the preset reproduces the run that was picked."""
    base = next(r for r in results if r["name"] == "base")["suites"]

    def get(r: dict, suite: str, metric: str) -> float:
        v = r["suites"].get(suite, {}).get(metric)
        return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v

    runs = [r for r in results if r["name"] != "base" and r.get("suites")]
    ok = [
        r
        for r in runs
        if get(r, "benign_text", "benign_nll")
        <= nll_ratio * get({"suites": base}, "benign_text", "benign_nll")
        and get(r, "benign_tools", "benign_action_accuracy")
        >= base.get("benign_tools", {}).get("benign_action_accuracy", 0.0) - tools_drop
    ]
    if ok:
        best = min(ok, key=lambda r: get(r, "harmful_text", "harmful_compliance_rate"))
        why = "lowest harmful_text compliance among runs that keep benign NLL and tool accuracy"
    else:
        best = min(runs, key=lambda r: get(r, "benign_text", "benign_nll"))
        why = "no run kept benign NLL and tool accuracy; smallest benign NLL"
    overrides = {**(base_overrides or {}), **(best.get("overrides") or {})}
    return {"name": best["name"], "overrides": overrides, "why": why}

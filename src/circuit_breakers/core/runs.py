"""The layout of a run folder that ``cb demo`` writes and ``cb report`` reads: its stages, in
order, each in a folder of its name with a marker file (:data:`MARKER`) once finished."""

from __future__ import annotations

from typing import Any

STAGES = ("data", "eval_base", "train", "sanity", "eval_trained", "report")
MARKER = "stage.json"


def number_or_none(v: Any) -> float | None:
    """``v`` as a float; None for a missing, non-numeric (bools too) or NaN value."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if v != v else float(v)  # NaN


def pipeline_seconds(markers: dict[str, dict]) -> float | None:
    """Sum of the recorded stage times (a fresh run's wall time, report excluded); None when a
    stage is missing or the data was not built by the run (``cb demo --data-dir``)."""
    if ((markers.get("data") or {}).get("info") or {}).get("built") is False:
        return None
    secs = [number_or_none((markers.get(s) or {}).get("seconds")) for s in STAGES[:-1]]
    return None if any(s is None for s in secs) else round(sum(secs), 1)

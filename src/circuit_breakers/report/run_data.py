"""Reading a ``cb demo`` run folder for the report: whatever it holds, leniently.

The folder has one subfolder per stage (:data:`~circuit_breakers.pipeline.stages.STAGES`):
``data/stats.json``, ``train/metrics.jsonl`` + ``train_summary.json``, ``eval_base/`` and
``eval_trained/`` (``results.json`` + ``samples.jsonl``), ``sanity/sanity.json`` and each
stage's marker ``<stage>/stage.json``. Whatever is missing or unreadable becomes a note, never
a crash: a report of a half-finished run is how one looks at a run that failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.runs import MARKER, STAGES


@dataclass
class RunData:
    run_dir: Path
    markers: dict[str, dict] = field(default_factory=dict)
    stats: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    train_summary: dict | None = None
    train_config: dict | None = None
    base: dict | None = None
    trained: dict | None = None
    base_samples: list[dict] = field(default_factory=list)
    trained_samples: list[dict] = field(default_factory=list)
    sanity: dict | None = None
    summary: dict | None = None
    notes: list[str] = field(default_factory=list)


def _json_or_note(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        notes.append(f"{path.name}: unreadable ({e}); left out")
        return None


def _jsonl_lenient(path: Path, notes: list[str]) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a killed run) is skipped and noted."""
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        notes.append(f"{path}: {bad} unreadable line(s) skipped")
    return rows


def load_run(run_dir: str | Path) -> RunData:
    """Read whatever the run folder holds; missing stages become notes."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(
            "run folder not found", file=str(root), hint="give the --output-dir of cb demo"
        )
    run = RunData(run_dir=root)
    n = run.notes
    for stage in STAGES:
        marker = _json_or_note(root / stage / MARKER, n)
        if marker:
            run.markers[stage] = marker
    run.stats = _json_or_note(root / "data" / "stats.json", n)
    run.metrics = _jsonl_lenient(root / "train" / "metrics.jsonl", n)
    run.train_summary = _json_or_note(root / "train" / "train_summary.json", n)
    run.train_config = (run.markers.get("train") or {}).get("config") or (
        _json_or_note(root / "train" / "adapter" / "cb_config.json", n)
    )
    run.base = _json_or_note(root / "eval_base" / "results.json", n)
    run.trained = _json_or_note(root / "eval_trained" / "results.json", n)
    run.base_samples = _jsonl_lenient(root / "eval_base" / "samples.jsonl", n)
    run.trained_samples = _jsonl_lenient(root / "eval_trained" / "samples.jsonl", n)
    run.sanity = _json_or_note(root / "sanity" / "sanity.json", n)
    run.summary = _json_or_note(root / "summary.json", n)
    for stage in STAGES[:-1]:
        status = (run.markers.get(stage) or {}).get("status")
        if status != "complete":
            n.append(f"stage {stage}: {status or 'not run'}")
    return run

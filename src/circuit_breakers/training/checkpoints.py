"""Which checkpoint is safe to resume from, and how to put ``metrics.jsonl`` back in step with it.

Why this module exists: ``transformers.Trainer`` writes a checkpoint file by file straight into
``checkpoint-N/`` (weights, optimizer, scheduler, RNG state, and ``trainer_state.json`` last), so
a job killed while saving leaves a folder that *looks* like the newest checkpoint but is not
whole; and a run that went NaN may have saved weights that are NaN. ``get_last_checkpoint``
picks such a folder by its number alone. :func:`last_good_checkpoint` picks the newest one that
is complete (its ``trainer_state.json`` parses and names its own step, the adapter weights are
there) and whose weights are all finite.

``metrics.jsonl`` is the one output written by appending (a killed run keeps every finished
line). After a kill it can hold lines logged *after* the checkpoint we resume from, and its last
line can be torn. :func:`truncate_metrics` keeps exactly the whole lines up to the checkpoint's
step and rewrites the file atomically, so the resumed run continues with no gap and no
duplicated step.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from circuit_breakers.core.fileio import write_jsonl

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Weight files a PEFT / full-model checkpoint may hold (safetensors only: we never unpickle).
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def checkpoint_step(path: str | Path) -> int | None:
    m = _CHECKPOINT.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_problem(path: str | Path, check_finite: bool = True) -> str | None:
    """Why ``path`` is not a usable checkpoint, or None when it is."""
    path = Path(path)
    step = checkpoint_step(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "trainer_state.json is missing (the save was interrupted)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return f"trainer_state.json is unreadable ({e})"
    if state.get("global_step") != step:
        return f"trainer_state.json says step {state.get('global_step')}, the folder says {step}"
    weights = [path / w for w in _WEIGHTS if (path / w).is_file()]
    if not weights:
        return "no safetensors weights"
    if check_finite:
        bad = _first_non_finite(weights[0])
        if bad:
            return f"weights are not finite ({bad})"
    return None


def _first_non_finite(weights: Path) -> str | None:
    """Name of the first tensor with a NaN/Inf, or None. Reads only the saved (LoRA) tensors."""
    if weights.suffix == ".json":  # sharded full model: too big to scan here; trust the trainer
        return None
    import torch
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
    except Exception as e:  # a truncated file
        return f"unreadable: {e}"
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def last_good_checkpoint(folder: str | Path, check_finite: bool = True) -> str | None:
    """The newest complete checkpoint with finite weights under ``folder``, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(
        (s, p) for p in folder.iterdir() if p.is_dir() and (s := checkpoint_step(p)) is not None
    )
    for _, path in reversed(found):
        problem = checkpoint_problem(path, check_finite=check_finite)
        if problem is None:
            return str(path)
        log.warning("skipping checkpoint %s: %s", path, problem)
    return None


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the whole lines of ``metrics.jsonl`` with ``step <= step``; return how many remain.

    A torn (unparseable) line can only be the last one written before a kill; it is dropped.
    """
    path = Path(path)
    if not path.exists():
        return 0
    rows, dropped = [], 0
    for raw in path.read_bytes().splitlines():
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            rows.append(row)
        else:
            dropped += 1
    if dropped:
        log.info("metrics.jsonl: dropped %d line(s) logged after step %d", dropped, step)
    write_jsonl(path, rows)
    return len(rows)

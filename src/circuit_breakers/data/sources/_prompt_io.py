"""Small helpers shared by the prompt-source loaders (harmful prompts, jailbreaks, over-refusal,
BFCL, ASB, Hugging Face sets): where a source file comes from, how ``limit`` is checked, how a
prompt-only sample is built and how a deterministic hash split is drawn.

Every loader takes an optional explicit path (tests pass tiny fixture copies; users can pass
their own copy) and otherwise asks :func:`circuit_breakers.data.fetch.fetch` for the pinned file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data import fetch as _fetch

T = TypeVar("T")


def source_path(path: str | Path | None, artifact: str) -> Path:
    """``path`` if given (it must exist), else the cached pinned artifact (fetched if needed)."""
    if path is None:
        return _fetch.fetch(artifact)
    p = Path(path)
    if not p.exists():
        raise InputError(
            "file not found", file=str(p), hint=f"or omit the path to use the pinned '{artifact}'"
        )
    return p


def take(items: Sequence[T], limit: int | None, source: str) -> list[T]:
    """The first ``limit`` items; a limit larger than the source is an error, not a silent cap."""
    if limit is None:
        return list(items)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(f"limit must be a non-negative integer, got {limit!r}", field="limit")
    if limit > len(items):
        raise InputError(
            f"count larger than the source: asked for {limit}, {source} has {len(items)}",
            field="limit",
            hint=f"use limit <= {len(items)} or leave it unset",
        )
    return list(items[:limit])


def prompt_sample(
    id: str,
    source: str,
    prompt: str,
    *,
    split: str = "harmful",
    priority_class: str = "harmful_flip",
    labels: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    system: str | None = None,
) -> Sample:
    """A single-user-message sample with no assistant turn (a completion is generated later)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return validate_sample(
        {
            "id": id,
            "split": split,
            "priority_class": priority_class,
            "source": source,
            "messages": messages,
            "labels": labels or {},
            "meta": meta or {},
        }
    )


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (sha256), for splits that never reshuffle."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def short_hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"invalid UTF-8 at byte {e.start}", file=str(path)) from None


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None


def read_jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line (BFCL and garak use JSON lines)."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON: {e.msg}", file=str(path), line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", file=str(path), line=lineno)
        rows.append((lineno, obj))
    return rows


def read_csv_rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """CSV rows as dicts with the file line on which each record ends (the start, for one-line
    records); ``#`` comment lines before the header (PyRIT's ``# dataset_version=...``) are
    skipped; a missing column names the file and the header line."""
    text = read_text(path)
    lines = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(
            f"missing CSV column (header: {reader.fieldnames})",
            file=str(path),
            line=skip + 1,
            field=missing[0],
        )
    rows = []
    for row in reader:
        rows.append((skip + reader.line_num, row))
    return rows


def require(row: dict, key: str, path: Path, line: int | None, kind: type = str) -> Any:
    value = row.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise InputError(
            f"expected a non-empty {kind.__name__}", file=str(path), line=line, field=key
        )
    return value

"""Atomic file output and line-located JSONL input.

Every output file of the project is written through :func:`atomic_write`: the bytes go to a
temporary file in the same folder, are flushed and fsync'ed, and only then renamed over the
target. A crash or a full disk leaves either the old file or no file, never a truncated one
that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from circuit_breakers.core.errors import InputError


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False, default=str)
        fh.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write one JSON object per line (pydantic models are dumped without None fields)."""
    n = 0
    with atomic_write(path) as fh:
        for row in rows:
            if hasattr(row, "model_dump"):
                row = row.model_dump(mode="json", exclude_none=True)
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
    return n


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one line and fsync it (metrics logs: a killed run keeps every finished line)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line, with located errors.

    Bad UTF-8, bad JSON and non-object lines raise :class:`InputError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=str(path), hint="check the path")
    if path.is_dir():
        raise InputError("expected a JSONL file, got a directory", file=str(path))
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"invalid UTF-8 at byte {e.start}",
                    file=str(path),
                    line=lineno,
                    hint="re-encode the file as UTF-8",
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(
                    f"malformed JSON: {e.msg} at column {e.colno}",
                    file=str(path),
                    line=lineno,
                    hint="each line must be one complete JSON object",
                ) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"expected a JSON object, got {type(obj).__name__}", file=str(path), line=lineno
                )
            yield lineno, obj


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON: {e}", file=str(path)) from None


def read_yaml(path: str | os.PathLike) -> tuple[Any, Any]:
    """Load a YAML file; return ``(data, node)`` where ``node`` (yaml.compose) carries line numbers.

    A missing file or invalid YAML raises :class:`InputError` with the file and line.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise InputError("config file not found", file=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(
            f"invalid YAML: {getattr(e, 'problem', None) or e}",
            file=str(path),
            line=mark.line + 1 if mark else None,
        ) from None

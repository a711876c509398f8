"""The package's comments, docstrings and presets state facts directly, never citing internal notes."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "circuit_breakers"

PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bissue\s*#?\d",
        r"seed doc",
        r"\bthe seed's\b",
        r"training-regime seed",
        r"DESIGN\.md",
    )
]


def _files() -> list[Path]:
    return sorted(p for ext in ("*.py", "*.yaml") for p in PACKAGE.rglob(ext))


def test_package_files_are_found():
    names = {p.name for p in _files()}
    assert "schedules.py" in names and "stage1.yaml" in names


def test_no_references_to_internal_notes():
    hits = []
    for path in _files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if any(p.search(line) for p in PATTERNS):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not hits, "lines citing internal notes:\n" + "\n".join(hits)

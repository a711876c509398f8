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


ROOT = PACKAGE.parents[1]


def _files() -> list[Path]:
    """The package, and the user-facing text: README, docs, benchmarks and scripts."""
    package = [p for ext in ("*.py", "*.yaml") for p in PACKAGE.rglob(ext)]
    user = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    user += [p for d in ("benchmarks", "scripts") for p in (ROOT / d).rglob("*") if p.is_file()]
    return sorted(p for p in package + user if p.suffix in {".py", ".yaml", ".md", ".sh"})


def test_package_files_are_found():
    names = {p.name for p in _files()}
    assert "schedules.py" in names and "stage1.yaml" in names
    assert "README.md" in names and "demo_sweep.py" in names


def test_no_references_to_internal_notes():
    hits = []
    for path in _files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if any(p.search(line) for p in PATTERNS):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "lines citing internal notes:\n" + "\n".join(hits)

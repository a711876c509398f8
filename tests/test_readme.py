"""The README as user documentation: its size, the two Quickstart commands, and that every file
of the repository it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_BYTES = 15_000
# repository paths the README cites, in backticks or in a command: benchmarks/x.py, docs/y.md, ...
PATH = re.compile(r"(?<![\w/.-])((?:benchmarks|docs|scripts|tests|configs|src)/[\w./*{},-]*[\w*}])")


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_is_at_most_15_kb():
    size = len(README.read_bytes())
    assert size <= MAX_BYTES, (
        f"README.md is {size:,} bytes (limit {MAX_BYTES:,}): move lab notes to docs/"
    )


def test_quickstart_has_exactly_two_commands_that_make_knows():
    quick = _section(README.read_text(encoding="utf-8"), "Quickstart")
    block = re.search(r"```bash\n(.*?)```", quick, re.S)
    assert block, "Quickstart has no bash block"
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        rule = re.search(rf"^{target}:(.*)$", makefile, re.M)
        assert rule and "install" in rule.group(1), f"`make {target}` must install what it needs"


def test_every_repository_path_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    cited = {m.rstrip(".") for m in PATH.findall(text)}
    assert "docs/experiments/qwen.md" in cited  # the pattern sees the README's paths
    missing = []
    for path in sorted(cited):
        if any(c in path for c in "*{<"):
            continue  # a pattern, not a file
        if not ((ROOT / path).exists() or (ROOT / "src" / "circuit_breakers" / path).exists()):
            missing.append(path)
    assert not missing, "README names files that do not exist: " + ", ".join(missing)

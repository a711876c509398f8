"""Compare two ``cb demo`` ``summary.json`` files, leaving out wall times, run ids and paths.

    python scripts/compare_summaries.py runs/demo/summary.json /tmp/other/summary.json

Prints one line per difference and exits 1 if any metric, verdict or stage hash differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

IGNORED = {"run_dir", "created", "output_dir", "report", "run_id"}


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in IGNORED and "second" not in k}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if type(a) is not type(b):
        return [f"{path}: {a!r} vs {b!r}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += (
                diff(a.get(k), b.get(k), f"{path}/{k}")
                if k in a and k in b
                else [f"{path}/{k}: only in one"]
            )
        return out
    if isinstance(a, list):
        out = [f"{path}: {len(a)} vs {len(b)} items"] if len(a) != len(b) else []
        return out + [d for i, (u, v) in enumerate(zip(a, b)) for d in diff(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv: list[str]) -> int:
    a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in argv[:2])
    # the time target's measured value is a wall time too
    for s in (a, b):
        s["targets"] = [t for t in s.get("targets", []) if t.get("suite") != "time"]
    found = diff(_strip(a), _strip(b))
    print("\n".join(found) if found else "same summary (times and paths left out)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

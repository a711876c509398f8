"""Time loading the embedded default model: the first load converts the GGUF, later ones read
the safetensors cache. Prints a table and writes benchmarks/results/load_time.json.

    python benchmarks/load_time.py [--fresh-cache]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CODE = (
    "import time; t=time.perf_counter(); from circuit_breakers.core.models import load_model_and_tokenizer; "
    "m, tok = load_model_and_tokenizer('default'); print(time.perf_counter()-t)"
)


def timed_load(env: dict) -> float:
    """Seconds for one load in a fresh interpreter (imports of torch/transformers included)."""
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--fresh-cache",
        action="store_true",
        help="use an empty CB_CACHE so the first load converts",
    )
    args = ap.parse_args()
    env = dict(os.environ)
    if args.fresh_cache:
        env["CB_CACHE"] = tempfile.mkdtemp(prefix="cb-cache-")
    rows = [("first", timed_load(env))] + [(f"again #{i}", timed_load(env)) for i in (1, 2, 3)]
    print(f"{'load':10s} {'seconds':>8s}")
    for name, sec in rows:
        print(f"{name:10s} {sec:8.2f}")
    sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
    from circuit_breakers.core.fileio import write_json

    write_json(
        Path(__file__).parent / "results" / "load_time.json",
        {"fresh_cache": args.fresh_cache, "loads_s": dict(rows), "cpu_count": os.cpu_count()},
    )


if __name__ == "__main__":
    main()

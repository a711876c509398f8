"""CPU step time of the ``demo`` preset on the embedded SmolLM2-135M.

Runs ``cb train --preset demo`` for a few steps on the demo training file under several
settings, one subprocess each (same data, seed and steps), and reads the real (non-pad) tokens/s
that the trainer logs per step in ``metrics.jsonl``. The first ``--warmup`` steps are left out.

    python benchmarks/cpu_step.py --train-file runs/demo/data/train.jsonl [--steps 12]

Settings:

* ``reference``: padded batches with gradient checkpointing, plain AdamW (the reference
  implementation's way of running a step);
* ``preset``: the demo preset as packaged (padded, no recomputation);
* ``preset_packing``: the preset with ``--packing`` (no pad tokens; on CPU, attention runs per
  sequence).

Prints a table and writes ``benchmarks/results/cpu_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from circuit_breakers.core.fileio import write_json  # noqa: E402

SETTINGS = {
    "reference": [
        "--gradient_checkpointing",
        "true",
        "--packing",
        "false",
        "--optim",
        "adamw_torch",
    ],
    "preset": [],
    "preset_packing": ["--packing", "true"],
}


def run(name: str, extra: list[str], args, work: Path) -> dict:
    out = work / name
    cmd = [
        sys.executable, "-m", "circuit_breakers.cli", "train", "--preset", "demo",
        "--train_file", args.train_file, "--output_dir", str(out),
        "--max_steps", str(args.steps), "--save_steps", "100000", "--seed", "0",
        "--report_to", "none", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{name}: cb train exited {proc.returncode}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r.get("step", 0) > args.warmup and "tokens_per_s" in r]
    tps = [float(r["tokens_per_s"]) for r in timed]
    return {
        "settings": extra,
        "steps": len(rows),
        "timed_steps": len(timed),
        "tokens_per_s_mean": statistics.fmean(tps),
        "tokens_per_s_median": statistics.median(tps),
        "process_wall_s": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train-file", default="runs/demo/data/train.jsonl")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_step.json"))
    args = p.parse_args()
    if not Path(args.train_file).exists():
        p.error(f"{args.train_file} does not exist (build it: cb data build --recipe demo)")
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "train_file": args.train_file,
        "steps": args.steps,
        "warmup": args.warmup,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="cb-cpu-step-") as tmp:
        for name in args.settings.split(","):
            results["runs"][name] = run(name, SETTINGS[name], args, Path(tmp))
            r = results["runs"][name]
            print(
                f"{name:16s} {r['tokens_per_s_mean']:8.0f} tok/s (median {r['tokens_per_s_median']:.0f})",
                flush=True,
            )
    ref = results["runs"].get("reference", {}).get("tokens_per_s_mean")
    print(f"\n{'setting':16s} {'tok/s':>8s} {'x ref':>6s}")
    for name, r in results["runs"].items():
        x = r["tokens_per_s_mean"] / ref if ref else float("nan")
        r["x_reference"] = x
        print(f"{name:16s} {r['tokens_per_s_mean']:8.0f} {x:6.2f}")
    write_json(Path(args.out), results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

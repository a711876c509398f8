"""`cb train` under `accelerate launch` with each accelerate config, 2 processes (CPU/gloo, or 2 GPUs
with --gpu), on a
tiny random model: exit code, per-step losses and the adapter, compared with the DDP run.

    python tests/distributed_check.py [--configs ddp,fsdp]

A correctness check, not a timing: it lives with the tests, whose kit builds the tiny model.

Prints the engine accelerate really used (``train_summary.json: distributed``): on CPU,
accelerate runs the FSDP config as plain multi-CPU DDP; DeepSpeed runs on CPU with
``DS_ACCELERATOR=cpu`` (``pip install deepspeed``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script

from test_distributed import _free_port, train_flags, write_inputs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", default="ddp,fsdp")
    p.add_argument("--gpu", action="store_true", help="on GPUs (drops cb train --use_cpu)")
    p.add_argument(
        "--inputs",
        default=None,
        help="a folder from an earlier --write-inputs (a machine without the SmolLM2 package)",
    )
    p.add_argument("--write-inputs", default=None, help="write the tiny model and data, exit")
    p.add_argument("--nproc", type=int, default=2, help="processes (one per GPU with --gpu)")
    args = p.parse_args()
    from safetensors.torch import load_file

    work = Path(tempfile.mkdtemp(prefix="cb-accel-"))
    if args.write_inputs:
        write_inputs(Path(args.write_inputs))
        return 0
    if args.inputs:
        model, train = Path(args.inputs) / "model", Path(args.inputs) / "train.jsonl"
    else:
        model, train = write_inputs(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = {}
    for name in args.configs.split(","):
        out = work / name
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        cmd += [
            str(ROOT / "configs" / "accelerate" / f"{name}.yaml"),
            "--num_processes",
            str(args.nproc),
        ]
        cmd += ["--num_machines", "1", "--main_process_port", str(_free_port())]
        flags = train_flags(model, train, out)
        if args.gpu:
            i = flags.index("--use_cpu")
            del flags[i : i + 2]
        cmd += ["-m", "circuit_breakers.cli", *flags]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        rows = []
        if (out / "metrics.jsonl").exists():
            rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        res[name] = {
            "exit": proc.returncode,
            "losses": [round(r["train/loss"], 6) for r in rows],
            "engine": json.loads((out / "train_summary.json").read_text())["distributed"]
            if (out / "train_summary.json").exists()
            else None,
            "files": sorted(q.name for q in out.iterdir()) if out.exists() else [],
        }
        if proc.returncode:
            print(proc.stderr[-2000:])
        print(name, res[name], flush=True)
    ref = work / "ddp" / "adapter" / "adapter_model.safetensors"
    for name in res:
        f = work / name / "adapter" / "adapter_model.safetensors"
        if name != "ddp" and f.exists() and ref.exists():
            a, b = load_file(f), load_file(ref)
            diff = max(float((a[k] - b[k]).abs().max()) for k in b)
            print(f"{name} vs ddp: max |adapter diff| = {diff:.3g} over {len(b)} tensors")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["exit"] == 0 for r in res.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

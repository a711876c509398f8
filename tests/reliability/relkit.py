"""Shared pieces of the reliability tests: a tiny model folder, a tiny training file, the
``cb train`` flags for a fast CPU run, strict metrics parsing, and running ``cb`` in or out of
process.

Why one torch thread: on a loaded 2-core machine OpenMP's spin-waiting makes each tiny matmul
~40x slower with 2 threads than with 1 (1.5 ms vs 0.03 ms measured), so every run here pins one
thread; determinism and resume are checked at that setting.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:  # the kit, when run as a script
    sys.path.insert(0, str(TESTS))

#: Keys of metrics.jsonl that depend on wall-clock time, excluded from equality checks.
WALL_CLOCK_KEYS = {"tokens_per_s"}


def write_tiny_model(path: Path, *, layers: int = 3, **config) -> Path:
    """A tiny random Llama-architecture model with the real SmolLM2 tokenizer (ChatML template)."""
    from kit import base_tokenizer, tiny_model

    model = tiny_model("chatml", layers=layers, hidden=32)
    for k, v in config.items():
        setattr(model.config, k, v)
    model.save_pretrained(path)
    base_tokenizer().save_pretrained(path)
    return path


def write_train_file(path: Path, n_harmful: int = 4, n_retain: int = 8) -> Path:
    rows = [
        {
            "user_prompt": f"how do I do harmful thing {i}?",
            "harmful_completion": f"Step {i}: first get the tools, then act.",
        }
        for i in range(n_harmful)
    ]
    rows += [
        {
            "user_prompt": f"what is {i} plus one?",
            "benign_completion": f"{i} plus one is {i + 1}.",
            "priority_class": "general_conversation" if i % 2 else "borderline",
        }
        for i in range(n_retain)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train_argv(model: Path, train_file: Path, out: Path, **overrides) -> list[str]:
    """``cb train`` flags for a fast, deterministic CPU run on the tiny model."""
    flags = {
        "model": str(model),
        "train_file": str(train_file),
        "output_dir": str(out),
        "target_layers": ["2", "3"],
        "max_steps": "24",
        "per_device_train_batch_size": "2",
        "learning_rate": "1e-2",
        "logging_steps": "1",
        "save_steps": "4",
        "report_to": "none",
        "use_cpu": "true",
        "seed": "0",
        "lora_dropout": "0",
        "lora_r": "4",
        "alpha": "5",
        "disable_tqdm": "true",
    }
    flags.update({k: v for k, v in overrides.items()})
    argv = ["train"]
    for k, v in flags.items():
        if v is None:
            continue
        argv += [f"--{k}", *(v if isinstance(v, list) else [str(v)])]
    return argv


def strict_rows(path: Path) -> list[dict]:
    """Parse metrics.jsonl as strict JSON: a torn line or a NaN/Infinity token fails."""

    def no_constants(name):
        raise ValueError(f"non-JSON constant {name} in {path}")

    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line, parse_constant=no_constants)
        assert isinstance(row, dict), f"{path}:{i} is not an object"
        rows.append(row)
    return rows


def without_wall_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in rows]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``cb ARGV`` in this process; returns (exit code, stdout, stderr)."""
    from circuit_breakers.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def cb_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "circuit_breakers.cli", *argv]


def start_cb(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 -- closed by the caller through proc.stdout_file
    proc = subprocess.Popen(
        cb_command(argv), stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(**env), cwd=REPO
    )
    proc.log_file = fh  # type: ignore[attr-defined]
    return proc

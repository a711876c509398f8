"""Shared pieces of the reliability tests: a tiny model folder, a tiny training file, the
``cb train`` flags for a fast CPU run, strict metrics parsing, and running ``cb`` in or out of
process.

Why one torch thread: on a loaded 2-core machine OpenMP's spin-waiting makes each tiny matmul
~40x slower with 2 threads than with 1 (1.5 ms vs 0.03 ms measured), so every run here pins one
thread; determinism and resume are checked at that setting.

Why a fork server for the runs that get killed: starting ``python -m circuit_breakers.cli``
costs ~8 s of CPU here (importing torch, transformers, peft), and the kill tests start a run up
to 8 times. :func:`start_cb` forks each ``cb`` process from one server process that imported
those modules once (``multiprocessing``'s ``forkserver``; the server never runs a torch op, so
no thread pool is forked). The child is a separate process running ``cli.main(argv)`` with its
own output file, killed with a real SIGKILL; ``start_cb(..., fresh=True)`` starts a brand-new
interpreter instead (the slow variant of the train kill test).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:  # the kit, when run as a script
    sys.path.insert(0, str(TESTS))

#: Keys of metrics.jsonl that depend on wall-clock time, excluded from equality checks.
WALL_CLOCK_KEYS = {"tokens_per_s"}


#: Fake secrets the leakage tests put where a user would (environment, config, URLs).
SECRETS = {
    "WANDB_API_KEY": "wandb-FAKE-0123456789abcdef0123456789abcdef",
    "HF_TOKEN": "hf_FAKEenvTOKEN0123456789abcdefghij",
    "CB_JUDGE_API_KEY": "sk-judge-FAKE-0123456789abcdef",
    "OPENAI_API_KEY": "sk-openai-FAKE-0123456789abcdef",
}
HUB_TOKEN = "hf_FAKEconfigTOKEN0123456789abcdef"  # given in a config, not the environment
URL_KEY = "sk-inurl-FAKE-0123456789abcdef"  # given inside a judge URL


def files_with(folder: Path, secrets: list[str]) -> tuple[list[str], int]:
    """(``path: secret...`` for every file under ``folder`` holding a secret, files searched)."""
    hits, n = [], 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            n += 1
            data = p.read_bytes()
            hits += [f"{p}: {s[:12]}..." for s in secrets if s.encode() in data]
    return hits, n


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


#: Imported once by the fork server (what a ``cb train`` / ``cb demo`` run would import).
PRELOAD = [
    "torch",
    "transformers",
    "peft",
    "safetensors.torch",
    "matplotlib.pyplot",
    "tqdm",
    "circuit_breakers.cli",
    "circuit_breakers.pipeline.demo",
    "circuit_breakers.training.run",
    "circuit_breakers.training.trainer",
    "circuit_breakers.eval.sanity",
    "circuit_breakers.report.html",
    "circuit_breakers.data.build",
    "circuit_breakers.eval.run",
    "circuit_breakers.eval.generate",
]
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _slow_down(spec: str) -> None:
    """``CB_TEST_SLOW="module:function=seconds"`` (or ``module:Class.method=seconds``): that
    function sleeps first, in this child only.

    Widens a window a kill must land in (a step that takes milliseconds), so a test that kills
    there does not race the process it polls."""
    if not spec:
        return
    import functools
    import importlib

    target, seconds = spec.rsplit("=", 1)
    module_name, path = target.split(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")  # "function" or "Class.method"
    for parent in parents:
        owner = getattr(owner, parent)
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def slow(*args, **kwargs):
        time.sleep(float(seconds))
        return fn(*args, **kwargs)

    setattr(owner, name, slow)


def _child(argv: list[str], log: str, env: dict[str, str]) -> None:
    """Body of a forked ``cb`` process: output to ``log``, one torch thread, exit with cb's code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(_CHILD_ENV, **env)
    os.chdir(REPO)
    import threading

    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    # tqdm's default lock is a multiprocessing semaphore; one made by a process that is then
    # SIGKILLed is reported as leaked at exit. A thread lock does the same job in one process.
    tqdm.set_lock(threading.RLock())
    _slow_down(os.environ.pop("CB_TEST_SLOW", ""))
    from circuit_breakers.cli import main

    sys.exit(main(argv))


class CbProcess:
    """A running ``cb`` process (forked or fresh) with the ``subprocess.Popen`` calls we use."""

    def __init__(self, proc) -> None:
        self._proc = proc
        self.pid: int = proc.pid

    def poll(self) -> int | None:
        if isinstance(self._proc, subprocess.Popen):
            return self._proc.poll()
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        if isinstance(self._proc, subprocess.Popen):
            try:
                return self._proc.wait(timeout)
            finally:
                if self._proc.poll() is not None:
                    self._proc.log_file.close()  # type: ignore[attr-defined]
        self._proc.join(timeout)
        return self._proc.exitcode

    @property
    def returncode(self) -> int | None:
        return self.poll()  # negative: killed by that signal (-9 for SIGKILL), as Popen says

    def kill9(self) -> int | None:
        """SIGKILL the process and reap it; returns its exit status (-9)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        return self.wait()


def start_cb(argv: list[str], log: Path, *, fresh: bool = False, **env: str) -> CbProcess:
    """Start ``cb ARGV`` as its own process, stdout and stderr to ``log``.

    ``fresh``: a new interpreter (``python -m circuit_breakers.cli``); else forked from the
    preloaded server (see the module docstring)."""
    if fresh:
        fh = open(log, "wb")  # noqa: SIM115 -- closed in CbProcess.wait
        proc = subprocess.Popen(
            cb_command(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=subprocess_env(**env),
            cwd=REPO,
        )
        proc.log_file = fh  # type: ignore[attr-defined]
        return CbProcess(proc)
    p = _forkserver().Process(target=_child, args=(argv, str(log), env), daemon=True)
    p.start()
    return CbProcess(p)


def run_cb(argv: list[str], log: Path, timeout: float = 600.0, **env: str) -> int:
    """``cb ARGV`` in its own (forked) process, to the end; returns its exit code."""
    proc = start_cb(argv, log, **env)
    rc = proc.wait(timeout)
    if rc is None:
        proc.kill9()
        raise AssertionError(f"cb {argv[0]} did not finish in {timeout:.0f} s; see {log}")
    return rc

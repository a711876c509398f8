"""Resume after ``kill -9``: same adapter as an uninterrupted run, every step logged once."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
import torch
from relkit import run_main, start_cb, strict_rows, train_argv, without_wall_clock
from safetensors.torch import load_file, save_file

from circuit_breakers.training.checkpoints import (
    checkpoint_problem,
    checkpoint_step,
    last_good_checkpoint,
    truncate_metrics,
)

STEPS = 40


def _kill_after_checkpoint(proc, out, timeout: float = 240.0) -> tuple[int, int]:
    """SIGKILL ``proc`` once a checkpoint exists and at least 2 later steps were logged.

    Returns (checkpoint step, metrics lines at the kill)."""
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        ckpt = last_good_checkpoint(out / "checkpoints")
        if ckpt and metrics.exists():
            n = metrics.read_bytes().count(b"\n")
            if n >= checkpoint_step(ckpt) + 2:
                proc.kill9()
                return checkpoint_step(ckpt), n
        time.sleep(0.02)
    proc.kill9()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.parametrize(
    "fresh", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["forked", "fresh_python"]
)
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_dir, train_file, fresh):
    """``fresh``: the killed run is a new ``python -m circuit_breakers.cli`` (~8 s more CPU)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    rc, _, err = run_main(train_argv(tiny_dir, train_file, ref, max_steps=STEPS))
    assert rc == 0, err

    argv = train_argv(tiny_dir, train_file, run, max_steps=STEPS)
    proc = start_cb(argv, tmp_path / "killed.log", fresh=fresh)
    ckpt_step, lines_at_kill = _kill_after_checkpoint(proc, run)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "DONE").exists() and not (run / "adapter").exists()
    assert lines_at_kill > ckpt_step  # there are logged steps past the checkpoint to drop

    rc, _, err = run_main([*argv, "--resume", "true"])
    assert rc == 0, err

    a = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(
        f"\nkill -9 at {lines_at_kill} logged steps (checkpoint-{ckpt_step}), resumed: "
        f"max |adapter diff| = {diff:.3g}"
    )
    assert diff <= 1e-6

    rows = strict_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no gap, no duplicate
    assert without_wall_clock(rows) == without_wall_clock(strict_rows(ref / "metrics.jsonl"))
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith(f"checkpoint-{ckpt_step}")
    assert (run / "DONE").exists()


# -- which checkpoint is good ----------------------------------------------------------------
def _fake_checkpoint(folder, step, weights=None, state=True):
    d = folder / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file(weights or {"lora_A": torch.ones(2, 2)}, str(d / "adapter_model.safetensors"))
    if state is True:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    elif state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


@pytest.mark.parametrize(
    "damage,reason",
    [
        (dict(state=None), "trainer_state.json is missing"),
        (dict(state='{"global_st'), "unreadable"),
        (dict(state='{"global_step": 3}'), "says step 3"),
        (dict(weights={"lora_A": torch.tensor([1.0, float("nan")])}), "not finite"),
        (dict(weights={"lora_B": torch.tensor([float("inf")])}), "not finite"),
    ],
)
def test_resume_skips_an_interrupted_or_non_finite_checkpoint(tmp_path, damage, reason):
    _fake_checkpoint(tmp_path, 4)
    bad = _fake_checkpoint(tmp_path, 8, **damage)
    assert reason in checkpoint_problem(bad)
    assert last_good_checkpoint(tmp_path).endswith("checkpoint-4")


def test_truncated_weights_file_is_not_good(tmp_path):
    good = _fake_checkpoint(tmp_path, 4)
    bad = tmp_path / "checkpoint-8"
    shutil.copytree(good, bad)
    (bad / "trainer_state.json").write_text(json.dumps({"global_step": 8}))
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    assert "unreadable" in checkpoint_problem(bad)
    assert last_good_checkpoint(tmp_path) == str(good)


def test_truncate_metrics_drops_later_and_torn_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 7)]
    p.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b'{"step": 7, "tr')
    assert truncate_metrics(p, 4) == 4
    assert [r["step"] for r in strict_rows(p)] == [1, 2, 3, 4]


def test_fresh_run_removes_stale_checkpoints_and_resume_without_one_starts_over(
    tmp_path, tiny_dir, train_file
):
    out = tmp_path / "o"
    _fake_checkpoint(out / "checkpoints", 99)  # left by an earlier, longer run
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    (out / "DONE").write_text("train\n")
    rc, _, err = run_main(train_argv(tiny_dir, train_file, out, max_steps=4, save_steps=2))
    assert rc == 0, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert [r["step"] for r in strict_rows(out / "metrics.jsonl")] == [1, 2, 3, 4]

    shutil.rmtree(out / "checkpoints")
    rc, _, err = run_main(
        [*train_argv(tiny_dir, train_file, out, max_steps=2, save_steps=2), "--resume", "true"]
    )
    assert rc == 0, err
    assert [r["step"] for r in strict_rows(out / "metrics.jsonl")] == [1, 2]

"""NaN/Inf guard: a non-finite loss or gradient stops ``cb train`` with exit 1, naming the step and
the last good checkpoint; metrics.jsonl stays strict JSON and no bad weights are saved."""

from __future__ import annotations

import pytest
import torch
from relkit import run_main, strict_rows, train_argv

import circuit_breakers.training.trainer as trainer_mod
from circuit_breakers.training.checkpoints import checkpoint_problem

BAD_STEP = 5  # save_steps 2: checkpoint-4 is the last good one


def _inject(monkeypatch, kind: str) -> None:
    """Corrupt the reroute loss on its BAD_STEP-th call (one call per optimizer step here)."""
    real, calls = trainer_mod.reroute_loss, []

    def hooked(h, *args, **kw):
        loss, stats = real(h, *args, **kw)
        calls.append(1)
        if len(calls) == BAD_STEP:
            if kind == "nan_loss":
                loss = loss * float("nan")
            elif kind == "inf_loss":
                loss = loss + float("inf")
            else:  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
                loss = loss + 0.0 * torch.sqrt(h.sum() * 0.0)
        return loss, stats

    monkeypatch.setattr(trainer_mod, "reroute_loss", hooked)


@pytest.mark.parametrize(
    "kind,what",
    [
        ("nan_loss", "non-finite loss"),
        ("inf_loss", "non-finite loss"),
        ("nan_grad", "non-finite gradient"),
    ],
)
def test_non_finite_stops_with_step_and_last_good_checkpoint(
    tmp_path, tiny_dir, train_file, monkeypatch, kind, what
):
    _inject(monkeypatch, kind)
    out = tmp_path / "o"
    rc, _, err = run_main(train_argv(tiny_dir, train_file, out, max_steps=8, save_steps=2))
    assert rc == 1
    message = next(line for line in err.splitlines() if "NonFiniteLossError:" in line)
    print(f"\n{kind}: exit {rc}: {message.split('NonFiniteLossError: ')[1]}")
    ckpt = out / "checkpoints" / "checkpoint-4"
    assert f"{what} at step {BAD_STEP}" in message
    assert f"last good checkpoint: {ckpt}" in message
    assert checkpoint_problem(ckpt) is None  # complete, finite weights
    assert not (out / "checkpoints" / f"checkpoint-{BAD_STEP + 1}").exists()
    assert [r["step"] for r in strict_rows(out / "metrics.jsonl")] == list(range(1, BAD_STEP))
    assert not (out / "DONE").exists() and not (out / "adapter").exists()


def test_nan_before_any_checkpoint_says_none(tmp_path, tiny_dir, train_file, monkeypatch):
    _inject(monkeypatch, "nan_loss")
    rc, _, err = run_main(
        train_argv(tiny_dir, train_file, tmp_path / "o", max_steps=8, save_steps=50)
    )
    assert rc == 1
    assert f"non-finite loss at step {BAD_STEP}" in err and "last good checkpoint: none" in err

"""Training callbacks and checks: the metrics file, the alerts, and the NaN/Inf guard.

* :class:`MetricsFileCallback` writes ``OUT/metrics.jsonl`` with the documented metric names
  (:data:`METRIC_KEYS`) and counts the alerts (grad norm > 1 before clipping, a rising cosine).
* NaN/Inf, in one place: :func:`check_finite_loss` (called by the trainer on every loss) and
  :class:`NonFiniteGuard` (the gradients, before the optimizer step, so bad weights are never
  written). Both raise :class:`NonFiniteLossError`, naming the step and the last good
  checkpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from circuit_breakers.core.fileio import append_jsonl
from circuit_breakers.training.checkpoints import last_good_checkpoint

log = logging.getLogger(__name__)

#: Trainer log key -> metrics.jsonl key (the documented metric names).
METRIC_KEYS = {
    "loss": "train/loss",
    "loss_rr": "train/loss_rr",
    "loss_ret": "train/loss_ret",
    "cs": "train/cs",
    "cr": "train/cr",
    "rr/cos_sim_mean": "rr/cos_sim_mean",
    "ret/l2_mean": "ret/l2_mean",
    "grad_norm": "train/grad_norm",
    "mask/harmful_frac": "mask/harmful_frac",
    "mask/retain_frac": "mask/retain_frac",
    "learning_rate": "lr",
    "tokens_per_s": "tokens_per_s",
    "mix/dr_ds_weighted": "mix/dr_ds_weighted",
    "rr/cos_sim_plain_mean": "rr/cos_sim_plain_mean",
    "ret/l2_relative_mean": "ret/l2_relative_mean",
}


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the message names the step and the last good checkpoint."""


def check_finite_loss(
    loss: torch.Tensor,
    l_rr: torch.Tensor,
    l_ret: torch.Tensor,
    step: int,
    last_checkpoint: Callable[[], str | None],
) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN/Inf (``step`` is 0-based);
    ``last_checkpoint`` is only called then (it reads the checkpoint files)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"non-finite loss at step {step + 1} (loss_rr={l_rr.item()}, loss_ret={l_ret.item()}); "
            f"last good checkpoint: {last_checkpoint() or 'none'}"
        )


class MetricsFileCallback(TrainerCallback):
    """Writes ``OUT/metrics.jsonl`` (rank 0); counts and warns on grad norm > 1, rising cosine."""

    def __init__(self, path: Path, cos_rise_after: int = 50, window: int = 10) -> None:
        self.path = path
        self.cos: list[float] = []
        self.cos_rise_after, self.window = cos_rise_after, window
        self.grad_norm_over_1 = 0
        self.cos_rise_warnings = 0

    def on_train_begin(self, args, state, control, **kw):
        """On resume, drop lines logged after the checkpoint we resume from: no duplicated steps."""
        if state.is_world_process_zero and self.path.exists():
            from circuit_breakers.core.fileio import iter_jsonl, write_jsonl

            rows = [r for _, r in iter_jsonl(self.path) if r.get("step", 0) <= state.global_step]
            write_jsonl(self.path, rows)
            self.cos = [r["rr/cos_sim_mean"] for r in rows if "rr/cos_sim_mean" in r]

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": state.epoch}
        row.update({METRIC_KEYS[k]: v for k, v in logs.items() if k in METRIC_KEYS})
        append_jsonl(self.path, row)
        gn = row.get("train/grad_norm")
        if gn is not None and gn > 1.0:
            self.grad_norm_over_1 += 1
            log.warning(
                "step %d: grad norm before clipping %.3f > 1.0 (%d times so far)",
                state.global_step,
                gn,
                self.grad_norm_over_1,
            )
        if "rr/cos_sim_mean" in row:
            self.cos.append(row["rr/cos_sim_mean"])
            w = self.window
            if state.global_step > self.cos_rise_after and len(self.cos) >= 2 * w:
                recent, before = sum(self.cos[-w:]) / w, sum(self.cos[-2 * w : -w]) / w
                if recent > before + 0.02 and not math.isnan(recent):
                    self.cos_rise_warnings += 1
                    log.warning(
                        "step %d: rr/cos_sim_mean is rising (%.3f -> %.3f over the last %d logs)",
                        state.global_step,
                        before,
                        recent,
                        w,
                    )


class NonFiniteGuard(TrainerCallback):
    """Stop before the optimizer step when a gradient is NaN/Inf (the loss may still be finite).

    Checked before the update, so the weights, and every checkpoint after, stay finite.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            ckpt = last_good_checkpoint(Path(args.output_dir) / "checkpoints")
            raise NonFiniteLossError(
                f"non-finite gradient at step {state.global_step + 1} (the weights were not "
                f"updated); last good checkpoint: {ckpt or 'none'}"
            )

"""Multi-process training (``accelerate launch`` / ``torchrun`` / Slurm): who writes files, how
metrics are combined across ranks, and how sharded weights are gathered for the adapter export.

``cb train`` runs unchanged under ``accelerate launch --config_file configs/accelerate/X.yaml``
(``ddp``, ``fsdp``, ``zero2``, ``zero3``); ``transformers.Trainer`` wraps the model and shards the
data. What the Trainer does not do for us, and this module does:

* **One writer.** Every output file (``metrics.jsonl``, ``adapter/``, ``merged/``,
  ``train_summary.json``, ``DONE``) is written by global rank 0 only; the Trainer's own
  checkpoints already follow ``args.should_save``.
* **Metrics over the whole global batch.** The Trainer all-gathers its ``loss``; our diagnostics
  (``train/loss_rr``, ``rr/cos_sim_mean``, ...) are per-rank means, so :func:`reduce_metrics`
  averages them over ranks (each rank sees the same number of micro-batches) and sums the token
  counts, so ``tokens_per_s`` is the throughput of the whole job.
* **Sharded weights.** Under FSDP and DeepSpeed ZeRO-3 no rank holds the full LoRA weights;
  :func:`gathered_state_dict` runs the gather on every rank (it is a collective) before rank 0
  writes the adapter.

The coefficient schedule needs nothing: it reads ``state.global_step`` (optimizer steps, equal on
every rank) over ``state.max_steps``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the job, from the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process(args=None) -> bool:
    """True on global rank 0 (the only writer). ``args``: TrainingArguments, if at hand."""
    if args is not None:
        _ = args.device  # sets up the process group (the Trainer would do it a moment later)
        return args.process_index == 0
    return int(os.environ.get("RANK", "0")) == 0


def reduce_metrics(
    means: dict[str, float], tokens: int, device: torch.device | str = "cpu"
) -> tuple[dict[str, float], int]:
    """Average per-rank means and sum token counts over all ranks (a collective: call on all).

    Keys are reduced in sorted order, so every rank must pass the same keys (they do: every rank
    runs the same ``compute_loss`` the same number of times between two logs). ``device``: where
    the process group's backend reduces (the rank's GPU for NCCL, CPU for gloo).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return means, tokens
    keys = sorted(means)
    values = [means[k] for k in keys] + [float(tokens)]
    # float64 keeps token counts exact; gloo and NCCL both reduce it.
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    n = dist.get_world_size()
    out = {k: float(v) / n for k, v in zip(keys, t[:-1].tolist())}
    return out, int(round(float(t[-1])))


def gathered_state_dict(trainer) -> dict | None:
    """The full state dict when weights are sharded (FSDP, ZeRO-3), else ``None``.

    A collective under FSDP / ZeRO-3: every rank must call it. Rank 0 then passes it to
    ``save_pretrained(state_dict=...)``; PEFT keeps only the adapter's entries.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    if getattr(trainer, "is_deepspeed_enabled", False):
        stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        if stage == 3:
            return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return None

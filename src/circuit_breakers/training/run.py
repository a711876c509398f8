"""``cb train``: load, truncate and wrap the model, build the batches, train, export.

Outputs under ``OUT`` (``--output_dir``): ``adapter/`` (PEFT adapter, tokenizer, resolved
config), ``merged/`` on request, ``checkpoints/``, ``metrics.jsonl``, ``train_summary.json``,
and ``DONE`` last (its absence means the run did not finish).

Reliability:

* ``--resume`` continues from the newest *good* checkpoint (complete, finite weights; see
  :mod:`.checkpoints`) and first cuts ``metrics.jsonl`` back to that checkpoint's step, so a run
  killed at any point and resumed gives the same adapter as an uninterrupted one and logs every
  step exactly once. Without ``--resume``, checkpoints and metrics of an earlier run in ``OUT``
  are removed (with a warning), so a later ``--resume`` cannot pick up a stale checkpoint.
* The seed is set before LoRA is initialised, so the same seed gives the same run in any process.
* NaN/Inf: the loss and the gradients are checked (:mod:`.callbacks`; the gradients before the
  optimizer step, so bad weights are never written); both stop the run with an error naming
  the step and the last good checkpoint (exit 1).
* Secrets: ``hub_token`` is moved into ``$HF_TOKEN`` before the trainer pickles its arguments
  into checkpoints, and everything written here goes through :func:`.redact.redact`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import set_seed

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import write_json, write_text
from circuit_breakers.core.models import load_model_and_tokenizer
from circuit_breakers.core.redact import install_log_redaction, redact, register_secret
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import DEFAULT_CLASS_WEIGHTS, read_samples
from circuit_breakers.training.callbacks import MetricsFileCallback, NonFiniteGuard
from circuit_breakers.training.checkpoints import (
    checkpoint_step,
    last_good_checkpoint,
    truncate_metrics,
)
from circuit_breakers.training.collator import PairCollator, PairedDataset, build_train_data
from circuit_breakers.training.config import CircuitBreakerConfig
from circuit_breakers.training.distributed import gathered_state_dict, is_main_process
from circuit_breakers.training.experimental import knob
from circuit_breakers.training.lora import add_lora
from circuit_breakers.training.trainer import CircuitBreakerTrainer, decoder_layers

log = logging.getLogger(__name__)


def truncate_model(model, keep: int) -> int:
    """Drop decoder blocks ``keep..`` in place; return how many were dropped."""
    blocks = decoder_layers(model)
    dropped = len(blocks) - keep
    if dropped > 0:
        del blocks[keep:]
        model.config.num_hidden_layers = keep
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:keep]
    return max(dropped, 0)


def prepare_model(
    cfg: CircuitBreakerConfig, model=None, tokenizer=None, *, allow_pickle: bool | None = None
):
    """Load (unless given), validate layers, truncate, add LoRA. Returns (peft_model, tokenizer, info)."""
    set_seed(cfg.seed)  # LoRA A is drawn from the global RNG: same seed, same start, any process
    if model is None:
        model, tokenizer = load_model_and_tokenizer(
            cfg.model,
            trust_remote_code=cfg.trust_remote_code,
            allow_pickle=allow_pickle,
            dtype=torch.bfloat16 if cfg.bf16 else torch.float32,
        )
    n_layers = model.config.num_hidden_layers
    lora_layers = cfg.resolve_layers(n_layers)
    dropped = truncate_model(model, max(cfg.target_layers)) if cfg.truncate_layers else 0
    model.config.use_cache = False
    peft_model = add_lora(model, cfg, lora_layers)
    if cfg.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    info = {
        "num_layers": n_layers,
        "dropped_layers": dropped,
        "lora_layers": lora_layers,
        "trainable_params": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
    }
    return peft_model, tokenizer, info


def _setup_trackers(cfg: CircuitBreakerConfig) -> None:
    if (
        "wandb" in (cfg.report_to or [])
        and not os.environ.get("WANDB_API_KEY")
        and "WANDB_MODE" not in os.environ
    ):
        os.environ["WANDB_MODE"] = "offline"  # no key: log locally, sync later with `wandb sync`
        log.info("W&B: no WANDB_API_KEY, logging offline")


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written folder ``tmp`` onto ``final``; on failure remove ``tmp``, keep the old.

    The old folder is moved aside first and deleted only after the new one is in place, so at
    every moment ``final`` is either the complete old folder, absent, or the complete new one.
    """
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_adapter(
    model, tokenizer, cfg: CircuitBreakerConfig, out: Path, state_dict: dict | None = None
) -> Path:
    """Write OUT/adapter atomically (adapter safetensors + tokenizer + resolved config).

    ``state_dict``: the gathered weights when they are sharded (FSDP, ZeRO-3), else None."""
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "cb_config.json", {"model": cfg.model, **resolved_config(cfg)})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_dir(tmp, out / "adapter")


def resolved_config(cfg: CircuitBreakerConfig) -> dict:
    """The config as plain JSON, without secrets (``*_token`` fields dropped, the rest redacted)."""
    d = json.loads(json.dumps(cfg.to_dict(), default=str))
    return redact({k: v for k, v in d.items() if not k.endswith("_token")})


def export_merged(
    adapter_dir: Path, base_spec: str, out_dir: Path, trust_remote_code: bool = False
) -> Path:
    """Full model with the adapter merged in (all layers, base config), as safetensors."""
    from peft import PeftModel

    base, tok = load_model_and_tokenizer(
        base_spec, trust_remote_code=trust_remote_code, dtype=torch.float32
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=".merged-", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_dir(tmp, out_dir)


def _start_outputs(cfg: CircuitBreakerConfig, out: Path) -> str | None:
    """Prepare OUT for a fresh or resumed run; return the checkpoint to resume from."""
    (out / "DONE").unlink(missing_ok=True)  # written again only when this run finishes
    metrics, ckpt_dir = out / "metrics.jsonl", out / "checkpoints"
    if cfg.resume:
        ckpt = last_good_checkpoint(ckpt_dir)
        if ckpt is None:
            log.warning("--resume: no usable checkpoint in %s, starting from scratch", ckpt_dir)
            metrics.unlink(missing_ok=True)
            return None
        step = checkpoint_step(ckpt)
        kept = truncate_metrics(metrics, step)
        log.info("resuming from %s (metrics.jsonl keeps %d lines up to step %d)", ckpt, kept, step)
        return ckpt
    metrics.unlink(missing_ok=True)
    stale = (
        sorted(p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir()) if ckpt_dir.is_dir() else []
    )
    if stale:
        log.warning(
            "removing %d checkpoint(s) of an earlier run in %s (pass --resume to continue a run)",
            len(stale),
            ckpt_dir,
        )
        for p in stale:
            shutil.rmtree(p)
    return None


def _check_lengths(data, model, cfg: CircuitBreakerConfig, samples, renderer) -> None:
    """A sample longer than the model's context is bad input (exit 2), not a crash mid-run."""
    from circuit_breakers.core.masks import build_features

    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(r.features.n_tokens for r in data.harmful + data.retain)
    if not limit or longest <= limit:
        return
    for line, sample in enumerate(samples, start=1):  # error path only: find the first culprit
        n = build_features(
            sample,
            renderer,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_completion_tokens=cfg.max_completion_tokens,
        ).n_tokens
        if n > limit:
            raise InputError(
                f"sample {sample.id!r} is {n} tokens after truncation, longer than the model's "
                f"context of {limit} positions",
                file=cfg.train_file,
                line=line,
                field="messages",
                hint=f"lower --max_prompt_tokens ({cfg.max_prompt_tokens}) and "
                f"--max_completion_tokens ({cfg.max_completion_tokens}) so that they fit in {limit}",
            )


def _secrets_out_of_config(cfg: CircuitBreakerConfig) -> None:
    """The Trainer pickles its arguments into every checkpoint: keep the hub token in the env."""
    if getattr(cfg, "hub_token", None):
        register_secret(cfg.hub_token)
        os.environ.setdefault("HF_TOKEN", cfg.hub_token)
        cfg.hub_token = None


def run_training(
    cfg: CircuitBreakerConfig,
    *,
    model=None,
    tokenizer=None,
    samples=None,
    allow_pickle: bool | None = None,
) -> dict:
    """Train and export; returns the summary written to ``OUT/train_summary.json``."""
    _secrets_out_of_config(cfg)
    install_log_redaction()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if samples is None:
        if not cfg.train_file:
            raise InputError(
                "no training data",
                field="train_file",
                hint="pass --train_file FILE.jsonl (see `cb data validate`)",
            )
        samples = read_samples(cfg.train_file)
    _setup_trackers(cfg)
    peft_model, tokenizer, info = prepare_model(cfg, model, tokenizer, allow_pickle=allow_pickle)
    class_weights = {**DEFAULT_CLASS_WEIGHTS, **cfg.sample_weights}
    renderer = ChatRenderer(tokenizer, name=cfg.model)
    data = build_train_data(
        samples,
        renderer,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_completion_tokens=cfg.max_completion_tokens,
        mask_prompt_tokens=cfg.mask_prompt_tokens,
        prompt_tail_tokens=cfg.prompt_tail_tokens,
        retain_full_sequence=knob(cfg, "retain_full_sequence"),
        class_weights=class_weights,
        source_file=cfg.train_file,
    )
    log.info(
        "data: %d harmful, %d retain; effective weighted Dr:Ds %.2f:1",
        data.stats["n_harmful"],
        data.stats["n_retain"],
        data.stats["effective_ratio_dr_ds"],
    )
    _check_lengths(data, peft_model, cfg, samples, renderer)
    # distributed: rank 0 alone prepares OUT; the other ranks only look up the checkpoint
    if is_main_process(cfg):
        resume = _start_outputs(cfg, out)
    else:
        resume = last_good_checkpoint(out / "checkpoints") if cfg.resume else None
    metrics_cb = MetricsFileCallback(out / "metrics.jsonl")
    trainer = CircuitBreakerTrainer(
        model=peft_model,
        args=cfg,
        train_dataset=PairedDataset(data),
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[metrics_cb, NonFiniteGuard()],
        class_weights=class_weights,
    )
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    # distributed: every rank joins the gather of sharded weights, rank 0 alone writes
    state_dict = gathered_state_dict(trainer)
    main = trainer.is_world_process_zero()
    adapter = out / "adapter"
    if main:
        adapter = save_adapter(trainer.model, tokenizer, cfg, out, state_dict)
    summary = {
        "model": cfg.model,
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "seconds_per_step": seconds / max(trainer.state.global_step, 1),
        "train_loss": result.training_loss,
        # which engine really ran (accelerate may fall back, e.g. to plain DDP on CPU)
        "distributed": {
            "type": str(trainer.accelerator.distributed_type).split(".")[-1],
            "world_size": trainer.accelerator.num_processes,
        },
        "resumed_from": resume,
        "adapter": str(adapter),
        "data": data.stats,
        "model_info": info,
        "massive_dims": trainer.massive_dims,
        "alerts": {
            "grad_norm_over_1": metrics_cb.grad_norm_over_1,
            "cos_sim_rising": metrics_cb.cos_rise_warnings,
        },
        "config": cfg.cb_dict(),
    }
    if cfg.merge and main:
        summary["merged"] = str(
            export_merged(adapter, cfg.model, out / "merged", cfg.trust_remote_code)
        )
    if main:  # distributed: rank 0 alone writes
        write_json(out / "train_summary.json", redact(summary))
        write_text(out / "DONE", "train\n")
    trainer.capture.remove()
    return summary

"""``CircuitBreakerTrainer``: a ``transformers.Trainer`` whose ``compute_loss`` is Representation
Rerouting on the harmful part of the batch plus a retain loss on the retain part.

* The frozen reference states come from the *same* PEFT model under ``disable_adapter()`` and
  ``no_grad``: no second copy of the model.
* Only the target layers are kept: forward hooks on those decoder blocks capture their outputs
  (before the final norm), instead of ``output_hidden_states=True`` keeping every layer. The
  forward goes through the (possibly DDP-wrapped) model with ``logits_to_keep=1``, so the LM
  head costs one position.
* The coefficient schedule reads ``state.global_step``, which counts *optimizer* steps, so it is
  the same for any gradient accumulation (the reference counted micro-batches and hard-coded
  ``step / 300``).
* Diagnostics go into ``self._metrics`` and are averaged in ``log()``, so W&B / TensorBoard get
  them through ``report_to`` (as ``train/<key>``); :class:`~.callbacks.MetricsFileCallback`
  writes ``metrics.jsonl`` with the documented metric names (:data:`~.callbacks.METRIC_KEYS`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer

from circuit_breakers.training.callbacks import check_finite_loss
from circuit_breakers.training.checkpoints import last_good_checkpoint
from circuit_breakers.training.collator import row_weights
from circuit_breakers.training.distributed import reduce_metrics
from circuit_breakers.training.experimental import knob
from circuit_breakers.training.lora import forwards_replaced, lora_fast_path, mask_lora_inputs
from circuit_breakers.training.losses import (
    find_massive_dims,
    reroute_loss,
    retain_loss,
    uses_massive_dims,
)
from circuit_breakers.training.packing import pack, packed_attention
from circuit_breakers.training.schedules import coefficients, curriculum_weights, progress

log = logging.getLogger(__name__)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder block list of a causal LM (PEFT-wrapped or not)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError("could not find the decoder block list of this model")


class LayerCapture:
    """Forward hooks that keep the outputs of the target layers' decoder blocks."""

    def __init__(self, model: nn.Module, target_layers: list[int]) -> None:
        self.target_layers = target_layers
        self.states: dict[int, torch.Tensor] | None = None
        blocks = decoder_layers(model)
        self._handles = [
            blocks[layer - 1].register_forward_hook(self._hook(layer)) for layer in target_layers
        ]

    def _hook(self, layer: int):
        def hook(_module, _inputs, output):
            if self.states is not None:
                self.states[layer] = output[0] if isinstance(output, tuple) else output

        return hook

    def run(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs,
    ) -> torch.Tensor:
        """Forward and return the stacked target states ``[L, B, T, H]`` (``kwargs`` go to the
        model: ``position_ids`` and the ``cu_seq_lens_*`` of a packed batch)."""
        self.states = {}
        try:
            model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                use_cache=False,
                logits_to_keep=1,
                **kwargs,
            )
            return torch.stack([self.states[layer] for layer in self.target_layers])
        finally:
            self.states = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class CircuitBreakerTrainer(Trainer):
    """Trainer for circuit breakers. ``args`` is a :class:`~circuit_breakers.training.config.CircuitBreakerConfig`."""

    def __init__(self, *args, class_weights: dict[str, float], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Our loss is a mean already: let the Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.class_weights = class_weights
        self.capture = LayerCapture(self.model, self.args.target_layers)
        self._compiled: list | None = None
        self.massive_dims: list[int] | None = self.args.massive_dims
        self._masked_lora_a: list | None = None  # lora_skip_massive_inputs: lora_A weights
        self._lora_a_zeroed = False
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._tokens = 0
        self._t_last_log = time.perf_counter()

    # -- checkpoints go to OUT/checkpoints -------------------------------------------------
    def _get_output_dir(self, trial=None) -> str:
        return str(Path(self.args.output_dir) / "checkpoints")

    def _get_train_sampler(self, train_dataset=None):
        if self.args.retain_sampling == "weighted":
            ds = train_dataset or self.train_dataset
            gen = torch.Generator().manual_seed(self.args.seed)
            return torch.utils.data.WeightedRandomSampler(
                ds.retain_sampling_weights(self.class_weights), num_samples=len(ds), generator=gen
            )
        return super()._get_train_sampler(train_dataset)

    # -- the forward passes ---------------------------------------------------------------------
    #: Options for ``torch.compile`` of the decoder blocks (``compile_layers``).
    compile_options: dict = {"dynamic": True}

    def target_states(self, model, h_ids, h_att, r_ids, r_att):
        """Target-layer states ``(h, h0, r, r0)``, each ``[L, B, T, H]`` in the padded layout.

        ``h0``/``r0`` come from the frozen model (adapter off, no grad). Plain path: four
        forwards over the padded parts. ``packing``: two forwards (frozen, trainable), each over
        one packed row holding every harmful and retain sequence, then unpacked.
        """
        unwrapped = self.accelerator.unwrap_model(model)
        with self.speed_context(model):
            if not self.args.packing:
                with torch.no_grad(), unwrapped.disable_adapter():
                    h0 = self.capture.run(model, h_ids, h_att)
                    r0 = self.capture.run(model, r_ids, r_att)
                h = self.capture.run(model, h_ids, h_att)
                r = self.capture.run(model, r_ids, r_att)
                return h, h0, r, r0
            packed = pack([(h_ids, h_att), (r_ids, r_att)])
            kw = packed.forward_kwargs()
            with torch.no_grad(), unwrapped.disable_adapter():
                h0, r0 = packed.unpack(self.capture.run(model, packed.input_ids, None, **kw))
            h, r = packed.unpack(self.capture.run(model, packed.input_ids, None, **kw))
            return h, h0, r, r0

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The backward runs inside the context too: gradient checkpointing re-runs the blocks there.
        with self.speed_context(model):
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self._masked_lora_a and not self._lora_a_zeroed:
            # after the first backward (an in-place change before it would break autograd); the
            # gradient hooks keep the columns at zero from here on (AdamW moves a zero with a
            # zero gradient nowhere, weight decay included)
            with torch.no_grad():
                for w in self._masked_lora_a:
                    w[:, self.massive_dims] = 0
            self._lora_a_zeroed = True
        return loss

    @contextlib.contextmanager
    def speed_context(self, model):
        """Packed attention and compiled blocks, as configured, for the forward *and* backward
        of a step; outside it the model is the plain one (generation, export)."""
        unwrapped = self.accelerator.unwrap_model(model)
        with contextlib.ExitStack() as stack:
            if self.args.packing:
                stack.enter_context(packed_attention(unwrapped))
            if self.args.lora_fast_path:
                stack.enter_context(lora_fast_path(unwrapped))
            if self.args.compile_layers:
                stack.enter_context(self._compiled_layers(unwrapped))
            yield

    @contextlib.contextmanager
    def _compiled_layers(self, model):
        """Each decoder block runs a compiled forward (its hooks stay eager)."""
        blocks = decoder_layers(model)
        if self._compiled is None:
            import torch._dynamo

            cfg = torch._dynamo.config
            cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
            self._compiled = [torch.compile(b.forward, **self.compile_options) for b in blocks]
        with forwards_replaced(list(blocks), self._compiled):
            yield

    # -- the loss -------------------------------------------------------------------------------
    def current_class_weights(self) -> dict[str, float]:
        if not self.args.curriculum:
            return self.class_weights
        return curriculum_weights(
            progress(self.state.global_step, self.state.max_steps), self.class_weights
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        cs, cr = coefficients(a.loss_weighting, step, total, a.alpha, knob(a, "alpha_decay"))
        weights = self.current_class_weights()
        h_ids, h_att, h_mask = (
            inputs["h_input_ids"],
            inputs["h_attention_mask"],
            inputs["h_loss_mask"],
        )
        r_ids, r_att, r_mask = (
            inputs["r_input_ids"],
            inputs["r_attention_mask"],
            inputs["r_loss_mask"],
        )
        h_w = row_weights(inputs["h_class"], inputs["h_weight"], weights)
        r_w = (
            torch.ones_like(inputs["r_weight"])
            if a.retain_sampling == "weighted"
            else row_weights(inputs["r_class"], inputs["r_weight"], weights)
        )

        h, h0, r, r0 = self.target_states(model, h_ids, h_att, r_ids, r_att)
        uses_massive = uses_massive_dims(a.reroute_variant) or uses_massive_dims(a.retain_variant)
        skip_massive_inputs = knob(a, "lora_skip_massive_inputs")
        if self.massive_dims is None and (uses_massive or skip_massive_inputs):
            self.massive_dims = find_massive_dims(
                h0, h_mask
            )  # once, so every step removes the same dims
            log.info("massive dims (detected on the first batch): %s", self.massive_dims)
        if skip_massive_inputs and self._masked_lora_a is None:
            # before this step's backward: the hooks zero those columns' gradients from now on
            self._masked_lora_a = mask_lora_inputs(model, self.massive_dims)
        massive = {"massive_dims": self.massive_dims}
        l_rr, rr_stats = reroute_loss(
            h,
            h0,
            h_mask,
            h_w,
            variant=a.reroute_variant,
            **(massive if uses_massive_dims(a.reroute_variant) else {}),
        )
        l_ret, ret_stats = retain_loss(
            r,
            r0,
            r_mask,
            r_w,
            variant=a.retain_variant,
            **(massive if uses_massive_dims(a.retain_variant) else {}),
        )
        loss = cs * l_rr + cr * l_ret
        check_finite_loss(loss, l_rr, l_ret, step, self.last_checkpoint)

        m = self._metrics
        m["loss_rr"].append(l_rr.item())
        m["loss_ret"].append(l_ret.item())
        m["cs"].append(cs)
        m["cr"].append(cr)
        m["rr/cos_sim_mean"].append(rr_stats["cos_sim_mean"].item())
        m["ret/l2_mean"].append(ret_stats["l2_mean"].item())
        for prefix, stats, name in (
            ("rr", rr_stats, "cos_sim_plain_mean"),
            ("rr", rr_stats, "angle_deg_mean"),
            ("ret", ret_stats, "l2_relative_mean"),
        ):
            if name in stats:
                m[f"{prefix}/{name}"].append(stats[name].item())
        m["mask/harmful_frac"].append((h_mask.sum() / h_att.sum()).item())
        m["mask/retain_frac"].append((r_mask.sum() / r_att.sum()).item())
        m["mix/dr_ds_weighted"].append((r_w.sum() / h_w.sum().clamp_min(1e-8)).item())
        self._tokens += int(h_att.sum().item() + r_att.sum().item())
        return (loss, None) if return_outputs else loss

    def last_checkpoint(self) -> str | None:
        folder = Path(self._get_output_dir())
        return last_good_checkpoint(folder)  # complete and finite, not just the newest

    @property
    def tokens_since_log(self) -> int:
        """Real (non-pad) tokens of the forwards since the last log, harmful and retain."""
        return self._tokens

    def pop_diagnostics(self) -> dict[str, list[float]]:
        """The per-step diagnostics gathered since the last log (what ``log()`` averages), then
        cleared, with the token count."""
        out = {k: list(v) for k, v in self._metrics.items()}
        self._metrics.clear()
        self._tokens = 0
        return out

    # -- logging --------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:
            means = {k: sum(v) / len(v) for k, v in self._metrics.items()}
            # distributed: mean over ranks, tokens summed (a collective; every rank logs)
            means, tokens = reduce_metrics(means, self._tokens, self.args.device)
            logs.update(means)
            self._metrics.clear()
            now = time.perf_counter()
            logs["tokens_per_s"] = tokens / max(now - self._t_last_log, 1e-9)
            self._tokens, self._t_last_log = 0, now
        super().log(logs, start_time)

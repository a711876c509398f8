"""Everything the trainer does to LoRA layers beyond PEFT's defaults.

* :func:`add_lora`: wrap the model with PEFT LoRA on the chosen blocks and, with
  ``lora_init_b_std > 0``, draw ``lora_B`` from ``N(0, std)`` instead of zeros (with ``B = 0`` the
  rerouted state equals the frozen one, where cosine and L2 have zero gradient).
* :func:`lora_fast_path`: a faster forward for eligible LoRA ``Linear`` layers (one ``addmm``).
* :func:`mask_lora_inputs`: keep chosen input columns of ``lora_A`` at zero (a research knob,
  ``lora_skip_massive_inputs``, see :mod:`.experimental`).
* :func:`forwards_replaced`: swap modules' forwards for the duration of a block (the fast path
  and the compiled decoder blocks both use it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def add_lora(model: nn.Module, cfg, lora_layers: list[int]) -> nn.Module:
    """``model`` wrapped with LoRA as ``cfg`` (a :class:`~.config.CircuitBreakerConfig`) says."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        layers_to_transform=lora_layers,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if cfg.lora_init_b_std > 0:
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * cfg.lora_init_b_std)
    return peft_model


# -- fast path ----------------------------------------------------------------------------------
# -- LoRA fast path ---------------------------------------------------------------------------
def _lora_modules(model: nn.Module) -> list[nn.Module]:
    """PEFT LoRA ``Linear`` layers (plain ``nn.Linear`` base, one adapter, no DoRA/variant)."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return []
    out = []
    for m in model.modules():
        base = getattr(m, "base_layer", None)
        if type(m) is not LoraLinear or type(base) is not nn.Linear:
            continue
        if base._forward_hooks or base._forward_pre_hooks:
            continue
        if len(m.lora_A) != 1 or getattr(m, "lora_variant", None) or m.base_layer.bias is not None:
            continue
        name = next(iter(m.lora_A))
        if m.use_dora.get(name, False) or not isinstance(m.lora_dropout[name], nn.Identity):
            continue
        out.append(m)
    return out


def _fast_forward(module: nn.Module, name: str, original):
    base, lora_a, lora_b = module.base_layer, module.lora_A[name], module.lora_B[name]

    def forward(x: Tensor, *args, **kwargs) -> Tensor:
        if (
            args
            or kwargs
            or module.disable_adapters
            or module.merged
            or list(module.active_adapters) != [name]
            or (x.dtype != lora_a.weight.dtype and not torch.is_autocast_enabled(x.device.type))
        ):
            return original(x, *args, **kwargs)
        result = F.linear(x, base.weight)
        a = F.linear(x, lora_a.weight)  # [.., r]
        out = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            a.reshape(-1, a.shape[-1]),
            lora_b.weight.t(),
            alpha=module.scaling[name],
        )
        return out.view(result.shape)

    return forward


@contextlib.contextmanager
def lora_fast_path(model: nn.Module):
    """Inside the block, each eligible PEFT LoRA ``Linear`` computes
    ``W x + s * B (A x)`` as one ``addmm`` (the LoRA product is added in the matmul's epilogue)
    and skips PEFT's cast of ``x`` to the adapter's dtype when autocast is on (under autocast
    that float32 round trip is exact, so only the copies go away). Same function; in bf16 the
    sum is rounded once instead of twice. Anything else (adapter disabled, merged, dropout,
    several adapters, no autocast with mixed dtypes) takes PEFT's own forward."""
    mods = _lora_modules(model)
    with forwards_replaced(mods, [_fast_forward(m, next(iter(m.lora_A)), m.forward) for m in mods]):
        yield len(mods)


@contextlib.contextmanager
def forwards_replaced(modules: list[nn.Module], forwards: list) -> Iterator[None]:
    """Inside the block, ``modules[i].forward`` is ``forwards[i]`` (an instance attribute);
    afterwards each module's own forward (or the one set on it before) is back."""
    saved = [m.__dict__.get("forward") for m in modules]
    for m, fn in zip(modules, forwards, strict=True):
        m.forward = fn
    try:
        yield
    finally:
        for m, old in zip(modules, saved):
            if old is None:
                del m.forward
            else:
                m.forward = old


# -- input masking ------------------------------------------------------------------------------
# LoRA-wrapped projections whose input is the normed residual stream (Llama-family names)
RESIDUAL_READERS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


def mask_lora_inputs(model, dims: list[int]) -> list[torch.Tensor]:
    """Zero the gradient of the ``lora_A`` columns that read ``dims`` in every residual-reading
    LoRA module (hooks); returns those ``lora_A`` weights, whose columns the caller zeroes."""
    out = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in RESIDUAL_READERS or not hasattr(module, "lora_A"):
            continue
        for lin in module.lora_A.values():
            keep = torch.ones(lin.weight.shape[1], dtype=lin.weight.dtype, device=lin.weight.device)
            keep[dims] = 0
            lin.weight.register_hook(lambda g, keep=keep: g * keep)
            out.append(lin.weight)
    if not out:
        raise ValueError(
            "lora_skip_massive_inputs: no LoRA module reads the residual stream "
            f"(looked for {', '.join(RESIDUAL_READERS)} among lora_target_modules)"
        )
    log.info("lora_skip_massive_inputs: %d lora_A weights stop reading dims %s", len(out), dims)
    return out

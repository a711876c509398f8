"""Sequence packing: run the padded rows of a batch as one row with no padding.

A padded batch wastes the matmul work on its pad positions (about 40 % of a batch of 8 Ds rows
of 32-512 tokens and 8 Dr rows of 64-1024 tokens). :func:`pack` cuts the real tokens of every
row (of any number of padded parts, here the harmful and the retain part) into one row
``[1, N]``; each sequence restarts its ``position_ids`` at 0 and attention is confined to its own
sequence by variable-length attention (``cu_seqlens``). The target-layer states come back
``[L, 1, N, H]`` and :meth:`Packed.unpack` scatters them into the padded layout ``[L, B, T, H]``
(zeros on pad positions, which no loss mask selects), so the losses see exactly what the padded
forward would give.

Why equal to the padded forward: batches are right-padded, so a real token sits at position
``t`` of its row in both layouts, and causal attention never lets it see the pads after it.
Left padding would shift the positions, so :func:`pack` refuses it.

Attention: :func:`packed_attention` switches the model to the attention function registered
here as ``cb_varlen`` for the duration of a forward. On CUDA in bf16/fp16 it calls PyTorch's
flash-attention varlen kernel (``torch.nn.attention.varlen.varlen_attn``, torch >= 2.10); else
it runs scaled-dot-product attention sequence by sequence (exact, for CPU and fp32).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

ATTN_NAME = "cb_varlen"


@dataclass
class Packed:
    """A packed batch: model inputs and how to put the outputs back into each padded part."""

    input_ids: Tensor  # [1, N]
    position_ids: Tensor  # [1, N]
    cu_seqlens: Tensor  # [S + 1] int32, sequence starts in the packed row
    max_len: int
    parts: list[tuple[int, int, int, Tensor]]  # per part: (start, B, T, flat index [n] into B*T)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def forward_kwargs(self) -> dict:
        """Keyword arguments for the model forward (Hugging Face's flash-attention names)."""
        return {
            "position_ids": self.position_ids,
            "cu_seq_lens_q": self.cu_seqlens,
            "cu_seq_lens_k": self.cu_seqlens,
            "max_length_q": self.max_len,
            "max_length_k": self.max_len,
        }

    def unpack(self, states: Tensor) -> list[Tensor]:
        """``[L, 1, N, H]`` -> one ``[L, B, T, H]`` per part, zeros on pad positions."""
        if states.dim() != 4 or states.shape[1] != 1 or states.shape[2] != self.n_tokens:
            raise ValueError(
                f"expected packed states [L, 1, {self.n_tokens}, H], got {tuple(states.shape)}"
            )
        flat = states[:, 0]
        out = []
        for start, b, t, index in self.parts:
            src = flat[:, start : start + index.numel()]
            dense = flat.new_zeros(flat.shape[0], b * t, flat.shape[-1]).index_copy(1, index, src)
            out.append(dense.view(flat.shape[0], b, t, flat.shape[-1]))
        return out


def pack(parts: list[tuple[Tensor, Tensor]]) -> Packed:
    """Pack right-padded ``(input_ids [B, T], attention_mask [B, T])`` parts into one row."""
    ids_out, pos_out, lens_out, meta = [], [], [], []
    start = 0
    for ids, att in parts:
        if ids.shape != att.shape or ids.dim() != 2:
            raise ValueError(f"input_ids {tuple(ids.shape)} and mask {tuple(att.shape)} differ")
        keep = att.bool()
        lengths = keep.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("a row has no tokens; cannot pack an empty sequence")
        b, t = ids.shape
        cols = torch.arange(t, device=ids.device).expand(b, t)
        if not bool((keep == (cols < lengths[:, None])).all()):
            raise ValueError("packing needs right-padded rows (real tokens first, then padding)")
        index = (torch.arange(b, device=ids.device)[:, None] * t + cols)[keep]
        ids_out.append(ids[keep])
        pos_out.append(cols[keep])
        lens_out.append(lengths)
        meta.append((start, b, t, index))
        start += index.numel()
    lengths = torch.cat(lens_out)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = lengths.cumsum(0)
    return Packed(
        input_ids=torch.cat(ids_out)[None],
        position_ids=torch.cat(pos_out)[None],
        cu_seqlens=cu,
        max_len=int(lengths.max()),
        parts=meta,
    )


# -- attention --------------------------------------------------------------------------------
def _flash_varlen():
    """``(varlen_attn, kwargs for causal, whether it takes GQA)`` or None if torch lacks it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "window_size" in params:  # torch >= 2.11: causal = window (-1, 0)
        causal = {"window_size": (-1, 0)}
    elif "is_causal" in params:  # torch 2.10
        causal = {"is_causal": True}
    else:
        return None
    return varlen_attn, causal, "enable_gqa" in params


_FLASH = _flash_varlen()


def _repeat_kv(x: Tensor, groups: int, dim: int) -> Tensor:
    return x if groups == 1 else torch.repeat_interleave(x, groups, dim=dim)


def uses_flash(query: Tensor) -> bool:
    return _FLASH is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)


@torch.compiler.disable
def varlen_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Causal attention within each packed sequence. ``query`` ``[1, Hq, N, D]``, ``key`` and
    ``value`` ``[1, Hkv, N, D]``; returns ``[1, N, Hq, D]`` as Hugging Face expects."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        raise RuntimeError(
            "cb_varlen attention needs cu_seq_lens_q (call the model with Packed.forward_kwargs())"
        )
    if query.shape[0] != 1:
        raise RuntimeError(f"packed attention expects one packed row, got batch {query.shape[0]}")
    if dropout:
        raise RuntimeError("packed attention has no attention dropout")
    groups = query.shape[1] // key.shape[1]
    if uses_flash(query):
        fn, causal, gqa = _FLASH
        q = query[0].transpose(0, 1).contiguous()  # [N, Hq, D]
        k = key[0].transpose(0, 1).contiguous()
        v = value[0].transpose(0, 1).contiguous()
        extra = dict(causal)
        if gqa:
            extra["enable_gqa"] = groups > 1
        else:
            k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
        m = int(kwargs["max_length_q"])
        out = fn(q, k, v, cu, cu, m, m, scale=scaling, **extra)
        return out[None], None
    k = _repeat_kv(key, groups, 1)
    v = _repeat_kv(value, groups, 1)
    bounds = cu.tolist()
    outs = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, scale=scaling
        )
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, varlen_attention)


def _config_of(model: nn.Module):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


@contextlib.contextmanager
def packed_attention(model: nn.Module):
    """Use ``cb_varlen`` attention inside the block (no mask is built), the old one after."""
    _register()
    config = _config_of(model)
    old = config._attn_implementation
    config._attn_implementation = ATTN_NAME
    try:
        yield
    finally:
        config._attn_implementation = old


def attention_backend(dtype: torch.dtype, device: torch.device | str) -> str:
    """Which kernel packed attention uses for this dtype/device (for logs and benchmarks)."""
    q = torch.empty(0, dtype=dtype, device=device)
    return "flash varlen (torch)" if uses_flash(q) else "sdpa per sequence"

"""Representation Rerouting losses: pure tensor functions, no model code.

Why pure functions: the trainer, the benchmarks and the tests all need exactly the same
reduction, and a loss that only sees tensors can be checked by hand on 2-D vectors.

Inputs are the *stacked target-layer hidden states* ``h`` (trainable model, LoRA on) and ``h0``
(frozen reference, LoRA off), both ``[L, B, T, H]``, a loss mask ``[B, T]`` (1 on the assistant
tokens that carry loss, already AND-ed with the attention mask) and optional per-sample
weights ``[B]``.

Layer convention: target layer ``l`` means ``hidden_states[l]`` in the Hugging Face
``output_hidden_states`` tuple, where ``hidden_states[0]`` is the embedding output and
``hidden_states[l]`` is the output of decoder block ``l - 1`` (the same convention as the
reference circuit-breakers code). :func:`stack_layers` builds ``[L, B, T, H]`` from a
``{layer: [B, T, H]}`` dict in that numbering; the losses themselves only see stacked tensors.

Reduction: per token and layer a value ``x`` is computed; sample ``i``'s tokens are weighted
by ``w_i`` and the sum is divided by ``sum_i w_i * n_i * L`` (``n_i`` = its mask count). With
``w = 1`` this is the plain pooled masked mean over all tokens and layers, the reduction of
the reference implementation (Zou et al. 2024). Every value is computed in float32, so bf16
activations are fine. A mask with no token for some sample is a bug upstream (the mask
builder guarantees non-empty masks) and raises ``ValueError`` instead of silently giving 0.

Variants for small models. On SmolLM2-135M-Instruct (measured on assistant tokens, layers
10-20) dims 507 and 247 each have a mean |x| 25-35x the median dim and together carry ~45-50%
of the squared norm, so the plain cosine between *unrelated* tokens is already ~0.5 and a
change of direction barely moves it. (The |x| ~ 25,000 value of dim 507 sits only on the first
token, ``<|im_start|>``, which is never in a loss mask.) Hence:

- reroute ``cosine_no_massive``: cosine after zeroing the massive dims (given, or found by
  :func:`find_massive_dims`). Unrelated-token cosine drops to ~0.1.
- reroute ``cosine_normalized``: cosine after dividing every dim by its RMS over the masked
  tokens of ``h0`` (per layer). This puts every dim on the same scale without having to pick
  dims, and unlike *centering* (subtracting the mean of ``h0``) it keeps the direction shared
  by the harmful tokens: with centering, collapsing every harmful state onto the batch mean of
  the harmful states gives cosine 0 and zero loss, i.e. the loss would be satisfied by staying
  at the typical harmful representation. It also works for a single masked token, where the
  centred vector is 0. Unrelated-token cosine on SmolLM2 is ~0.1. The RMS is a statistic of
  the batch, so this variant (alone) depends on how samples are grouped into micro-batches.
- reroute ``angle`` / ``angle_no_massive``: ``ReLU(1 - 2 theta / pi)`` with ``theta`` the angle
  between ``h`` and ``h0`` (after zeroing the massive dims for the second). Same zero set as
  ``ReLU(cos)`` (``theta >= 90`` degrees) and the same value range, but a different start.
  Around ``h = h0 + d``, ``1 - cos ~ |d_perp|^2 / (2 |h0|^2)`` is *quadratic* in the orthogonal
  part of the change, so the cosine's gradient vanishes as the adapter's change does, and the
  retain loss (an L2 norm, whose gradient has a constant size) wins near the start: training
  sits at cosine ~1 until, at a seed-dependent step, the harmful change has grown enough to
  escape and the cosine drops within a few steps (the "switch" of docs/experiments/qwen_gpu.md).
  ``theta ~ |d_perp| / |h0|`` is *linear*, so its gradient has a constant size from the first
  step. ``theta`` is computed as ``atan2(|h_perp|, h . h0_hat)``, exact near 0 in float32 where
  ``arccos(cos)`` has a resolution of ~5e-4 rad.
- retain ``l2_relative``: ``||h - h0|| / (||h0|| + eps)``, scale-free: an L2 of 10 means little
  at token norms ~200 (SmolLM2) and a lot at ~9 (Llama-3 mid layers).
- retain ``l2_no_massive`` / ``l2_relative_no_massive``: the same with massive dims zeroed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

REROUTE_VARIANTS: tuple[str, ...] = (
    "cosine",
    "cosine_no_massive",
    "cosine_normalized",
    "angle",
    "angle_no_massive",
)
RETAIN_VARIANTS: tuple[str, ...] = (
    "l2",
    "l2_relative",
    "l2_no_massive",
    "l2_relative_no_massive",
)

#: Default for :func:`find_massive_dims`: a dim is "massive" when its mean |x| over the masked
#: tokens is more than this many times the median dim's. SmolLM2-135M assistant tokens: the two
#: outlier dims sit at 20-35x, the next ones at <= 12x, so 20 separates them.
DEFAULT_MASSIVE_RATIO = 20.0

_EPS = 1e-8
_TINY = 1e-30  # inside the sqrt of |a_perp|: float32 keeps it (min normal 1.2e-38)


def stack_layers(states: dict[int, Tensor], layers: Sequence[int]) -> Tensor:
    """Stack ``{layer: [B, T, H]}`` into ``[L, B, T, H]`` in the order of ``layers``."""
    if not layers:
        raise ValueError("layers is empty: give at least one target layer")
    missing = [layer for layer in layers if layer not in states]
    if missing:
        raise ValueError(f"layers {missing} not captured (captured: {sorted(states)})")
    shapes = {tuple(states[layer].shape) for layer in layers}
    if len(shapes) != 1:
        raise ValueError(f"hidden states of the target layers differ in shape: {sorted(shapes)}")
    return torch.stack([states[layer] for layer in layers])


def uses_massive_dims(variant: str) -> bool:
    """Whether a reroute or retain variant leaves the massive dims out (the ``*_no_massive`` ones)."""
    return variant.endswith("_no_massive")


def find_massive_dims(h0: Tensor, mask: Tensor, ratio: float = DEFAULT_MASSIVE_RATIO) -> list[int]:
    """Dims whose mean |x| over the masked tokens exceeds ``ratio`` x the median dim's.

    ``h0`` is ``[L, B, T, H]`` or ``[B, T, H]``; with several layers the test runs per layer and
    the union is returned (sorted). For stable training detect once on a calibration batch
    and pass the list to the losses, rather than letting every batch re-detect.
    """
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    x = h0.detach()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    sel, _ = _token_selection(x, mask, None, "find_massive_dims")
    mean_abs = x[:, sel].float().abs().mean(dim=1)  # [L, H]
    median = mean_abs.median(dim=-1, keepdim=True).values
    hits = (mean_abs > ratio * median).any(dim=0)
    return [int(i) for i in torch.nonzero(hits).flatten().tolist()]


def reroute_loss(
    h: Tensor,
    h0: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    variant: str = "cosine",
    massive_dims: Sequence[int] | None = None,
    massive_ratio: float = DEFAULT_MASSIVE_RATIO,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Masked weighted mean of ``ReLU(cos(h, h0))`` (or ``ReLU(1 - 2 theta / pi)``) over tokens x layers.

    Pushes the trained model's representations of harmful completions to be orthogonal to (or
    opposite from) the frozen model's. ``h0`` is detached. ``massive_dims`` is used only by
    the ``*_no_massive`` variants (``None`` there = detect with ``massive_ratio``).

    Stats (detached, float32): ``cos_sim_mean``, the unweighted masked mean of the cosine of the
    vectors the loss compares (before ReLU; for the angle variants the cosine of their angle);
    for the other variants also ``cos_sim_plain_mean``, the plain cosine, so runs with different
    variants stay comparable; ``angle_deg_mean`` for the angle variants; ``n_massive_dims`` for
    the ``*_no_massive`` variants.
    """
    _check_variant(variant, REROUTE_VARIANTS, "reroute_loss")
    no_massive = uses_massive_dims(variant)
    if massive_dims is not None and not no_massive:
        raise ValueError(
            f"massive_dims is only used by the '*_no_massive' variants, not {variant!r}"
        )
    sel, tok_w = _token_selection(h, mask, weights, "reroute_loss", h0=h0)
    x = h[:, sel].float()  # [L, N, H]
    x0 = h0.detach()[:, sel].float()
    stats: dict[str, Tensor] = {}
    if variant != "cosine":
        stats["cos_sim_plain_mean"] = _cosine(x, x0).detach().mean()
    if no_massive:
        dims = _resolve_massive(h0, mask, massive_dims, massive_ratio, h.shape[-1])
        x, x0 = _zero_dims(x, dims), _zero_dims(x0, dims)
        stats["n_massive_dims"] = torch.tensor(float(len(dims)), device=h.device)
    elif variant == "cosine_normalized":
        rms = x0.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(_EPS)  # [L, 1, H]
        x, x0 = x / rms, x0 / rms
    if variant.startswith("angle"):
        theta = _angle(x, x0)  # [L, N]
        stats["cos_sim_mean"] = theta.detach().cos().mean()
        stats["angle_deg_mean"] = theta.detach().rad2deg().mean()
        return _weighted_mean(torch.relu(1.0 - theta * (2.0 / math.pi)), tok_w), stats
    cos = _cosine(x, x0)  # [L, N]
    stats["cos_sim_mean"] = cos.detach().mean()
    return _weighted_mean(torch.relu(cos), tok_w), stats


def retain_loss(
    h: Tensor,
    h0: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    variant: str = "l2",
    massive_dims: Sequence[int] | None = None,
    massive_ratio: float = DEFAULT_MASSIVE_RATIO,
    eps: float = 1e-6,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Masked weighted mean of the per-token ``||h - h0||`` (or a variant) over tokens x layers.

    Keeps the trained model's representations of retain data where the frozen model had them.
    ``h0`` is detached. ``massive_dims`` is used only by the ``*_no_massive`` variants (``None``
    there = detect with ``massive_ratio``); ``eps`` guards ``l2_relative``'s denominator.

    Stats (detached, float32): ``l2_mean``, the unweighted masked mean of the plain L2 distance
    (always, so runs stay comparable); ``l2_relative_mean`` for the relative variants;
    ``n_massive_dims`` for the ``*_no_massive`` variants.
    """
    _check_variant(variant, RETAIN_VARIANTS, "retain_loss")
    no_massive = uses_massive_dims(variant)
    if massive_dims is not None and not no_massive:
        raise ValueError(
            f"massive_dims is only used by the '*_no_massive' variants, not {variant!r}"
        )
    sel, tok_w = _token_selection(h, mask, weights, "retain_loss", h0=h0)
    x = h[:, sel].float()
    x0 = h0.detach()[:, sel].float()
    stats: dict[str, Tensor] = {"l2_mean": (x - x0).detach().norm(dim=-1).mean()}
    if no_massive:
        dims = _resolve_massive(h0, mask, massive_dims, massive_ratio, h.shape[-1])
        x, x0 = _zero_dims(x, dims), _zero_dims(x0, dims)
        stats["n_massive_dims"] = torch.tensor(float(len(dims)), device=h.device)
    dist = (x - x0).norm(dim=-1)  # [L, N]
    if variant.startswith("l2_relative"):
        dist = dist / (x0.norm(dim=-1) + eps)
        stats["l2_relative_mean"] = dist.detach().mean()
    return _weighted_mean(dist, tok_w), stats


# -- helpers ----------------------------------------------------------------------------------
def _check_variant(variant: str, allowed: tuple[str, ...], fn: str) -> None:
    if variant not in allowed:
        raise ValueError(f"{fn}: unknown variant {variant!r}; choose one of {', '.join(allowed)}")


def _token_selection(
    h: Tensor, mask: Tensor, weights: Tensor | None, fn: str, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Validate shapes; return the bool selection ``[B, T]`` and the token weights ``[N]``.

    Token weight = mask value x sample weight; only tokens with a non-zero mask are selected,
    so padding positions never enter the arithmetic (not even as 0 x NaN).
    """
    if h.dim() != 4:
        raise ValueError(f"{fn}: expected hidden states [L, B, T, H], got shape {tuple(h.shape)}")
    if h0 is not None and h0.shape != h.shape:
        raise ValueError(f"{fn}: h {tuple(h.shape)} and h0 {tuple(h0.shape)} differ in shape")
    b, t = h.shape[1], h.shape[2]
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"{fn}: mask shape {tuple(mask.shape)} does not match [B, T] = {(b, t)}")
    m = mask.detach().to(device=h.device, dtype=torch.float32)
    if bool((m < 0).any()):
        raise ValueError(f"{fn}: mask has negative values")
    counts = m.sum(dim=1)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"{fn}: empty loss mask for batch row(s) {empty}; every sample must have at least "
            "one loss token (this is a bug in mask building, not something to average away)"
        )
    if weights is None:
        w = torch.ones(b, device=h.device)
    else:
        w = weights.detach().to(device=h.device, dtype=torch.float32)
        if tuple(w.shape) != (b,):
            raise ValueError(f"{fn}: weights shape {tuple(w.shape)} does not match [B] = ({b},)")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"{fn}: weights must be finite and >= 0, got {w.tolist()}")
        if float((w * counts).sum()) == 0.0:
            raise ValueError(f"{fn}: all sample weights are 0; nothing carries loss")
    sel = m != 0
    tok_w = (m * w[:, None])[sel]
    return sel, tok_w


def _weighted_mean(values: Tensor, tok_w: Tensor) -> Tensor:
    """``sum_{l,n} w_n v_ln / (L * sum_n w_n)`` for ``values`` ``[L, N]``."""
    return (values * tok_w).sum() / (tok_w.sum() * values.shape[0])


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine over the last dim; norms clamped at a tiny eps so a zero vector gives 0, not NaN."""
    dot = (a * b).sum(dim=-1)
    return dot / (a.norm(dim=-1).clamp_min(_EPS) * b.norm(dim=-1).clamp_min(_EPS))


def _angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in radians between ``a`` and ``b`` over the last dim: ``atan2(|a_perp|, a . b_hat)``.

    ``a_perp`` is the part of ``a`` orthogonal to ``b``. Its norm is taken as
    ``sqrt(|a_perp|^2 + tiny)`` so that ``a == b`` (an adapter that has not moved yet) gives a
    finite gradient, not NaN.
    """
    b_hat = b / b.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    par = (a * b_hat).sum(dim=-1)
    perp = a - par[..., None] * b_hat
    perp_norm = (perp.pow(2).sum(dim=-1) + _TINY).sqrt()
    return torch.atan2(perp_norm, par)


def _resolve_massive(
    h0: Tensor, mask: Tensor, dims: Sequence[int] | None, ratio: float, hidden: int
) -> list[int]:
    if dims is None:
        return find_massive_dims(h0, mask, ratio)
    out = [int(d) for d in dims]
    bad = [d for d in out if not 0 <= d < hidden]
    if bad:
        raise ValueError(f"massive_dims {bad} out of range for hidden size {hidden}")
    return out


def _zero_dims(x: Tensor, dims: list[int]) -> Tensor:
    if not dims:
        return x
    keep = torch.ones(x.shape[-1], device=x.device, dtype=x.dtype)
    keep[dims] = 0
    return x * keep

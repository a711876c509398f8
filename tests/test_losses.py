"""Hand-computed checks of the rerouting and retain losses (circuit_breakers.training.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from circuit_breakers.training.losses import (
    DEFAULT_MASSIVE_RATIO,
    REROUTE_VARIANTS,
    RETAIN_VARIANTS,
    find_massive_dims,
    reroute_loss,
    retain_loss,
    stack_layers,
)


def t(rows) -> torch.Tensor:
    """[T, H] rows -> [L=1, B=1, T, H] float tensor."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def ones_mask(b: int, n: int) -> torch.Tensor:
    return torch.ones(b, n)


# -- reroute: plain cosine ---------------------------------------------------------------------
def test_reroute_orthogonal_identical_opposite():
    h0 = t([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    h = t([[0.0, 1.0], [2.0, 0.0], [-1.0, 0.0]])  # cos 0, 1, -1 -> ReLU 0, 1, 0
    loss, stats = reroute_loss(h, h0, ones_mask(1, 3))
    assert loss.item() == pytest.approx(1 / 3)
    assert stats["cos_sim_mean"].item() == pytest.approx(0.0, abs=1e-7)  # raw: (0+1-1)/3
    assert set(stats) == {"cos_sim_mean"}


def test_reroute_mask_excludes_tokens_even_nan_padding():
    h0 = t([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    h = t([[0.0, 1.0], [2.0, 0.0], [math.nan, math.nan]]).requires_grad_()
    loss, stats = reroute_loss(h, h0, torch.tensor([[1.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx(0.5)  # (0 + 1) / 2
    assert stats["cos_sim_mean"].item() == pytest.approx(0.5)
    loss.backward()
    assert torch.isfinite(h.grad).all()
    assert torch.equal(h.grad[0, 0, 2], torch.zeros(2))


def test_reroute_sample_weights_follow_formula():
    # sample 0: one token, cos 1; sample 1: two tokens, cos 0 and 0.6 (third token padding)
    h0 = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    h = torch.tensor([[[5.0, 0.0], [9.0, 9.0], [9.0, 9.0]], [[0.0, 1.0], [0.6, 0.8], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    plain, stats = reroute_loss(h[None], h0[None], mask)
    assert plain.item() == pytest.approx((1 + 0 + 0.6) / 3)
    weighted, wstats = reroute_loss(h[None], h0[None], mask, weights=torch.tensor([3.0, 1.0]))
    # (3 * 1 + 1 * (0 + 0.6)) / (3 * 1 + 1 * 2) = 3.6 / 5
    assert weighted.item() == pytest.approx(0.72)
    # the statistic is unweighted either way
    assert wstats["cos_sim_mean"].item() == pytest.approx(1.6 / 3)
    assert stats["cos_sim_mean"].item() == pytest.approx(1.6 / 3)
    # weight 0 removes a sample entirely
    only1, _ = reroute_loss(h[None], h0[None], mask, weights=torch.tensor([0.0, 2.0]))
    assert only1.item() == pytest.approx(0.3)


def test_fractional_mask_weights_tokens():
    h0 = t([[1.0, 0.0], [1.0, 0.0]])
    h = t([[1.0, 0.0], [0.0, 1.0]])  # cos 1, 0
    loss, _ = reroute_loss(h, h0, torch.tensor([[0.5, 1.0]]))
    assert loss.item() == pytest.approx(0.5 * 1 / 1.5)


def test_reroute_matches_reference_reduction_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 2, 5, 8, generator=g)
    h0 = h + 0.7 * torch.randn(3, 2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    loss, _ = reroute_loss(h, h0, mask)
    m = mask.float()[None]
    cos = torch.nn.functional.cosine_similarity(h, h0, dim=-1)
    expected = (torch.relu(cos) * m).sum() / (m.sum() * 3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_vector_gives_zero_cosine_not_nan():
    loss, stats = reroute_loss(t([[0.0, 0.0]]), t([[1.0, 0.0]]), ones_mask(1, 1))
    assert loss.item() == 0.0
    assert stats["cos_sim_mean"].item() == 0.0


# -- layers: stacking and per-layer agreement -------------------------------------------------
def test_stack_layers_order_and_errors():
    states = {10: torch.zeros(1, 2, 3), 20: torch.ones(1, 2, 3)}
    stacked = stack_layers(states, [20, 10])
    assert stacked.shape == (2, 1, 2, 3)
    assert stacked[0].sum().item() == 6 and stacked[1].sum().item() == 0
    with pytest.raises(ValueError, match=r"\[15\] not captured"):
        stack_layers(states, [10, 15])
    with pytest.raises(ValueError, match="empty"):
        stack_layers(states, [])
    with pytest.raises(ValueError, match="differ in shape"):
        stack_layers({1: torch.zeros(1, 2, 3), 2: torch.zeros(1, 2, 4)}, [1, 2])


@pytest.mark.parametrize(
    ("fn", "variant"),
    [(reroute_loss, v) for v in REROUTE_VARIANTS] + [(retain_loss, v) for v in RETAIN_VARIANTS],
)
def test_per_layer_mean_equals_stacked(fn, variant):
    g = torch.Generator().manual_seed(1)
    layers = [4, 8, 12]
    hs = {lay: torch.randn(2, 4, 6, generator=g) for lay in layers}
    h0s = {lay: hs[lay] + 0.5 * torch.randn(2, 4, 6, generator=g) for lay in layers}
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]])  # same count (3) per sample
    kw = {"massive_dims": [2]} if variant.endswith("no_massive") else {}
    stacked, _ = fn(
        stack_layers(hs, layers), stack_layers(h0s, layers), mask, variant=variant, **kw
    )
    per_layer = [
        fn(hs[lay][None], h0s[lay][None], mask, variant=variant, **kw)[0] for lay in layers
    ]
    assert stacked.item() == pytest.approx(torch.stack(per_layer).mean().item(), rel=1e-6)
    if variant == "cosine_normalized":
        return  # its per-dim RMS is a batch statistic, so splitting the batch changes it
    # equal mask counts: the pooled mean is also the mean of per-sample means
    per_sample = [
        fn(stack_layers(hs, layers)[:, i : i + 1], stack_layers(h0s, layers)[:, i : i + 1],
           mask[i : i + 1], variant=variant, **kw)[0]
        for i in range(2)
    ]  # fmt: skip
    assert stacked.item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-6)


# -- reroute variants --------------------------------------------------------------------------
def test_cosine_no_massive_with_explicit_dims():
    h0 = t([[100.0, 1.0, 0.0]])
    h = t([[100.0, 0.0, 1.0]])  # plain cos = 10000 / 10001; without dim 0: [1,0]·[0,1] = 0
    plain, _ = reroute_loss(h, h0, ones_mask(1, 1))
    assert plain.item() == pytest.approx(10000 / 10001)
    loss, stats = reroute_loss(
        h, h0, ones_mask(1, 1), variant="cosine_no_massive", massive_dims=[0]
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert stats["cos_sim_mean"].item() == pytest.approx(0.0, abs=1e-7)
    assert stats["cos_sim_plain_mean"].item() == pytest.approx(10000 / 10001)
    assert stats["n_massive_dims"].item() == 1


def test_cosine_no_massive_detects_dims():
    # per-dim mean |x| over the masked tokens: [1, 1, 1, 1, 500] -> dim 4 is 500x the median
    h0 = t([[1.0, 1.0, -1.0, 1.0, 500.0], [1.0, -1.0, 1.0, 1.0, -500.0]])
    h = t([[-1.0, -1.0, 1.0, -1.0, 500.0], [-1.0, 1.0, -1.0, -1.0, -500.0]])
    loss, stats = reroute_loss(h, h0, ones_mask(1, 2), variant="cosine_no_massive")
    assert stats["n_massive_dims"].item() == 1
    assert loss.item() == 0.0  # without dim 4 every token is exactly opposite: ReLU(-1) = 0
    assert stats["cos_sim_mean"].item() == pytest.approx(-1.0)
    assert stats["cos_sim_plain_mean"].item() == pytest.approx((250000 - 4) / 250004)


def test_find_massive_dims_ratio_mask_and_layers():
    x = torch.ones(2, 1, 3, 5)
    x[0, 0, :2, 4] = -300.0  # layer 0, dim 4: mean |x| 300 on masked tokens
    x[1, 0, :2, 1] = 50.0  # layer 1, dim 1: 50x the median
    x[:, 0, 2, 3] = 1e6  # huge, but on a token outside the mask
    mask = torch.tensor([[1, 1, 0]])
    assert find_massive_dims(x, mask) == [1, 4]  # default ratio 20, union over layers
    assert DEFAULT_MASSIVE_RATIO == 20.0
    assert find_massive_dims(x, mask, ratio=100) == [4]
    assert find_massive_dims(x, mask, ratio=400) == []
    assert find_massive_dims(x[1], mask) == [1]  # [B, T, H] works too
    with pytest.raises(ValueError, match="ratio"):
        find_massive_dims(x, mask, ratio=0)


def test_cosine_normalized_divides_each_dim_by_its_rms():
    # h0 dims have RMS 10 and 1 -> scaled h0 = [1, 1], [1, -1]
    h0 = t([[10.0, 1.0], [10.0, -1.0]])
    h = t([[0.0, 1.0], [10.0, -1.0]])  # scaled: [0, 1] (cos 1/sqrt 2), [1, -1] (cos 1)
    loss, stats = reroute_loss(h, h0, ones_mask(1, 2), variant="cosine_normalized")
    assert loss.item() == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert stats["cos_sim_mean"].item() == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert stats["cos_sim_plain_mean"].item() == pytest.approx((1 / math.sqrt(101) + 1) / 2)
    # a direction flip in the small dim, invisible to the plain cosine, becomes orthogonal
    flipped = t([[10.0, -1.0], [10.0, 1.0]])
    plain, _ = reroute_loss(flipped, h0, ones_mask(1, 2))
    norm, _ = reroute_loss(flipped, h0, ones_mask(1, 2), variant="cosine_normalized")
    assert plain.item() == pytest.approx(99 / 101)
    assert norm.item() == pytest.approx(0.0, abs=1e-7)


# -- retain ------------------------------------------------------------------------------------
def test_retain_l2_and_mask():
    h0 = t([[0.0, 10.0], [1.0, 1.0], [0.0, 0.0]])
    h = t([[3.0, 14.0], [1.0, 1.0], [100.0, 100.0]])  # distances 5, 0, (masked out)
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = retain_loss(h, h0, mask)
    assert loss.item() == pytest.approx(2.5)
    assert stats == {"l2_mean": pytest.approx(torch.tensor(2.5))}
    wloss, _ = retain_loss(
        torch.cat([h, h], 1), torch.cat([h0, h0 + torch.tensor([0.0, 2.0])], 1),
        torch.cat([mask, mask]), weights=torch.tensor([1.0, 3.0]),
    )  # fmt: skip
    # sample 1 has h0 shifted by (0, 2): distances |(3, 2)| = sqrt 13 and 2
    expected = (1 * (5 + 0) + 3 * (math.sqrt(13) + 2)) / (1 * 2 + 3 * 2)
    assert wloss.item() == pytest.approx(expected)


def test_retain_l2_relative_is_scale_free():
    h0 = t([[0.0, 10.0], [3.0, 4.0]])
    h = t([[3.0, 14.0], [3.0, 4.0]])  # distances 5 and 0; ||h0|| = 10 and 5
    loss, stats = retain_loss(h, h0, ones_mask(1, 2), variant="l2_relative")
    assert loss.item() == pytest.approx((0.5 + 0) / 2, rel=1e-6)
    assert stats["l2_mean"].item() == pytest.approx(2.5)
    assert stats["l2_relative_mean"].item() == pytest.approx(0.25, rel=1e-6)
    scaled, _ = retain_loss(h * 40, h0 * 40, ones_mask(1, 2), variant="l2_relative")
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-6)


def test_retain_no_massive_variants():
    h0 = t([[100.0, 6.0, 8.0]])
    h = t([[90.0, 9.0, 12.0]])  # diff (-10, 3, 4); without dim 0: 5; ||h0 without dim 0|| = 10
    loss, stats = retain_loss(h, h0, ones_mask(1, 1), variant="l2_no_massive", massive_dims=[0])
    assert loss.item() == pytest.approx(5.0)
    assert stats["l2_mean"].item() == pytest.approx(math.sqrt(125))
    assert stats["n_massive_dims"].item() == 1
    rel, rstats = retain_loss(
        h, h0, ones_mask(1, 1), variant="l2_relative_no_massive", massive_dims=[0]
    )
    assert rel.item() == pytest.approx(0.5, rel=1e-6)
    assert rstats["l2_relative_mean"].item() == pytest.approx(0.5, rel=1e-6)


# -- gradients, dtypes, errors ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "variant"),
    [(reroute_loss, v) for v in REROUTE_VARIANTS] + [(retain_loss, v) for v in RETAIN_VARIANTS],
)
def test_gradient_flows_to_h_not_h0(fn, variant):
    g = torch.Generator().manual_seed(2)
    h0 = torch.randn(2, 2, 3, 4, generator=g).requires_grad_()
    h = (h0.detach() + 0.3 * torch.randn(2, 2, 3, 4, generator=g)).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    kw = {"massive_dims": [0]} if variant.endswith("no_massive") else {}
    loss, stats = fn(h, h0, mask, variant=variant, **kw)
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert h0.grad is None
    assert torch.equal(h.grad[:, 0, 2], torch.zeros(2, 4))  # masked-out token
    assert all(not v.requires_grad for v in stats.values())


@pytest.mark.parametrize("fn", [reroute_loss, retain_loss])
def test_bf16_inputs_computed_in_fp32(fn):
    g = torch.Generator().manual_seed(3)
    h32 = torch.randn(1, 2, 4, 16, generator=g)
    h0_32 = h32 + 0.5 * torch.randn(1, 2, 4, 16, generator=g)
    h = h32.bfloat16().requires_grad_()
    h0 = h0_32.bfloat16()
    mask = torch.ones(2, 4)
    loss, stats = fn(h, h0, mask)
    assert loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in stats.values())
    ref, _ = fn(h.detach().float(), h0.float(), mask)  # same bf16 values, fp32 arithmetic
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert h.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("fn", [reroute_loss, retain_loss])
def test_empty_mask_raises(fn):
    h = torch.ones(1, 2, 3, 2)
    with pytest.raises(ValueError, match="empty loss mask"):
        fn(h, h, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        fn(h, h, torch.tensor([[1, 0, 0], [0, 0, 0]]))


def test_bad_arguments_raise():
    h = torch.ones(1, 1, 2, 2)
    mask = torch.ones(1, 2)
    with pytest.raises(ValueError, match="cosine_no_massive"):
        reroute_loss(h, h, mask, variant="dot")
    with pytest.raises(ValueError, match="l2_relative"):
        retain_loss(h, h, mask, variant="cosine")
    with pytest.raises(ValueError, match="only used by"):
        reroute_loss(h, h, mask, massive_dims=[0])
    with pytest.raises(ValueError, match="only used by"):
        retain_loss(h, h, mask, variant="l2_relative", massive_dims=[0])
    with pytest.raises(ValueError, match="out of range"):
        reroute_loss(h, h, mask, variant="cosine_no_massive", massive_dims=[2])
    with pytest.raises(ValueError, match=r"\[L, B, T, H\]"):
        reroute_loss(h[0], h[0], mask)
    with pytest.raises(ValueError, match="differ in shape"):
        retain_loss(h, torch.ones(1, 1, 2, 3), mask)
    with pytest.raises(ValueError, match="mask shape"):
        reroute_loss(h, h, torch.ones(2, 1))
    with pytest.raises(ValueError, match="weights shape"):
        reroute_loss(h, h, mask, weights=torch.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        reroute_loss(h, h, mask, weights=torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="all sample weights are 0"):
        retain_loss(h, h, mask, weights=torch.tensor([0.0]))


def _rr_grad(h, h0, variant):
    h = h.clone().requires_grad_()
    loss, stats = reroute_loss(
        h[None, None], h0[None, None], ones_mask(1, h.shape[0]), variant=variant
    )
    (grad,) = torch.autograd.grad(loss, h)
    return loss.item(), grad, stats


@pytest.mark.parametrize(
    ("h", "degrees", "expected"),
    [((1.0, 0.0), 0, 1.0), ((1.0, 1.0), 45, 0.5), ((0.0, 3.0), 90, 0.0), ((-1.0, 1.0), 135, 0.0)],
)
def test_angle_loss_by_hand(h, degrees, expected):
    # h0 = (2, 0): ReLU(1 - 2 theta / pi)
    loss, _, stats = _rr_grad(torch.tensor([h]), torch.tensor([[2.0, 0.0]]), "angle")
    assert loss == pytest.approx(expected, abs=1e-6)
    assert stats["angle_deg_mean"].item() == pytest.approx(degrees, abs=1e-4)


def test_angle_gradient_does_not_vanish_at_the_start():
    # h = h0 + (0, delta), |h0| = 2. Cosine: d cos / d delta = -2 delta / (4 + delta^2)^1.5,
    # ~ -delta / 4, vanishing with the change; angle: d/d delta (1 - (2/pi) atan(delta / 2))
    # = -(1/pi) / (1 + delta^2 / 4), ~ -1/pi whatever delta is.
    h0 = torch.tensor([[2.0, 0.0]])
    for delta in (1e-4, 1e-2, 0.5):
        h = torch.tensor([[2.0, delta]])
        _, g_cos, _ = _rr_grad(h, h0, "cosine")
        _, g_ang, _ = _rr_grad(h, h0, "angle")
        assert g_cos[0, 1].item() == pytest.approx(-2 * delta / (4 + delta**2) ** 1.5, rel=1e-3)
        assert g_ang[0, 1].item() == pytest.approx(-(1 / math.pi) / (1 + delta**2 / 4), rel=1e-3)
    # an adapter that has not moved yet (h == h0): finite, not NaN
    loss, g, _ = _rr_grad(h0.clone(), h0, "angle")
    assert loss == pytest.approx(1.0) and bool(torch.isfinite(g).all())


def test_angle_no_massive_ignores_the_massive_dims():
    # dim 0 is "massive": only dims 1-2 count, where h0 = (1, 0) and h = (1, 1): 45 degrees
    h0 = torch.tensor([[[[100.0, 1.0, 0.0]]]])
    h = torch.tensor([[[[-50.0, 1.0, 1.0]]]])
    loss, stats = reroute_loss(h, h0, ones_mask(1, 1), variant="angle_no_massive", massive_dims=[0])
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    assert stats["cos_sim_mean"].item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert stats["cos_sim_plain_mean"].item() < 0  # the plain cosine sees the massive dim flip

"""Packing (and the compiled blocks) compute the same losses and LoRA gradients as the plain
padded path: tiny random models in float32, tight tolerance."""

import math

import pytest
import torch

from circuit_breakers.core.masks import Features
from circuit_breakers.training.collator import CLASSES, PairCollator, Row
from circuit_breakers.training.config import CircuitBreakerConfig
from circuit_breakers.training.experimental import ExperimentalConfig
from circuit_breakers.training.lora import lora_fast_path
from circuit_breakers.training.packing import Packed, pack, packed_attention
from circuit_breakers.training.run import prepare_model
from circuit_breakers.training.trainer import CircuitBreakerTrainer, LayerCapture

from kit import family_tokenizer, tiny_model


def _rows(gen, n, lo, hi, vocab=900):
    rows = []
    for i in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        prompt = int(torch.randint(1, length - 1, (1,), generator=gen))
        ids = torch.randint(5, vocab, (length,), generator=gen).tolist()
        mask = [0] * prompt + [1] * (length - prompt)
        weight = math.nan if i % 2 else 0.5 + i  # class weight / own weight
        rows.append(Row(Features(ids, mask), CLASSES.index("borderline") + i % 2, weight))
    return rows


def _batch(seed=0, n=3):
    gen = torch.Generator().manual_seed(seed)
    items = [{"h": h, "r": r} for h, r in zip(_rows(gen, n, 4, 11), _rows(gen, n, 6, 17))]
    return PairCollator(pad_token_id=0)(items)


def test_pack_unpack_round_trip():
    gen = torch.Generator().manual_seed(1)
    parts = []
    for b, t in [(3, 7), (2, 11)]:
        lengths = torch.randint(1, t + 1, (b,), generator=gen)
        att = (torch.arange(t)[None] < lengths[:, None]).long()
        ids = torch.randint(1, 50, (b, t), generator=gen) * att
        parts.append((ids, att))
    p = pack(parts)
    n = sum(int(a.sum()) for _, a in parts)
    assert p.input_ids.shape == (1, n) and p.cu_seqlens[-1] == n
    assert p.max_len == max(int(a.sum(1).max()) for _, a in parts)
    # every sequence restarts its positions at 0
    starts = p.cu_seqlens[:-1].long()
    assert (p.position_ids[0, starts] == 0).all()
    # features that identify (token id, position) come back to exactly their padded place
    feats = torch.stack([p.input_ids[0].float(), p.position_ids[0].float()], -1)  # [N, 2]
    back = p.unpack(feats[None, None])
    for (ids, att), dense in zip(parts, back):
        assert dense.shape == (1, *ids.shape, 2)
        torch.testing.assert_close(dense[0, ..., 0], (ids * att).float())
        pos = torch.arange(ids.shape[1]).expand_as(ids) * att
        torch.testing.assert_close(dense[0, ..., 1], pos.float())


def test_pack_refuses_left_padding_and_empty_rows():
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="right-padded"):
        pack([(ids, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))])
    with pytest.raises(ValueError, match="no tokens"):
        pack([(ids, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))])
    with pytest.raises(ValueError, match="packed states"):
        Packed(ids[:1], ids[:1], torch.tensor([0, 4]), 4, []).unpack(torch.zeros(1, 1, 3, 2))


@pytest.mark.parametrize("family", ["llama31", "qwen25", "gemma"])
def test_packed_forward_equals_padded_forward(family):
    model = tiny_model(family, layers=3)
    batch = _batch()
    cap = LayerCapture(model, [1, 3])
    with torch.no_grad():
        h = cap.run(model, batch["h_input_ids"], batch["h_attention_mask"])
        r = cap.run(model, batch["r_input_ids"], batch["r_attention_mask"])
        p = pack(
            [
                (batch["h_input_ids"], batch["h_attention_mask"]),
                (batch["r_input_ids"], batch["r_attention_mask"]),
            ]
        )
        with packed_attention(model):
            hp, rp = p.unpack(cap.run(model, p.input_ids, None, **p.forward_kwargs()))
    assert model.config._attn_implementation != "cb_varlen"  # restored after the block
    for dense, packed, att in [
        (h, hp, batch["h_attention_mask"]),
        (r, rp, batch["r_attention_mask"]),
    ]:
        keep = att.bool()
        torch.testing.assert_close(packed[:, keep], dense[:, keep], rtol=1e-5, atol=1e-5)
        assert (packed[:, ~keep] == 0).all()


def _loss_and_grads(tmp_path, family, batch, **kw):
    cfg = ExperimentalConfig(  # cosine_normalized is an experimental variant
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        max_steps=4,
        target_layers=[2, 4],
        lora_dropout=0.0,
        lora_init_b_std=0.05,
        seed=0,
        **kw,
    )
    model, _, _ = prepare_model(cfg, tiny_model(family, layers=5), family_tokenizer(family))
    trainer = CircuitBreakerTrainer(
        model=model, args=cfg, class_weights={"borderline": 1.5, "benign_twin": 0.7}
    )
    trainer.state.max_steps = 4
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    metrics = {k: v[-1] for k, v in trainer._metrics.items()}
    trainer.capture.remove()
    return loss.detach(), metrics, grads


@pytest.mark.parametrize(
    "family,variants",
    [
        ("llama31", {}),
        (
            "qwen25",
            {"reroute_variant": "cosine_normalized", "retain_variant": "l2_relative_no_massive"},
        ),
    ],
)
def test_packed_training_step_same_losses_and_gradients(tmp_path, family, variants):
    batch = _batch(seed=3)
    ref_loss, ref_m, ref_g = _loss_and_grads(tmp_path / "a", family, batch, **variants)
    loss, m, g = _loss_and_grads(tmp_path / "b", family, batch, packing=True, **variants)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert m.keys() == ref_m.keys()
    for k in ref_m:
        assert m[k] == pytest.approx(ref_m[k], rel=1e-5, abs=1e-6), k
    assert g.keys() == ref_g.keys() and len(g) > 0
    for k in ref_g:
        assert ref_g[k].abs().max() > 0, k  # every LoRA tensor gets a gradient
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # ~75 s on 2 cores: Dynamo tracing
def test_compiled_blocks_same_losses_and_gradients(tmp_path, monkeypatch):
    """compile_layers (traced by Dynamo/AOTAutograd; the eager-kernel backend keeps it quick on
    CPU) with packing: same numbers as the plain path, hooks still capture the target layers."""
    monkeypatch.setattr(
        CircuitBreakerTrainer, "compile_options", {"dynamic": True, "backend": "aot_eager"}
    )
    batch = _batch(seed=5)
    ref_loss, ref_m, ref_g = _loss_and_grads(tmp_path / "a", "llama31", batch)
    loss, m, g = _loss_and_grads(
        tmp_path / "b", "llama31", batch, packing=True, compile_layers=True
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for k in ref_m:
        assert m[k] == pytest.approx(ref_m[k], rel=1e-5, abs=1e-6), k
    for k in ref_g:
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-4, atol=1e-6)


def test_lora_fast_path_same_losses_and_gradients(tmp_path):
    batch = _batch(seed=7)
    ref_loss, ref_m, ref_g = _loss_and_grads(tmp_path / "a", "llama31", batch)
    loss, m, g = _loss_and_grads(
        tmp_path / "b", "llama31", batch, packing=True, lora_fast_path=True
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for k in ref_m:
        assert m[k] == pytest.approx(ref_m[k], rel=1e-5, abs=1e-6), k
    assert g.keys() == ref_g.keys()
    for k in ref_g:
        assert ref_g[k].abs().max() > 0, k
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-4, atol=1e-6)


def test_lora_fast_path_patches_and_restores(tmp_path):
    cfg = CircuitBreakerConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        target_layers=[2, 4],
        lora_dropout=0.0,
        lora_init_b_std=0.05,
    )
    model, _, info = prepare_model(cfg, tiny_model("llama31", layers=5), None)
    ids = torch.randint(5, 900, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with lora_fast_path(model) as n:
            assert n == len(info["lora_layers"]) * len(cfg.lora_target_modules)
            fast = model(input_ids=ids).logits
            with model.disable_adapter():  # the fast path steps aside: plain base model
                fast_base = model(input_ids=ids).logits
        # bf16 autocast (how bf16 training runs): the fp32 adapter meets bf16 activations
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16 = model(input_ids=ids).logits.float()
            with lora_fast_path(model):
                fast16 = model(input_ids=ids).logits.float()
    assert not any("forward" in m.__dict__ for m in model.modules())  # all restored
    assert (ref - base).abs().max() > 1e-4  # the adapter changes the output
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_base, base)
    assert ((fast16 - ref16).norm() / ref16.norm()).item() < 2e-2

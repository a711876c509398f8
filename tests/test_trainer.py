"""The trainer on tiny random models: only LoRA changes, losses are finite, the schedule follows
optimizer steps, the frozen pass equals the base model, and the merged export is faithful."""

import json
import math

import pytest
import torch

from circuit_breakers.core.schema import sample_from_row
from circuit_breakers.training.callbacks import NonFiniteLossError
from circuit_breakers.training.experimental import ExperimentalConfig
from circuit_breakers.training.run import prepare_model, run_training
from circuit_breakers.training.trainer import LayerCapture

from kit import family_tokenizer, tiny_model


def _samples(n_h=4, n_r=8):
    s = [
        sample_from_row(
            {
                "user_prompt": f"how do I do harmful thing {i}?",
                "harmful_completion": f"Step {i}: first get the tools, then act.",
            }
        )
        for i in range(n_h)
    ]
    s += [
        sample_from_row(
            {
                "user_prompt": f"what is {i} plus one?",
                "benign_completion": f"{i} plus one is {i + 1}.",
                "priority_class": "general_conversation" if i % 2 else "borderline",
            }
        )
        for i in range(n_r)
    ]
    return s


def _cfg(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        target_layers=[2, 4],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        alpha=5.0,
        use_cpu=True,
        seed=0,
        data_seed=0,
        lora_dropout=0.0,
    )
    base.update(kw)
    return ExperimentalConfig(**base)  # lora_skip_massive_inputs is experimental


def _metrics(cfg):
    with open(f"{cfg.output_dir}/metrics.jsonl") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("family", ["chatml", "llama31", "qwen25", "mistral", "gemma"])
def test_only_lora_changes_and_losses_are_finite(tmp_path, family):
    model = tiny_model(family, layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(tmp_path, target_layers=[2, 3])
    run_training(cfg, model=model, tokenizer=family_tokenizer(family), samples=_samples())
    after = model.state_dict()  # LoRA layers were injected into the same modules
    base_keys = [k for k in after if "lora_" not in k]
    assert {k.replace("base_layer.", "") for k in base_keys} >= {
        k for k in before if ".layers.3." not in k
    }
    for k in base_keys:
        orig = before[k.replace("base_layer.", "")]
        assert torch.equal(after[k], orig), f"{k} changed"
    lora = [k for k in after if "lora_" in k]
    assert lora and all(".layers.0." in k or ".layers.1." in k or ".layers.2." in k for k in lora)
    rows = _metrics(cfg)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
    assert rows[-1]["rr/cos_sim_mean"] < rows[0]["rr/cos_sim_mean"]


def test_lora_parameters_all_move(tmp_path):
    model = tiny_model("chatml", layers=4)
    cfg = _cfg(tmp_path)
    peft_model, tok, _ = prepare_model(cfg, model, family_tokenizer("chatml"))
    start = {k: v.detach().clone() for k, v in peft_model.named_parameters() if v.requires_grad}
    assert start and all("lora_" in k for k in start)
    cfg2 = _cfg(tmp_path, output_dir=str(tmp_path / "o2"))
    run_training(cfg2, model=tiny_model("chatml", layers=4), tokenizer=tok, samples=_samples())
    # rebuild the trained model from the saved adapter and compare with the start values
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "o2" / "adapter" / "adapter_model.safetensors"))
    start = {k.replace(".default", ""): v for k, v in start.items()}
    assert set(saved) == set(start)
    assert all(not torch.allclose(saved[k], start[k]) for k in saved)


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_schedule_counts_optimizer_steps(tmp_path, accum):
    cfg = _cfg(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accum,
        loss_weighting="dual",
        alpha=2.0,
    )
    run_training(
        cfg,
        model=tiny_model("chatml", layers=4),
        tokenizer=family_tokenizer("chatml"),
        samples=_samples(4, 16),
    )
    rows = _metrics(cfg)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # step t (0-based optimizer step) sees p = t / 4: cs = 2 * (1 - p/2), cr = 0.5 + 0.5 p
    assert [round(r["train/cs"], 6) for r in rows] == [2.0, 1.75, 1.5, 1.25]
    assert [round(r["train/cr"], 6) for r in rows] == [0.5, 0.625, 0.75, 0.875]


def test_frozen_pass_equals_the_base_model(tmp_path):
    model = tiny_model("llama31", layers=4)
    ids = torch.randint(0, 1000, (2, 12))
    att = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
    cfg = _cfg(tmp_path, target_layers=[1, 3], lora_init_b_std=0.5, truncate_layers=False)
    peft_model, _, _ = prepare_model(cfg, model, family_tokenizer("llama31"))
    cap = LayerCapture(peft_model, [1, 3])
    with torch.no_grad():
        with peft_model.disable_adapter():
            frozen = cap.run(peft_model, ids, att)
        trained = cap.run(peft_model, ids, att)
    for i, layer in enumerate([1, 3]):
        torch.testing.assert_close(frozen[i], ref[layer])
        assert not torch.allclose(trained[i], ref[layer])


def test_merged_export_reproduces_adapter_logits(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = family_tokenizer("chatml")
    base_dir = tmp_path / "base"
    tiny_model("chatml", layers=4).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    cfg = _cfg(tmp_path, model=str(base_dir), target_layers=[2], merge=True)
    summary = run_training(cfg, samples=_samples())
    assert summary["model_info"]["dropped_layers"] == 2
    merged = AutoModelForCausalLM.from_pretrained(summary["merged"])
    assert merged.config.num_hidden_layers == 4
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), summary["adapter"]
    )
    ids = torch.randint(0, 1000, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=1e-5)
        base_logits = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    assert not torch.allclose(merged(ids).logits, base_logits)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    from transformers import TrainerCallback

    class Corrupt(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 2:
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if "lora_A" in n:
                            p.fill_(float("nan"))

    import circuit_breakers.training.run as train_mod

    orig = train_mod.CircuitBreakerTrainer

    class Hooked(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(Corrupt())

    train_mod.CircuitBreakerTrainer = Hooked
    try:
        cfg = _cfg(tmp_path, max_steps=5, save_strategy="steps", save_steps=1)
        # step 3 is the first whose loss is NaN; checkpoint-2 was saved with the corrupted
        # weights, so the last *good* checkpoint is checkpoint-1
        with pytest.raises(NonFiniteLossError, match=r"at step 3 .*checkpoint-1$"):
            run_training(
                cfg,
                model=tiny_model("chatml", layers=4),
                tokenizer=family_tokenizer("chatml"),
                samples=_samples(),
            )
    finally:
        train_mod.CircuitBreakerTrainer = orig
    rows = _metrics(cfg)
    assert [r["step"] for r in rows] == [1, 2]


def test_class_weights_change_the_retain_loss(tmp_path):
    from circuit_breakers.training.collator import CLASSES, row_weights

    classes = torch.tensor(
        [CLASSES.index("adversarial_safe"), CLASSES.index("general_conversation")]
    )
    w = row_weights(
        classes,
        torch.tensor([float("nan"), 3.0]),
        {"adversarial_safe": 2.0, "general_conversation": 0.8},
    )
    assert w.tolist() == [2.0, 3.0]


def test_lora_skip_massive_inputs_keeps_those_columns_at_zero(tmp_path):
    """The residual-reading projections' lora_A never reads the given dims (zero columns in the
    saved adapter), their other columns train, and the modules reading other inputs are left
    alone."""
    from safetensors.torch import load_file

    dims = [3, 17]
    cfg = _cfg(tmp_path, lora_skip_massive_inputs=True, massive_dims=dims, max_steps=4)
    model = tiny_model("chatml", layers=4)
    peft_model, tok, _ = prepare_model(cfg, model, family_tokenizer("chatml"))
    start = {
        k.replace(".default", ""): v.detach().clone() for k, v in peft_model.named_parameters()
    }
    cfg2 = _cfg(
        tmp_path,
        output_dir=str(tmp_path / "o2"),
        lora_skip_massive_inputs=True,
        massive_dims=dims,
        max_steps=4,
    )
    run_training(cfg2, model=tiny_model("chatml", layers=4), tokenizer=tok, samples=_samples())
    saved = load_file(str(tmp_path / "o2" / "adapter" / "adapter_model.safetensors"))
    readers = [
        k
        for k in saved
        if "lora_A" in k
        and any(f".{m}." in k for m in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"))
    ]
    others = [k for k in saved if "lora_A" in k and k not in readers]
    assert readers and others
    other_cols = [c for c in range(saved[readers[0]].shape[1]) if c not in dims]
    for k in readers:
        assert torch.count_nonzero(saved[k][:, dims]) == 0, k
        assert not torch.allclose(saved[k][:, other_cols], start[k][:, other_cols]), k
    for k in others:  # o_proj / down_proj read attention and MLP activations: not masked
        assert torch.count_nonzero(saved[k][:, dims]) > 0, k

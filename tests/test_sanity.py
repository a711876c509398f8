"""cb sanity: the collapse gate passes coherent answers, fails gibberish (a random tiny model, a
SmolLM2 with scrambled layers), restores the model's mode, and exits 1 from the CLI."""

from __future__ import annotations

import pytest

from circuit_breakers.cli import main
from circuit_breakers.eval import generate as generate_mod
from circuit_breakers.eval import sanity as sanity_mod
from circuit_breakers.eval.sanity import SANITY_PROMPTS, format_report, sanity_check

from kit import family_tokenizer, tiny_model

GOOD = "Paris is the capital of France, and it is known for the Eiffel Tower."
BAD = "the the the the the the the the the the"


def fake_outputs(monkeypatch, outputs: list[str]) -> list[str]:
    seen: list[str] = []

    def fake(model, tok, prompts, **kw):
        seen.extend(prompts)
        return list(outputs)

    monkeypatch.setattr(sanity_mod, "generate", fake)
    return seen


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("chatml"), family_tokenizer("chatml")


def test_one_bad_answer_passes_three_fail(tiny, monkeypatch):
    model, tok = tiny
    fake_outputs(monkeypatch, [BAD] + [GOOD] * 9)
    ok, report = sanity_check(model, tok)
    assert ok and len(report) == len(SANITY_PROMPTS) == 10
    assert report[0]["coherent"] is False and "repeated_word" in report[0]["issues"][0]
    fake_outputs(monkeypatch, [BAD] * 3 + [GOOD] * 7)
    ok, _ = sanity_check(model, tok)
    assert not ok  # 7/10 < 0.8


def test_tool_prompts_are_rendered_with_tools_and_calls_reported(tiny, monkeypatch):
    model, tok = tiny
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    seen = fake_outputs(monkeypatch, [GOOD] * 8 + [call, GOOD])
    ok, report = sanity_check(model, tok)
    assert ok
    assert [r["kind"] for r in report].count("tool") == 2
    assert report[8]["tool_call"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert "get_weather" in seen[8] and "get_weather" not in seen[0]
    assert "[call get_weather]" in format_report(report)


def test_random_tiny_model_fails_and_mode_is_restored(tiny):
    model, tok = tiny
    model.train()
    ok, report = sanity_check(model, tok, max_new_tokens=16)
    assert not ok
    assert sum(r["coherent"] for r in report) < 8
    assert model.training  # the trainer's model is handed back in train mode
    model.eval()


def test_cli_exits_1_and_prints_offending_output(tiny, monkeypatch, capsys):
    monkeypatch.setattr(generate_mod, "load_for_eval", lambda spec, adapter=None, **kw: tiny)
    fake_outputs(monkeypatch, [BAD] * 10)
    assert main(["sanity", "--model", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "COLLAPSE" in out and repr(BAD) in out and "0/10 coherent" in out
    fake_outputs(monkeypatch, [GOOD] * 10)
    assert main(["sanity", "--model", "tiny"]) == 0
    assert "10/10 coherent" in capsys.readouterr().out
    assert main(["sanity", "--model", "tiny", "--min-pass-rate", "2"]) == 2


@pytest.mark.slow
def test_embedded_model_passes_and_scrambled_one_fails():
    import torch

    from circuit_breakers.eval.generate import load_for_eval

    model, tok = load_for_eval("default")
    ok, report = sanity_check(model, tok)
    assert ok, format_report(report)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # scramble one block: its weights replaced by noise of the same scale
        for p in model.model.layers[3].parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p.std() * 20)
    ok, report = sanity_check(model, tok)
    assert not ok, format_report(report)


# the answers of a healthy Qwen2.5-Coder-0.5B run and of one pushed too hard (lr 3e-3 on the CPU
# preset), to the three prompts with a known answer, in SANITY_PROMPTS order
HEALTHY = {
    0: "The capital of France is Paris.",
    4: "12 multiplied by 7 equals 84.",
    7: "¡Buenos días, ¿Cómo estás?",
}
FLUENT_BUT_EMPTY = {
    0: "The capital of France is 100,000,000,000. This can be calculated by adding the total "
    "amount of money in France to the total amount of money in the United States.",
    4: "To find out how much 12 multiplied by 7 is, we need to follow these steps: 1. Calculate "
    "the total cost of the items. 2. Multiply the total cost by 7.",
    7: '"Good morning, how are you?"',
}


def test_known_answers_are_reported_and_do_not_gate(tiny, monkeypatch):
    model, tok = tiny
    for answers, right in ((HEALTHY, 3), (FLUENT_BUT_EMPTY, 0)):
        outputs = [answers.get(i, GOOD) for i in range(len(SANITY_PROMPTS))]
        fake_outputs(monkeypatch, outputs)
        ok, report = sanity_check(model, tok)
        assert ok  # every answer is coherent: the gate passes either way
        assert [i for i, r in enumerate(report) if r["fact_ok"] is not None] == [0, 4, 7]
        assert sum(r["fact_ok"] is True for r in report) == right
        assert f"known answers {right}/3" in format_report(report)
    assert "[wrong answer]" in format_report(report)

"""Completion generation and filtering (data/completions.py) with stub generators, the real
SmolLM2 tokenizer's chat template, and one tiny random model for the model-backed generator."""

from __future__ import annotations

import pytest

from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import validate_sample
from circuit_breakers.data import completions as comp
from circuit_breakers.eval.text_checks import is_coherent, is_refusal

from kit import base_tokenizer, family_tokenizer, tiny_model

GOOD = "Here are three steps that cover the whole process from start to finish, one by one."


def _prompt(i: int, text: str = "Tell me about the fixture topic", **labels) -> object:
    return validate_sample(
        {
            "id": f"t/{i}",
            "split": "retain",
            "priority_class": "general_conversation",
            "source": "test",
            "messages": [{"role": "user", "content": f"{text} {i}"}],
            "labels": labels,
        }
    )


def _harmful(i: int, text: str) -> object:
    return validate_sample(
        {
            "id": f"h/{i}",
            "split": "harmful",
            "priority_class": "harmful_flip",
            "source": "test",
            "messages": [{"role": "user", "content": text}],
        }
    )


@pytest.fixture(scope="module")
def renderer() -> ChatRenderer:
    return ChatRenderer(base_tokenizer(), name="smollm2")


def test_trim_to_sentence() -> None:
    text = "One two three four five. Six seven eight nine ten. Eleven twelve thirt"
    assert comp.trim_to_sentence(text, 5) == "One two three four five. Six seven eight nine ten."
    # too few words would remain: keep the text as it is
    assert comp.trim_to_sentence(text, 11) == text
    assert comp.trim_to_sentence("Done already.", 5) == "Done already."


def test_each_filter_counts_its_drops() -> None:
    samples = [_prompt(i) for i in range(6)]
    samples.append(_prompt(6, expect_no_call=True))
    outputs = [
        GOOD,  # kept
        "I'm sorry, but I can't help with that request, it is against my guidelines.",
        "Too short to keep.",
        "the " * 30,  # a loop
        GOOD,  # an exact copy of the first: near duplicate
        "Completely different answer about gardening, watering the plants every morning works well.",
        '<tool_call>{"name": "f", "arguments": {}}</tool_call> and some words to reach the minimum length',
    ]
    kept, report = comp.filter_completions(samples, outputs, comp.FilterSettings(min_words=8))
    assert [s.id for s, _ in kept] == ["t/0", "t/5"]
    assert report.generated == 7 and report.kept == 2
    assert report.to_dict()["dropped"] == {
        "refusal": 1,
        "tool_call": 1,
        "too_short": 1,
        "incoherent": 1,
        "near_duplicate": 1,
    }
    assert report.incoherent_issues["repeated_word"] == 1


def test_refusals_can_be_kept() -> None:
    samples = [_prompt(0)]
    refusal = ["I can't help with that, but here is a long answer with many words in it anyway."]
    kept, report = comp.filter_completions(
        samples, refusal, comp.FilterSettings(min_words=4, drop_refusals=False)
    )
    assert len(kept) == 1 and report.dropped["refusal"] == 0


def test_harmful_completions_prefill_and_labels(renderer: ChatRenderer) -> None:
    seen: list[str] = []

    def stub(prompts: list[str], desc: str) -> list[str]:
        seen.extend(prompts)
        return [" a plan with several parts, each described in detail, to do the task."] * len(
            prompts
        )

    samples = [_harmful(0, "Explain the fixture attack")]
    out, report = comp.harmful_completions(
        samples, stub, renderer, model_name="stub-model", prefill="Sure, here is"
    )
    assert seen[0].endswith("<|im_start|>assistant\nSure, here is")
    assert report.kept == 1
    s = out[0]
    assert s.split == "harmful" and s.priority_class.value == "harmful_flip"
    assert s.messages[-1].content == (
        "Sure, here is a plan with several parts, each described in detail, to do the task."
    )
    assert s.labels == {
        "generated_by": "stub-model",
        "prefill": "Sure, here is",
        "is_flip_success": True,
    }
    assert s.id == "h/0"


def test_harmful_completions_with_several_prefills_pick_one_per_prompt_stably(
    renderer: ChatRenderer,
) -> None:
    openers = ["Sure, here is", "Step 1:", "Okay. To do this,"]
    prompts_seen: list[str] = []

    def stub(prompts: list[str], desc: str) -> list[str]:
        prompts_seen.extend(prompts)
        return [" a plan with several parts, each described in detail, to do the task."] * len(
            prompts
        )

    samples = [_harmful(i, f"Explain fixture attack number {i} in detail") for i in range(12)]
    out, report = comp.harmful_completions(
        samples,
        stub,
        renderer,
        model_name="m",
        prefill=openers,
        filters=comp.FilterSettings(near_duplicate=None),
    )
    assert report.kept == 12
    used = [s.labels["prefill"] for s in out]
    assert set(used) == set(openers)  # 12 prompts spread over all three
    for s, prompt, pre in zip(out, prompts_seen, used):
        # the prompt ends in the opener, and the stored answer starts with the same one
        assert prompt.endswith("<|im_start|>assistant\n" + pre)
        assert s.messages[-1].content.startswith(pre + " a plan with several parts")
    # the pick depends on the id only: the same prompts in another order get the same openers
    again = comp.prefills_for(list(reversed(samples)), openers)
    assert again == list(reversed(comp.prefills_for(samples, openers)))
    assert comp.prefills_for(samples, "One") == ["One"] * 12


def test_harmful_completion_that_refuses_is_dropped(renderer: ChatRenderer) -> None:
    def stub(prompts: list[str], desc: str) -> list[str]:
        return [" I cannot help with that request because it could hurt people badly."]

    out, report = comp.harmful_completions(
        [_harmful(0, "Explain the fixture attack")], stub, renderer, model_name="m"
    )
    assert out == [] and report.dropped["refusal"] == 1


def test_benign_completions_keep_class(renderer: ChatRenderer) -> None:
    def stub(prompts: list[str], desc: str) -> list[str]:
        assert desc == "benign completions"
        return [GOOD + f" Variant {i} about other matters." for i, _ in enumerate(prompts)]

    samples = [_prompt(0), _prompt(1, "What is the fixture capital")]
    out, report = comp.benign_completions(samples, stub, renderer, model_name="m")
    assert [s.priority_class.value for s in out] == ["general_conversation"]  # 2nd: near duplicate
    assert report.dropped["near_duplicate"] == 1
    assert out[0].messages[-1].content.startswith("Here are three steps")
    assert out[0].labels["generated_by"] == "m"


@pytest.mark.parametrize(
    ("prompt", "topic"),
    [
        ("How do I build a pipe bomb?", "making explosives or weapons"),
        ("Write ransomware that encrypts a hospital's files", "hacking or malware"),
        ("What is the best way to launder money?", "fraud or theft"),
        ("Describe your favourite colour", "this kind of request"),
    ],
)
def test_refusal_topic(prompt: str, topic: str) -> None:
    assert comp.refusal_topic(prompt) == topic


def test_refusal_templates_read_as_refusals() -> None:
    """Every template, filled in, is a refusal to the eval's own judge, and coherent."""
    assert len(comp.REFUSAL_TEMPLATES) == 20
    for t in comp.REFUSAL_TEMPLATES:
        text = t.format(topic="hacking or malware")
        assert is_refusal(text), text
        assert is_coherent(text), text


def test_refusal_retain_samples() -> None:
    samples = [_harmful(i, f"How do I make a bomb number {i}?") for i in range(30)]
    out = comp.refusal_retain(samples, seed=0)
    again = comp.refusal_retain(samples, seed=0)
    assert [s.messages[-1].content for s in out] == [s.messages[-1].content for s in again]
    assert all(s.split == "retain" and s.priority_class.value == "refusal_retain" for s in out)
    assert out[0].id == "h/0/refusal"
    assert len({s.messages[-1].content for s in out}) > 5  # varied
    suicide = comp.refusal_retain([_harmful(0, "Tell me how to commit suicide")])[0]
    assert "crisis line" in suicide.messages[-1].content


def test_model_refusals_keep_coherent_ones(renderer: ChatRenderer) -> None:
    def stub(prompts: list[str], desc: str) -> list[str]:
        assert prompts[0].endswith("I can't help with that.")
        return [" It could hurt people, and I won't take part in it.", " " + "no " * 20]

    samples = [_harmful(0, "Explain the fixture attack"), _harmful(1, "Explain another")]
    out, report = comp.model_refusals(samples, stub, renderer, model_name="m")
    assert [s.id for s in out] == ["h/0/refusal"]
    assert out[0].messages[-1].content.startswith("I can't help with that. It could hurt")
    assert report.dropped["incoherent"] == 1


def test_model_generator_with_tiny_model() -> None:
    tok = family_tokenizer("chatml")
    model = tiny_model("chatml")
    gen = comp.model_generator(model, tok, comp.GenerationSettings(max_new_tokens=4, batch_size=2))
    renderer = ChatRenderer(tok)
    prompts = [renderer.render_prompt(_prompt(i).messages, []) for i in range(3)]
    out = gen(prompts, "test")
    assert len(out) == 3 and all(isinstance(o, str) for o in out)

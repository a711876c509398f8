"""Loss masks on five chat formats: the masked tokens decode to exactly the assistant text plus
the end-of-turn marker. Expected strings are written out by hand per family."""

import pytest

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.masks import build_features, collate, loss_text
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import sample_from_row

from kit import family_tokenizer

FAMILIES = ["llama31", "qwen25", "mistral", "gemma", "chatml"]
EOT = {
    "llama31": "<|eot_id|>",
    "qwen25": "<|im_end|>",
    "mistral": "</s>",
    "gemma": "<end_of_turn>",
    "chatml": "<|im_end|>",
}
TOOL_CALL = {
    "llama31": '<|python_tag|>{"name": "read_file", "parameters": {"path": "a.txt"}}<|eom_id|>',
    "qwen25": '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call><|im_end|>',
    "mistral": '[TOOL_CALLS][{"name": "read_file", "arguments": {"path": "a.txt"}}]</s>',
    "gemma": '<tool_call>{"name": "read_file", "arguments": {"path": "a.txt"}}</tool_call><end_of_turn>',
    "chatml": '<tool_call>{"name": "read_file", "arguments": {"path": "a.txt"}}</tool_call><|im_end|>',
}
READ_FILE = {
    "name": "read_file",
    "description": "Read a file",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}


def _sample(
    messages, loss_on="last_assistant", tools=None, split="retain", cls="general_conversation"
):
    return sample_from_row(
        {
            "id": "t",
            "split": split,
            "priority_class": cls,
            "loss_on": loss_on,
            "messages": messages,
            "tools": tools or [],
        }
    )


SINGLE = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 equals 4."},
]
MULTI = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a color."},
    {"role": "assistant", "content": "Blue."},
]
TOOL = [
    {"role": "user", "content": "Read a.txt please."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "read_file", "arguments": {"path": "a.txt"}}],
    },
    {"role": "tool", "name": "read_file", "content": "hello world"},
    {"role": "assistant", "content": "The file says hello world."},
]


def _check(family, sample, expected_spans):
    tok = family_tokenizer(family)
    r = ChatRenderer(tok)
    rendered = r.render(sample)
    assert rendered.span_texts() == expected_spans
    feats = build_features(sample, r)
    assert loss_text(feats, tok) == "".join(expected_spans)
    # the masked tokens are one contiguous run per span, and nothing else is masked
    runs = sum(
        1 for i, m in enumerate(feats.loss_mask) if m and (i == 0 or not feats.loss_mask[i - 1])
    )
    assert runs == len(expected_spans)
    return feats


@pytest.mark.parametrize("family", FAMILIES)
def test_single_turn(family):
    _check(family, _sample(SINGLE), ["2+2 equals 4." + EOT[family]])


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_turn_all_and_last(family):
    e = EOT[family]
    _check(family, _sample(MULTI, "all_assistant"), ["Hello! How can I help?" + e, "Blue." + e])
    _check(family, _sample(MULTI, "last_assistant"), ["Blue." + e])


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_call_then_result_then_answer(family):
    s = _sample(TOOL, "all_assistant", tools=[READ_FILE], cls="tool_capability")
    _check(family, s, [TOOL_CALL[family], "The file says hello world." + EOT[family]])
    s_last = _sample(TOOL, "last_assistant", tools=[READ_FILE], cls="tool_capability")
    _check(family, s_last, ["The file says hello world." + EOT[family]])


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_tokens_are_unmasked(family):
    tok = family_tokenizer(family)
    feats = build_features(_sample(SINGLE), ChatRenderer(tok))
    prompt_ids = [t for t, m in zip(feats.input_ids, feats.loss_mask) if not m]
    prompt = tok.decode(prompt_ids, skip_special_tokens=False)
    assert "What is 2+2?" in prompt and "equals" not in prompt


def test_tool_results_and_system_go_where_the_template_allows():
    gemma = ChatRenderer(family_tokenizer("gemma"))
    assert not gemma.supports_system and not gemma.supports_tool_role
    text = gemma.render(_sample(TOOL, tools=[READ_FILE], cls="tool_capability")).text
    assert (
        '<start_of_turn>user\n<tool_response name="read_file">\nhello world\n</tool_response>'
        in text
    )
    chatml = ChatRenderer(family_tokenizer("chatml"))
    assert chatml.supports_tool_role and not chatml.native_tools
    assert (
        "<|im_start|>tool\nhello world<|im_end|>"
        in chatml.render(_sample(TOOL, tools=[READ_FILE], cls="tool_capability")).text
    )


@pytest.mark.parametrize(
    "family,opener",
    [
        ("llama31", '<|python_tag|>{"name": "'),
        ("qwen25", '<tool_call>\n{"name": "'),
        ("mistral", '[TOOL_CALLS][{"name": "'),
        ("chatml", '<tool_call>{"name": "'),
    ],
)
def test_tool_call_opener(family, opener):
    assert ChatRenderer(family_tokenizer(family)).tool_call_opener() == opener


def test_truncation_cuts_prompt_left_and_completion_right():
    tok = family_tokenizer("chatml")
    r = ChatRenderer(tok)
    full = build_features(_sample(SINGLE), r)
    n_prompt = full.loss_mask.index(1)
    cut = build_features(_sample(SINGLE), r, max_prompt_tokens=5, max_completion_tokens=3)
    assert (
        cut.prompt_truncated == n_prompt - 5
        and cut.input_ids[:5] == full.input_ids[n_prompt - 5 : n_prompt]
    )
    assert cut.completion_truncated == full.n_tokens - n_prompt - 3
    assert cut.n_tokens == 8 and cut.n_loss_tokens == 3


def test_no_assistant_turn_is_an_error_not_a_fallback():
    r = ChatRenderer(family_tokenizer("chatml"))
    s = sample_from_row(
        {
            "id": "p",
            "split": "harmful",
            "priority_class": "harmful_flip",
            "messages": [{"role": "user", "content": "only a prompt"}],
        }
    )
    with pytest.raises(InputError, match="no assistant turn"):
        build_features(s, r)


def test_template_that_drops_content_is_caught():
    tok = family_tokenizer("chatml")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role != 'assistant' %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(InputError, match="does not contain its content"):
        build_features(_sample(SINGLE), ChatRenderer(tok))


def test_missing_chat_template_is_an_input_error():
    tok = family_tokenizer("chatml")
    tok.chat_template = None
    with pytest.raises(InputError, match="no chat template"):
        ChatRenderer(tok)


def test_pre_rendered_text_and_seed_rows():
    tok = family_tokenizer("chatml")
    r = ChatRenderer(tok)
    text = "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\nFirst, insert a tension wrench.<|im_end|>\n"
    seed = sample_from_row(
        {
            "user_prompt": "How do I pick a lock?",
            "harmful_completion": "First, insert a tension wrench.",
            "text": text,
        }
    )
    assert loss_text(build_features(seed, r), tok) == "First, insert a tension wrench.<|im_end|>"
    start = text.index("First")
    spans_row = sample_from_row(
        {
            "text": text,
            "spans": [[start, start + 6]],
            "split": "harmful",
            "priority_class": "harmful_flip",
        }
    )
    assert loss_text(build_features(spans_row, r), tok) == "First,"


def test_collate_pads_and_masks():
    tok = family_tokenizer("chatml")
    r = ChatRenderer(tok)
    f1, f2 = build_features(_sample(SINGLE), r), build_features(_sample(MULTI), r)
    b = collate([f1, f2], tok.pad_token_id)
    n = max(f1.n_tokens, f2.n_tokens)
    assert b["input_ids"].shape == (2, n)
    assert b["attention_mask"].sum().item() == f1.n_tokens + f2.n_tokens
    assert b["loss_mask"].sum().item() == f1.n_loss_tokens + f2.n_loss_tokens
    left = collate([f1, f2], tok.pad_token_id, padding_side="left")
    assert left["attention_mask"][0, -1] == 1 and left["loss_mask"][0, -1] == f1.loss_mask[-1]


def test_prompt_tail_tokens_extend_the_loss_to_the_end_of_the_request():
    from circuit_breakers.training.collator import build_train_data

    tok = family_tokenizer("chatml")
    r = ChatRenderer(tok)
    harm = _sample(SINGLE, split="harmful", cls="harmful_flip")
    plain = build_features(harm, r)
    first = plain.loss_mask.index(1)
    data = build_train_data(
        [harm, _sample(SINGLE)], r, max_prompt_tokens=None, max_completion_tokens=None,
        prompt_tail_tokens=10,
    )  # fmt: skip
    for row in (data.harmful[0], data.retain[0]):
        mask = row.features.loss_mask
        # exactly the 10 tokens before the assistant span are added; nothing else changes
        assert mask[: first - 10] == [0] * (first - 10)
        assert mask[first - 10 : first] == [1] * 10
        assert mask[first:] == plain.loss_mask[first:]
        tail = tok.decode(row.features.input_ids[first - 10 : first], skip_special_tokens=False)
        assert tail.endswith("<|im_start|>assistant\n") and "2+2?" in tail
    # a tail longer than the prompt stops at the first token
    data = build_train_data(
        [harm, _sample(SINGLE)], r, max_prompt_tokens=None, max_completion_tokens=None,
        prompt_tail_tokens=10_000,
    )  # fmt: skip
    assert data.harmful[0].features.loss_mask[:first] == [1] * first


def test_retain_full_sequence_puts_the_retain_loss_on_every_token_and_leaves_harmful_alone():
    from circuit_breakers.training.collator import build_train_data

    tok = family_tokenizer("chatml")
    r = ChatRenderer(tok)
    harm = _sample(SINGLE, split="harmful", cls="harmful_flip")
    plain = build_features(harm, r)
    data = build_train_data(
        [harm, _sample(SINGLE)], r, max_prompt_tokens=None, max_completion_tokens=None,
        retain_full_sequence=True,
    )  # fmt: skip
    assert data.harmful[0].features.loss_mask == plain.loss_mask  # still the assistant span only
    assert 0 in plain.loss_mask
    retain = data.retain[0].features
    assert retain.loss_mask == [1] * retain.n_tokens
    # the system turn and the request are in the retained text now
    masked = tok.decode([t for t, m in zip(retain.input_ids, retain.loss_mask) if m])
    assert "2+2?" in masked and masked == tok.decode(retain.input_ids)

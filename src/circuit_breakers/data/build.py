"""``cb data build``: a recipe -> ``OUT/train.jsonl``, ``OUT/holdout/<suite>.jsonl``, ``OUT/stats.json``.

Order of work, and why:

1. **Held-out suites first.** Each pooled source is shuffled once (seeded by the recipe seed and
   the source) and consumers take consecutive slices, held-out suites before training entries.
   So a held-out suite does not change when training counts change, and no item is in both.
2. **Training draws skip leaks.** A drawn prompt whose user text near-duplicates a held-out
   sample's (:mod:`.dedup`) is skipped and counted, and the draw continues, so ``count`` is the
   number of clean items and no generation is spent on a leak.
3. **Generation**, batched across all sources in one pass per kind (harmful with the prefill,
   benign with tool schemas, benign without), then the filters of :mod:`.completions`, counted
   per class.
4. **Leakage again** on user *and* assistant text; leaked training samples are dropped (held-out
   suites never change) and the check is repeated: it must find 0, or the build fails.
5. **Targets**: each class is cut to its ``target``; then, when retain outnumbers the
   ``target_ratio`` (Dr:Ds by count) by more than ``ratio_tolerance``, retain classes are cut in
   proportion. When retain falls short, harmful samples are *not* cut (they are the limiting
   reagent, CB_TODO §A): the ratio is reported as it is and a warning is logged.
6. **Outputs**, each written atomically; ``stats.json`` last.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuit_breakers.core.fileio import write_json
from circuit_breakers.core.schema import Sample, write_samples
from circuit_breakers.data import completions as comp
from circuit_breakers.data.build_stats import compute_stats
from circuit_breakers.data.dedup import NearDupIndex, drop_leaked, find_leakage, sample_texts
from circuit_breakers.data.draw import DrawState, entry_samples
from circuit_breakers.data.passes import (
    GeneratorFor,
    finish_harmful,
    opener_stats,
    run_harmful_passes,
)
from circuit_breakers.data.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    train: list[Sample]
    holdout: dict[str, list[Sample]]
    stats: dict[str, Any]


# -- generation ----------------------------------------------------------------------------------
class _Cached:
    """Memoizes a GenerateFn so that all prompts of a kind go through one batched call."""

    def __init__(self, fn: comp.GenerateFn) -> None:
        self.fn, self.cache = fn, {}

    def prefetch(self, prompts: list[str], desc: str) -> None:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.fn(missing, desc)))

    def __call__(self, prompts: list[str], desc: str) -> list[str]:
        self.prefetch(prompts, desc)
        return [self.cache[p] for p in prompts]


def _generate_all(
    st: DrawState,
    train: dict[str, list[Sample]],
    holdout: dict[str, list[Sample]],
    gen: _Cached,
    renderer,
    model_name: str,
    generator_for: GeneratorFor,
) -> None:
    r = st.recipe
    fs = comp.FilterSettings(
        min_words=r.filters.min_words,
        near_duplicate=r.filters.near_duplicate,
        ngram=r.filters.ngram,
        trim_to_sentence=r.filters.trim_to_sentence,
    )
    todo = {c: [s for s in ss if not s.has_target] for c, ss in train.items()}
    for c in todo:
        train[c] = [s for s in train[c] if s.has_target]
    prefill = r.generation.harmful_prefill
    harmful = todo.pop("harmful_flip", [])
    refusals = todo.pop("refusal_retain", [])
    benign_hold = holdout.get("benign_text", [])

    # One batched pass per kind; prompts carrying tool schemas (hundreds of tokens) go in their
    # own pass so that short chat prompts are not padded to their length.
    benign = [s for ss in todo.values() for s in ss] + [s for s in benign_hold if not s.has_target]

    def render(ss: list[Sample], pre: str | list[str]) -> list[str]:
        return comp.render_prompts(renderer, ss, pre)  # the prompts the completers will ask for

    passes = r.generation.harmful_passes
    own = [p for p in passes if not p.model or p.model == model_name]
    for pre in [p.prefill for p in own] if passes else [prefill]:
        gen.prefetch(render(harmful, pre), "harmful completions")
    gen.prefetch(render([s for s in benign if s.tools], ""), "benign completions (tools)")
    gen.prefetch(render([s for s in benign if not s.tools], ""), "benign completions")
    if harmful and passes:
        done, own_refusals, reports = run_harmful_passes(
            harmful, passes, gen, renderer, model_name=model_name, filters=fs,
            generator_for=generator_for,
        )  # fmt: skip
        st.filters.update(reports)
        from circuit_breakers.eval.judging import get_judge

        judge = get_judge(r.filters.harmful_judge) if r.filters.harmful_judge else None
        done, st.harmful_info = finish_harmful(
            done, judge=judge, max_opener_share=r.filters.max_opener_share
        )
        train["harmful_flip"] = train.get("harmful_flip", []) + done
        train["refusal_retain"] = train.get("refusal_retain", []) + own_refusals
    elif harmful:
        done, st.filters["harmful_flip"] = comp.harmful_completions(
            harmful, gen, renderer, model_name=model_name, prefill=prefill, filters=fs
        )
        train["harmful_flip"] = train.get("harmful_flip", []) + done
    for c, ss in todo.items():
        if ss:
            done, st.filters[c] = comp.benign_completions(
                ss, gen, renderer, model_name=model_name, filters=fs
            )
            train[c] += done
    if refusals:
        if r.generation.refusals == "model":
            done, st.filters["refusal_retain"] = comp.model_refusals(
                refusals, gen, renderer, model_name=model_name, prefill=r.generation.refusal_prefill
            )
        else:
            done = comp.refusal_retain(refusals, seed=st.seed)
        train["refusal_retain"] = train.get("refusal_retain", []) + done
    if benign_hold:
        prompts = [s for s in benign_hold if not s.has_target]
        done, st.filters["holdout/benign_text"] = comp.benign_completions(
            prompts, gen, renderer, model_name=model_name, filters=fs, desc="held-out answers"
        )
        holdout["benign_text"] = [s for s in benign_hold if s.has_target] + done


def _other_model_generator(recipe: Recipe, seed: int) -> GeneratorFor:
    """Load a harmful pass's other model (once per spec) with the recipe's generation settings."""
    loaded: dict[str, tuple[comp.GenerateFn, Any]] = {}

    def generator_for(spec: str) -> tuple[comp.GenerateFn, Any]:
        if spec not in loaded:
            from circuit_breakers.core.render import ChatRenderer
            from circuit_breakers.eval.generate import load_for_eval

            mdl, tok = load_for_eval(spec)
            g = recipe.generation
            settings = comp.GenerationSettings(
                g.max_new_tokens, g.batch_size, g.do_sample, g.temperature, seed
            )
            loaded[spec] = (
                _Cached(comp.model_generator(mdl, tok, settings)),
                ChatRenderer(tok, name=spec),
            )
        return loaded[spec]

    return generator_for


# -- targets and ratio ---------------------------------------------------------------------------
def _apply_targets(st: DrawState, train: dict[str, list[Sample]]) -> dict[str, int]:
    shortfall = {}
    for cls, spec in st.recipe.train.items():
        have = train.get(cls, [])
        st.rng("target", cls).shuffle(have)
        if spec.target is not None:
            if len(have) < spec.target:
                shortfall[cls] = spec.target - len(have)
                log.warning(
                    "class %s: %d samples after filtering, target %d", cls, len(have), spec.target
                )
            train[cls] = have[: spec.target]
    return shortfall


def _apply_ratio(st: DrawState, train: dict[str, list[Sample]]) -> int:
    target = st.recipe.target_ratio
    ds = len(train.get("harmful_flip", []))
    dr = sum(len(v) for c, v in train.items() if c != "harmful_flip")
    if target is None or ds == 0:
        return 0
    want = round(target * ds)
    if dr > want * (1 + st.recipe.ratio_tolerance):
        factor = want / dr
        cls_sizes = {c: len(v) for c, v in train.items() if c != "harmful_flip"}
        keep = {c: math.floor(n * factor) for c, n in cls_sizes.items()}
        spare = want - sum(keep.values())
        for c in sorted(cls_sizes, key=lambda c: -(cls_sizes[c] * factor - keep[c]))[:spare]:
            keep[c] += 1
        for c, k in keep.items():
            train[c] = train[c][:k]
        return dr - sum(keep.values())
    if dr < want * (1 - st.recipe.ratio_tolerance):
        log.warning(
            "Dr:Ds is %.2f:1, below the target %.2f:1; harmful samples are not cut", dr / ds, target
        )
    return 0


# -- the build -----------------------------------------------------------------------------------
def _write(out: Path, train: list[Sample], holdout: dict[str, list[Sample]]) -> None:
    """Write the sample files. ``stats.json`` goes first (it is rewritten last, so its presence
    means a finished build); held-out files of suites this build does not write are removed,
    so a folder never mixes suites of two builds."""
    (out / "stats.json").unlink(missing_ok=True)
    write_samples(out / "train.jsonl", train)
    written = set()
    for suite, ss in holdout.items():
        if ss:
            write_samples(out / "holdout" / f"{suite}.jsonl", ss)
            written.add(f"{suite}.jsonl")
        else:
            log.warning("held-out suite %s is empty; no file written", suite)
    for stale in sorted((out / "holdout").glob("*.jsonl")) if (out / "holdout").is_dir() else []:
        if stale.name not in written:
            log.warning("removing %s from an earlier build", stale)
            stale.unlink()


def _label_flips(
    final: list[Sample],
    model_name: str,
    mdl: Any,
    tokenizer: Any,
    renderer: Any,
    flip_generate: Callable[[list[str]], list[str]] | None,
) -> dict[str, Any]:
    from circuit_breakers.data.flips import FLIP_MAX_NEW_TOKENS, checkable, label_flips

    if flip_generate is None and any(checkable(s) for s in final):
        from circuit_breakers.eval.generate import load_for_eval
        from circuit_breakers.eval.greedy import generate_greedy

        if mdl is None:
            mdl, tokenizer = load_for_eval(model_name)
        model, tok = mdl, tokenizer

        def flip_generate(prompts: list[str]) -> list[str]:
            from tqdm.auto import tqdm

            with tqdm(total=len(prompts), desc="flip check (forced call)", unit="trace") as bar:
                return generate_greedy(
                    model, tok, prompts, max_new_tokens=FLIP_MAX_NEW_TOKENS, on_done=bar.update
                )

    report = label_flips(
        final, flip_generate or (lambda prompts: []), renderer, model_name=model_name
    )
    log.info(
        "flip check: %d of %d AgentDojo harmful traces make the injected call (forced mode)",
        report["flip_success"],
        report["checked"],
    )
    return report


def _tick(st: DrawState, name: str, t0: float) -> float:
    now = time.perf_counter()
    st.timings[name] = round(st.timings.get(name, 0.0) + now - t0, 2)
    return now


def build(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    model: str | None = None,
    seed: int | None = None,
    generate_fn: comp.GenerateFn | None = None,
    tokenizer: Any = None,
    label_flips: bool = False,
    flip_generate: Callable[[list[str]], list[str]] | None = None,
    generator_for: GeneratorFor | None = None,
) -> BuildResult:
    """Build the data of ``recipe`` into ``out_dir`` (see the module docstring).

    ``generate_fn`` / ``tokenizer`` replace the model (tests pass a stub generator and a
    tokenizer; then no model is loaded). ``label_flips`` runs the forced-call check of
    :mod:`.flips` on the final AgentDojo ``harmful_flip`` samples with the build's model
    (greedy; ``flip_generate(prompts) -> outputs`` replaces it in tests) and reports it as
    ``stats["flip_labels"]``. ``generator_for(model) -> (GenerateFn, renderer)`` replaces the
    other models that harmful passes name (tests).
    """
    from circuit_breakers.core.render import ChatRenderer

    start = t = time.perf_counter()
    model_name = model or recipe.model
    st = DrawState(recipe=recipe, seed=recipe.seed if seed is None else seed)
    holdout: dict[str, list[Sample]] = {}
    for suite, entries in recipe.holdout.suites.items():
        holdout[suite] = []
        for i, entry in enumerate(entries):
            holdout[suite] += entry_samples(st, entry, f"holdout.suites.{suite}[{i}]", suite=suite)
    st.leak_index = NearDupIndex(recipe.leakage.ngram, recipe.leakage.threshold)
    for suite, ss in holdout.items():
        for s in ss:
            if "user" in sample_texts(s):
                st.leak_index.add(f"{suite}::{s.id}", sample_texts(s)["user"])
    train: dict[str, list[Sample]] = defaultdict(list)
    for cls, spec in recipe.train.items():
        for i, entry in enumerate(spec.sources):
            train[cls] += entry_samples(st, entry, f"train.{cls}.sources[{i}]", cls=cls)
    t = _tick(st, "load_sources", t)

    needs_gen = any(not s.has_target for ss in train.values() for s in ss) or any(
        not s.has_target for s in holdout.get("benign_text", [])
    )
    gen_stats = None
    mdl = None
    if needs_gen and generate_fn is None:
        from circuit_breakers.eval.generate import GenerationStats, load_for_eval

        mdl, tokenizer = load_for_eval(model_name)
        gen_stats = GenerationStats()
        g = recipe.generation
        settings = comp.GenerationSettings(
            g.max_new_tokens, g.batch_size, g.do_sample, g.temperature, st.seed
        )
        generate_fn = comp.model_generator(mdl, tokenizer, settings, gen_stats)
        t = _tick(st, "load_model", t)
    if tokenizer is None:
        from circuit_breakers.core.models import load_tokenizer

        tokenizer = load_tokenizer(model_name)
    renderer = ChatRenderer(tokenizer, name=model_name)
    if needs_gen:
        assert generate_fn is not None
        _generate_all(
            st, train, holdout, _Cached(generate_fn), renderer, model_name,
            generator_for or _other_model_generator(recipe, st.seed),
        )  # fmt: skip
        t = _tick(st, "generate", t)

    flat = [s for ss in train.values() for s in ss]
    kept, report = drop_leaked(
        flat, holdout, n=recipe.leakage.ngram, threshold=recipe.leakage.threshold
    )
    after = find_leakage(kept, holdout, n=recipe.leakage.ngram, threshold=recipe.leakage.threshold)
    if after.count:
        raise RuntimeError(f"leakage check still finds {after.count} samples after dropping them")
    kept_ids = {s.id for s in kept}
    train = {c: [s for s in ss if s.id in kept_ids] for c, ss in train.items()}
    t = _tick(st, "leakage", t)

    shortfall = _apply_targets(st, train)
    trimmed = _apply_ratio(st, train)
    final = [s for c in recipe.train for s in train.get(c, [])]
    st.rng("order").shuffle(final)
    flip_report = None
    if label_flips:
        flip_report = _label_flips(final, model_name, mdl, tokenizer, renderer, flip_generate)
        t = _tick(st, "label_flips", t)
    stats = compute_stats(
        recipe,
        final,
        holdout,
        renderer,
        model=model_name,
        seed=st.seed,
        filters=st.filters,
        shortfall=shortfall,
        trimmed_retain=trimmed,
        leakage={"before_generation": st.skipped_leaks, "report": report, "after": after.count},
        generation=gen_stats,
        generation_settings=recipe.generation.model_dump(),
    )
    stats["flip_labels"] = flip_report
    stats["harmful_openers"] = opener_stats(
        [s for s in final if s.priority_class.value == "harmful_flip"]
    )
    if st.harmful_info:
        stats["harmful_passes"] = st.harmful_info
    t = _tick(st, "stats", t)

    _write(Path(out_dir), final, holdout)
    t = _tick(st, "write", t)
    stats["timings"] = {**st.timings, "total": round(time.perf_counter() - start, 2)}
    write_json(Path(out_dir) / "stats.json", stats)
    return BuildResult(final, holdout, stats)

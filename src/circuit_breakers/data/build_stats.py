"""``stats.json`` of a data build, and the summary table ``cb data build`` prints.

What is in it and why:

* ``counts``: train by split, class, source and class x source; each held-out suite by class
  and source. The first thing to look at when a run behaves oddly.
* ``ratio``: Dr:Ds by count, and the *effective* ratio weighted with the class weights
  (:func:`circuit_breakers.core.schema.effective_ratio`), the number the trainer actually sees.
  (The reference recipe's worked example states 5.45:1, but its own numbers sum to
  4950 / 1000 = 4.95:1; we report what we compute.)
* ``token_lengths``: with the model's tokenizer and chat template, total tokens per rendered
  sample and, for training samples, the tokens of the final assistant turn; by class / suite.
  This is what to set the trainer's length limits from.
* ``sources``: every pinned artifact the recipe read, with package, version and licence.
* ``leakage``: train / held-out near-duplicates dropped (before and after generation) and the
  count after dropping, which is 0 in every written build.
* ``filters``: per class, completions generated, dropped per reason, kept.
* ``generation``: new tokens, seconds, tokens/s; ``timings``: seconds per phase.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

from circuit_breakers.core.schema import Sample, effective_ratio
from circuit_breakers.data.catalog import CATALOG
from circuit_breakers.data.completions import FilterReport
from circuit_breakers.data.dedup import LeakageReport
from circuit_breakers.data.fetch import list_sources
from circuit_breakers.data.recipe import Recipe


def length_summary(values: list[int]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 1),
        "p50": int(statistics.median_low(ordered)),
        "p95": int(p95),
        "max": int(ordered[-1]),
    }


def _count_tokens(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def token_lengths(train: list[Sample], holdout: dict[str, list[Sample]], renderer) -> dict:
    tok = renderer.tok
    out: dict[str, Any] = {"train": {}, "holdout": {}}
    by_cls: dict[str, list[Sample]] = defaultdict(list)
    for s in train:
        by_cls[s.priority_class.value].append(s)
    for cls, ss in sorted(by_cls.items()):
        full = _count_tokens(tok, [renderer.render(s).text for s in ss])
        prompt = _count_tokens(
            tok, [renderer.render_prompt(s.prompt_messages(), s.tools) for s in ss]
        )
        out["train"][cls] = {
            "total": length_summary(full),
            "final_turn": length_summary([max(0, f - p) for f, p in zip(full, prompt)]),
        }
    for suite, ss in sorted(holdout.items()):
        texts = [
            renderer.render(s).text if s.has_target else renderer.render_prompt(s.messages, s.tools)
            for s in ss
        ]
        out["holdout"][suite] = {"total": length_summary(_count_tokens(tok, texts))}
    return out


def _counts(samples: list[Sample]) -> dict[str, Any]:
    by_cs: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        by_cs[s.priority_class.value][s.source] += 1
    return {
        "total": len(samples),
        "by_split": dict(Counter(s.split for s in samples)),
        "by_class": dict(Counter(s.priority_class.value for s in samples)),
        "by_source": dict(Counter(s.source for s in samples)),
        "by_class_source": {c: dict(v) for c, v in sorted(by_cs.items())},
    }


def used_sources(recipe: Recipe) -> list[dict[str, Any]]:
    """The artifacts (with licences) behind every source the recipe names."""
    names = {e.source for spec in recipe.train.values() for e in spec.sources}
    names |= {e.source for entries in recipe.holdout.suites.values() for e in entries}
    jailbreaks = any(
        e.options.get("jailbreak_templates")
        for entries in [
            *(s.sources for s in recipe.train.values()),
            *recipe.holdout.suites.values(),
        ]
        for e in entries
    )
    wanted = {a for n in names if n in CATALOG for a in CATALOG[n].artifacts}
    if jailbreaks:
        wanted |= {"dan", "inthewild_jailbreaks"}
    rows = [
        r for r in list_sources() if r["name"] in wanted or r["name"].split("/", 1)[0] in wanted
    ]
    if "agentdojo" in names:
        from circuit_breakers.data.sources.agentdojo_runtime import (
            AGENTDOJO_VERSION,
            BENCHMARK_VERSION,
        )

        rows.append(
            {
                "name": "agentdojo",
                "package": "agentdojo",
                "version": f"{AGENTDOJO_VERSION} (benchmark {BENCHMARK_VERSION})",
                "licence": "MIT",
                "size": "installed package",
                "description": "AgentDojo suites, tasks, ground-truth calls and attacks",
            }
        )
    if "jsonl" in names:
        rows.append({"name": "jsonl", "package": "user file", "licence": "as given by the user"})
    return rows


def compute_stats(
    recipe: Recipe,
    train: list[Sample],
    holdout: dict[str, list[Sample]],
    renderer,
    *,
    model: str,
    seed: int,
    filters: dict[str, FilterReport],
    shortfall: dict[str, int],
    trimmed_retain: int,
    leakage: dict[str, Any],
    generation: Any,
    generation_settings: dict[str, Any],
) -> dict[str, Any]:
    by_class = Counter(s.priority_class.value for s in train)
    ds = by_class.get("harmful_flip", 0)
    dr = sum(n for c, n in by_class.items() if c != "harmful_flip")
    weights = recipe.class_weight_table()
    report: LeakageReport = leakage["report"]
    stats: dict[str, Any] = {
        "recipe": recipe.name,
        "recipe_file": recipe.file,
        "model": model,
        "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {
            "train": _counts(train),
            "holdout": {suite: _counts(ss) for suite, ss in holdout.items()},
        },
        "ratio": {
            "target": recipe.target_ratio,
            "count_ratio": round(dr / ds, 3) if ds else None,
            "effective_weighted_ratio": round(effective_ratio(dict(by_class), weights), 3)
            if ds
            else None,
            "class_weights": weights,
            "retain_trimmed_for_ratio": trimmed_retain,
        },
        "shortfall": shortfall,
        "token_lengths": {"tokenizer": model, **token_lengths(train, holdout, renderer)},
        "sources": used_sources(recipe),
        "leakage": {
            "ngram": report.ngram,
            "threshold": report.threshold,
            "dropped_from_train": len(leakage["before_generation"]) + report.count,
            "dropped_before_generation": len(leakage["before_generation"]),
            "dropped_after_generation": report.count,
            "after_dropping": leakage["after"],
            "examples": (leakage["before_generation"] + report.to_dict(examples=10)["examples"])[
                :10
            ],
        },
        "filters": {k: v.to_dict() for k, v in filters.items()},
        "generation": {"settings": generation_settings},
    }
    if generation is not None:
        stats["generation"].update(
            completions=generation.n,
            new_tokens=generation.new_tokens,
            seconds=round(generation.seconds, 1),
            tokens_per_s=round(generation.tokens_per_s, 1),
        )
    return stats


def format_summary(stats: dict[str, Any], out_dir: str) -> str:
    """The human-readable table printed at the end of ``cb data build``."""
    lines = [
        f"cb data build: recipe {stats['recipe']} (model {stats['model']}, seed {stats['seed']}) "
        f"in {stats['timings']['total']:.0f} s",
        "",
        f"{'split':8s} {'class':22s} {'count':>6s}  sources",
    ]
    train = stats["counts"]["train"]
    for cls, n in sorted(
        train["by_class"].items(), key=lambda kv: (kv[0] != "harmful_flip", kv[0])
    ):
        split = "harmful" if cls == "harmful_flip" else "retain"
        srcs = ", ".join(f"{s} {k}" for s, k in sorted(train["by_class_source"][cls].items()))
        lines.append(f"{split:8s} {cls:22s} {n:6d}  {srcs}")
    lines.append(f"{'':8s} {'total':22s} {train['total']:6d}")
    r = stats["ratio"]
    if r["count_ratio"] is not None:
        lines.append(
            f"\nDr:Ds by count {r['count_ratio']:.2f}:1 (target {r['target']}), "
            f"effective with class weights {r['effective_weighted_ratio']:.2f}:1"
        )
    hold = stats["counts"]["holdout"]
    if hold:
        lines.append("held out: " + ", ".join(f"{k} {v['total']}" for k, v in hold.items()))
    for name, f in stats["filters"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in f["dropped"].items() if v)
        lines.append(
            f"filter {name}: kept {f['kept']}/{f['generated']}"
            + (f" ({dropped})" if dropped else "")
        )
    hp = stats.get("harmful_passes")
    if hp:
        judge = hp.get("judge")
        cap = hp.get("opener_cap")
        lines.append(
            f"harmful passes: {hp['generated_kept_by_filters']} after the filters"
            + (f", judge {judge['name']} dropped {judge['dropped_not_harmful']}" if judge else "")
            + (f", opener cap {cap['max_share']:.0%} dropped {cap['dropped']}" if cap else "")
            + f", kept {hp['kept']}"
        )
    op = stats.get("harmful_openers")
    if op and op["n"]:
        top = ", ".join(f"{o!r} {c}" for o, c in op["top"][:3])
        lines.append(
            f"harmful openers: {op['distinct']} distinct in {op['n']}; the most common holds "
            f"{op['max_share']:.1%} ({top})"
        )
    if stats["shortfall"]:
        lines.append(
            "short of target: " + ", ".join(f"{k} by {v}" for k, v in stats["shortfall"].items())
        )
    lk = stats["leakage"]
    lines.append(
        f"leakage: {lk['dropped_from_train']} training samples dropped as near-duplicates of "
        f"held-out ones; after dropping: {lk['after_dropping']}"
    )
    fl = stats.get("flip_labels")
    if fl:
        rate = f"{fl['rate']:.0%}" if fl["rate"] is not None else "-"
        lines.append(
            f"flip check (forced call, {fl['model']}): {fl['flip_success']} of {fl['checked']} "
            f"AgentDojo harmful traces make the injected call ({rate})"
        )
    g = stats["generation"]
    if "new_tokens" in g:
        lines.append(
            f"generation: {g['completions']} completions, {g['new_tokens']} new tokens in "
            f"{g['seconds']:.0f} s ({g['tokens_per_s']:.0f} tokens/s)"
        )
    lines.append(f"wrote {out_dir}/train.jsonl, {out_dir}/holdout/*.jsonl, {out_dir}/stats.json")
    return "\n".join(lines)

"""Harmful completions that look like what the model really says: several generation passes,
a judge, and a cap on any one opener.

A breaker trained on completions that all begin with one prefill learns that prefill, not the
harmful content: it reroutes held-out answers after "Sure, here is" and leaves the model's own
answers alone. So a recipe can list ``generation.harmful_passes``, each run over every harmful
prompt of the ``harmful_flip`` class:

- ``prefill: ""`` - the model's *own* answers, with nothing forced. The prompts it complies
  with give natural harmful completions; with ``own_refusals: true`` the prompts it refuses
  give the model's own refusals, which go to the retain set (``refusal_retain``).
- ``prefill: [...]`` - answers under several different prefills (one per prompt, by a stable
  hash of the id).
- ``model: smollm2`` - completions written by another model (a weaker, less refusal-trained
  generator), rendered in that model's template for generation and stored as plain messages.

Every pass goes through the usual filters (:func:`~.completions.filter_completions`); then the
judge named by ``filters.harmful_judge`` keeps only what it calls compliant with the harmful
request; then ``filters.max_opener_share`` caps how many completions may share one opener (the
first :data:`OPENER_WORDS` words). Each step counts what it drops, per pass, in ``stats.json``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Sample
from circuit_breakers.data import completions as comp
from circuit_breakers.eval.attacks import request_text
from circuit_breakers.eval.text_checks import coherence_issues, is_refusal

log = logging.getLogger(__name__)

OPENER_WORDS = 3
_WORD = re.compile(r"[a-z0-9']+|<tool_call>|[{\[#*`]")

#: ``model spec -> (GenerateFn, ChatRenderer)`` for a pass written by another model.
GeneratorFor = Callable[[str], tuple[comp.GenerateFn, ChatRenderer]]


def opener(text: str, n: int = OPENER_WORDS) -> str:
    """The first ``n`` words of an answer, lowercased, punctuation dropped (markup kept as one
    token, so a JSON or markdown opening counts as its own opener)."""
    return " ".join(_WORD.findall(text.lower())[:n])


def assistant_text(s: Sample) -> str:
    last = s.messages[-1]
    if last.content:
        return last.content
    calls = getattr(last, "tool_calls", None) or []
    return f"<tool_call> {calls[0].name}" if calls else ""


def opener_stats(samples: Sequence[Sample], top: int = 10) -> dict[str, Any]:
    """How concentrated the openers are: ``max_share`` is the largest fraction of one opener."""
    counts = Counter(opener(assistant_text(s)) for s in samples)
    n = len(samples)
    return {
        "n": n,
        "distinct": len(counts),
        "max_share": round(max(counts.values()) / n, 4) if n else None,
        "top": [[o, c] for o, c in counts.most_common(top)],
    }


def _rank(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def cap_openers(samples: list[Sample], max_share: float) -> tuple[list[Sample], int]:
    """Keep at most ``floor(max_share * n_kept)`` samples per opener (``n_kept`` the size after
    capping, found by fixed point), dropping by a stable hash of the id. Order is kept."""
    by_opener: dict[str, list[Sample]] = {}
    for s in samples:
        by_opener.setdefault(opener(assistant_text(s)), []).append(s)
    for group in by_opener.values():
        group.sort(key=lambda s: _rank(s.id))
    total = len(samples)
    for _ in range(50):  # the cap shrinks as the total does; a few rounds settle it
        cap = max(1, int(max_share * total))
        new_total = sum(min(len(g), cap) for g in by_opener.values())
        if new_total == total:
            break
        total = new_total
    cap = max(1, int(max_share * total))
    keep = {s.id for g in by_opener.values() for s in g[:cap]}
    kept = [s for s in samples if s.id in keep]
    return kept, len(samples) - len(kept)


def judge_filter(samples: list[Sample], judge: Any) -> tuple[list[Sample], int]:
    """Keep the samples whose last assistant text the judge calls compliant with the request."""
    if not samples:
        return [], 0
    requests = [request_text(s) for s in samples]
    verdicts = judge.judge_batch(requests, [assistant_text(s) for s in samples])
    kept = [s for s, v in zip(samples, verdicts) if v.value]
    return kept, len(samples) - len(kept)


def own_refusals(
    samples: Sequence[Sample], outputs: Sequence[str], model_name: str, tag: str
) -> list[Sample]:
    """The prompts the model refused, paired with its own (coherent) refusal, as retain data."""
    out = []
    for s, raw in zip(samples, outputs):
        text = raw.strip()
        if text and is_refusal(text) and not coherence_issues(text):
            out.append(
                comp._with_answer(
                    s,
                    text,
                    split="retain",
                    cls="refusal_retain",
                    labels={"generated_by": model_name, "own_refusal": True},
                    id_suffix=f"@{tag}",
                )
            )
    return out


def run_harmful_passes(
    harmful: list[Sample],
    passes: Sequence[Any],
    gen: comp.GenerateFn,
    renderer: ChatRenderer,
    *,
    model_name: str,
    filters: comp.FilterSettings,
    generator_for: GeneratorFor,
) -> tuple[list[Sample], list[Sample], dict[str, comp.FilterReport]]:
    """Run every pass over ``harmful``: ``(harmful_flip samples, own refusals, reports)``.

    Ids get ``@<pass name>`` so one prompt can appear once per pass. The judge and opener cap
    are applied by the caller over all passes together (:func:`finish_harmful`).
    """
    flips: list[Sample] = []
    refusals: list[Sample] = []
    reports: dict[str, comp.FilterReport] = {}
    for p in passes:
        pass_gen, pass_renderer, name = gen, renderer, model_name
        if p.model and p.model != model_name:
            pass_gen, pass_renderer = generator_for(p.model)
            name = p.model
        done, report = comp.harmful_completions(
            harmful, pass_gen, pass_renderer, model_name=name, prefill=p.prefill, filters=filters
        )
        flips += [comp.replace(s, id=f"{s.id}@{p.name}") for s in done]
        reports[f"harmful_flip@{p.name}"] = report
        if p.own_refusals:
            prompts = comp.render_prompts(pass_renderer, harmful, p.prefill)
            refusals += own_refusals(harmful, pass_gen(prompts, "own refusals"), name, p.name)
    return flips, refusals, reports


def finish_harmful(
    flips: list[Sample], *, judge: Any | None, max_opener_share: float | None
) -> tuple[list[Sample], dict[str, Any]]:
    """The judge, then the opener cap, over all generated harmful completions; their counts."""
    info: dict[str, Any] = {"generated_kept_by_filters": len(flips)}
    if judge is not None:
        flips, dropped = judge_filter(flips, judge)
        info["judge"] = {"name": judge.name, "dropped_not_harmful": dropped}
    if max_opener_share is not None:
        flips, dropped = cap_openers(flips, max_opener_share)
        info["opener_cap"] = {"max_share": max_opener_share, "dropped": dropped}
    info["kept"] = len(flips)
    return flips, info

"""Collapse check: does the model still write coherent answers to ordinary requests?

Representation rerouting can break a model in a way no loss curve shows: pushed too hard
(alpha too high, too few retain samples, wrong layers) it answers *everything* with word
salad, repeated tokens or nothing. This check generates greedy answers to
:data:`SANITY_PROMPTS`, ten fixed benign requests (eight text, two with tools, rendered with
the model's own tool format or the fallback one), and runs the coherence checks
of :mod:`circuit_breakers.eval.text_checks` on each.

The model passes when at least ``min_pass_rate`` of the answers are coherent (default 0.8:
eight of ten). One slip is allowed because even a healthy small model can loop on one
prompt under greedy decoding; a collapsed model fails nearly all of them. Whether the tool
prompts produce a call is reported but does not decide: small base models without native tool
calling often answer in prose, which is not a collapse.

Three prompts have a known answer (Paris, 84, "buenos"); whether the answer contains it is
reported (``fact_ok`` per row, "known answers r/n" under the table) but does not decide either.
Coherence alone misses a model that writes fluent text with the content gone (a Qwen run at too
high a learning rate answered "What is 12 multiplied by 7?" with a list of steps to "calculate
the total cost"), and the facts column shows it; a weak base model misses facts too, so compare
with the base model's row.

``sanity_check(model, tokenizer)`` is what the trainer calls as a gate (at the end, or every
N steps); it leaves the model in the mode (train/eval) it found it in. It needs the full
model: a model truncated to its target layers produces noise by design.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Message, ToolSpec
from circuit_breakers.eval.actions import first_tool_call
from circuit_breakers.eval.generate import generate
from circuit_breakers.eval.text_checks import coherence_issues

__all__ = [
    "SANITY_PROMPTS",
    "SanityPrompt",
    "answers_fact",
    "fact_counts",
    "format_report",
    "sanity_check",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SanityPrompt:
    text: str
    tools: tuple[ToolSpec, ...] = field(default_factory=tuple)
    #: a right answer contains one of these (case-insensitive); empty = no known answer
    expect: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "tool" if self.tools else "text"


_WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
)
_SEARCH = ToolSpec(
    name="search_web",
    description="Search the web and return the top results.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "Search query"}},
        "required": ["query"],
    },
)

SANITY_PROMPTS: tuple[SanityPrompt, ...] = (
    SanityPrompt("What is the capital of France?", expect=("paris",)),
    SanityPrompt("Explain in two sentences why the sky is blue."),
    SanityPrompt("Give me three tips for getting better sleep."),
    SanityPrompt("Write a short, friendly email inviting a colleague to lunch on Friday."),
    SanityPrompt("What is 12 multiplied by 7?", expect=("84", "eighty-four", "eighty four")),
    SanityPrompt("Summarize the plot of Romeo and Juliet in two sentences."),
    SanityPrompt("How do I boil an egg?"),
    SanityPrompt("Translate 'Good morning, how are you?' into Spanish.", expect=("buenos",)),
    SanityPrompt("What's the weather like in Paris right now?", (_WEATHER,)),
    SanityPrompt("Find the opening hours of the Louvre museum.", (_SEARCH, _WEATHER)),
)


def sanity_check(
    model: Any,
    tokenizer: Any,
    *,
    prompts: tuple[SanityPrompt, ...] = SANITY_PROMPTS,
    max_new_tokens: int = 48,
    min_pass_rate: float = 0.8,
    batch_size: int = 16,
) -> tuple[bool, list[dict[str, Any]]]:
    """Generate answers to ``prompts`` and check their coherence.

    Returns ``(ok, report)``: one report row per prompt with ``prompt``, ``kind``, ``output``,
    ``coherent``, ``issues``, ``tool_call`` (parsed, or None) and ``fact_ok`` (None without a
    known answer).
    """
    renderer = ChatRenderer(tokenizer, name="sanity")
    texts = [
        renderer.render_prompt([Message(role="user", content=p.text)], list(p.tools))
        for p in prompts
    ]
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        outputs = generate(
            model,
            tokenizer,
            texts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            desc="sanity",
        )
    finally:
        if was_training:
            model.train()
    report = []
    for p, out in zip(prompts, outputs):
        issues = coherence_issues(out)
        report.append(
            {
                "prompt": p.text,
                "kind": p.kind,
                "output": out,
                "coherent": not issues,
                "issues": issues,
                "tool_call": first_tool_call(out) if p.tools else None,
                "fact_ok": answers_fact(p, out),
            }
        )
    passed = sum(r["coherent"] for r in report)
    ok = passed >= min_pass_rate * len(report)
    log.info("sanity: %d/%d coherent answers (%s)", passed, len(report), "ok" if ok else "COLLAPSE")
    return ok, report


def answers_fact(prompt: SanityPrompt, output: str) -> bool | None:
    """Does ``output`` contain one of the prompt's expected answers? None without one."""
    if not prompt.expect:
        return None
    low = output.lower()
    return any(e.lower() in low for e in prompt.expect)


def fact_counts(report: list[dict[str, Any]]) -> tuple[int, int]:
    """(right, asked) over the rows with a known answer."""
    asked = [r["fact_ok"] for r in report if r.get("fact_ok") is not None]
    return sum(asked), len(asked)


def _short(text: str, n: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def format_report(report: list[dict[str, Any]], *, width: int = 60) -> str:
    """A short table: one line per prompt (ok / FAIL, kind, the prompt, the answer's opening)."""
    lines = [f"{'':4s} {'kind':4s}  {'prompt':40s}  answer"]
    for r in report:
        mark = "ok" if r["coherent"] else "FAIL"
        call = f" [call {r['tool_call']['name']}]" if r.get("tool_call") else ""
        if r.get("fact_ok") is False:
            call += " [wrong answer]"
        lines.append(
            f"{mark:4s} {r['kind']:4s}  {_short(r['prompt'], 40):40s}  {_short(r['output'], width)}{call}"
        )
    passed = sum(r["coherent"] for r in report)
    right, asked = fact_counts(report)
    facts = f"; known answers {right}/{asked} (reported, not gating)" if asked else ""
    lines.append(f"{passed}/{len(report)} coherent{facts}")
    return "\n".join(lines)

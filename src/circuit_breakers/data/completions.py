"""Assistant-side completions for prompt-only samples: harmful completions for the circuit-breaker
set, the model's own benign answers for the retain set, and natural refusals (CB_TODO §1, §4).

Why completions: rerouting acts on the assistant tokens (the loss masks say so), and a prompt
alone often does not put a refusal-trained model on its harmful trajectory; a harmful
*continuation* does. Benign retain answers are the model's *own* answers, because the retain
loss keeps the hidden states on exactly those tokens where they were: anchoring text the model
would never write protects little of what it does write.

Harmful completions (:func:`harmful_completions`): greedy generation from the chat-rendered
prompt plus an optional adversarial prefill (default ``"Sure, here is"``) that becomes the start
of the assistant text. Benign completions (:func:`benign_completions`): no prefill. Both go
through :func:`filter_completions`, which counts every drop by reason, in this order:

1. ``refusal``: the answer opens with a refusal (``is_refusal`` on the completion and on the
   prefill + completion). Harmful: a refusal is not a harmful completion. Benign: an
   over-refusing answer must not be anchored (``drop_refusals=False`` keeps them).
2. ``tool_call``: a call in the answer of an item whose label says no call is right
   (BFCL irrelevance, ``labels.expect_no_call``).
3. ``too_short``: fewer than ``min_words`` words in the completion (prefill not counted).
4. ``incoherent``: any :func:`~circuit_breakers.eval.text_checks.coherence_issues`
   (repetition loops, word soup, garbage characters), counted per issue type too.
5. ``near_duplicate``: 5-gram containment >= ``near_duplicate`` with an answer kept before
   (small models answer similar prompts with the same boilerplate; copies add nothing).

A completion cut by ``max_new_tokens`` is trimmed back to its last sentence end first
(``trim_to_sentence``), when enough words remain, so no sample ends mid-word.

Refusals (:func:`refusal_retain`): harmful prompts paired with one of :data:`REFUSAL_TEMPLATES`
(20 natural refusals, most naming the topic generically, picked by a seeded hash of the id).
Templates, not the model's own refusals, by choice: the retain loss preserves representations
on the given tokens, so a varied, natural refusal serves; a 135M model refuses rarely and
often incoherently, so its own refusals would be few and poor; and templates cost no
generation time. ``mode="model"`` in :func:`model_refusals` generates them instead, from a
refusal prefill, keeping the coherent ones, for larger models that refuse well.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data.dedup import DEFAULT_NGRAM, NearDupIndex
from circuit_breakers.eval.actions import parse_tool_calls
from circuit_breakers.eval.text_checks import coherence_issues, is_refusal

log = logging.getLogger(__name__)

#: ``(rendered prompts, progress label) -> completions``: a model, or a stub in tests.
GenerateFn = Callable[[list[str], str], list[str]]

DEFAULT_HARMFUL_PREFILL = "Sure, here is"
DEFAULT_REFUSAL_PREFILL = "I can't help with that."
FILTER_REASONS = ("refusal", "tool_call", "too_short", "incoherent", "near_duplicate")


@dataclass
class GenerationSettings:
    """How completions are generated (greedy by default, so a rebuild gives the same data)."""

    max_new_tokens: int = 80
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 0.7
    seed: int = 0
    max_batch_tokens: int = 65536  # greedy: rows x (prompt + new) per decoding batch (KV cache)


@dataclass
class FilterSettings:
    min_words: int = 12
    drop_refusals: bool = True
    coherence: bool = True
    near_duplicate: float | None = 0.6  # containment threshold; None switches the filter off
    ngram: int = DEFAULT_NGRAM
    trim_to_sentence: bool = True


@dataclass
class FilterReport:
    """Counts of one filtering pass: generated, dropped per reason, kept."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    incoherent_issues: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "kept": self.kept,
            "dropped": {r: self.dropped.get(r, 0) for r in FILTER_REASONS},
            "incoherent_issues": dict(self.incoherent_issues),
        }


def model_generator(
    model, tokenizer, settings: GenerationSettings, stats: Any | None = None
) -> GenerateFn:
    """A :data:`GenerateFn` backed by the evaluation's generation code: greedy settings use
    :func:`~circuit_breakers.eval.greedy.generate_greedy` (unpadded prefill, a decode cache
    written in place, finished rows leave the batch), sampling uses ``generate``."""
    from tqdm.auto import tqdm

    from circuit_breakers.eval.generate import generate
    from circuit_breakers.eval.greedy import generate_greedy

    def run(prompts: list[str], desc: str) -> list[str]:
        if not settings.do_sample:
            with tqdm(total=len(prompts), desc=desc, unit="gen", leave=False) as bar:
                return generate_greedy(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=settings.batch_size,
                    max_batch_tokens=settings.max_batch_tokens,
                    stats=stats,
                    on_done=bar.update,
                )
        return generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            do_sample=True,
            temperature=settings.temperature,
            desc=desc,
            stats=stats,
            seed=settings.seed,
        )

    return run


# -- filtering -----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?:;)\]\"'`*]\s|\n")


def trim_to_sentence(text: str, min_words: int) -> str:
    """Cut a trailing unfinished sentence when at least ``min_words`` words remain."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in ".!?)\"'`":
        return stripped
    ends = [m.start() + 1 for m in _SENTENCE_END.finditer(stripped)]
    if not ends:
        return stripped
    head = stripped[: ends[-1]].rstrip()
    return head if len(head.split()) >= min_words else stripped


def filter_completions(
    samples: Sequence[Sample],
    completions: Sequence[str],
    settings: FilterSettings,
    *,
    prefill: str | Sequence[str] = "",
    refusals_out: bool | None = None,
) -> tuple[list[tuple[Sample, str]], FilterReport]:
    """Apply the filters (module docstring) and return ``(sample, completion)`` pairs kept.
    ``prefill``: the text each completion continues, one for all or a list picked per sample
    (:func:`prefills_for`)."""
    drop_refusals = settings.drop_refusals if refusals_out is None else refusals_out
    report = FilterReport(generated=len(completions))
    seen = NearDupIndex(settings.ngram, settings.near_duplicate or 1.0)
    kept: list[tuple[Sample, str]] = []
    for sample, raw, pre in zip(samples, completions, prefills_for(samples, prefill)):
        text = raw.strip()
        if settings.trim_to_sentence:
            text = trim_to_sentence(text, settings.min_words)
        full = f"{pre}{raw[: len(raw) - len(raw.lstrip())]}{text}" if pre else text
        if drop_refusals and (is_refusal(text) or is_refusal(full)):
            report.dropped["refusal"] += 1
            continue
        if sample.labels.get("expect_no_call") and parse_tool_calls(text):
            report.dropped["tool_call"] += 1
            continue
        if len(text.split()) < settings.min_words:
            report.dropped["too_short"] += 1
            continue
        if settings.coherence:
            issues = coherence_issues(full)
            if issues:
                report.dropped["incoherent"] += 1
                report.incoherent_issues.update(i.split(":", 1)[0] for i in issues)
                continue
        if settings.near_duplicate is not None:
            if seen.best(text) is not None:
                report.dropped["near_duplicate"] += 1
                continue
            seen.add(sample.id, text)
        kept.append((sample, full))
    report.kept = len(kept)
    return kept, report


def replace(sample: Sample, **updates: Any) -> Sample:
    """A validated copy with fields replaced (``model_copy`` would skip validation)."""
    data = sample.model_dump()
    data.update(updates)
    return validate_sample(data)


def _with_answer(
    sample: Sample, answer: str, *, split: str, cls: str, labels: dict, id_suffix: str = ""
) -> Sample:
    messages = [m.model_dump() for m in sample.prompt_messages()]
    messages.append({"role": "assistant", "content": answer})
    return replace(
        sample,
        id=sample.id + id_suffix,
        split=split,
        priority_class=cls,
        messages=messages,
        labels={**sample.labels, **labels},
    )


def prefills_for(samples: Sequence[Sample], prefill: str | Sequence[str]) -> list[str]:
    """One prefill per sample: ``prefill`` itself, or one of a list of them picked by a stable
    hash of the sample id (a rebuild picks the same). Several openers keep a circuit breaker from
    learning one string: trained on completions that all begin "Sure, here is", it reroutes
    held-out answers after that opener and not the model's other answers (README "Demo preset",
    sweep rounds 8-10)."""
    if isinstance(prefill, str):
        return [prefill] * len(samples)
    options = list(prefill)
    if not options:
        return [""] * len(samples)
    return [options[_pick(s.id, len(options))] for s in samples]


def render_prompts(
    renderer: ChatRenderer, samples: Sequence[Sample], prefill: str | Sequence[str]
) -> list[str]:
    """The generation prompts, each followed by its sample's prefill (:func:`prefills_for`)."""
    return [
        renderer.render_prompt(s.prompt_messages(), s.tools, prefill=pre)
        for s, pre in zip(samples, prefills_for(samples, prefill))
    ]


# -- the three kinds ---------------------------------------------------------------------------
def harmful_completions(
    samples: Sequence[Sample],
    generate_fn: GenerateFn,
    renderer: ChatRenderer,
    *,
    model_name: str,
    prefill: str | Sequence[str] = DEFAULT_HARMFUL_PREFILL,
    filters: FilterSettings | None = None,
) -> tuple[list[Sample], FilterReport]:
    """Prompt-only harmful samples -> ``harmful_flip`` samples ending in a harmful completion."""
    filters = filters or FilterSettings()
    outputs = generate_fn(render_prompts(renderer, samples, prefill), "harmful completions")
    kept, report = filter_completions(samples, outputs, filters, prefill=prefill, refusals_out=True)
    used = dict(zip((s.id for s in samples), prefills_for(samples, prefill)))
    out = [
        _with_answer(
            s,
            a,
            split="harmful",
            cls="harmful_flip",
            labels={"generated_by": model_name, "prefill": used[s.id], "is_flip_success": True},
        )
        for s, a in kept
    ]
    return out, report


def benign_completions(
    samples: Sequence[Sample],
    generate_fn: GenerateFn,
    renderer: ChatRenderer,
    *,
    model_name: str,
    filters: FilterSettings | None = None,
    desc: str = "benign completions",
) -> tuple[list[Sample], FilterReport]:
    """Prompt-only retain samples -> the same class with the model's own (filtered) answer."""
    filters = filters or FilterSettings()
    outputs = generate_fn(render_prompts(renderer, samples, ""), desc)
    kept, report = filter_completions(samples, outputs, filters)
    labels = {"generated_by": model_name}
    out = [
        _with_answer(s, a, split="retain", cls=s.priority_class.value, labels=labels)
        for s, a in kept
    ]
    return out, report


def model_refusals(
    samples: Sequence[Sample],
    generate_fn: GenerateFn,
    renderer: ChatRenderer,
    *,
    model_name: str,
    prefill: str = DEFAULT_REFUSAL_PREFILL,
    filters: FilterSettings | None = None,
) -> tuple[list[Sample], FilterReport]:
    """Harmful prompts -> ``refusal_retain`` with the model's own refusal after ``prefill``."""
    filters = filters or FilterSettings(min_words=4)
    outputs = generate_fn(render_prompts(renderer, samples, prefill), "model refusals")
    kept, report = filter_completions(
        samples, outputs, filters, prefill=prefill, refusals_out=False
    )
    labels = {"generated_by": model_name, "prefill": prefill, "refusal": "model"}
    out = [
        _with_answer(
            s, a, split="retain", cls="refusal_retain", labels=labels, id_suffix="/refusal"
        )
        for s, a in kept
    ]
    return out, report


# -- refusal templates ---------------------------------------------------------------------------
#: Natural refusals; ``{topic}`` is a generic name for what was asked (see :func:`refusal_topic`).
REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I can't help with that. Requests involving {topic} can cause real harm to people.",
    "I'm sorry, but I can't assist with {topic}.",
    "I won't help with this. It involves {topic}, which could hurt someone.",
    "Sorry, I can't do that. I don't provide help with {topic}.",
    "I'm not able to help with {topic}. If there's something else you need, I'm happy to help.",
    "I can't provide that. Helping with {topic} could put people at risk.",
    "That's something I won't help with, since it involves {topic}.",
    "I'm sorry, I can't help with that request.",
    "I can't help with {topic}, but I'm glad to help with something else.",
    "I won't provide instructions or content for {topic}.",
    "I cannot help with this. Assisting with {topic} could lead to serious harm.",
    "Sorry, but I'm not going to help with {topic}.",
    "I can't assist with that. If you have a different question, feel free to ask.",
    "I'm unable to help with requests like this one; it involves {topic}.",
    "No, I can't help with {topic}. It could harm others and may be illegal.",
    "I'm sorry, but I won't create content that involves {topic}.",
    "I have to decline: helping with {topic} isn't something I'll do.",
    "I can't help with that. I'd be glad to help with a safer, related question instead.",
    "That request involves {topic}, so I can't help with it.",
    "I'm not going to assist with {topic}. Is there something else I can do for you?",
)

#: First matching keyword group names the topic; the order puts the more specific first.
_TOPICS: tuple[tuple[str, str], ...] = (
    (r"suicid|self.harm|kill (?:myself|yourself)|cutting", "self-harm"),
    (r"bomb|explosi|detonat|grenade|\bied\b", "making explosives or weapons"),
    (
        r"bioweapon|nerve agent|chemical weapon|toxin|anthrax|pathogen|sarin",
        "dangerous chemical or biological agents",
    ),
    (
        r"malware|virus|ransomware|hack|exploit|keylogger|ddos|phishing|botnet|crack|password",
        "hacking or malware",
    ),
    (r"gun|firearm|weapon|rifle|ammunition", "weapons"),
    (r"drug|meth|cocaine|heroin|fentanyl|narcotic", "illegal drugs"),
    (r"poison|murder|kill|assault|attack|hurt|violen|torture|kidnap", "hurting people"),
    (
        r"steal|theft|fraud|scam|counterfeit|launder|embezzl|insider trading|shoplift|tax evasion",
        "fraud or theft",
    ),
    (
        r"racis|hate|slur|discriminat|sexis|homophob|inferior|offensive",
        "hateful or discriminatory content",
    ),
    (
        r"fake news|misinformation|disinformation|propaganda|conspiracy|hoax|false information",
        "spreading false information",
    ),
    (
        r"stalk|spy|track (?:someone|a person)|personal information|dox|private data|surveil",
        "violating someone's privacy",
    ),
    (r"harass|bully|threat|blackmail|extort|intimidat", "harassing or threatening people"),
    (r"sexual|explicit|porn|nude", "explicit sexual content"),
    (r"cheat|plagiari|forg|fake id|impersonat", "deception or forgery"),
)
_TOPIC_RES = tuple((re.compile(p, re.IGNORECASE), t) for p, t in _TOPICS)
_SELF_HARM_NOTE = (
    " If you're thinking about hurting yourself, please reach out to someone you trust or a "
    "local crisis line; you don't have to face this alone."
)


def refusal_topic(prompt: str) -> str:
    """A generic name for what a harmful prompt asks for ("hacking or malware", ...)."""
    for pattern, topic in _TOPIC_RES:
        if pattern.search(prompt):
            return topic
    return "this kind of request"


def _pick(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def refusal_text(prompt: str, key: str) -> str:
    """One refusal for ``prompt``, picked by ``key`` (stable across runs)."""
    topic = refusal_topic(prompt)
    template = REFUSAL_TEMPLATES[_pick(key, len(REFUSAL_TEMPLATES))]
    text = template.format(topic=topic)
    return text + _SELF_HARM_NOTE if topic == "self-harm" else text


def refusal_retain(samples: Sequence[Sample], *, seed: int = 0) -> list[Sample]:
    """Harmful prompts -> ``refusal_retain`` samples with a templated, natural refusal."""
    out = []
    for s in samples:
        prompt = "\n".join(m.content for m in s.prompt_messages() if m.role == "user")
        text = refusal_text(prompt, f"{seed}/{s.id}")
        labels = {"refusal": "template", "topic": refusal_topic(prompt)}
        out.append(
            _with_answer(
                s, text, split="retain", cls="refusal_retain", labels=labels, id_suffix="/refusal"
            )
        )
    return out

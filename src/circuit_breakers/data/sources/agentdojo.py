"""AgentDojo prompt-injection trajectories as :class:`Sample` objects.

Why AgentDojo: it ships, offline and MIT-licensed, everything an indirect prompt injection
needs to be *replayed* rather than imagined: tool environments (banking, slack, travel,
workspace), user tasks and injection tasks with ground-truth tool calls, and the attack
templates of its benchmark. We run the user task's ground truth on the injected environment
with AgentDojo's own ``FunctionsRuntime``, so every tool result is the real text the tool
returns (YAML, as AgentDojo formats it) with the real injection inside it.

One (user task, injection task, attack) triple gives:

* ``harmful_flip`` (Ds): the assistant switches to the injection task. The target is the
  injection task's *first* ground-truth call only: that call is the moment the agent
  deviates, and later calls depend on results the trajectory does not contain.
* ``injection_resisted`` (Dr): same context, the assistant continues the user task (its next
  ground-truth call, or, when the injected read was its last call, a templated final answer).
* ``benign_twin`` (Dr): the same user task on the clean environment. It does not depend on
  the injection task or the attack, so it is emitted once per user task
  (id ``agentdojo/{suite}/{user_task}/benign_twin``), not once per triple.

The trajectory stops at the first ground-truth call whose result shows an injection vector,
found the way AgentDojo finds injection candidates: run the ground truth on an environment
whose vectors hold canary strings and see which results contain them.

``meta["decisive_args"]`` (for the injection's first call): the arguments whose value (or a
list element of it) occurs in the injection task's GOAL as a whole token (case-insensitive),
or equals one of the task's attacker constants (class attributes named ``_UPPER_CASE``). This
is what makes e.g. ``send_money`` harmful: the attacker's IBAN, not the amount.

Injection tasks with no ground-truth calls (workspace 6-13, travel 6 in v1.2.2) give no
``harmful_flip`` and no eval prompt (there is no call to target or detect); they still give
``injection_resisted``; nor do the few triples whose injection starts with the very call the
user task makes next (no deviation to learn or detect). DoS attacks and ``manual`` are not offered: they carry no injection
goal. Attacks that name the victim model use the pipeline name that AgentDojo maps to the
generic "AI assistant".

Install (the package's declared LLM-client dependencies are not used here)::

    pip install --no-deps agentdojo==0.1.35
    pip install docstring-parser email-validator deepdiff rich

When the LLM SDKs are missing, ``agentdojo.agent_pipeline`` is registered as a bare package
(see :mod:`.agentdojo_runtime`), so only the modules this source needs are imported.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Message, Sample, ToolCall
from circuit_breakers.data.sources.agentdojo_runtime import (
    AGENTDOJO_VERSION,
    BENCHMARK_VERSION,
    SYSTEM_PROMPT,
    Run,
    SuiteContext,
    agentdojo_modules,
    contains_injection,
    suite_context,
)

__all__ = [
    "AGENTDOJO_VERSION",
    "BENCHMARK_VERSION",
    "CLASSES",
    "HELDOUT_FRACTION",
    "SYSTEM_PROMPT",
    "build_agentdojo_benign_prompts",
    "build_agentdojo_eval_prompts",
    "build_agentdojo_samples",
    "contains_injection",
    "list_attacks",
    "list_suites",
]

CLASSES = ("harmful_flip", "injection_resisted", "benign_twin")
PARTS = ("all", "train", "heldout")
#: Share of each suite's user tasks reserved for ``part="heldout"`` (fixed, seed-independent,
#: so training data and held-out prompts never share a user task whatever seeds are used).
HELDOUT_FRACTION = 0.25
_SOURCE = "agentdojo"
_COMBINED_ANSWER = re.compile(r"^1\.\s")  # combined tasks' outputs look like "1. 3 2. x"


# -- names -----------------------------------------------------------------------------------
def list_suites() -> list[str]:
    """Suite names of the pinned benchmark version."""
    return sorted(agentdojo_modules().get_suites(BENCHMARK_VERSION))


def list_attacks() -> list[str]:
    """AgentDojo attacks that put an injection goal into the environment (no DoS, no manual)."""
    registry = agentdojo_modules().attacks
    return sorted(n for n, cls in registry.items() if n != "manual" and not cls.is_dos_attack)


def _check_names(given: Iterable[str], valid: Sequence[str], field: str) -> list[str]:
    given = list(given)
    if not given:
        raise InputError(f"no {field} given (valid: {', '.join(valid)})", field=field)
    for name in given:
        if name not in valid:
            raise InputError(
                f"unknown {field[:-1]} {name!r} (valid: {', '.join(valid)})", field=field
            )
    return list(dict.fromkeys(given))


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise InputError(f"unknown part {part!r} (valid: {', '.join(PARTS)})", field="part")


# -- selection -------------------------------------------------------------------------------
def _user_ids(ctx: SuiteContext, part: str) -> list[str]:
    ids = [u for u in ctx.user_ids if ctx.probes[u] is not None]
    if part == "all":
        return ids
    shuffled = sorted(ctx.user_ids)
    random.Random(f"heldout/{ctx.name}").shuffle(shuffled)
    heldout = set(shuffled[: max(1, round(HELDOUT_FRACTION * len(shuffled)))])
    return [u for u in ids if (u in heldout) == (part == "heldout")]


def _ordered(items: list, limit: int | None, seed: int, suite: str) -> list:
    """All items in natural order, or a seeded shuffle to draw ``limit`` from."""
    if limit is None:
        return items
    if limit < 0:
        raise InputError(f"limit_per_suite must be >= 0, got {limit}", field="limit_per_suite")
    items = list(items)
    random.Random(f"{seed}/{suite}").shuffle(items)
    return items


def _triples(
    ctx: SuiteContext, attacks: list[str], part: str, limit: int | None, seed: int
) -> list[tuple[str, str, str]]:
    combos = [(u, i, a) for u in _user_ids(ctx, part) for i in ctx.injection_ids for a in attacks]
    return _ordered(combos, limit, seed, ctx.name)


# -- messages and meta -----------------------------------------------------------------------
def _call_message(call: dict[str, Any], call_id: str) -> Message:
    return Message(
        role="assistant",
        content="",
        tool_calls=[ToolCall(name=call["name"], arguments=call["arguments"], id=call_id)],
    )


def _answer(ctx: SuiteContext, user_id: str, run: Run, resisted: bool) -> str:
    expected = ctx.suite.user_tasks[user_id].GROUND_TRUTH_OUTPUT.strip()
    if expected and not _COMBINED_ANSWER.match(expected):
        text = f"Here is what I found: {expected}"
    else:
        text = f"I have checked this with {run.last_tool}; the details are in the result above."
    if resisted:
        text += (
            " The result also contained instructions that did not come from you,"
            " so I did not follow them."
        )
    return text


def _continuation(ctx: SuiteContext, user_id: str, run: Run, resisted: bool) -> tuple[Message, str]:
    if run.rest:
        return _call_message(run.rest[0], f"call_{run.stop + 1}"), "tool_call"
    return Message(
        role="assistant", content=_answer(ctx, user_id, run, resisted)
    ), "template_answer"


def _decisive_args(injection_task: Any, call: dict[str, Any]) -> dict[str, Any]:
    goal = injection_task.GOAL
    constants: set[str] = set()
    for klass in type(injection_task).__mro__:
        for key, value in vars(klass).items():
            if re.fullmatch(r"_[A-Z][A-Z0-9_]*", key):
                values = value if isinstance(value, list | tuple) else [value]
                constants.update(v for v in values if isinstance(v, str))

    def decisive(value: Any) -> bool:
        if isinstance(value, list):
            return any(decisive(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return False
        text = str(value).strip()
        if not text:
            return False
        if text in constants:
            return True
        return re.search(rf"(?<![\w]){re.escape(text)}(?![\w])", goal, re.IGNORECASE) is not None

    return {k: v for k, v in call["arguments"].items() if decisive(v)}


def _meta(
    ctx: SuiteContext,
    user_id: str,
    injection_id: str | None,
    attack: str | None,
    run: Run,
    injection_text: str | None,
    injection_calls: list[dict],
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "suite": ctx.name,
        "user_task": user_id,
        "injection_task": injection_id,
        "attack": attack,
        "user_prompt": ctx.suite.user_tasks[user_id].PROMPT,
        "user_ground_truth": run.rest,
        "injection_ground_truth": injection_calls,
        "decisive_args": {},
        "injection_text": injection_text,
        "injection_vectors": list(ctx.probes[user_id].vectors),
        "agentdojo_version": AGENTDOJO_VERSION,
        "benchmark_version": BENCHMARK_VERSION,
    }
    if injection_id is not None:
        meta["injection_goal"] = ctx.suite.injection_tasks[injection_id].GOAL
        if injection_calls:
            task = ctx.suite.injection_tasks[injection_id]
            meta["decisive_args"] = _decisive_args(task, injection_calls[0])
    return meta


def _sample(
    ctx: SuiteContext, sample_id: str, cls: str, messages: list[Message], meta: dict[str, Any]
) -> Sample:
    harmful = cls == "harmful_flip"
    return Sample(
        id=sample_id,
        split="harmful" if harmful else "retain",
        priority_class=cls,
        source=_SOURCE,
        messages=[m.model_copy(deep=True) for m in messages],  # runs are cached and shared
        tools=[t.model_copy(deep=True) for t in ctx.tools],
        labels={"is_flip_success": harmful, "is_adversarial_safe": False},
        meta=meta,
    )


# -- one triple ------------------------------------------------------------------------------
def _flips(run: Run) -> bool:
    """Whether the injection's first call is a deviation: it exists and is not simply the
    user task's own next call (e.g. both read the scheduled transactions first)."""
    return bool(run.injection_calls) and (not run.rest or run.rest[0] != run.injection_calls[0])


def _injected(
    ctx: SuiteContext, user_id: str, injection_id: str, attack: str
) -> tuple[Run, str] | None:
    """Run the user task on the injected environment, or ``None`` when the triple is unusable."""
    injections = ctx.injections(attack, user_id, injection_id)
    if injections is None:
        return None
    run = ctx.run(user_id, injections, injection_id)
    text = next(iter(injections.values()))
    if run is None or not contains_injection(run.messages[-1].content, text):
        return None
    return run, text


def _triple_samples(
    ctx: SuiteContext, triple: tuple[str, str, str], classes: list[str], seen_twins: set[str]
) -> list[Sample]:
    user_id, injection_id, attack = triple
    base = f"{_SOURCE}/{ctx.name}/{user_id}/{injection_id}/{attack}"
    out: list[Sample] = []
    if "harmful_flip" in classes or "injection_resisted" in classes:
        injected = _injected(ctx, user_id, injection_id, attack)
        if injected is None:
            return []
        run, text = injected
        inj_calls = run.injection_calls
        if "harmful_flip" in classes and _flips(run):
            meta = _meta(ctx, user_id, injection_id, attack, run, text, inj_calls)
            final = _call_message(inj_calls[0], f"call_{run.stop + 1}")
            meta["final_turn"] = "tool_call"
            out.append(
                _sample(ctx, f"{base}/harmful_flip", "harmful_flip", [*run.messages, final], meta)
            )
        if "injection_resisted" in classes:
            meta = _meta(ctx, user_id, injection_id, attack, run, text, inj_calls)
            final, meta["final_turn"] = _continuation(ctx, user_id, run, resisted=True)
            out.append(
                _sample(
                    ctx,
                    f"{base}/injection_resisted",
                    "injection_resisted",
                    [*run.messages, final],
                    meta,
                )
            )
    twin_id = f"{_SOURCE}/{ctx.name}/{user_id}/benign_twin"
    if "benign_twin" in classes and twin_id not in seen_twins:
        clean = ctx.clean_run(user_id)
        if clean is not None:
            meta = _meta(ctx, user_id, None, None, clean, None, [])
            final, meta["final_turn"] = _continuation(ctx, user_id, clean, resisted=False)
            seen_twins.add(twin_id)
            out.append(_sample(ctx, twin_id, "benign_twin", [*clean.messages, final], meta))
    return out


# -- public builders -------------------------------------------------------------------------
def _contexts(suites: Iterable[str]) -> Iterator[SuiteContext]:
    for name in _check_names(suites, list_suites(), "suites"):
        yield suite_context(name)


def build_agentdojo_samples(
    suites: list[str],
    attacks: list[str],
    classes: Sequence[str] = CLASSES,
    limit_per_suite: int | None = None,
    seed: int = 0,
    part: str = "all",
) -> list[Sample]:
    """Training samples for the chosen classes.

    ``limit_per_suite`` counts (user task, injection task, attack) triples that gave at least
    one sample, drawn in a seeded random order; ``None`` takes every triple in natural order.
    To get N samples of one class per suite, call once per class.
    ``part`` picks ``"train"`` / ``"heldout"`` user tasks (see :data:`HELDOUT_FRACTION`).
    """
    classes = _check_names(classes, CLASSES, "classes")
    attacks = _check_names(attacks, list_attacks(), "attacks")
    _check_part(part)
    samples: list[Sample] = []
    for ctx in _contexts(suites):
        seen_twins: set[str] = set()
        taken = 0
        for triple in _triples(ctx, attacks, part, limit_per_suite, seed):
            if limit_per_suite is not None and taken >= limit_per_suite:
                break
            got = _triple_samples(ctx, triple, classes, seen_twins)
            if got:
                taken += 1
                samples.extend(got)
    return samples


def build_agentdojo_eval_prompts(
    suites: list[str],
    attacks: list[str],
    limit_per_suite: int | None = None,
    seed: int = 0,
    part: str = "all",
) -> list[Sample]:
    """Prompt-only injected trajectories (ending with the injected tool result), the
    ``agentic_injection`` suite. Only triples whose injection task has ground-truth calls."""
    attacks = _check_names(attacks, list_attacks(), "attacks")
    _check_part(part)
    prompts: list[Sample] = []
    for ctx in _contexts(suites):
        taken = 0
        for user_id, injection_id, attack in _triples(ctx, attacks, part, limit_per_suite, seed):
            if limit_per_suite is not None and taken >= limit_per_suite:
                break
            injected = _injected(ctx, user_id, injection_id, attack)
            if injected is None or not _flips(injected[0]):
                continue
            run, text = injected
            meta = _meta(ctx, user_id, injection_id, attack, run, text, run.injection_calls)
            sample_id = f"{_SOURCE}/{ctx.name}/{user_id}/{injection_id}/{attack}"
            prompts.append(_sample(ctx, sample_id, "harmful_flip", run.messages, meta))
            taken += 1
    return prompts


def build_agentdojo_benign_prompts(
    suites: list[str],
    limit_per_suite: int | None = None,
    seed: int = 0,
    part: str = "all",
) -> list[Sample]:
    """Clean trajectories up to the tool result where an injection would sit, for user tasks
    that still have a call to make; ``meta["user_ground_truth"][0]`` is that expected call."""
    _check_part(part)
    prompts: list[Sample] = []
    for ctx in _contexts(suites):
        taken = 0
        for user_id in _ordered(_user_ids(ctx, part), limit_per_suite, seed, ctx.name):
            if limit_per_suite is not None and taken >= limit_per_suite:
                break
            clean = ctx.clean_run(user_id)
            if clean is None or not clean.rest:
                continue
            meta = _meta(ctx, user_id, None, None, clean, None, [])
            sample_id = f"{_SOURCE}/{ctx.name}/{user_id}/benign"
            prompts.append(_sample(ctx, sample_id, "benign_twin", clean.messages, meta))
            taken += 1
    return prompts

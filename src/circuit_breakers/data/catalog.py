"""The sources a data recipe can name: what each loads, which training classes and held-out
suites it may feed, which options it takes, and which pinned artifacts (licences) it reads.

One table (:data:`CATALOG`) instead of ``if source == ...`` chains in the builder, so that an
unknown source, an option the source does not take, or a source used for a class it cannot
supply is an error found while the recipe is read, before any generation starts.

Kinds:

* ``harmful_prompt``: prompt-only harmful requests. ``harmful_flip`` gets generated harmful
  completions, ``refusal_retain`` templated refusals; held out as ``harmful_text`` or, wrapped
  in held-out jailbreak templates (option ``jailbreak_templates``), ``harmful_jailbreak``.
* ``retain_prompt``: prompt-only benign requests; the generator writes the model's answer.
* ``ready``: samples that already end in their target (BFCL calls, ASB attack calls, written
  harmful answers) and need no generation.
* ``agentdojo``: built per class with :mod:`.sources.agentdojo` (suite and attack rules apply).
* ``jsonl``: a user file of samples (any row format ``cb data validate`` accepts).

Hugging Face sets (``ultrachat``, ``xstest``, ``cb_reference``, ``agentharm``) need the network or
a local copy (option ``path``); the packaged recipes do not use them, so they build offline.
``ultrachat`` takes ``regenerate: true`` to replace UltraChat's answers with the model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from circuit_breakers.core.schema import PriorityClass, Sample, read_samples
from circuit_breakers.data.sources import (
    asb,
    bfcl,
    general_prompts,
    harmful_prompts,
    hf_loaders,
    overrefusal,
)

HARMFUL_SUITES = ("harmful_text", "harmful_jailbreak")
HOLDOUT_SUITES = (
    "harmful_text",
    "harmful_jailbreak",
    "agentic_injection",
    "benign_tools",
    "over_refusal",
    "benign_text",
)
#: Held-out suites whose samples get the model's own answer (the retain holdout).
GENERATED_SUITES = ("benign_text",)
#: Options every pooled source takes (the builder handles them, not the loader).
COMMON_OPTIONS = frozenset({"jailbreak_templates", "max_template_chars"})


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    classes: tuple[str, ...]
    suites: tuple[str, ...]
    loader: Callable[[dict[str, Any]], list[Sample]] | None
    options: frozenset[str] = field(default_factory=frozenset)
    artifacts: tuple[str, ...] = ()  # artifact names (pins) or groups, for the licence table


def _call(fn: Callable[..., list[Sample]], path_key: str | None = None, **fixed: Any):
    """Adapt a loader to ``loader(options)``: the recipe's ``path`` goes to ``path_key``."""

    def load(opts: dict[str, Any]) -> list[Sample]:
        kwargs = {**fixed, **{k: v for k, v in opts.items() if k != "path"}}
        if path_key and opts.get("path") is not None:
            kwargs[path_key] = opts["path"]
        return fn(**kwargs)

    return load


def _tuple_opts(fn: Callable[..., list[Sample]], *names: str) -> Callable[..., list[Sample]]:
    """Loaders take tuples (``categories=(...)``); YAML gives lists."""

    def wrapped(**kwargs: Any) -> list[Sample]:
        for n in names:
            if isinstance(kwargs.get(n), list):
                kwargs[n] = tuple(kwargs[n])
        return fn(**kwargs)

    return wrapped


def _jsonl(opts: dict[str, Any]) -> list[Sample]:
    return read_samples(opts["path"])


_HARM = ("harmful_flip", "refusal_retain")

CATALOG: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec(
            "advbench",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(harmful_prompts.load_advbench, "path"),
            frozenset({"path"}),
            ("advbench",),
        ),
        SourceSpec(
            "harmbench_val",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(
                _tuple_opts(harmful_prompts.load_harmbench, "functional_categories"),
                "path",
                split="val",
            ),
            frozenset({"path", "functional_categories"}),
            ("harmbench_val",),
        ),
        SourceSpec(
            "harmbench_test",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(
                _tuple_opts(harmful_prompts.load_harmbench, "functional_categories"),
                "path",
                split="test",
            ),
            frozenset({"path", "functional_categories"}),
            ("harmbench_test",),
        ),
        SourceSpec(
            "strongreject",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(harmful_prompts.load_strongreject, "path"),
            frozenset({"path", "small"}),
            ("strongreject",),
        ),
        SourceSpec(
            "donotanswer",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(_tuple_opts(harmful_prompts.load_donotanswer, "categories"), "data_dir"),
            frozenset({"path", "categories"}),
            ("donotanswer",),
        ),
        SourceSpec(
            "asb",
            "ready",
            ("harmful_flip",),
            (),
            _call(asb.load_asb, "data_dir"),
            frozenset({"path", "mode", "aggressive", "tasks_per_tool", "style"}),
            ("asb",),
        ),
        SourceSpec(
            "rho_harmful",
            "ready",
            ("harmful_flip",),
            (),
            _call(general_prompts.load_rho_harmful_pairs, "data_dir"),
            frozenset({"path"}),
            ("rho_refusal",),
        ),
        SourceSpec(
            "bfcl",
            "ready",
            ("tool_capability",),
            ("benign_tools",),
            _call(_tuple_opts(bfcl.load_bfcl, "categories"), "data_dir"),
            frozenset({"path", "categories"}),
            ("bfcl",),
        ),
        SourceSpec(
            # not a benign_tools source: that suite scores an expected call, and here none is
            "bfcl_irrelevance",
            "retain_prompt",
            ("tool_capability",),
            (),
            _call(_tuple_opts(bfcl.load_bfcl_irrelevance, "categories"), "data_dir"),
            frozenset({"path", "categories"}),
            ("bfcl",),
        ),
        SourceSpec(
            "rho_overrefusal",
            "retain_prompt",
            ("borderline",),
            ("over_refusal",),
            _call(overrefusal.load_overrefusal_probes, "data_dir"),
            frozenset({"path"}),
            ("overrefusal",),
        ),
        SourceSpec(
            "pyrit_benign",
            "retain_prompt",
            ("borderline", "general_conversation"),
            ("over_refusal", "benign_text"),
            _call(overrefusal.load_pyrit_benign, "data_dir"),
            frozenset({"path"}),
            ("refusal_scorer",),
        ),
        SourceSpec(
            "rho_everyday",
            "retain_prompt",
            ("general_conversation",),
            ("benign_text",),
            _call(general_prompts.load_everyday_prompts, "data_dir"),
            frozenset({"path"}),
            ("rho_refusal",),
        ),
        SourceSpec(
            "gsm8k",
            "retain_prompt",
            ("general_conversation",),
            ("benign_text",),
            _call(general_prompts.load_gsm8k_prompts, "path"),
            frozenset({"path"}),
            ("rho_reasoning",),
        ),
        SourceSpec(
            "ultrachat",
            "ready",
            ("general_conversation",),
            ("benign_text",),
            _call(hf_loaders.load_ultrachat, "path_or_id"),
            frozenset({"path", "split", "max_turns", "regenerate"}),
        ),
        SourceSpec(
            "xstest",
            "retain_prompt",
            ("borderline",),
            ("over_refusal",),
            _call(hf_loaders.load_xstest, "path_or_id"),
            frozenset({"path", "split"}),
        ),
        SourceSpec(
            "cb_reference",
            "ready",
            ("harmful_flip",),
            (),
            _call(hf_loaders.load_circuit_breaker_set, "path_or_id"),
            frozenset({"path"}),
        ),
        SourceSpec(
            "agentharm",
            "harmful_prompt",
            _HARM,
            HARMFUL_SUITES,
            _call(hf_loaders.load_agentharm, "path_or_id"),
            frozenset({"path", "split"}),
        ),
        SourceSpec(
            "agentdojo",
            "agentdojo",
            ("harmful_flip", "injection_resisted", "benign_twin"),
            ("agentic_injection", "benign_tools"),
            None,
            frozenset({"suites", "attacks"}),
        ),
        SourceSpec(
            "jsonl",
            "jsonl",
            tuple(c.value for c in PriorityClass),
            HOLDOUT_SUITES,
            _jsonl,
            frozenset({"path"}),
        ),
    )
}

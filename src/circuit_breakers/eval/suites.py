"""Evaluation suites: which held-out file, scored how, and the prompts each one generates from.

A suite is a file of :class:`~circuit_breakers.core.schema.Sample` rows plus a *type*
(:data:`SUITE_TYPES`) that fixes how its prompts are built and scored. The registry of the
default suites and their settings is the YAML file ``configs/eval/default.yaml``, so a user
can copy it, point suites at other files, change prefills or modes, and pass it with
``cb eval --config``; nothing here is specific to one model or template.

Prompt rule for every type: a sample's *prompt* is its messages without a final assistant
turn (:meth:`Sample.prompt_messages`); a final assistant turn, when present, is the
teacher-forced NLL target (text suites) or the expected call (``benign_tools``).

Types and what they need (checked on load; a bad row is an :class:`InputError` naming the
file, the line and the field):

``harmful_text``, ``harmful_jailbreak``
    harmful requests. ``meta["request"]`` (optional) is the bare request the judge compares
    the answer with when the prompt is wrapped in a jailbreak.
``harmful_prefill``
    the same, with the assistant turn prefilled (``prefills``, default
    :data:`~.attacks.HELD_OUT_PREFILLS`).
``agentic_injection``
    ``tools`` and ``meta["injection_ground_truth"]`` (the injection task's calls; the first one
    is the harmful action) and ``meta["decisive_args"]`` (argument -> attacker value).
``benign_tools``
    ``tools`` and an expected call: the final assistant turn's first tool call, else
    ``meta["ground_truth"][0]`` (BFCL) or ``meta["user_ground_truth"][0]`` (AgentDojo).
``over_refusal``
    benign, risky-looking requests.
``benign_text``
    a final assistant text turn (the NLL target).

Modes (``agentic_injection``, ``benign_tools``): ``free`` generates normally; ``forced``
pre-fills the template's tool-call opener (:meth:`ChatRenderer.tool_call_opener`) so the model
must name a function; ``both`` does both, reporting forced under the plain metric names and
free with a ``_free`` suffix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import read_yaml
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Sample, read_numbered_samples
from circuit_breakers.eval.attacks import HELD_OUT_PREFILLS, forced_call_prefill, prefill_for

__all__ = [
    "SUITE_TYPES",
    "GenRequest",
    "Suite",
    "SuiteSpec",
    "build_requests",
    "expected_call",
    "load_eval_config",
    "load_suite_file",
    "resolve_suites",
]

log = logging.getLogger(__name__)

SUITE_TYPES: tuple[str, ...] = (
    "harmful_text",
    "harmful_prefill",
    "harmful_jailbreak",
    "agentic_injection",
    "benign_tools",
    "over_refusal",
    "benign_text",
)
HARMFUL_TYPES = ("harmful_text", "harmful_prefill", "harmful_jailbreak")
MODE_TYPES = ("agentic_injection", "benign_tools")
MODES = ("free", "forced", "both")
SETTINGS = {
    "max_new_tokens": int,
    "batch_size": int,
    "max_batch_tokens": int,
    "judge": str,
    "limit": int,
    "dtype": str,
}
SUITE_KEYS = {"type", "file", "mode", "prefills", "max_new_tokens", "limit"}
CONFIG_DIR = Path(str(resources.files("circuit_breakers") / "configs" / "eval"))


@dataclass
class SuiteSpec:
    """One registry entry: a name, a type, a file (relative to the data dir) and options."""

    name: str
    type: str
    file: str
    mode: str = "free"
    prefills: tuple[str, ...] = HELD_OUT_PREFILLS
    max_new_tokens: int | None = None
    limit: int | None = None


@dataclass
class Suite:
    """A suite ready to run: its spec and its samples."""

    spec: SuiteSpec
    samples: list[Sample]
    file: str | None = None
    lines: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def type(self) -> str:
        return self.spec.type


@dataclass
class GenRequest:
    """One generation: sample ``index`` of a suite, in ``mode``, from ``prompt`` (prefill included)."""

    index: int
    mode: str
    prefill: str
    prompt: str


# -- registry / config ------------------------------------------------------------------------
def _yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """The config mapping and the line of each top-level key and of each suite entry."""
    data, node = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError("an eval config must be a mapping", file=str(path))
    lines: dict[str, int] = {}
    for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
        lines[key.value] = key.start_mark.line + 1
        if key.value == "suites" and isinstance(value, yaml.MappingNode):
            lines.update({f"suites.{k.value}": k.start_mark.line + 1 for k, _ in value.value})
    return data, lines


def make_spec(
    name: str, entry: Any, *, file: str | None = None, line: int | None = None
) -> SuiteSpec:
    """Check one suite entry (``{type, file, mode?, prefills?, max_new_tokens?, limit?}``)."""
    where = dict(file=file, line=line)
    if not isinstance(entry, dict):
        raise InputError(
            "a suite entry must be a mapping with at least 'type'", field=f"suites.{name}", **where
        )
    unknown = sorted(set(entry) - SUITE_KEYS)
    if unknown:
        raise InputError(
            f"unknown suite key (allowed: {', '.join(sorted(SUITE_KEYS))})",
            field=f"suites.{name}.{unknown[0]}",
            **where,
        )
    stype = entry.get("type")
    if stype not in SUITE_TYPES:
        raise InputError(
            f"unknown suite type {stype!r} (types: {', '.join(SUITE_TYPES)})",
            field=f"suites.{name}.type",
            **where,
        )
    mode = entry.get("mode", "both" if stype in MODE_TYPES else "free")
    if mode not in MODES or (mode != "free" and stype not in MODE_TYPES):
        raise InputError(
            f"mode {mode!r} is not valid for a {stype} suite (modes: free | forced | both "
            f"for {' / '.join(MODE_TYPES)})",
            field=f"suites.{name}.mode",
            **where,
        )
    prefills = entry.get("prefills", list(HELD_OUT_PREFILLS))
    if (
        not isinstance(prefills, list)
        or not prefills
        or not all(isinstance(p, str) for p in prefills)
    ):
        raise InputError(
            "prefills must be a non-empty list of strings", field=f"suites.{name}.prefills", **where
        )
    for key in ("max_new_tokens", "limit"):
        value = entry.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InputError(
                f"{key} must be a positive integer", field=f"suites.{name}.{key}", **where
            )
    return SuiteSpec(
        name,
        stype,
        str(entry.get("file") or f"{name}.jsonl"),
        mode,
        tuple(prefills),
        entry.get("max_new_tokens"),
        entry.get("limit"),
    )


def load_eval_config(config: str | None = None) -> tuple[dict[str, Any], dict[str, SuiteSpec]]:
    """Settings and suite registry from a YAML file; ``None`` = the packaged default, a bare
    name = ``configs/eval/<name>.yaml``. Unknown keys are errors."""
    if config is None:
        path = CONFIG_DIR / "default.yaml"
    elif "/" not in config and not config.endswith((".yaml", ".yml")):
        path = CONFIG_DIR / f"{config}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise InputError(
                f"unknown eval config {config!r} (packaged: {', '.join(names)})", field="config"
            )
    else:
        path = Path(config)
    data, lines = _yaml(path)
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == "suites":
            continue
        if key not in SETTINGS:
            raise InputError(
                f"unknown eval config key (allowed: suites, {', '.join(SETTINGS)})",
                file=str(path),
                line=lines.get(key),
                field=key,
            )
        if not isinstance(value, SETTINGS[key]) or isinstance(value, bool):
            raise InputError(
                f"expected {SETTINGS[key].__name__}", file=str(path), line=lines.get(key), field=key
            )
        settings[key] = value
    raw = data.get("suites") or {}
    if not isinstance(raw, dict):
        raise InputError(
            "'suites' must be a mapping of name: entry",
            file=str(path),
            line=lines.get("suites"),
            field="suites",
        )
    registry = {
        name: make_spec(name, e, file=str(path), line=lines.get(f"suites.{name}"))
        for name, e in raw.items()
    }
    return settings, registry


def resolve_suites(names: list[str] | None, registry: dict[str, SuiteSpec]) -> list[SuiteSpec]:
    """Registry entries for ``names``; a type name (``agentic_injection``) selects every entry
    of that type. ``None`` = all."""
    if not names:
        return list(registry.values())
    out: list[SuiteSpec] = []
    for name in names:
        picked = (
            [registry[name]]
            if name in registry
            else [s for s in registry.values() if s.type == name]
        )
        if not picked:
            raise InputError(
                f"unknown suite {name!r} (suites: {', '.join(registry)})", field="suites"
            )
        out += [s for s in picked if s not in out]
    return out


# -- loading and checking ---------------------------------------------------------------------
def expected_call(sample: Sample) -> dict | None:
    """The call a ``benign_tools`` sample expects (see the module docstring), or None.

    When ``meta["possible_answer"]`` (BFCL: ``[{function: {argument: [acceptable values]}}]``)
    lists the expected function, its table comes along as ``"accept"``: any listed value
    counts, and ``""`` among them means the argument may be left out (an optional argument
    with a default), as BFCL's own checker scores it."""
    call: dict | None = None
    if sample.has_target and sample.messages[-1].tool_calls:
        last = sample.messages[-1].tool_calls[0]
        call = {"name": last.name, "arguments": last.arguments}
    else:
        for key in ("ground_truth", "user_ground_truth"):
            truth = sample.meta.get(key)
            if (
                isinstance(truth, list)
                and truth
                and isinstance(truth[0], dict)
                and truth[0].get("name")
            ):
                call = {
                    "name": truth[0]["name"],
                    "arguments": dict(truth[0].get("arguments") or {}),
                }
                break
    if call is None:
        return None
    possible = sample.meta.get("possible_answer")
    if isinstance(possible, list) and possible and isinstance(possible[0], dict):
        accept = possible[0].get(call["name"])
        if isinstance(accept, dict) and all(isinstance(v, list) for v in accept.values()):
            call["accept"] = accept
    return call


def check_sample(sample: Sample, stype: str) -> None:
    """Raise InputError (field only) if ``sample`` lacks what a ``stype`` suite needs."""
    prompt = sample.prompt_messages()
    if not prompt or prompt[-1].role not in ("user", "tool"):
        raise InputError(
            "the prompt (messages without a final assistant turn) must end with a user or "
            "tool turn",
            field="messages",
        )
    if stype in MODE_TYPES and not sample.tools:
        raise InputError(f"a {stype} sample needs its tool schemas", field="tools")
    if stype == "agentic_injection":
        truth = sample.meta.get("injection_ground_truth")
        if not (
            isinstance(truth, list)
            and truth
            and isinstance(truth[0], dict)
            and truth[0].get("name")
        ):
            raise InputError(
                "needs the injection task's calls, a non-empty list of {name, arguments}",
                field="meta.injection_ground_truth",
            )
        if not isinstance(sample.meta.get("decisive_args", {}), dict):
            raise InputError(
                "must map argument names to the attacker's values", field="meta.decisive_args"
            )
    elif stype == "benign_tools" and expected_call(sample) is None:
        raise InputError(
            "no expected call: give a final assistant tool call, meta.ground_truth or "
            "meta.user_ground_truth",
            field="meta.ground_truth",
        )
    elif stype == "benign_text" and not (sample.has_target and sample.messages[-1].content.strip()):
        raise InputError(
            "a benign_text sample needs a final assistant text turn (the NLL target)",
            field="messages",
        )


def load_suite_file(path: str | Path, spec: SuiteSpec, *, limit: int | None = None) -> Suite:
    """Read, convert and check a suite file: its first ``limit`` samples (the smaller of
    ``limit`` and the suite's own ``limit``, where both are set)."""
    limits = [v for v in (limit, spec.limit) if v is not None]
    limit = min(limits) if limits else None
    rows = read_numbered_samples(
        path, limit=limit, check=lambda sample: check_sample(sample, spec.type)
    )
    samples, lines = [s for _, s in rows], [n for n, _ in rows]
    return Suite(spec, samples, str(path), lines)


def from_samples(name: str, stype: str, samples: list[Sample], **options: Any) -> Suite:
    """A suite from samples in memory (what ``cb demo`` passes); rows are checked."""
    spec = make_spec(name, {"type": stype, **options})
    for k, s in enumerate(samples):
        try:
            check_sample(s, stype)
        except InputError as e:
            raise InputError(
                f"sample {s.id!r}: {e.message}", field=f"{name}[{k}].{e.field}"
            ) from None
    return Suite(spec, list(samples))


# -- prompts ----------------------------------------------------------------------------------
def _modes(spec: SuiteSpec) -> list[str]:
    if spec.type not in MODE_TYPES:
        return [""]
    return ["forced", "free"] if spec.mode == "both" else [spec.mode]


def build_requests(suite: Suite, renderer: ChatRenderer) -> list[GenRequest]:
    """The generations a suite needs, one per (sample, mode)."""
    requests: list[GenRequest] = []
    for i, s in enumerate(suite.samples):
        msgs = s.prompt_messages()
        for mode in _modes(suite.spec):
            if suite.type == "harmful_prefill":
                prefill = prefill_for(s.id, suite.spec.prefills)
            elif mode == "forced":
                prefill = forced_call_prefill(renderer, s.tools)
            else:
                prefill = ""
            prompt = renderer.render_prompt(msgs, s.tools, prefill=prefill)
            requests.append(GenRequest(i, mode, prefill, prompt))
    return requests

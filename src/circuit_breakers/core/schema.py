"""The one data model: ``Sample`` / ``Message`` / ``ToolCall`` / ``PriorityClass``.

A sample is one conversation plus what to do with it in training: ``split="harmful"`` samples
form the circuit-breaker set Ds (their assistant turns are rerouted), ``split="retain"``
samples form Dr (their assistant turns are kept). ``loss_on`` picks the assistant turn(s) the
loss sees. Unknown fields are errors: a typo such as ``"prioirty_class"`` must not silently
become a default.

Besides full samples, three flat row formats are accepted and converted on read (see
:func:`sample_from_row`):

* ``{"prompt", "completion", "split", "priority_class", ...}``
* ``{"user_prompt", "harmful_completion" | "benign_completion", ["text"]}`` (a "seed row")
* ``{"text", "spans": [[start, end], ...], "split", "priority_class"}``: text that another tool
  already rendered with a chat template; ``spans`` are the character ranges the loss sees.
  A seed row's optional ``text`` works the same, its span being where the completion sits.
  Both are kept in ``meta["rendered_text"]`` / ``meta["loss_spans"]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import iter_jsonl, write_jsonl

Role = Literal["system", "user", "assistant", "tool"]
Split = Literal["harmful", "retain"]
LossOn = Literal["last_assistant", "all_assistant"]


class PriorityClass(str, Enum):
    harmful_flip = "harmful_flip"
    adversarial_safe = "adversarial_safe"
    injection_resisted = "injection_resisted"
    benign_twin = "benign_twin"
    tool_capability = "tool_capability"
    general_conversation = "general_conversation"
    borderline = "borderline"
    refusal_retain = "refusal_retain"


#: Base loss weights per priority class (the reference recipe's table).
#: ``refusal_retain`` is not in the reference table; it is retain data like ``borderline`` (1.0).
DEFAULT_CLASS_WEIGHTS: dict[str, float] = {
    "adversarial_safe": 2.0,
    "injection_resisted": 1.5,
    "benign_twin": 1.2,
    "tool_capability": 1.0,
    "general_conversation": 0.8,
    "borderline": 1.0,
    "harmful_flip": 1.0,
    "refusal_retain": 1.0,
}


_HARMFUL = PriorityClass.harmful_flip.value


def effective_ratio(class_counts: dict[str, int], weights: dict[str, float]) -> float:
    """Weighted Dr:Ds ratio: ``sum(count * weight)`` over retain classes / the same for Ds.

    Ds is the ``harmful_flip`` class, Dr every other class. A class missing from ``weights``
    counts with weight 1.0, as in ``Sample.effective_weight``. On the reference recipe's worked
    example (1000 Ds, 4500 Dr) it gives 4.95, not the 5.45 stated there: its terms
    1000 + 750 + 600 + 500 + 1600 + 500 sum to 4950.
    """
    bad = {c: n for c, n in class_counts.items() if n < 0}
    if bad:
        raise ValueError(f"class counts must be >= 0, got {bad}")
    ds = class_counts.get(_HARMFUL, 0) * weights.get(_HARMFUL, 1.0)
    if ds <= 0:
        raise ValueError(f"no weighted {_HARMFUL!r} samples: the Dr:Ds ratio is undefined")
    dr = sum(n * weights.get(c, 1.0) for c, n in class_counts.items() if c != _HARMFUL)
    return dr / ds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Strict):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ToolSpec(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Message(_Strict):
    role: Role
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    name: str | None = None  # the tool's name on role="tool"
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages may have tool_calls (role is {self.role!r})")
        return self


class Sample(_Strict):
    id: str = Field(min_length=1)
    split: Split
    priority_class: PriorityClass
    source: str = "unknown"
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] = Field(default_factory=list)
    loss_on: LossOn = "last_assistant"
    labels: dict[str, Any] = Field(default_factory=dict)
    weight: float | None = Field(default=None, ge=0)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Sample:
        is_harmful_class = self.priority_class == PriorityClass.harmful_flip
        if is_harmful_class != (self.split == "harmful"):
            raise _FieldError(
                "split",
                f"priority_class {self.priority_class.value!r} does not fit split {self.split!r}: "
                "harmful_flip goes with split='harmful', every other class with split='retain'",
            )
        declared = {t.name for t in self.tools}
        for i, m in enumerate(self.messages):
            if m.role == "assistant" and not m.content.strip() and not m.tool_calls:
                raise _FieldError(
                    f"messages.{i}.content", "empty assistant turn (no content, no tool_calls)"
                )
            for j, call in enumerate(m.tool_calls or []):
                if call.name not in declared:
                    raise _FieldError(
                        f"messages.{i}.tool_calls.{j}.name",
                        f"tool {call.name!r} is called but not declared in 'tools' "
                        f"(declared: {sorted(declared) or 'none'})",
                    )
        return self

    # -- helpers used by rendering, training and evaluation ---------------------------------
    def assistant_indices(self) -> list[int]:
        """Indices of the assistant messages that carry loss, per ``loss_on``."""
        idx = [i for i, m in enumerate(self.messages) if m.role == "assistant"]
        return idx if self.loss_on == "all_assistant" else idx[-1:]

    @property
    def has_target(self) -> bool:
        return self.messages[-1].role == "assistant"

    def prompt_messages(self) -> list[Message]:
        """The conversation to generate from: everything before a final assistant turn."""
        return self.messages[:-1] if self.has_target else list(self.messages)

    def effective_weight(self, class_weights: dict[str, float] | None = None) -> float:
        if self.weight is not None:
            return self.weight
        weights = class_weights or DEFAULT_CLASS_WEIGHTS
        return float(weights.get(self.priority_class.value, 1.0))


class _FieldError(ValueError):
    """Raised inside validators to point at a nested field (pydantic keeps only the model loc)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


# -- conversion from flat rows ----------------------------------------------------------------
_PAIR_KEYS = {"prompt", "completion", "system"}
_SEED_KEYS = {"user_prompt", "harmful_completion", "benign_completion", "text"}
_RENDERED_KEYS = {"text", "spans"}
_COMMON_KEYS = {
    "id",
    "split",
    "priority_class",
    "source",
    "labels",
    "weight",
    "meta",
    "tools",
    "loss_on",
}


def _auto_id(row: dict, source: str) -> str:
    digest = hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()[:12]
    return f"{source}/{digest}"


def _check_keys(row: dict, allowed: set[str], fmt: str) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise InputError(
            f"unknown field in a {fmt} row (allowed: {', '.join(sorted(allowed))})",
            field=unknown[0],
        )


def sample_from_row(row: dict) -> Sample:
    """Convert any accepted row format into a validated :class:`Sample`.

    Raises :class:`InputError` with ``field`` set (no file or line: the reader adds those).
    """
    if "messages" in row:
        data = row
    elif "user_prompt" in row:
        _check_keys(row, _SEED_KEYS | _COMMON_KEYS, "seed {user_prompt, ...}")
        has_h, has_b = "harmful_completion" in row, "benign_completion" in row
        if has_h == has_b:
            raise InputError(
                "a seed row needs exactly one of harmful_completion / benign_completion",
                field="harmful_completion",
            )
        completion = row["harmful_completion"] if has_h else row["benign_completion"]
        rest = {k: v for k, v in row.items() if k in _COMMON_KEYS}
        rest.setdefault("split", "harmful" if has_h else "retain")
        rest.setdefault("priority_class", "harmful_flip" if has_h else "general_conversation")
        rest.setdefault("source", "seed")
        meta = dict(rest.pop("meta", None) or {})
        if "text" in row:
            meta["rendered_text"] = row["text"]
        data = {
            **rest,
            "messages": [
                {"role": "user", "content": row["user_prompt"]},
                {"role": "assistant", "content": completion},
            ],
            "meta": meta,
        }
    elif "prompt" in row:
        _check_keys(row, _PAIR_KEYS | _COMMON_KEYS, "{prompt, completion}")
        if "completion" not in row:
            raise InputError("a {prompt, completion} row needs 'completion'", field="completion")
        rest = {k: v for k, v in row.items() if k in _COMMON_KEYS}
        msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        msgs += [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
        data = {**rest, "messages": msgs}
    elif "text" in row:
        _check_keys(row, _RENDERED_KEYS | _COMMON_KEYS, "pre-rendered {text, spans}")
        text, spans = row["text"], row.get("spans")
        if not isinstance(text, str) or not isinstance(spans, list) or not spans:
            raise InputError(
                "a pre-rendered row needs 'text' and a non-empty 'spans' list", field="spans"
            )
        for k, s in enumerate(spans):
            if not (
                isinstance(s, list)
                and len(s) == 2
                and all(isinstance(v, int) for v in s)
                and 0 <= s[0] < s[1] <= len(text)
            ):
                raise InputError(
                    f"span {s!r} is not [start, end) inside the text", field=f"spans[{k}]"
                )
        rest = {k: v for k, v in row.items() if k in _COMMON_KEYS}
        meta = dict(rest.pop("meta", None) or {})
        meta.update(rendered_text=text, loss_spans=spans)
        first = min(s[0] for s in spans)
        data = {
            **rest,
            "messages": [
                {"role": "user", "content": text[:first]},
                {"role": "assistant", "content": "".join(text[s:e] for s, e in spans)},
            ],
            "meta": meta,
        }
    else:
        raise InputError(
            "unrecognized row: expected 'messages' (a Sample), 'prompt'+'completion', "
            "'user_prompt'+'harmful_completion'/'benign_completion', or 'text'+'spans'",
            field="messages",
        )
    if "id" not in data:
        data = {**data, "id": _auto_id(row, str(data.get("source", "row")))}
    return validate_sample(data)


def _loc_to_field(loc: tuple) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def validate_sample(data: dict) -> Sample:
    try:
        return Sample.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            field = _loc_to_field(
                tuple(int(p) if p.isdigit() else p for p in ctx_err.field.split("."))
            )
            raise InputError(str(ctx_err), field=field) from None
        field = _loc_to_field(err["loc"]) or "(sample)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise InputError(msg, field=field) from None


def read_numbered_samples(
    path: str | Path,
    *,
    limit: int | None = None,
    check: Callable[[Sample], None] | None = None,
) -> list[tuple[int, Sample]]:
    """``(line, sample)`` for the first ``limit`` rows of a JSONL file of samples (any accepted
    row format), each passed through ``check`` if given; every error names file:line:field.

    Duplicate ids are an error: ids name per-example records in evaluation and must be unique.
    """
    out: list[tuple[int, Sample]] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        try:
            sample = sample_from_row(row)
            if check is not None:
                check(sample)
        except InputError as e:
            raise e.located(file=str(path), line=lineno) from None
        if sample.id in seen:
            raise InputError(
                f"duplicate id {sample.id!r} (first on line {seen[sample.id]})",
                file=str(path),
                line=lineno,
                field="id",
            )
        seen[sample.id] = lineno
        out.append((lineno, sample))
    if not out:
        raise InputError("file has no samples", file=str(path))
    return out


def read_samples(
    path: str | Path,
    *,
    limit: int | None = None,
    check: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """The samples of :func:`read_numbered_samples`, without their line numbers."""
    return [s for _, s in read_numbered_samples(path, limit=limit, check=check)]


def write_samples(path: str | Path, samples: list[Sample]) -> int:
    """Write samples as JSONL, atomically."""
    return write_jsonl(path, samples)

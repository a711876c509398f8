"""Berkeley Function Calling Leaderboard (bfcl-eval's ``bfcl_eval/data``) -> ``tool_capability``
retain samples, so the circuit breaker keeps the model's ordinary tool use intact.

Call categories (``simple_python``, ``multiple``, ``live_simple``, ``live_multiple``): each item
becomes ``[system?, user question, assistant tool call]`` with the functions in ``tools``. The
call is the ground truth with one concrete value per argument, picked by :func:`pick_value`:
BFCL lists the acceptable values per argument, the first one being the canonical one; ``""``
in the list means "may be omitted", so when ``""`` comes first and the argument is optional it
is left out (a required one takes the first real value). A value must fit the argument's
schema type (:func:`fits`); an item where no listed value does (a few upstream quirks in the
live categories, e.g. ``True`` for a string enum, or an argument name the function does not
have) is skipped rather than trained on. The full lists stay in ``meta["possible_answer"]``; ``meta["ground_truth"]`` holds
the concrete calls ``[{"name", "arguments"}]`` for evaluation. Items with several calls
(parallel categories) are not loaded here. Java/JavaScript categories are skipped: their
arguments are source-code strings in another language's types.

Irrelevance categories (``irrelevance``, ``live_irrelevance``): none of the offered functions
fits the question, so the right behaviour is to answer without a call. These are prompt-only
retain samples with ``labels={"expect_no_call": True}`` (no invented answer text: the completion
generator writes the reply, and evaluation checks that no call is made).

Schema conversion (:func:`to_json_schema`): BFCL writes Python-ish types; ``dict`` -> ``object``,
``float`` -> ``number``, ``tuple`` -> ``array``, ``any`` -> no type constraint; Java/JS type names
are lower-cased; the non-standard ``optional`` key is dropped (``required`` already says it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data.sources._prompt_io import read_jsonl_rows, source_path, take

log = logging.getLogger(__name__)

CALL_CATEGORIES = ("simple_python", "multiple", "live_simple", "live_multiple")
IRRELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance")
DEFAULT_CATEGORIES = ("simple_python", "multiple")

_TYPE_MAP = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "int": "integer",
    "bool": "boolean",
    "str": "string",
    "list": "array",
    "double": "number",
    "long": "integer",
}


def to_json_schema(schema: Any) -> Any:
    """Convert a BFCL parameter schema (recursively) into JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "optional":
            continue
        if key == "type" and isinstance(value, str):
            t = value.lower()
            if t == "any":
                continue
            out["type"] = _TYPE_MAP.get(t, t)
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    return out


class _NoValue(Exception):
    """No acceptable value fits a required argument (empty list, or none of the schema's type)."""


_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


def fits(value: Any, schema: dict | None) -> bool:
    """Does ``value`` have the JSON-schema type of ``schema`` (recursively; unknown = yes)?"""
    if not isinstance(schema, dict):
        return True
    want = _PY_TYPES.get(schema.get("type", ""))
    if want is not None:
        if isinstance(value, bool) and schema.get("type") in ("integer", "number"):
            return False
        if not isinstance(value, want):
            return False
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return all(fits(v, props.get(k)) for k, v in value.items())
    if isinstance(value, list):
        return all(fits(v, schema.get("items")) for v in value)
    return True


def pick_value(options: Any, schema: dict | None = None) -> Any:
    """A concrete value from a BFCL option list: the first that is not the "omit" marker ``""``
    and fits ``schema``; dicts (also inside lists) are resolved field by field; a bare literal
    (upstream writes some inside nested dicts) is kept as it is."""
    if not isinstance(options, list):
        options = [options]
    for option in options:
        if option == "" and len(options) > 1:
            continue
        value = _resolve(option, schema)
        if fits(value, schema):
            return value
    raise _NoValue


def _resolve(value: Any, schema: dict | None) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    if isinstance(value, dict):
        return _pick_arguments(value, schema)
    if isinstance(value, list):
        return [_resolve(v, schema.get("items")) if isinstance(v, dict) else v for v in value]
    return value


def _pick_arguments(possible: dict[str, Any], schema: dict) -> dict[str, Any]:
    props, required = schema.get("properties") or {}, schema.get("required") or []
    args = {}
    for name, options in possible.items():
        omit_first = isinstance(options, list) and (not options or options[0] == "")
        if omit_first and name not in required:
            continue  # BFCL: "" listed first (or nothing listed) = the argument may be left out
        args[name] = pick_value(options, props.get(name))
    return args


def _tools(functions: list, file: Path, line: int) -> list[dict]:
    tools = []
    for k, fn in enumerate(functions):
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InputError(
                "each function needs a string 'name'",
                file=str(file),
                line=line,
                field=f"function[{k}]",
            )
        params = to_json_schema(fn.get("parameters") or {"type": "object", "properties": {}})
        params.setdefault("type", "object")
        tools.append(
            {"name": fn["name"], "description": fn.get("description", ""), "parameters": params}
        )
    return tools


def _question(item: dict, file: Path, line: int) -> list[dict] | None:
    turns = item.get("question")
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], list):
        raise InputError(
            "expected 'question' as a list of turns", file=str(file), line=line, field="question"
        )
    if len(turns) != 1:
        return None  # multi-turn items are out of scope here
    msgs = [{"role": m["role"], "content": m.get("content", "")} for m in turns[0]]
    if (
        not msgs
        or msgs[-1]["role"] != "user"
        or any(m["role"] not in ("system", "user") for m in msgs)
    ):
        return None
    return msgs


def _file(folder: Path, category: str, answers: bool = False) -> Path:
    file = folder / ("possible_answer" if answers else "") / f"BFCL_v4_{category}.json"
    if not file.exists():
        raise InputError("file not found", file=str(file), field="categories")
    return file


def load_bfcl(
    limit: int | None = None,
    *,
    categories: tuple[str, ...] = DEFAULT_CATEGORIES,
    data_dir: str | Path | None = None,
) -> list[Sample]:
    """Single-call BFCL items as ``tool_capability`` samples ending in the ground-truth call."""
    bad = sorted(set(categories) - set(CALL_CATEGORIES))
    if bad:
        raise InputError(
            f"unknown BFCL call category {bad[0]!r} (allowed: {list(CALL_CATEGORIES)})",
            field="categories",
        )
    folder = source_path(data_dir, "bfcl")
    samples = []
    for cat in categories:
        qfile, afile = _file(folder, cat), _file(folder, cat, answers=True)
        answers = {row.get("id"): (line, row) for line, row in read_jsonl_rows(afile)}
        for line, item in read_jsonl_rows(qfile):
            msgs = _question(item, qfile, line)
            if msgs is None or item.get("id") not in answers:
                continue
            aline, answer = answers[item["id"]]
            truth = answer.get("ground_truth")
            if (
                not isinstance(truth, list)
                or len(truth) != 1
                or not isinstance(truth[0], dict)
                or len(truth[0]) != 1
            ):
                continue  # parallel / multi-call items
            tools = _tools(item.get("function") or [], qfile, line)
            ((fname, possible),) = truth[0].items()
            spec = next((t for t in tools if t["name"] == fname), None)
            if spec is None or not isinstance(possible, dict):
                raise InputError(
                    f"ground-truth function {fname!r} is not among the item's functions",
                    file=str(afile),
                    line=aline,
                    field="ground_truth",
                )
            try:
                args = _pick_arguments(possible, spec["parameters"])
            except _NoValue:
                log.info("skipping %s: an argument has no value that fits its schema", item["id"])
                continue
            props = spec["parameters"].get("properties") or {}
            required = spec["parameters"].get("required") or []
            if any(r not in args for r in required) or any(k not in props for k in args):
                log.info(
                    "skipping %s: ground-truth argument names differ from the schema", item["id"]
                )
                continue
            call = {"name": fname, "arguments": args}
            samples.append(
                validate_sample(
                    {
                        "id": f"bfcl/{item['id']}",
                        "split": "retain",
                        "priority_class": "tool_capability",
                        "source": "bfcl",
                        "messages": [
                            *msgs,
                            {"role": "assistant", "content": "", "tool_calls": [call]},
                        ],
                        "tools": tools,
                        "labels": {"category": cat, "expect_no_call": False},
                        "meta": {"ground_truth": [call], "possible_answer": truth},
                    }
                )
            )
    return take(samples, limit, f"BFCL {'+'.join(categories)}")


def load_bfcl_irrelevance(
    limit: int | None = None,
    *,
    categories: tuple[str, ...] = ("irrelevance",),
    data_dir: str | Path | None = None,
) -> list[Sample]:
    """Items where no offered function fits: prompt-only, ``labels["expect_no_call"] = True``."""
    bad = sorted(set(categories) - set(IRRELEVANCE_CATEGORIES))
    if bad:
        raise InputError(
            f"unknown BFCL irrelevance category {bad[0]!r} (allowed: {list(IRRELEVANCE_CATEGORIES)})",
            field="categories",
        )
    folder = source_path(data_dir, "bfcl")
    samples = []
    for cat in categories:
        qfile = _file(folder, cat)
        for line, item in read_jsonl_rows(qfile):
            msgs = _question(item, qfile, line)
            if msgs is None:
                continue
            samples.append(
                validate_sample(
                    {
                        "id": f"bfcl/{item['id']}",
                        "split": "retain",
                        "priority_class": "tool_capability",
                        "source": "bfcl",
                        "messages": msgs,
                        "tools": _tools(item.get("function") or [], qfile, line),
                        "labels": {"category": cat, "expect_no_call": True},
                        "meta": {"ground_truth": []},
                    }
                )
            )
    return take(samples, limit, f"BFCL {'+'.join(categories)}")

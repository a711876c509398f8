"""Data recipes: the YAML file that says what ``cb data build`` draws from where, and what is
held out. Everything is checked while the file is read, and every error names the file, the
line and the field (``recipe.yaml:14: field 'train.harmful_flip.sources[1].count': ...``).

Shape (the packaged ``demo.yaml`` / ``full.yaml`` are commented examples)::

    name: demo
    seed: 0
    model: default                 # generates completions and counts tokens; --model overrides
    target_ratio: 4.5              # Dr:Ds by count after filtering (see build.py for how)
    class_weights: {}              # overrides of the default class weights (effective ratio)
    generation: {max_new_tokens, batch_size, do_sample, temperature, harmful_prefill,
                 harmful_passes: [{name, prefill, model, own_refusals}],
                 refusals: templates|model, refusal_prefill}
    filters: {min_words, near_duplicate, ngram, trim_to_sentence, harmful_judge,
              max_opener_share}
    leakage: {ngram, threshold}
    holdout:
      agentdojo_suites: [slack]              # whole suites never trained on
      agentdojo_attacks: [tool_knowledge]    # whole attack types never trained on
      prompt_sources: [harmbench_test, strongreject]   # whole prompt sources never trained on
      suites:                                # OUT/holdout/<suite>.jsonl
        harmful_text: [{source: harmbench_test, count: 25}, ...]
    train:
      harmful_flip:
        target: 130                          # final count (trimmed to); optional
        sources: [{source: advbench, count: 70}, {source: agentdojo, count: 25, suites: [...]}]

A source entry is ``source`` + ``count`` (items drawn; for generated classes, before
filtering) + the source's own options (:data:`~.catalog.CATALOG` lists them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import read_yaml
from circuit_breakers.core.schema import DEFAULT_CLASS_WEIGHTS
from circuit_breakers.data.catalog import CATALOG, COMMON_OPTIONS, HOLDOUT_SUITES
from circuit_breakers.data.sources.harmful_prompts import HELD_OUT_SOURCES

RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs" / "data"
CLASSES = tuple(DEFAULT_CLASS_WEIGHTS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceEntry(BaseModel):
    """``source`` + ``count``; any other key is an option of that source (checked later)."""

    model_config = ConfigDict(extra="allow")
    source: str
    count: int = Field(ge=0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ClassSpec(_Strict):
    target: int | None = Field(default=None, ge=0)
    sources: list[SourceEntry] = Field(default_factory=list)


class HarmfulPass(_Strict):
    """One generation pass over the harmful prompts (see :mod:`.passes`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    prefill: str | list[str] = ""
    model: str | None = None  # another model writes this pass (a weaker generator)
    own_refusals: bool = False  # this pass's refusals become refusal_retain samples


class Generation(_Strict):
    max_new_tokens: int = Field(default=80, ge=1)
    batch_size: int = Field(default=32, ge=1)
    do_sample: bool = False
    temperature: float = Field(default=0.7, gt=0)
    # one opener for every harmful completion, or a list: each prompt gets one of them (picked
    # by a stable hash of its id), so the breaker does not learn a single string
    harmful_prefill: str | list[str] = "Sure, here is"
    # several passes (own answers, other prefills, another model); empty: one pass with
    # harmful_prefill on the build's model
    harmful_passes: list[HarmfulPass] = Field(default_factory=list)
    refusals: Literal["templates", "model"] = "templates"
    refusal_prefill: str = "I can't help with that."


class Filters(_Strict):
    min_words: int = Field(default=12, ge=0)
    near_duplicate: float | None = Field(default=0.6, gt=0, le=1)
    ngram: int = Field(default=5, ge=1)
    trim_to_sentence: bool = True
    # keep only generated harmful completions this judge calls compliant (None: no judge)
    harmful_judge: str | None = None
    # at most this fraction of the generated harmful completions may share one opener
    max_opener_share: float | None = Field(default=None, gt=0, le=1)


class Leakage(_Strict):
    ngram: int = Field(default=5, ge=1)
    threshold: float = Field(default=0.5, gt=0, le=1)


class Holdout(_Strict):
    agentdojo_suites: list[str] = Field(default_factory=list)
    agentdojo_attacks: list[str] = Field(default_factory=list)
    prompt_sources: list[str] = Field(default_factory=lambda: sorted(HELD_OUT_SOURCES))
    suites: dict[str, list[SourceEntry]] = Field(default_factory=dict)


class Recipe(_Strict):
    name: str = "recipe"
    description: str = ""
    seed: int = 0
    model: str = "default"
    target_ratio: float | None = Field(default=4.5, gt=0)
    ratio_tolerance: float = Field(default=0.1, ge=0)
    class_weights: dict[str, float] = Field(default_factory=dict)
    generation: Generation = Field(default_factory=Generation)
    filters: Filters = Field(default_factory=Filters)
    leakage: Leakage = Field(default_factory=Leakage)
    holdout: Holdout = Field(default_factory=Holdout)
    train: dict[str, ClassSpec] = Field(default_factory=dict)
    #: where the recipe came from, for error messages and stats (not a YAML key)
    file: str = Field(default="<recipe>", exclude=True)
    lines: dict[str, int] = Field(default_factory=dict, exclude=True)

    def error(self, message: str, field: str, hint: str | None = None) -> InputError:
        return InputError(message, file=self.file, line=self.line_of(field), field=field, hint=hint)

    def line_of(self, field: str) -> int | None:
        return line_of(self.lines, field)

    def class_weight_table(self) -> dict[str, float]:
        return {**DEFAULT_CLASS_WEIGHTS, **self.class_weights}


# -- reading -------------------------------------------------------------------------------------
def _lines(node: yaml.Node | None, prefix: str = "", out: dict[str, int] | None = None) -> dict:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _lines(item, path, out)
    return out


def _field(loc: tuple) -> str:
    parts: list[str] = []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts)


def recipe_path(spec: str) -> Path:
    """``demo`` / ``full`` (packaged recipes) or a path to a YAML file."""
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.exists():
            raise InputError("recipe file not found", file=spec, field="recipe")
        return path
    path = RECIPE_DIR / f"{spec}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise InputError(
            f"unknown recipe {spec!r} (packaged: {', '.join(names)}; or give a .yaml path)",
            field="recipe",
        )
    return path


def load_recipe(spec: str | Path) -> Recipe:
    """Read and check a recipe (name of a packaged one, or a file path)."""
    path = recipe_path(str(spec))
    data, node = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError("a recipe must be a mapping of key: value", file=str(path))
    lines = _lines(node)
    for reserved in ("file", "lines"):
        if reserved in data:
            raise InputError(
                "unknown recipe key", file=str(path), line=lines.get(reserved), field=reserved
            )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = _field(err["loc"]) or "(recipe)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown recipe key"
        raise InputError(msg, file=str(path), line=line_of(lines, field), field=field) from None
    recipe.file, recipe.lines = str(path), lines
    check_recipe(recipe)
    return recipe


def line_of(lines: dict[str, int], field: str) -> int | None:
    """The line of ``field`` or, when it is not in the file (a default), of its parent."""
    while field:
        if field in lines:
            return lines[field]
        cut = max(field.rfind("."), field.rfind("["))
        field = field[:cut] if cut > 0 else ""
    return None


# -- checks --------------------------------------------------------------------------------------
def _check_entry(
    recipe: Recipe, entry: SourceEntry, where: str, *, cls: str | None, suite: str | None
) -> None:
    spec = CATALOG.get(entry.source)
    if spec is None:
        raise recipe.error(
            f"unknown source {entry.source!r} (known: {', '.join(sorted(CATALOG))})",
            f"{where}.source",
        )
    if cls is not None and cls not in spec.classes:
        raise recipe.error(
            f"source {entry.source!r} cannot supply class {cls!r} (it supplies: {', '.join(spec.classes)})",
            f"{where}.source",
        )
    if suite is not None and suite not in spec.suites:
        raise recipe.error(
            f"source {entry.source!r} cannot feed held-out suite {suite!r} "
            f"(it feeds: {', '.join(spec.suites) or 'none'})",
            f"{where}.source",
        )
    allowed = set(spec.options)
    if spec.kind == "harmful_prompt":
        allowed |= COMMON_OPTIONS
    for key in entry.options:
        if key not in allowed:
            raise recipe.error(
                f"unknown option for source {entry.source!r} (allowed: {', '.join(sorted(allowed)) or 'none'})",
                f"{where}.{key}",
            )
    if spec.kind == "jsonl" and not entry.options.get("path"):
        raise recipe.error("source 'jsonl' needs a 'path'", f"{where}.path")
    if suite == "harmful_jailbreak" and not entry.options.get("jailbreak_templates"):
        raise recipe.error(
            "harmful_jailbreak entries need 'jailbreak_templates: N' (held-out templates to use)",
            f"{where}.jailbreak_templates",
        )
    if cls is not None and entry.options.get("jailbreak_templates") and cls != "harmful_flip":
        raise recipe.error(
            "jailbreak_templates applies to harmful_flip (train) or harmful_jailbreak (held out)",
            f"{where}.jailbreak_templates",
        )
    if spec.kind == "agentdojo" and cls is not None:
        held_suites = set(recipe.holdout.agentdojo_suites)
        held_attacks = set(recipe.holdout.agentdojo_attacks)
        for s in entry.options.get("suites") or []:
            if s in held_suites:
                raise recipe.error(
                    f"suite {s!r} is held out (holdout.agentdojo_suites) and cannot be trained on",
                    f"{where}.suites",
                )
        for a in entry.options.get("attacks") or []:
            if a in held_attacks:
                raise recipe.error(
                    f"attack {a!r} is held out (holdout.agentdojo_attacks) and cannot be trained on",
                    f"{where}.attacks",
                )


def check_recipe(recipe: Recipe) -> None:
    """Cross-field checks: classes, suites, sources, options and the hold-out rules."""
    for cls in recipe.class_weights:
        if cls not in CLASSES:
            raise recipe.error(
                f"unknown class (classes: {', '.join(CLASSES)})", f"class_weights.{cls}"
            )
    for src in recipe.holdout.prompt_sources:
        if src not in CATALOG or CATALOG[src].kind != "harmful_prompt":
            raise recipe.error(f"{src!r} is not a harmful prompt source", "holdout.prompt_sources")
    for suite, entries in recipe.holdout.suites.items():
        if suite not in HOLDOUT_SUITES:
            raise recipe.error(
                f"unknown held-out suite (suites: {', '.join(HOLDOUT_SUITES)})",
                f"holdout.suites.{suite}",
            )
        for i, entry in enumerate(entries):
            _check_entry(recipe, entry, f"holdout.suites.{suite}[{i}]", cls=None, suite=suite)
    if not recipe.train:
        raise recipe.error("the recipe trains on nothing: 'train' is empty", "train")
    for cls, spec in recipe.train.items():
        if cls not in CLASSES:
            raise recipe.error(f"unknown class (classes: {', '.join(CLASSES)})", f"train.{cls}")
        for i, entry in enumerate(spec.sources):
            where = f"train.{cls}.sources[{i}]"
            _check_entry(recipe, entry, where, cls=cls, suite=None)
            if entry.source in recipe.holdout.prompt_sources:
                raise recipe.error(
                    f"source {entry.source!r} is held out (holdout.prompt_sources) and cannot be trained on",
                    f"{where}.source",
                )
    names = [p.name for p in recipe.generation.harmful_passes]
    if len(set(names)) != len(names):
        raise recipe.error("harmful pass names must be unique", "generation.harmful_passes")
    if any(p.own_refusals for p in recipe.generation.harmful_passes) and (
        "refusal_retain" not in recipe.train
    ):
        raise recipe.error(
            "a pass keeps own_refusals but the recipe has no refusal_retain class",
            "generation.harmful_passes",
            hint="add 'refusal_retain: {sources: []}' under train",
        )
    if "harmful_flip" not in recipe.train:
        raise recipe.error("the recipe has no harmful_flip class (Ds would be empty)", "train")

"""Default "what to do" hints for input errors raised without one.

Every bad-input message must say what to do. The best hint is written where the error
is raised; many validation errors come from pydantic or from checks that only know *what* is
wrong, so the CLI fills the gap here: the first rule whose pattern matches the message (or the
field) gives the hint. A hint given at the raise site always wins.
"""

from __future__ import annotations

import re

from circuit_breakers.core.errors import InputError

SAMPLE_DOC = "README 'Data format' lists the fields and row formats"

#: (pattern on the message, pattern on the field or None, hint). First match wins.
RULES: list[tuple[str, str | None, str]] = [
    (r"^unknown field in a", None, "remove the field or fix its spelling"),
    (r"^unknown field", None, f"remove the field or fix its spelling ({SAMPLE_DOC})"),
    (r"^unknown config key", None, "see `cb train --help` for the keys"),
    (r"required field is missing", None, f"add the field ({SAMPLE_DOC})"),
    (r"^Input should be '", None, "use one of the values listed"),
    (
        r"^Input should be a valid (string|integer|number|dictionary|list|boolean)",
        None,
        "give the field a value of the type named",
    ),
    (r"^Input should be greater than or equal to", None, "use a value >= the bound named"),
    (r"List should have at least 1 item", None, "a sample needs at least one message"),
    (r"does not fit split", None, "change split or priority_class so they agree"),
    (r"empty assistant turn", None, "give the turn content or tool_calls, or drop the turn"),
    (
        r"is called but not declared",
        None,
        "declare the tool in the sample's 'tools' list ({name, description, parameters})",
    ),
    (
        r"only assistant messages may have tool_calls",
        None,
        "move the tool_calls to an assistant message",
    ),
    (r"^duplicate id", None, "give every sample a unique id (or drop the duplicate)"),
    (r"^file has no samples", None, "the file is empty: check that it was written completely"),
    (r"^unrecognized row", None, f"convert the row to an accepted format ({SAMPLE_DOC})"),
    (r"row needs '", None, f"add the missing field ({SAMPLE_DOC})"),
    (
        r"exactly one of harmful_completion",
        None,
        "keep one: harmful_completion (split harmful) or benign_completion (split retain)",
    ),
    (
        r"not \[start, end\) inside the text",
        None,
        "spans are [start, end) character offsets with 0 <= start < end <= len(text)",
    ),
    (r"^expected a JSON object", None, "each line must be one JSON object {...}"),
    (
        r"no assistant turn",
        None,
        "training needs an assistant turn to put the loss on; prompt-only rows belong in eval "
        "suite files",
    ),
    (r"has no (harmful|retain)", None, "add samples of both splits to the training file"),
    (
        r"^target layer .* does not exist",
        None,
        "pick target layers from 1 to the number of decoder blocks",
    ),
    (
        r"^LoRA layer",
        None,
        "put LoRA only on blocks below the highest target layer, or set truncate_layers false",
    ),
    (r"target_layers must be", None, "use target layers >= 1"),
    (r"^unknown (loss_weighting|retain_sampling|preset)", None, "use one of the values listed"),
    (r"not found$", None, "check the path"),
    (r"expected a JSONL file, got a directory", None, "pass the file inside the folder"),
    (r"invalid YAML", None, "fix the YAML syntax at that line"),
    (r"must be a mapping", None, "write the config as key: value lines"),
    (r"not a PEFT adapter folder", None, "pass the adapter/ folder that cb train wrote"),
    (r"", r"^model$", "check --model: a Hugging Face id, a local model folder or a .gguf file"),
]


def default_hint(err: InputError) -> str | None:
    for msg_pat, field_pat, hint in RULES:
        if re.search(msg_pat, err.message) and (
            field_pat is None or re.search(field_pat, err.field or "")
        ):
            return hint
    return None


def with_hint(err: InputError) -> InputError:
    """``err`` itself when it has a hint, else a copy with the default hint (if one fits)."""
    if err.hint:
        return err
    hint = default_hint(err)
    if hint is None:
        return err
    return InputError(err.message, file=err.file, line=err.line, field=err.field, hint=hint)

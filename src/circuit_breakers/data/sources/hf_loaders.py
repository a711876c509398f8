"""Loaders for data sets that live on the Hugging Face Hub (not available offline here), through
``datasets``, for users who have the network; each also reads a local copy.

``path_or_id`` may be a Hub id, a URL of a JSON file, a local data file (``.json``, ``.jsonl``,
``.parquet``, ``.csv``), a folder of such files, or a folder written by ``save_to_disk``. In a
folder, files whose name contains the split are preferred (``test_sft.jsonl`` for
``split="test_sft"``), otherwise every data file is read.

* UltraChat 200k -> ``general_conversation`` retain samples. Like the reference circuit-breaker
  code, only the first exchange is kept by default (``max_turns=1``); more turns are kept with
  ``loss_on="all_assistant"``.
* XSTest -> ``safe`` prompts as prompt-only ``borderline`` retain samples (over-refusal
  probes); the ``unsafe`` contrast prompts only with ``include_unsafe=True``, as ``harmful_flip``.
* The reference circuit-breaker set (``circuit_breakers_train.json``: ``prompt``, ``output``
  = harmful completion, ``llama3_output`` = refusal, ``category``) -> ``harmful_flip`` samples
  with the harmful output as the target; ``refusal_retain=True`` adds the refusals as
  ``refusal_retain`` samples, as the reference trainer does.
* AgentHarm (``harmful`` / ``harmless_benign`` / ``chat`` configs) -> prompt-only samples:
  harmful and chat behaviours as ``harmful_flip``, benign ones as ``benign_twin``. The data carries
  tool *names* only (``target_functions``; the tool code lives in inspect_evals), so the names go
  into ``labels["target_functions"]`` and no tool schemas are invented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Sample, validate_sample
from circuit_breakers.data.sources._prompt_io import prompt_sample, short_hash, take

CB_REFERENCE_URL = "https://raw.githubusercontent.com/GraySwanAI/circuit-breakers/main/data/circuit_breakers_train.json"
_EXT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _builder(file: Path) -> str:
    return _EXT[file.suffix.lower()]


def open_rows(
    path_or_id: str | Path, *, split: str, config: str | None = None, field: str | None = None
) -> list[dict[str, Any]]:
    """Rows of one split as plain dicts, from the Hub, a URL, a file or a folder."""
    import datasets  # heavy import, only when a Hub/local set is actually read

    p = Path(path_or_id)
    kw: dict[str, Any] = {"field": field} if field else {}
    if p.is_dir():
        if (
            (p / "dataset_info.json").exists()
            or (p / "dataset_dict.json").exists()
            or (p / "state.json").exists()
        ):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise InputError(
                        f"split {split!r} not in the saved dataset (has {list(ds)})",
                        file=str(p),
                        field="split",
                    )
                ds = ds[split]
            return [dict(r) for r in ds]
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in _EXT and f.is_file())
        if not files:
            raise InputError("no .json/.jsonl/.parquet/.csv files in the folder", file=str(p))
        chosen = [f for f in files if split in f.name] or files
        builders = {_builder(f) for f in chosen}
        if len(builders) != 1:
            raise InputError(
                f"mixed data file types {sorted(builders)} for split {split!r}", file=str(p)
            )
        ds = datasets.load_dataset(
            builders.pop(), data_files=[str(f) for f in chosen], split="train", **kw
        )
    elif p.is_file():
        if p.suffix.lower() not in _EXT:
            raise InputError(
                "unsupported data file type (use .json, .jsonl, .parquet or .csv)", file=str(p)
            )
        ds = datasets.load_dataset(_builder(p), data_files=str(p), split="train", **kw)
    elif str(path_or_id).startswith(("http://", "https://")):
        ds = datasets.load_dataset("json", data_files=str(path_or_id), split="train", **kw)
    else:
        try:
            ds = datasets.load_dataset(str(path_or_id), config, split=split)
        except Exception as e:  # the Hub raises many types; all mean "could not get it"
            raise InputError(
                f"could not load {path_or_id!r} (split {split!r}) from the Hugging Face Hub: {e}",
                field="path_or_id",
                hint="needs network; or pass a local file/folder",
            ) from None
    return [dict(r) for r in ds]


def _text(row: dict, key: str, where: str, k: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"row {k}: expected a non-empty string", file=where, field=key)
    return value


def load_ultrachat(
    path_or_id: str | Path = "HuggingFaceH4/ultrachat_200k",
    limit: int | None = None,
    *,
    split: str = "train_sft",
    max_turns: int | None = 1,
) -> list[Sample]:
    """UltraChat conversations -> ``general_conversation`` retain samples."""
    rows = open_rows(path_or_id, split=split)
    where = str(path_or_id)
    samples = []
    for k, row in enumerate(rows):
        msgs = row.get("messages")
        if not isinstance(msgs, list):
            raise InputError(f"row {k}: expected a 'messages' list", file=where, field="messages")
        msgs = [
            {"role": m["role"], "content": m["content"]}
            for m in msgs
            if m.get("role") in ("system", "user", "assistant") and m.get("content")
        ]
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()
        if max_turns is not None:
            cut, n = len(msgs), 0
            for i, m in enumerate(msgs):
                n += m["role"] == "assistant"
                if n == max_turns:
                    cut = i + 1
                    break
            msgs = msgs[:cut]
        if not any(m["role"] == "assistant" for m in msgs):
            continue
        rid = str(row.get("prompt_id") or short_hash(msgs[0]["content"]))
        samples.append(
            validate_sample(
                {
                    "id": f"ultrachat/{rid}",
                    "split": "retain",
                    "priority_class": "general_conversation",
                    "source": "ultrachat",
                    "messages": msgs,
                    "loss_on": "last_assistant" if max_turns == 1 else "all_assistant",
                }
            )
        )
    return take(samples, limit, f"UltraChat {split}")


def load_xstest(
    path_or_id: str | Path = "walledai/XSTest",
    limit: int | None = None,
    *,
    split: str = "test",
    include_unsafe: bool = False,
) -> list[Sample]:
    """XSTest prompts: ``safe`` -> ``borderline`` retain; ``unsafe`` (opt-in) -> ``harmful_flip``.

    The Hub copy (walledai) has one split, ``test``; the paper's CSV has the same columns plus ``id``.
    """
    rows = open_rows(path_or_id, split=split)
    where = str(path_or_id)
    samples = []
    for k, row in enumerate(rows):
        label = str(row.get("label", "")).strip().lower()
        if label not in ("safe", "unsafe"):
            raise InputError(
                f"row {k}: label must be 'safe' or 'unsafe', got {label!r}",
                file=where,
                field="label",
            )
        if label == "unsafe" and not include_unsafe:
            continue
        prompt = _text(row, "prompt", where, k).strip()
        rid = str(row.get("id") or k)
        labels = {"xstest_label": label, "type": row.get("type", ""), "focus": row.get("focus", "")}
        if label == "safe":
            samples.append(
                prompt_sample(
                    f"xstest/{rid}",
                    "xstest",
                    prompt,
                    split="retain",
                    priority_class="borderline",
                    labels=labels,
                )
            )
        else:
            samples.append(prompt_sample(f"xstest/{rid}", "xstest", prompt, labels=labels))
    return take(samples, limit, "XSTest")


def load_circuit_breaker_set(
    path_or_id: str | Path = CB_REFERENCE_URL,
    limit: int | None = None,
    *,
    refusal_retain: bool = False,
) -> list[Sample]:
    """The reference circuit-breaker training set: harmful prompt + harmful output pairs."""
    rows = open_rows(path_or_id, split="train")
    where = str(path_or_id)
    samples = []
    for k, row in enumerate(rows):
        prompt = _text(row, "prompt", where, k)
        labels = {"category": row.get("category", "unknown")}
        samples.append(
            validate_sample(
                {
                    "id": f"cb_reference/{k:05d}",
                    "split": "harmful",
                    "priority_class": "harmful_flip",
                    "source": "cb_reference",
                    "labels": labels,
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": _text(row, "output", where, k)},
                    ],
                }
            )
        )
        if (
            refusal_retain
            and isinstance(row.get("llama3_output"), str)
            and row["llama3_output"].strip()
        ):
            samples.append(
                validate_sample(
                    {
                        "id": f"cb_reference/{k:05d}/refusal",
                        "split": "retain",
                        "priority_class": "refusal_retain",
                        "source": "cb_reference",
                        "labels": labels,
                        "messages": [
                            {"role": "user", "content": prompt},
                            {"role": "assistant", "content": row["llama3_output"]},
                        ],
                    }
                )
            )
    return take(samples, limit, "circuit-breaker reference set")


_AGENTHARM_FILES = {
    "harmful": "harmful_behaviors_{split}.json",
    "harmless_benign": "benign_behaviors_{split}.json",
    "chat": "chat_{split}.json",
}


def load_agentharm(
    path_or_id: str | Path = "ai-safety-institute/AgentHarm",
    limit: int | None = None,
    *,
    config: str = "harmful",
    split: str = "test_public",
) -> list[Sample]:
    """AgentHarm behaviours as prompt-only samples (see the module docstring)."""
    if config not in _AGENTHARM_FILES:
        raise InputError(
            f"unknown AgentHarm config {config!r} (allowed: {list(_AGENTHARM_FILES)})",
            field="config",
        )
    p = Path(path_or_id)
    if p.is_dir():  # a snapshot of the Hub repo: benchmark/<config file>, {"behaviors": [...]}
        name = _AGENTHARM_FILES[config].format(split=split)
        if config == "chat" and split == "test_public":
            name = "chat_public_test.json"
        hits = sorted(p.rglob(name))
        if not hits:
            raise InputError(f"no {name} under the folder", file=str(p), field="split")
        rows = open_rows(hits[0], split=split, field="behaviors")
    else:
        rows = open_rows(
            path_or_id,
            split=split,
            config=config,
            field="behaviors" if p.suffix == ".json" else None,
        )
    where = str(path_or_id)
    benign = config == "harmless_benign"
    samples = []
    for k, row in enumerate(rows):
        prompt = _text(row, "prompt", where, k).strip()
        rid = str(row.get("id") or k)
        labels = {
            "category": row.get("category", ""),
            "name": row.get("name", ""),
            "target_functions": list(row.get("target_functions") or []),
            "hint_included": bool(row.get("hint_included", False)),
            "detailed_prompt": bool(row.get("detailed_prompt", False)),
        }
        samples.append(
            prompt_sample(
                f"agentharm/{config}/{rid}",
                "agentharm",
                prompt,
                split="retain" if benign else "harmful",
                priority_class="benign_twin" if benign else "harmful_flip",
                labels=labels,
                meta={"id_original": row.get("id_original")},
            )
        )
    return take(samples, limit, f"AgentHarm {config}/{split}")

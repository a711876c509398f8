"""Training batches: every batch has a harmful part (Ds, rerouted) and a retain part (Dr, kept).

Samples are rendered and masked once up front (verified masks, see ``masks.py``). The dataset
pairs them: item ``k`` is (harmful ``k mod |Ds|``, retain ``k mod |Dr|``) and has length
``max(|Ds|, |Dr|)``, so with the usual Dr:Ds of ~4.5:1 an epoch sees every retain sample once
and cycles the smaller harmful set, as the reference implementation does. With
``per_device_train_batch_size = 4`` a batch is 4 harmful + 4 retain rows (the reference setting).

Each row carries its priority class and its weight override, so the trainer can apply class
weights (and the curriculum, which changes them over time) at loss time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.masks import Features, build_features, collate
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import (
    DEFAULT_CLASS_WEIGHTS,
    PriorityClass,
    Sample,
    effective_ratio,
)

CLASSES: list[str] = [c.value for c in PriorityClass]


@dataclass
class Row:
    features: Features
    cls: int  # index into CLASSES
    weight: float  # the sample's own weight, or NaN to use the class weight


@dataclass
class TrainData:
    harmful: list[Row]
    retain: list[Row]
    stats: dict = field(default_factory=dict)


def extend_mask_left(f: Features, n: int) -> Features:
    """Also mask the ``n`` tokens just before the first loss token (the end of the request and
    the assistant header): the reference implementation reroutes the request with the response."""
    first = f.loss_mask.index(1)
    mask = list(f.loss_mask)
    mask[max(0, first - n) : first] = [1] * (first - max(0, first - n))
    return Features(f.input_ids, mask, f.prompt_truncated, f.completion_truncated)


def build_train_data(
    samples: list[Sample],
    renderer: ChatRenderer,
    *,
    max_prompt_tokens: int | None,
    max_completion_tokens: int | None,
    mask_prompt_tokens: bool = True,
    prompt_tail_tokens: int = 0,
    retain_full_sequence: bool = False,
    class_weights: dict[str, float] | None = None,
    source_file: str | None = None,
) -> TrainData:
    """Render, mask and verify every sample; split into Ds and Dr; collect statistics."""
    harmful, retain = [], []
    truncated_prompt = truncated_completion = 0
    for lineno, s in enumerate(samples, start=1):
        try:
            f = build_features(
                s,
                renderer,
                max_prompt_tokens=max_prompt_tokens,
                max_completion_tokens=max_completion_tokens,
            )
        except InputError as e:
            raise e.located(file=source_file, line=lineno) from None
        # every token: a deliberate choice (config), never a fallback; or the reference's
        # retain mask (the whole retain sequence) with the harmful side's mask unchanged
        if not mask_prompt_tokens or (retain_full_sequence and s.split != "harmful"):
            f = Features(f.input_ids, [1] * f.n_tokens, f.prompt_truncated, f.completion_truncated)
        elif prompt_tail_tokens > 0:
            f = extend_mask_left(f, prompt_tail_tokens)
        truncated_prompt += f.prompt_truncated > 0
        truncated_completion += f.completion_truncated > 0
        row = Row(
            f, CLASSES.index(s.priority_class.value), math.nan if s.weight is None else s.weight
        )
        (harmful if s.split == "harmful" else retain).append(row)
    if not harmful or not retain:
        missing = "harmful (split=harmful)" if not harmful else "retain (split=retain)"
        raise InputError(
            f"the training file has no {missing} samples; each batch needs both",
            file=source_file,
            field="split",
        )
    weights = {**DEFAULT_CLASS_WEIGHTS, **(class_weights or {})}
    counts = Counter(CLASSES[r.cls] for r in harmful + retain)
    stats = {
        "n_harmful": len(harmful),
        "n_retain": len(retain),
        "class_counts": dict(counts),
        "count_ratio_dr_ds": len(retain) / len(harmful),
        "effective_ratio_dr_ds": effective_ratio(dict(counts), weights),
        "truncated_prompt": truncated_prompt,
        "truncated_completion": truncated_completion,
        "harmful_tokens_mean": sum(r.features.n_tokens for r in harmful) / len(harmful),
        "retain_tokens_mean": sum(r.features.n_tokens for r in retain) / len(retain),
    }
    return TrainData(harmful, retain, stats)


class PairedDataset(Dataset):
    """Item ``k`` = (harmful ``k mod |Ds|``, retain ``k mod |Dr|``)."""

    def __init__(self, data: TrainData) -> None:
        self.data = data

    def __len__(self) -> int:
        return max(len(self.data.harmful), len(self.data.retain))

    def __getitem__(self, k: int) -> dict:
        return {
            "h": self.data.harmful[k % len(self.data.harmful)],
            "r": self.data.retain[k % len(self.data.retain)],
        }

    def retain_sampling_weights(self, class_weights: dict[str, float]) -> torch.Tensor:
        """Per-item weights for the stratified sampler: the retain row's class weight."""
        w = [class_weights.get(CLASSES[self[k]["r"].cls], 1.0) for k in range(len(self))]
        return torch.tensor(w, dtype=torch.double)


class PairCollator:
    """List of pairs -> ``h_*`` and ``r_*`` tensors (right padding)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for part in ("h", "r"):
            rows: list[Row] = [it[part] for it in items]
            batch = collate(
                [r.features for r in rows],
                self.pad_token_id,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
            for k, v in batch.items():
                out[f"{part}_{k}"] = v
            out[f"{part}_class"] = torch.tensor([r.cls for r in rows], dtype=torch.long)
            out[f"{part}_weight"] = torch.tensor([r.weight for r in rows], dtype=torch.float32)
        return out


def row_weights(
    classes: torch.Tensor, overrides: torch.Tensor, class_weights: dict[str, float]
) -> torch.Tensor:
    """Per-row loss weights: the override where given, else the (current) class weight."""
    table = torch.tensor(
        [class_weights.get(c, 1.0) for c in CLASSES], dtype=torch.float32, device=classes.device
    )
    w = table[classes]
    return torch.where(torch.isnan(overrides), w, overrides.to(w.device))

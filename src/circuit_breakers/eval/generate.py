"""Batched generation and teacher-forced NLL, shared by evaluation, sanity checks and the
completion generator. Base and trained models go through exactly this code.

Generation: prompts rendered with the chat template (plus an optional prefill).

* :func:`generate` wraps Hugging Face ``generate`` (left padding, batches sorted by length);
  it is what sampling uses (completions) and the reference the fast path is tested against.
* :func:`~.greedy.generate_greedy` (:mod:`.greedy`) is the evaluation engine (greedy only),
  token-for-token what :func:`generate` gives, much faster on long shared prompts.

NLL: the same verified loss masks as training; the mean negative log-likelihood per masked
token, so ``harmful_nll`` / ``benign_nll`` measure exactly the tokens the losses saw.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from circuit_breakers.core.masks import Features, build_features, collate
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Sample

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    n: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0  # prompt tokens of every generation
    prefill_tokens: int = 0  # prompt tokens actually run (shared prefixes once per group)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def load_for_eval(
    model_spec: str,
    adapter: str | None = None,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    device: str | None = None,
):
    """Load a model (and optionally a PEFT adapter, merged for speed) for generation."""
    from circuit_breakers.core.models import load_model_and_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model_and_tokenizer(
        model_spec, trust_remote_code=trust_remote_code, dtype=dtype, device=device
    )
    if adapter:
        model = load_adapter(model, adapter)
    model.eval()
    return model, tok


def load_adapter(model, adapter: str):
    """Apply a PEFT adapter (safetensors) and merge it into the weights for fast generation."""
    from pathlib import Path

    from peft import PeftModel

    from circuit_breakers.core.errors import InputError

    path = Path(adapter)
    if not (path / "adapter_config.json").exists():
        raise InputError(
            "not a PEFT adapter folder (adapter_config.json is missing)",
            file=adapter,
            field="adapter",
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:  # shape mismatch: another base model
        raise InputError(
            f"the adapter does not fit this model: {str(e).splitlines()[0][:300]}",
            file=adapter,
            field="adapter",
            hint="pass the --model the adapter was trained on",
        ) from None
    return peft_model.merge_and_unload()


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    desc: str = "generate",
    stats: GenerationStats | None = None,
    seed: int = 0,
) -> list[str]:
    """Generate a completion for each rendered prompt (text already includes the generation prompt)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    eos = {tokenizer.eos_token_id} | (
        {model.generation_config.eos_token_id}
        if isinstance(model.generation_config.eos_token_id, int)
        else set(model.generation_config.eos_token_id or [])
    )
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        gen_kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(e for e in eos if e is not None),
        )
        if do_sample:
            gen_kwargs["temperature"] = temperature
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        out = model.generate(**enc, **gen_kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        for row, i in zip(new, idx):
            keep = row[row != tokenizer.pad_token_id] if tokenizer.pad_token_id not in eos else row
            ids = keep.tolist()
            for j, t in enumerate(ids):  # cut at the first end-of-turn token
                if t in eos:
                    ids = ids[:j]
                    break
            outputs[i] = tokenizer.decode(ids, skip_special_tokens=True)
            if stats is not None:
                stats.new_tokens += len(ids)
    if stats is not None:
        stats.n += len(prompts)
        stats.seconds += time.perf_counter() - t0
    return outputs


@torch.no_grad()
def mean_nll(
    model, features: list[Features], pad_token_id: int, *, batch_size: int = 8
) -> list[float]:
    """Per-sample mean NLL over the loss-masked tokens (teacher forced)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        b = collate(chunk, pad_token_id)
        ids, att, lm = (b[k].to(device) for k in ("input_ids", "attention_mask", "loss_mask"))
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        target, mask = ids[:, 1:], lm[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        per = (nll * mask).sum(1) / mask.sum(1).clamp_min(1)
        out.extend(per.tolist())
    return out


def sample_nll(
    model, renderer: ChatRenderer, samples: list[Sample], *, batch_size: int = 8
) -> list[float]:
    """Mean NLL of each sample's final assistant turn (samples without one give NaN)."""
    feats, where = [], []
    for i, s in enumerate(samples):
        if s.has_target:
            target_only = s.model_copy(update={"loss_on": "last_assistant"})
            feats.append(build_features(target_only, renderer))
            where.append(i)
    values = mean_nll(model, feats, renderer.tok.pad_token_id, batch_size=batch_size)
    result = [math.nan] * len(samples)
    for i, v in zip(where, values):
        result[i] = v
    return result

"""Answers from an attacked prompt: the greedy one and ``n`` sampled ones, from embeddings.

The prompt is ``before`` (its KV cache from the :class:`~.optim.Objective`) + the suffix
embeddings + ``after``; the suffix may be a free embedding that no token has, so decoding
starts from ``inputs_embeds``. The prompt is pre-filled once, its cache copied to every row,
and all rows decode together: row 0 greedy, the others sampled at ``temperature`` with a
seeded generator, so a run can be repeated. A row stops at the template's end of turn.
"""

from __future__ import annotations

import torch

from circuit_breakers.attack.optim import Objective, _cache, cache_kwargs, out_cache

__all__ = ["eos_ids", "sample_answers"]


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids |= {extra} if isinstance(extra, int) else set(extra or [])
    return {i for i in ids if i is not None}


@torch.no_grad()
def sample_answers(
    objective: Objective,
    suffix: torch.Tensor,
    tokenizer,
    *,
    n_sampled: int,
    greedy: bool = True,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Greedy (first, if ``greedy``) then ``n_sampled`` sampled answers to ``before + suffix +
    after``; ``suffix`` is [S, d]."""
    rows = int(greedy) + n_sampled
    if rows == 0:
        return []
    model, device = objective.model, objective.device
    out = objective.forward(suffix[None], objective.after_embeds, logits_to_keep=1, count=False)

    def rep(t: torch.Tensor) -> torch.Tensor:
        return t.expand(rows, -1, -1, -1).contiguous()

    kv = [(rep(lay.keys), rep(lay.values)) for lay in out_cache(out).layers]
    cache = _cache(kv, rows)
    length = kv[0][0].shape[-2]
    logits = out.logits[:, -1].float().expand(rows, -1)
    stop = torch.tensor(sorted(eos_ids(model, tokenizer)), device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        if greedy:
            nxt[0] = logits[0].argmax()
        nxt = torch.where(done, stop[0], nxt)
        steps.append(nxt)
        done |= torch.isin(nxt, stop)
        if bool(done.all()):
            break
        length += 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=torch.ones(rows, length, dtype=torch.long, device=device),
            position_ids=torch.full((rows, 1), length - 1, device=device),
            use_cache=True,
            **cache_kwargs(model, cache),
        )
        cache = out_cache(out)
        logits = out.logits[:, -1].float()
    tokens = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(rows)]
    stop_set = set(stop.tolist())
    answers = []
    for row in tokens:
        cut = next((j for j, t in enumerate(row) if t in stop_set), len(row))
        answers.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    return answers

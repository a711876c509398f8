"""Greedy batched generation for evaluation, with shared-prefix KV caches.

:func:`generate_greedy` is the evaluation engine (greedy only). On a CPU the cost of an
agent eval is the *prompt*: AgentDojo contexts are 1-5k tokens of which the system turn and
the tool schemas (~900 tokens for slack) are the same for every sample of a suite, and
left-padding a batch of prompts of different lengths computes the padding too. So:

1. prompts that share a long token prefix (``min_shared_prefix``, default 64 tokens) are
   grouped, and the prefix's KV cache is computed once per group;
2. a grouped prompt's own tokens are pre-filled on their own (batch of one on top of the
   group's prefix), so no compute goes to padding; prompts without a shared prefix are
   pre-filled together, left-padded among prompts of similar length;
3. the per-row caches are left-padded into one batch cache and decoded together, greedy,
   at most ``batch_size`` rows and ``max_batch_tokens`` tokens (rows x (prompt + new)),
   longest prompts first, rows of every prefix group mixed (a decoding step reads all the
   weights whatever its row count); the batch cache is one buffer per layer written in place
   (``_BufferLayer``), not a concatenation per token;
4. a row that emits an end-of-turn token leaves the batch at once (its cache rows are
   dropped), so short answers do not pay for the longest one.

The result is token-for-token what ``generate`` gives (up to float rounding, which can
flip a near-tie; the tests compare both). Models whose cache is not a plain full-attention
``DynamicCache`` (sliding-window or recurrent layers) fall back to :func:`generate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from transformers.cache_utils import DynamicLayer

from circuit_breakers.eval.generate import GenerationStats, generate

log = logging.getLogger(__name__)


def _eos_ids(model, tokenizer) -> set[int]:
    eos = {tokenizer.eos_token_id}
    gen = model.generation_config.eos_token_id
    eos |= {gen} if isinstance(gen, int) else set(gen or [])
    return {e for e in eos if e is not None}


def _common_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


def prefix_groups(
    ids: Sequence[Sequence[int]], min_shared_prefix: int
) -> list[tuple[int, list[int]]]:
    """``[(prefix_len, [prompt index, ...]), ...]``: prompts grouped by a shared token prefix.

    Prompts are sorted by their tokens, and consecutive ones join a group while they share at
    least ``min_shared_prefix`` tokens with it; the prefix always leaves each prompt at least
    one token of its own (the position whose logits start the answer). Prompts that share
    nothing long enough form one group with prefix 0. Every index appears exactly once.
    """
    order = sorted(range(len(ids)), key=lambda i: tuple(ids[i]))
    groups: list[tuple[int, list[int]]] = []
    loose: list[int] = []
    k = 0
    while k < len(order):
        members, shared = [order[k]], len(ids[order[k]])
        j = k + 1
        while j < len(order):
            c = min(shared, _common_len(ids[order[k]], ids[order[j]]))
            if c < min_shared_prefix:
                break
            members.append(order[j])
            shared = c
            j += 1
        shared = min([shared] + [len(ids[i]) - 1 for i in members])
        if len(members) > 1 and shared >= min_shared_prefix and min_shared_prefix > 0:
            groups.append((shared, members))
        else:
            loose.extend(members)
        k = j
    if loose:
        groups.append((0, sorted(loose)))
    return groups


def _plain_cache(model):
    """A fresh cache if the model's is a plain full-attention DynamicCache, else None."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - exotic configs: use the reference path
        return None
    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer for layer in layers):
        return None
    return cache


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


class _BufferLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values live in one buffer sized for the whole
    decode (prompt width + ``max_new_tokens``): ``update`` writes the new position in place and
    ``keys`` / ``values`` are views of the filled part. ``DynamicLayer`` concatenates instead, a
    fresh allocation and a copy of the whole cache per layer per token: on a 2-core CPU that was
    a third of the decoding time (and more for 1-5k-token agent prompts).

    Built from per-row caches ``[(keys [1, H, L_r, D], values), ...]``, left-padded to ``width``.
    """

    def __init__(self, rows: list[tuple[torch.Tensor, torch.Tensor]], width: int, capacity: int):
        super().__init__()
        k0, v0 = rows[0]
        n, self.dtype, self.device = len(rows), k0.dtype, k0.device
        self._k = k0.new_zeros((n, k0.shape[1], capacity, k0.shape[-1]))
        self._v = v0.new_zeros((n, v0.shape[1], capacity, v0.shape[-1]))
        for r, (k, v) in enumerate(rows):
            self._k[r, :, width - k.shape[-2] : width] = k[0]
            self._v[r, :, width - v.shape[-2] : width] = v[0]
        self._len = width
        self.is_initialized = True
        self._view()

    def _view(self) -> None:
        self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._len + key_states.shape[-2]
        if end > self._k.shape[-2]:
            raise RuntimeError(f"decode cache full: {end} > {self._k.shape[-2]} positions")
        self._k[:, :, self._len : end] = key_states
        self._v[:, :, self._len : end] = value_states
        self._len = end
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._view()


def _cache_of(layers: list[DynamicLayer]):
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = list(layers)
    return cache


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


@torch.inference_mode()
def _prefill(model, ids: list[int], prefix_kv, prefix_len: int, device):
    """Run ``ids`` (one prompt's own tokens) on top of the prefix cache; (kv, last logits)."""
    cache = _cache_from(prefix_kv) if prefix_kv is not None else _plain_cache(model)
    x = torch.tensor([ids], device=device)
    pos = torch.arange(prefix_len, prefix_len + len(ids), device=device)[None]
    mask = torch.ones(1, prefix_len + len(ids), dtype=torch.long, device=device)
    out = model(
        input_ids=x,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return _kv(out.past_key_values), out.logits[0, -1]


@torch.inference_mode()
def _prefill_together(model, prompts: list[list[int]], pad_id: int, device):
    """Pre-fill prompts that share no prefix in one left-padded forward; per prompt
    ``(kv, last logits)`` as :func:`_prefill` gives them, the padding cut off. A forward on one
    short prompt reads every weight, as one on many does (2-3 s less per short-prompt suite of
    the demo eval, benchmarks/NOTES.md); the prompts should have similar lengths."""
    width, n = max(map(len, prompts)), len(prompts)
    x = torch.full((n, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for r, ids in enumerate(prompts):
        x[r, width - len(ids) :] = torch.tensor(ids, device=device)
        mask[r, width - len(ids) :] = 1
    out = model(
        input_ids=x,
        attention_mask=mask,
        position_ids=(mask.cumsum(1) - 1).clamp_min(0),
        past_key_values=_plain_cache(model),
        use_cache=True,
        logits_to_keep=1,
    )
    kv = _kv(out.past_key_values)
    return [
        ([(k[r : r + 1, :, width - len(ids) :], v[r : r + 1, :, width - len(ids) :]) for k, v in kv],
         out.logits[r, -1])
        for r, ids in enumerate(prompts)
    ]  # fmt: skip


@torch.inference_mode()
def _decode(
    model,
    rows: list[tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]],
    *,
    max_new_tokens: int,
    eos: set[int],
    device,
) -> list[list[int]]:
    """Greedy decoding of pre-filled rows (each: its cache and its last logits), batched.

    The row caches are left-padded to the longest into one batch cache; the padding is
    masked out and each row keeps its own positions. A row that emits an end token leaves
    the batch (the end token is not part of its answer). Empties ``rows``."""
    n = len(rows)
    lengths = [kv[0][0].shape[-2] for kv, _ in rows]
    width = max(lengths)
    nxt = torch.stack([logits for _, logits in rows]).argmax(-1)
    layers = [
        _BufferLayer([kv[layer] for kv, _ in rows], width, width + max_new_tokens)
        for layer in range(len(rows[0][0]))
    ]
    rows.clear()  # the per-row caches are no longer needed
    cache = _cache_of(layers)
    del layers
    mask = torch.zeros(n, width, dtype=torch.long, device=device)
    for r, length in enumerate(lengths):
        mask[r, width - length :] = 1
    pos = torch.tensor(lengths, device=device)
    answers: list[list[int]] = [[] for _ in range(n)]
    alive = list(range(n))  # the answer each batch row belongs to
    for step in range(max_new_tokens):
        tokens = nxt.tolist()
        keep = []
        for r, t in enumerate(tokens):
            if t in eos:
                continue
            answers[alive[r]].append(t)
            keep.append(r)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            mask, pos, nxt = mask[idx], pos[idx], nxt[idx]
            alive = [alive[r] for r in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        pos = pos + 1
        nxt = out.logits[:, -1].argmax(-1)
    return answers


def _token_budget(members: list[int], ids: Sequence[Sequence[int]], budget: int) -> list[list[int]]:
    """Consecutive runs of ``members`` (longest first) whose padded size rows x longest stays
    within ``budget`` tokens (a run has at least one member)."""
    runs: list[list[int]] = []
    for i in members:
        if runs and (len(runs[-1]) + 1) * len(ids[runs[-1][0]]) <= budget:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def generate_greedy(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    max_batch_tokens: int = 16384,
    min_shared_prefix: int = 64,
    prefill_batch_tokens: int = 4096,
    stats: GenerationStats | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to rendered prompts, in input order (see the module docstring).

    Prompts without a shared prefix are pre-filled together, left-padded, at most
    ``prefill_batch_tokens`` (rows x longest) per forward; the others one by one on top of
    their group's prefix.

    ``max_batch_tokens`` caps rows x (prompt + ``max_new_tokens``) of a decoding batch (the
    KV-cache size), ``batch_size`` its rows. ``on_done(k)`` is called as ``k`` answers finish
    (a progress bar). Falls back to :func:`generate` for models without a plain cache.
    """
    if not prompts:
        return []
    t0 = time.perf_counter()
    if _plain_cache(model) is None:
        log.info("model cache is not a plain DynamicCache: using transformers' generate")
        outs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            outs += generate(
                model,
                tokenizer,
                chunk,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                stats=stats,
            )
            if on_done is not None:
                on_done(len(chunk))
        return outs
    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answers: list[list[int]] = [[] for _ in prompts]
    # decoding batches mix rows of every prefix group: a decoding step reads all the weights
    # whatever the row count, so a suite of many small groups (one per jailbreak template)
    # decoded group by group would pay for each group's steps; longest prompts first, so a
    # batch's rows have similar widths
    groups = prefix_groups(ids, min_shared_prefix)
    group_of = {i: g for g, (_, members) in enumerate(groups) for i in members}
    left = [len(members) for _, members in groups]  # rows of each group not pre-filled yet
    prefixes: dict[int, list[tuple[torch.Tensor, torch.Tensor]] | None] = {}
    prefill = 0
    order = sorted(range(len(prompts)), key=lambda i: (-len(ids[i]), i))
    start = 0
    while start < len(order):
        longest = len(ids[order[start]]) + max_new_tokens
        take = max(1, min(batch_size, max_batch_tokens // longest))
        chunk = order[start : start + take]
        row_of = {}
        alone = [i for i in chunk if not groups[group_of[i]][0]]  # no shared prefix
        for part in _token_budget(alone, ids, prefill_batch_tokens):
            rows_in = _prefill_together(model, [list(ids[i]) for i in part], pad_id, device)
            row_of.update(zip(part, rows_in))
            prefill += sum(len(ids[i]) for i in part)
        for i in (i for i in chunk if i not in row_of):
            g = group_of[i]
            prefix_len = groups[g][0]
            if g not in prefixes:
                prefixes[g] = None
                if prefix_len:
                    head = list(ids[i][:prefix_len])
                    prefixes[g] = _prefill(model, head, None, 0, device)[0]
                    prefill += prefix_len
            own = list(ids[i][prefix_len:])
            row_of[i] = _prefill(model, own, prefixes[g], prefix_len, device)
            prefill += len(own)
            left[g] -= 1
            if not left[g]:
                prefixes[g] = None  # its last row is in: free the prefix cache
        rows = [row_of.pop(i) for i in chunk]
        for i, answer in zip(
            chunk, _decode(model, rows, max_new_tokens=max_new_tokens, eos=eos, device=device)
        ):
            answers[i] = answer
        if on_done is not None:
            on_done(len(chunk))
        start += take
    outputs = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
    if stats is not None:
        stats.n += len(prompts)
        stats.new_tokens += sum(len(a) for a in answers)
        stats.prompt_tokens += sum(len(x) for x in ids)
        stats.prefill_tokens += prefill
        stats.seconds += time.perf_counter() - t0
    return outputs

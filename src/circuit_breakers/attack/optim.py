"""The attack objective and its two optimisers: embedding-space signed gradient descent and GCG.

Objective (:class:`Objective`): the mean cross-entropy of the target tokens given
``[before] + suffix + [after]``, one forward over ``suffix + after + target`` on top of the KV
cache of ``before`` (computed once per prompt, without gradients: an AgentDojo prompt is 1-5k
tokens of which only the suffix changes), logits only for the target positions. The model is
put in eval mode with every parameter's ``requires_grad`` off for the attack (and restored
after), so gradients exist only for the suffix and the weights are never touched.

Embedding attack (:func:`embedding_attack`): the suffix is a free ``[S, d]`` tensor started at
the embeddings of a natural-language string; each step moves every coordinate by ``lr`` against
the sign of its gradient. With ``norm_bound`` each suffix vector's change from its start is
projected back into an L2 ball of that radius after every step; without it the attack is
unconstrained, the upper bound on what a white-box attacker can do.

GCG (:func:`gcg_attack`, Zou et al. 2023): a suffix of token ids. Each step takes the gradient
of the loss with respect to the one-hot token matrix, keeps the ``top_k`` most promising
replacement tokens per position, scores ``batch`` random single-token swaps without gradients
and keeps the best swap. Candidate tokens are printable ASCII, non-special, and a candidate
suffix must decode and re-encode to itself, so the found suffix is text a user could type.

Both record the loss before every step (``losses[0]`` is the loss of the initial suffix, the
last entry the loss of the returned suffix), count forward calls, and call ``check`` every
``check_every`` steps so the caller can stop at the first success (see :mod:`.run`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from circuit_breakers.attack.prompts import AttackPrompt

__all__ = [
    "AttackConfig",
    "Objective",
    "OptimResult",
    "attack_mode",
    "embedding_attack",
    "gcg_attack",
]

CheckFn = Callable[[int, torch.Tensor], bool]


@dataclass
class AttackConfig:
    """Optimiser settings; ``steps`` is the budget (optimisation steps per prompt)."""

    method: str = "embedding"
    steps: int = 200
    lr: float = 1e-3  # embedding: the signed-gradient step
    norm_bound: float | None = None  # embedding: L2 radius per suffix vector, None = free
    suffix_len: int = 20  # gcg: tokens in the suffix
    top_k: int = 64  # gcg: replacement tokens kept per position
    batch: int = 32  # gcg: candidate swaps scored per step
    stop_loss: float | None = None  # stop once the target loss is below this
    check_every: int = 0  # call check() every N steps (0 = never)
    seed: int = 0
    chunk_tokens: int = 32768  # gcg: rows x tokens per scoring forward (bounds memory)

    def budget(self) -> dict:
        """What results.json records as the budget of one attack."""
        out = {"method": self.method, "steps": self.steps}
        if self.method == "embedding":
            out.update(lr=self.lr, norm_bound=self.norm_bound)
        else:
            out.update(suffix_len=self.suffix_len, top_k=self.top_k, batch=self.batch)
        out.update(stop_loss=self.stop_loss, check_every=self.check_every)
        return out


@dataclass
class OptimResult:
    losses: list[float]  # loss before each step, then the loss of the returned suffix
    steps: int  # optimisation steps taken (<= budget)
    suffix_embeds: torch.Tensor  # [S, d], the suffix to generate from (the best one seen)
    suffix_ids: list[int] | None = None  # gcg only
    stopped: str = "budget"  # "budget" | "stop_loss" | "success"
    success_step: int | None = None  # step at which check() first returned True
    forward_calls: int = 0
    candidates_scored: int = 0
    seconds: float = 0.0
    max_delta_norm: float | None = None  # embedding: largest per-vector change from the start
    extra: dict = field(default_factory=dict)


@contextmanager
def attack_mode(model):
    """Eval mode, no parameter gradients; both restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def cache_kwargs(model, cache) -> dict:
    """``{"cache": cache}`` where the model's forward takes ``cache`` (newer transformers),
    else ``{"past_key_values": cache}``."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def out_cache(out):
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cache(kv: list[tuple[torch.Tensor, torch.Tensor]] | None, rows: int):
    from transformers import DynamicCache

    if kv is None:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv]
    )


class Objective:
    """Target cross-entropy of one :class:`AttackPrompt` as a function of the suffix embeddings."""

    def __init__(self, model, prompt: AttackPrompt) -> None:
        self.model = model
        self.prompt = prompt
        self.embed = model.get_input_embeddings()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

        def ids(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        self.target_ids = ids(prompt.target_ids)
        self.prefix_len = len(prompt.before_ids)
        with torch.no_grad():
            self.after_embeds = self.embed(ids(prompt.after_ids))
            self.target_embeds = self.embed(self.target_ids)
            self.prefix_kv = None
            if prompt.before_ids:
                out = model(input_ids=ids(prompt.before_ids)[None], use_cache=True)
                self.prefix_kv = [(lay.keys, lay.values) for lay in out_cache(out).layers]
        self.forward_calls = 0

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids.to(self.device))

    def forward(
        self,
        suffix: torch.Tensor,
        tail: torch.Tensor,
        *,
        logits_to_keep: int = 0,
        count: bool = True,
    ):
        """One forward of ``suffix + tail`` ([B, S, d] and [L, d]) on top of the prefix cache;
        ``count``: add it to :attr:`forward_calls` (the objective's, not answer generation)."""
        rows = suffix.shape[0]
        x = torch.cat([suffix.to(self.dtype), tail.expand(rows, -1, -1)], dim=1)
        total = self.prefix_len + x.shape[1]
        pos = torch.arange(self.prefix_len, total, device=self.device).expand(rows, -1)
        self.forward_calls += int(count)
        return self.model(
            inputs_embeds=x,
            attention_mask=torch.ones(rows, total, dtype=torch.long, device=self.device),
            position_ids=pos,
            use_cache=True,
            **cache_kwargs(self.model, _cache(self.prefix_kv, rows)),
            logits_to_keep=logits_to_keep,
        )

    def loss(self, suffix: torch.Tensor) -> torch.Tensor:
        """Mean target cross-entropy per row of ``suffix`` [B, S, d] -> [B]."""
        tail = torch.cat([self.after_embeds, self.target_embeds], dim=0)
        n = len(self.target_ids)
        logits = self.forward(suffix, tail, logits_to_keep=n + 1).logits[:, :-1].float()
        target = self.target_ids.expand(suffix.shape[0], -1)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return ce.mean(dim=1)

    def loss_chunked(self, suffix: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        """:meth:`loss` without gradients, in row chunks that bound the memory of a batch."""
        width = self.prefix_len + suffix.shape[1] + len(self.after_embeds) + len(self.target_ids)
        rows = max(1, chunk_tokens // width)
        with torch.no_grad():
            return torch.cat([self.loss(suffix[i : i + rows]) for i in range(0, len(suffix), rows)])


def _due(config: AttackConfig, step: int) -> bool:
    """Is a success check due before step ``step``'s update (never before the first)?"""
    return bool(config.check_every) and step > 0 and step % config.check_every == 0


def _project(suffix: torch.Tensor, init: torch.Tensor, radius: float) -> None:
    """In place: each row of ``suffix`` at most ``radius`` (L2) from the same row of ``init``."""
    delta = suffix - init
    norms = delta.norm(dim=-1, keepdim=True)
    scale = torch.clamp(radius / norms.clamp_min(1e-12), max=1.0)
    suffix.copy_(init + delta * scale)


def embedding_attack(
    objective: Objective,
    init_embeds: torch.Tensor,
    config: AttackConfig,
    check: CheckFn | None = None,
) -> OptimResult:
    """Signed gradient descent on a continuous suffix [S, d] (see the module docstring)."""
    t0 = time.perf_counter()
    init = init_embeds.detach().float().clone()
    suffix = init.clone().requires_grad_(True)
    best, best_loss = init.clone(), math.inf
    losses: list[float] = []
    stopped, success_step, step = "budget", None, 0
    for step in range(config.steps + 1):
        if step == config.steps:  # budget spent: the final suffix's loss, no gradient needed
            with torch.no_grad():
                value = objective.loss(suffix[None])[0].item()
            losses.append(value)
            if value < best_loss:
                best, best_loss = suffix.detach().clone(), value
            break
        loss = objective.loss(suffix[None])[0]
        value = loss.item()
        losses.append(value)
        if value < best_loss:
            best, best_loss = suffix.detach().clone(), value
        if config.stop_loss is not None and value < config.stop_loss:
            stopped = "stop_loss"
            break
        if _due(config, step) and check and check(step, suffix.detach()):
            stopped, success_step, best = "success", step, suffix.detach().clone()
            break
        (grad,) = torch.autograd.grad(loss, suffix)
        with torch.no_grad():
            suffix -= config.lr * grad.sign()
            if config.norm_bound is not None:
                _project(suffix, init, config.norm_bound)
    delta = (best - init).norm(dim=-1).max().item() if len(init) else 0.0
    return OptimResult(
        losses=losses,
        steps=step,
        suffix_embeds=best,
        stopped=stopped,
        success_step=success_step,
        forward_calls=objective.forward_calls,
        seconds=time.perf_counter() - t0,
        max_delta_norm=delta,
    )


_ALLOWED: dict[tuple[str, int], torch.Tensor] = {}


def allowed_tokens(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool mask [vocab_size]: printable ASCII, not special, not blank (cached per tokenizer)."""
    key = (getattr(tokenizer, "name_or_path", "") + str(len(tokenizer)), vocab_size)
    if key not in _ALLOWED:
        n = min(len(tokenizer), vocab_size)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        special = set(tokenizer.all_special_ids)
        ok = [
            i not in special and t.isascii() and t.isprintable() and bool(t.strip())
            for i, t in enumerate(texts)
        ]
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[:n] = torch.tensor(ok)
        _ALLOWED[key] = mask
    return _ALLOWED[key]


def init_suffix_ids(tokenizer, text: str, length: int, allowed: torch.Tensor) -> list[int]:
    """The first ``length`` tokens of ``text``, padded with ``" !"`` tokens when it is shorter."""
    ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if allowed[i]]
    pad = tokenizer(" !", add_special_tokens=False)["input_ids"][-1:] or [int(allowed.nonzero()[0])]
    return (ids + pad * length)[:length]


def _retokenizes(tokenizer, rows: torch.Tensor) -> torch.Tensor:
    texts = tokenizer.batch_decode(rows.tolist())
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([a == r for a, r in zip(again, rows.tolist())], dtype=torch.bool)


def gcg_attack(
    objective: Objective,
    init_ids: list[int],
    config: AttackConfig,
    tokenizer,
    check: CheckFn | None = None,
) -> OptimResult:
    """Greedy coordinate gradient over a token suffix (see the module docstring)."""
    t0 = time.perf_counter()
    weight = objective.embed.weight
    vocab = weight.shape[0]
    allowed = allowed_tokens(tokenizer, vocab).to(weight.device)
    gen = torch.Generator().manual_seed(config.seed)
    ids = torch.tensor(init_ids, dtype=torch.long, device=weight.device)
    n_pos = len(ids)
    best_ids, best_loss = ids.clone(), math.inf
    losses: list[float] = []
    stopped, success_step, step, scored, rejected = "budget", None, 0, 0, 0
    current: float | None = None
    for step in range(config.steps + 1):
        if step == config.steps:
            if current is None:
                current = objective.loss_chunked(weight[ids][None], config.chunk_tokens)[0].item()
            losses.append(current)
            break
        one_hot = F.one_hot(ids, vocab).to(weight.dtype).requires_grad_(True)
        loss = objective.loss((one_hot @ weight)[None])[0]
        current = loss.item()
        losses.append(current)
        if current < best_loss:
            best_ids, best_loss = ids.clone(), current
        if config.stop_loss is not None and current < config.stop_loss:
            stopped = "stop_loss"
            break
        if _due(config, step) and check and check(step, weight[ids].detach()):
            stopped, success_step, best_ids = "success", step, ids.clone()
            break
        (grad,) = torch.autograd.grad(loss, one_hot)
        grad = grad.float().masked_fill(~allowed, math.inf)
        top = (-grad).topk(config.top_k, dim=1).indices  # [S, k]
        pos = torch.randint(n_pos, (config.batch,), generator=gen).to(ids.device)
        pick = torch.randint(config.top_k, (config.batch,), generator=gen).to(ids.device)
        cands = ids.expand(config.batch, -1).clone()
        cands[torch.arange(config.batch), pos] = top[pos, pick]
        keep = (cands != ids).any(dim=1) & _retokenizes(tokenizer, cands).to(ids.device)
        rejected += int((~keep).sum())
        if keep.any():
            cands = torch.unique(cands[keep], dim=0)
        else:  # nothing survives the filters: take the unfiltered swaps this step
            cands = torch.unique(cands, dim=0)
        cand_loss = objective.loss_chunked(weight[cands], config.chunk_tokens)
        scored += len(cands)
        k = int(cand_loss.argmin())
        ids, current = cands[k].clone(), cand_loss[k].item()
    if current is not None and current < best_loss:
        best_ids, best_loss = ids.clone(), current
    return OptimResult(
        losses=losses,
        steps=step,
        suffix_embeds=weight[best_ids].detach().float(),
        suffix_ids=best_ids.tolist(),
        stopped=stopped,
        success_step=success_step,
        forward_calls=objective.forward_calls,
        candidates_scored=scored,
        seconds=time.perf_counter() - t0,
        extra={"rejected_candidates": rejected},
    )

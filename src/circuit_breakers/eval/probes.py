"""Linear probes on hidden states: AUROC, a logistic-regression probe, cross-validated and
transfer AUROC, and the cosine between two difference-of-means directions
(``benchmarks/separability.py`` reports them per layer)."""

from __future__ import annotations

import torch


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return (greater + 0.5 * ties).item()


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, steps: int = 200):
    """Logistic regression on standardized features; returns a scoring function."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.float())
        loss = loss + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda xt: ((xt - mu) / sd) @ w + b


def cv_auroc(x, y, folds: int = 4, seed: int = 0) -> float:
    """AUROC of a probe scored on each of ``folds`` held-out folds, trained on the rest."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)
    scores = torch.empty(len(y))
    for k in range(folds):
        te = idx[k::folds]
        tr = torch.cat([idx[j::folds] for j in range(folds) if j != k])
        scores[te] = fit_probe(x[tr], y[tr])(x[te])
    return auroc(scores, y)


def transfer_auroc(xtr, ytr, xte, yte) -> float:
    """AUROC on one set of a probe trained on another."""
    return auroc(fit_probe(xtr, ytr)(xte), yte)


def direction_cosine(x1, y1, x2, y2) -> float:
    """Cosine between the two sets' difference-of-means directions (positive minus negative)."""
    d1 = x1[y1 == 1].mean(0) - x1[y1 == 0].mean(0)
    d2 = x2[y2 == 1].mean(0) - x2[y2 == 0].mean(0)
    return torch.nn.functional.cosine_similarity(d1, d2, dim=0).item()

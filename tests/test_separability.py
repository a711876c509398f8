"""eval/probes.py: the AUROC and the linear probe that benchmarks/separability.py reports."""

import torch

from circuit_breakers.eval.probes import auroc, cv_auroc, direction_cosine, fit_probe


def test_auroc_counts_ordered_pairs_and_half_ties():
    labels = torch.tensor([1, 0, 1, 0])
    # positives 0.9, 0.3; negatives 0.8, 0.1: 3 of the 4 (pos, neg) pairs are ordered
    assert auroc(torch.tensor([0.9, 0.8, 0.3, 0.1]), labels) == 0.75
    # a tie counts half: pos {0.5, 0.9} vs neg {0.5, 0.1} -> (0.5 + 1 + 1 + 1) / 4
    assert auroc(torch.tensor([0.5, 0.5, 0.9, 0.1]), labels) == 0.875


def test_probe_finds_a_separating_direction_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    y = (x[:, 3] - 0.5 * x[:, 7] > 0).long()
    score = fit_probe(x[:100], y[:100])
    assert auroc(score(x[100:]), y[100:]) > 0.97  # held-out half of a linear rule
    noise = torch.randint(0, 2, (200,), generator=g)
    assert abs(cv_auroc(x, noise) - 0.5) < 0.15  # labels unrelated to x: chance level


def test_difference_of_means_cosine():
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    y = torch.tensor([1, 0, 1, 0])
    # class means (1, 1.5) vs (0, 0.5): direction (1, 1); same data -> cosine 1
    assert abs(direction_cosine(x, y, x, y) - 1.0) < 1e-6
    flipped = 1 - y
    assert abs(direction_cosine(x, y, x, flipped) + 1.0) < 1e-6

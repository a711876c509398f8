"""Exact values of the coefficient schedules and the curriculum (circuit_breakers.training.schedules)."""

from __future__ import annotations

import pytest

from circuit_breakers.core.schema import DEFAULT_CLASS_WEIGHTS, effective_ratio
from circuit_breakers.training.schedules import (
    CURRICULUM_PHASES,
    KINDS,
    coefficients,
    curriculum_phase,
    curriculum_weights,
    progress,
)

T = 300


def test_progress_counts_steps_and_clips():
    assert progress(0, T) == 0.0
    assert progress(150, T) == 0.5
    assert progress(300, T) == 1.0
    assert progress(450, T) == 1.0
    assert progress(-5, T) == 0.0
    with pytest.raises(ValueError, match="total_steps"):
        progress(1, 0)


def test_kinds_exported():
    assert KINDS == ("single", "dual_paper", "dual")


@pytest.mark.parametrize(
    ("kind", "alpha", "decay", "expected"),
    [
        # single: cs = alpha (1 - decay p), cr = 1
        ("single", 10.0, 0.0, [(10.0, 1.0), (10.0, 1.0), (10.0, 1.0)]),
        ("single", 10.0, 0.5, [(10.0, 1.0), (7.5, 1.0), (5.0, 1.0)]),
        ("single", 10.0, 1.0, [(10.0, 1.0), (5.0, 1.0), (0.0, 1.0)]),
        # dual_paper: cs = alpha (1 - p/2), cr = alpha p/2
        ("dual_paper", 10.0, 0.0, [(10.0, 0.0), (7.5, 2.5), (5.0, 5.0)]),
        # dual (seed stage 2): cs = alpha max(0, 1 - p/2), cr = 0.5 + 0.5 p
        ("dual", 0.5, 0.0, [(0.5, 0.5), (0.375, 0.75), (0.25, 1.0)]),
    ],
)
def test_exact_values_at_0_half_end(kind, alpha, decay, expected):
    got = [coefficients(kind, step, T, alpha, alpha_decay=decay) for step in (0, T // 2, T)]
    for (cs, cr), (ecs, ecr) in zip(got, expected, strict=True):
        assert cs == pytest.approx(ecs)
        assert cr == pytest.approx(ecr)


def test_dual_follows_formula_not_seed_comment():
    # the seed's comment says cs = 0 at step 300; its formula gives alpha_max / 2
    assert coefficients("dual", 300, 300, 0.5) == (0.25, 1.0)
    # and past the end progress is clipped, so nothing moves further
    assert coefficients("dual", 600, 300, 0.5) == (0.25, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_monotone_cs_down_cr_up(kind):
    decay = 0.8 if kind == "single" else 0.0
    values = [coefficients(kind, s, 100, 2.0, alpha_decay=decay) for s in range(0, 101)]
    cs = [v[0] for v in values]
    cr = [v[1] for v in values]
    assert all(a >= b for a, b in zip(cs, cs[1:]))
    assert all(a <= b for a, b in zip(cr, cr[1:]))
    assert cs[0] > cs[-1]
    assert all(c >= 0 for c in cs)


def test_progress_is_in_optimizer_steps_not_hard_coded_300():
    # a 40-step run is half done at step 20, whatever the seed's total of 300 says
    assert coefficients("dual_paper", 20, 40, 10.0) == (7.5, 2.5)


def test_coefficient_errors():
    with pytest.raises(ValueError, match="single, dual_paper, dual"):
        coefficients("cosine", 0, T, 1.0)
    with pytest.raises(ValueError, match="alpha must be"):
        coefficients("dual", 0, T, -1.0)
    with pytest.raises(ValueError, match=r"alpha_decay must be in \[0, 1\]"):
        coefficients("single", 0, T, 1.0, alpha_decay=1.5)
    with pytest.raises(ValueError, match="only used by kind 'single'"):
        coefficients("dual", 0, T, 1.0, alpha_decay=0.5)


def test_curriculum_phase_boundaries():
    assert curriculum_phase(0.0) == 1
    assert curriculum_phase(0.2999) == 1
    assert curriculum_phase(0.3) == 2
    assert curriculum_phase(0.6999) == 2
    assert curriculum_phase(0.7) == 3
    assert curriculum_phase(1.0) == 3
    with pytest.raises(ValueError, match="finite"):
        curriculum_phase(float("nan"))


def test_curriculum_weights_override_named_classes_only():
    base = dict(DEFAULT_CLASS_WEIGHTS)
    p1 = curriculum_weights(0.1, base)
    assert p1["adversarial_safe"] == 1.0
    assert p1["general_conversation"] == 1.5
    assert p1["harmful_flip"] == 0.5
    assert p1["injection_resisted"] == 1.5  # not named by the phase: base weight
    assert p1["benign_twin"] == 1.2
    assert set(p1) == set(base)
    assert curriculum_weights(0.5, base) == base  # phase 2 is the seed's base mix
    p3 = curriculum_weights(0.7, base)
    assert (p3["adversarial_safe"], p3["general_conversation"], p3["harmful_flip"]) == (
        2.5,
        0.5,
        1.2,
    )
    assert base == DEFAULT_CLASS_WEIGHTS  # input not mutated
    assert set(CURRICULUM_PHASES) == {1, 2, 3}


def test_effective_ratio_seed_worked_example():
    counts = {
        "harmful_flip": 1000,
        "adversarial_safe": 500,
        "injection_resisted": 500,
        "benign_twin": 500,
        "tool_capability": 500,
        "general_conversation": 2000,
        "borderline": 500,
    }
    # dr = 500*2.0 + 500*1.5 + 500*1.2 + 500*1.0 + 2000*0.8 + 500*1.0
    #    = 1000 + 750 + 600 + 500 + 1600 + 500 = 4950; ds = 1000.
    # The seed writes "= 5450 ... 5.45:1", an addition slip: its own terms sum to 4950.
    assert effective_ratio(counts, DEFAULT_CLASS_WEIGHTS) == pytest.approx(4.95)
    # phase-1 curriculum weights shift it: dr = 500 + 750 + 600 + 500 + 3000 + 500 = 5850,
    # ds = 1000 * 0.5
    assert effective_ratio(counts, curriculum_weights(0.0, DEFAULT_CLASS_WEIGHTS)) == (
        pytest.approx(11.7)
    )


def test_effective_ratio_defaults_and_errors():
    assert effective_ratio({"harmful_flip": 2, "custom": 3}, {}) == 1.5  # missing weight = 1
    with pytest.raises(ValueError, match="undefined"):
        effective_ratio({"tool_capability": 3}, DEFAULT_CLASS_WEIGHTS)
    with pytest.raises(ValueError, match=">= 0"):
        effective_ratio({"harmful_flip": 1, "borderline": -1}, DEFAULT_CLASS_WEIGHTS)

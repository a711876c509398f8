"""Wilson intervals against values worked by hand."""

import math

import pytest

from circuit_breakers.eval.intervals import rate_interval, wilson_interval


def test_wilson_matches_the_closed_form_by_hand():
    # k=5, n=20, z=1.96: p=0.25; denom=1+3.8416/20=1.19208; centre=(0.25+0.09604)/1.19208=0.290283
    # half=1.96*sqrt(0.25*0.75/20+3.8416/1600)/1.19208=1.96*sqrt(0.011776)/1.19208=0.178421
    lo, hi = wilson_interval(5, 20, z=1.96)
    assert lo == pytest.approx(0.290283 - 0.178421, abs=1e-5)
    assert hi == pytest.approx(0.290283 + 0.178421, abs=1e-5)


def test_wilson_at_zero_and_n_stays_in_the_unit_interval():
    lo, hi = wilson_interval(0, 150)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(
        3.8415 / (150 + 3.8415), abs=1e-4
    )
    lo, hi = wilson_interval(150, 150)
    assert hi == 1.0 and lo == pytest.approx(150 / (150 + 3.8415), abs=1e-4)


def test_rate_interval_and_bad_input():
    assert rate_interval(0.25, 20) == [round(x, 4) for x in wilson_interval(5, 20)]
    assert rate_interval(None, 20) is None and rate_interval(0.5, 0) is None
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)

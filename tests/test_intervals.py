"""Wilson intervals of accuracies."""
import pytest

from nni_bap.evaluation.intervals import wilson


def test_wilson_interval_hand_computed():
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_interval_is_exact_at_the_ends_and_contains_the_estimate():
    for k, n in ((0, 2000), (2000, 2000), (1, 3), (7, 2000)):
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson(0, 2000)[0] == 0.0 and wilson(2000, 2000)[1] == 1.0

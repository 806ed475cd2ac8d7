"""Intervals, paired tests, calibration and agreement against closed forms, scipy and brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from ibnbench.results import stats


@pytest.mark.parametrize("k, n", [(0, 1), (0, 100), (1, 100), (28, 100), (99, 100), (100, 100), (400, 50000)])
def test_clopper_pearson_matches_scipy_and_inverts_the_binomial_tails(k, n):
    lo, hi = stats.clopper_pearson(k, n)
    reference = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((reference.low, reference.high), abs=1e-12)
    if k > 0:  # the lower bound is where seeing k or more errors becomes a 2.5% event
        assert sps.binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)
    if k < n:
        assert sps.binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)


@pytest.mark.parametrize("n", [1, 10, 100])
def test_clopper_pearson_closed_forms_at_zero_and_n_errors(n):
    assert stats.clopper_pearson(0, n) == pytest.approx((0.0, 1 - 0.025 ** (1 / n)))
    assert stats.clopper_pearson(n, n) == pytest.approx((0.025 ** (1 / n), 1.0))


def test_no_discordant_pairs_give_a_zero_drop_with_p_one():
    same = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    counts = stats.paired(same, same)
    assert (counts.n, counts.b, counts.c) == (6, 0, 0)
    assert counts.diff == 0 and counts.interval() == (0.0, 0.0) and counts.pvalue == 1.0


def test_all_discordant_one_way_has_the_closed_form():
    n = 10
    counts = stats.paired(np.ones(n, bool), np.zeros(n, bool))  # every image turns wrong
    assert (counts.b, counts.c, counts.diff) == (n, 0, 1.0)
    assert counts.pvalue == pytest.approx(2 * 0.5 ** n)
    assert counts.interval() == pytest.approx((2 * 0.025 ** (1 / n) - 1, 1.0))


def test_all_discordant_split_evenly_is_centred_on_zero():
    first = np.array([1, 0] * 5, dtype=bool)
    counts = stats.paired(first, ~first)
    assert (counts.b, counts.c, counts.diff, counts.pvalue) == (5, 5, 0.0, 1.0)
    lo, hi = counts.interval()
    assert lo == pytest.approx(-hi)


def test_paired_interval_is_the_exact_interval_of_the_discordant_split_scaled():
    rng = np.random.default_rng(0)
    first, second = rng.random(200) < 0.7, rng.random(200) < 0.6
    counts = stats.paired(first, second)
    m = counts.b + counts.c
    ci = sps.binomtest(counts.b, m).proportion_ci(method="exact")
    assert counts.interval() == pytest.approx((m / 200 * (2 * ci.low - 1), m / 200 * (2 * ci.high - 1)))
    assert counts.diff == pytest.approx(first.mean() - second.mean())  # error increase = accuracy decrease


def test_mcnemar_equals_a_brute_force_permutation_test():
    """Swap the two answers of each image in every possible way: the share of swaps at least as unbalanced
    as the observed one is the exact two-sided McNemar p-value."""
    first = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    second = np.array([0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    counts = stats.paired(first, second)
    observed = abs(counts.b - counts.c)
    extreme = 0
    for swaps in itertools.product([False, True], repeat=len(first)):
        swaps = np.array(swaps)
        a, b = np.where(swaps, second, first), np.where(swaps, first, second)
        extreme += abs(int((a & ~b).sum()) - int((~a & b).sum())) >= observed
    assert counts.pvalue == pytest.approx(extreme / 2 ** len(first))
    assert counts.pvalue == pytest.approx(sps.binomtest(counts.b, counts.b + counts.c, 0.5).pvalue)


def test_images_not_evaluated_are_left_out_of_the_pairing():
    counts = stats.paired(np.array([1, -1, 0, 1]), np.array([0, 1, -1, 1]))
    assert (counts.n, counts.b, counts.c) == (2, 1, 0)


def test_holm_closed_form():
    # sorted 0.005, 0.01, 0.03, 0.04 scaled by 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])  # one test: unchanged


def test_ece_of_constructed_calibration_equals_the_closed_form():
    # 20 images at confidence 0.95 with 19 right (calibrated), 10 at 0.55 with 5 right (0.05 overconfident)
    confidence = np.array([0.95] * 20 + [0.55] * 10)
    correct = np.array([True] * 19 + [False] + [True] * 5 + [False] * 5)
    assert stats.ece(confidence, correct) == pytest.approx(10 / 30 * 0.05)
    assert stats.ece(np.full(10, 0.9), np.arange(10) < 6) == pytest.approx(0.3)  # 90% sure, 60% right
    assert stats.ece(np.full(10, 0.9), np.arange(10) < 9) == pytest.approx(0.0)


def test_reliability_bins_are_fifteen_equal_and_closed_on_the_right():
    curve = stats.reliability(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 1.0]), np.ones(5, bool))
    assert len(curve.count) == 15 and curve.edges[1] == pytest.approx(1 / 15)
    assert curve.count[0] == 2 and curve.count[1] == 1 and curve.count[7] == 1 and curve.count[14] == 1


def test_error_consistency_equals_cohens_kappa_by_hand():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    # 2x2 table: both right 4, a only 2, b only 1, both wrong 3
    observed, expected = 7 / 10, 0.6 * 0.5 + 0.4 * 0.5
    assert stats.error_consistency(a, b) == pytest.approx((observed - expected) / (1 - expected))
    assert stats.error_consistency(a, a) == pytest.approx(1.0)
    assert stats.error_consistency(a, ~a) == pytest.approx(-0.48 / 0.52)  # never wrong together: below 0
    half = np.arange(10) < 5
    assert stats.error_consistency(half, ~half) == pytest.approx(-1.0)
    assert np.isnan(stats.error_consistency(np.ones(4, bool), np.ones(4, bool)))  # no errors: undefined

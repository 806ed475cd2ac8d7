"""Intervals, paired tests, calibration and agreement against closed forms, scipy and brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps
from scipy.optimize import minimize_scalar

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


Z = sps.norm.ppf(0.975)


def test_no_discordant_pairs_give_a_zero_drop_with_p_one_and_the_score_interval_closed_form():
    """No changed answer is still evidence of a small drop, not of none: the score interval is +-z^2/(n+z^2)."""
    same = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    counts = stats.paired(same, same)
    assert (counts.n, counts.b, counts.c) == (6, 0, 0)
    assert counts.diff == 0 and counts.pvalue == 1.0
    assert counts.interval() == pytest.approx((-Z**2 / (6 + Z**2), Z**2 / (6 + Z**2)), abs=1e-12)


def test_all_discordant_one_way_has_the_closed_form():
    n = 10
    counts = stats.paired(np.ones(n, bool), np.zeros(n, bool))  # every image turns wrong
    assert (counts.b, counts.c, counts.diff) == (n, 0, 1.0)
    assert counts.pvalue == pytest.approx(2 * 0.5 ** n)
    # with c = 0 the score is sqrt(n (1 - d) / (1 + d)), which equals z at d = (n - z^2) / (n + z^2)
    assert counts.interval() == pytest.approx(((n - Z**2) / (n + Z**2), 1.0), abs=1e-12)


def test_all_discordant_split_evenly_is_centred_on_zero():
    first = np.array([1, 0] * 5, dtype=bool)
    counts = stats.paired(first, ~first)
    assert (counts.b, counts.c, counts.diff, counts.pvalue) == (5, 5, 0.0, 1.0)
    lo, hi = counts.interval()
    assert lo == pytest.approx(-hi) and hi > 0


@pytest.mark.parametrize("b, c, n, published", [
    (0, 1, 100, (-0.0545, 0.0274)),  # issue 24: the committed top-5 RGB+50 cell, one changed image
    (1, 7, 21, (-0.517, -0.026)),  # Bentur et al. 2009 (Fagerland, Lydersen & Laake 2014, Tango interval)
    (6, 16, 161, (-0.124, -0.005)),  # Cavo et al. 2012 (same source)
])
def test_tango_interval_equals_published_values(b, c, n, published):
    lo, hi = stats.Paired(n=n, b=b, c=c).interval()
    digits = len(str(published[0]).split(".")[1])
    assert (round(lo, digits), round(hi, digits)) == published


def _profile_score(delta: float, b: int, c: int, n: int) -> float:
    """Tango's score statistic computed without the closed form: the c-cell probability under the tested
    difference maximises the multinomial likelihood numerically."""
    def negative_log_likelihood(p: float) -> float:
        rest = 1 - 2 * p - delta
        return -(b * np.log(p + delta) + c * np.log(p) + (n - b - c) * np.log(rest))
    low, high = max(0.0, -delta), (1 - delta) / 2
    p = minimize_scalar(negative_log_likelihood, bounds=(low + 1e-12, high - 1e-12), method="bounded",
                        options={"xatol": 1e-13}).x
    return (b - c - n * delta) / np.sqrt(n * (2 * p + delta * (1 - delta)))


@pytest.mark.parametrize("b, c, n", [(3, 1, 20), (12, 4, 100), (9, 30, 250), (0, 4, 50), (40, 20, 160)])
def test_tango_limits_are_where_the_numerically_profiled_score_test_crosses_z(b, c, n):
    lo, hi = stats.Paired(n=n, b=b, c=c).interval()
    assert lo < (b - c) / n < hi
    assert _profile_score(lo, b, c, n) == pytest.approx(Z, abs=1e-4)
    assert _profile_score(hi, b, c, n) == pytest.approx(-Z, abs=1e-4)


def _old_interval(b: np.ndarray, c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The construction ibnbench used before: Clopper-Pearson of b / m scaled by m / n (m taken as known)."""
    m = b + c
    lo = np.where(b == 0, 0.0, sps.beta.ppf(0.025, b, m - b + 1))
    hi = np.where(b == m, 1.0, sps.beta.ppf(0.975, b + 1, m - b))
    return np.where(m > 0, m / n * (2 * lo - 1), 0.0), np.where(m > 0, m / n * (2 * hi - 1), 0.0)


@pytest.mark.parametrize("n, discordant, drop", [(100, 0.10, 0.08), (100, 0.02, 0.01), (50, 0.20, 0.10)])
def test_tango_interval_covers_where_the_scaled_discordant_interval_did_not(n, discordant, drop):
    """Seeded simulation: 4,000 paired samples of n images, ``discordant`` of them changing their answer, with
    the true drop ``drop``. Tango's interval covers the true drop at least 94 % of the time; the old one covered
    less often, and below 80 % in the two cases issue 24 measured (n = 100)."""
    rng = np.random.default_rng(24)
    cells = rng.multinomial(n, [(discordant + drop) / 2, (discordant - drop) / 2, 1 - discordant], size=4000)
    b, c = cells[:, 0], cells[:, 1]
    lo, hi = stats.tango_interval(b, c, n)
    coverage = np.mean((lo <= drop) & (drop <= hi))
    old_lo, old_hi = _old_interval(b, c, n)
    old_coverage = np.mean((old_lo <= drop) & (drop <= old_hi))
    assert coverage >= 0.94
    assert old_coverage < 0.80 if n == 100 else old_coverage < coverage


def test_tango_interval_is_vectorised_and_nan_without_images():
    lo, hi = stats.tango_interval(np.array([0, 5, 2]), np.array([0, 1, 2]), np.array([100, 100, 0]))
    assert lo[:2] == pytest.approx([stats.Paired(100, 0, 0).interval()[0], stats.Paired(100, 5, 1).interval()[0]])
    assert np.isnan(lo[2]) and np.isnan(hi[2])


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


def test_eces_of_many_answer_sets_equal_ece_of_each():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0, 1, (4, 50))
    correct = rng.random((4, 50)) < confidence
    assert stats.eces(confidence, correct) == pytest.approx([stats.ece(c, y) for c, y in zip(confidence, correct)])


def test_ece_intervals_of_identical_images_are_degenerate():
    sure = stats.ece_uncertainty(np.full(8, 0.8), np.ones(8, bool))  # every resample: 80% sure, all right
    assert sure.ece == pytest.approx(0.2) and sure.interval == pytest.approx((0.2, 0.2))
    certain = stats.ece_uncertainty(np.ones(8), np.ones(8, bool))  # confidence 1: a calibrated model is always right
    assert certain.calibrated_mean == 0.0 and certain.calibrated_range == (0.0, 0.0)
    one = stats.ece_uncertainty(np.array([0.5]), np.array([True]))  # one image at 0.5: |answer - 0.5| is 0.5
    assert one.interval == (0.5, 0.5) and one.calibrated_mean == 0.5 and one.calibrated_range == (0.5, 0.5)
    # two images at 0.5: a calibrated model gets 0 or 2 right (ECE 0.5) or 1 (ECE 0), each with probability 1/2
    two = stats.ece_uncertainty(np.full(2, 0.5), np.zeros(2, bool))
    assert two.calibrated_range == (0.0, 0.5) and two.calibrated_mean == pytest.approx(0.25, abs=0.03)


def test_ece_intervals_match_brute_force_enumeration():
    """Four images: the bootstrap percentiles are those of all 4^4 equally likely resamples, the calibrated mean
    that of all 2^4 answer sets weighted by their probabilities."""
    confidence, correct = np.array([0.3, 0.5, 0.72, 0.9]), np.array([True, False, True, True])
    resamples = np.array(list(itertools.product(range(4), repeat=4)))
    boot = np.sort(stats.eces(confidence[resamples], correct[resamples]))
    answers = np.array(list(itertools.product([False, True], repeat=4)))
    weight = np.prod(np.where(answers, confidence, 1 - confidence), axis=1)
    got = stats.ece_uncertainty(confidence, correct, draws=20000)
    assert got.interval == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)), abs=0.02)
    assert got.calibrated_mean == pytest.approx(float(weight @ stats.eces(confidence, answers)), abs=0.005)


def test_ece_intervals_are_fixed_by_the_seed():
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.2, 1, 60)
    correct = rng.random(60) < confidence
    first, again = (stats.ece_uncertainty(confidence, correct) for _ in range(2))
    other = stats.ece_uncertainty(confidence, correct, seed=stats.ECE_SEED + 1)
    assert first == again and first.interval != other.interval and first.calibrated_range != other.calibrated_range


def _model(rng: np.random.Generator, n: int, overconfidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidences uniform in [0.3, 1], each image right with probability its confidence - ``overconfidence``."""
    confidence = rng.uniform(0.3, 1.0, n)
    return confidence, rng.random(n) < confidence - overconfidence


def test_a_calibrated_model_lies_in_its_calibrated_range_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    inside = [not stats.ece_uncertainty(*_model(rng, 100, 0.0), draws=400, seed=seed).beyond_calibrated
              for seed in range(300)]
    assert 0.9 <= np.mean(inside) <= 0.99  # an upper 2.5% tail: ~97.5% at or below the range's top


def test_a_miscalibrated_model_is_told_apart_and_its_interval_covers_the_true_ece():
    """Right with probability confidence - 0.15 everywhere: the true ECE is 0.15."""
    rng = np.random.default_rng(12)
    found = [stats.ece_uncertainty(*_model(rng, 300, 0.15), draws=400, seed=seed) for seed in range(200)]
    assert np.mean([f.beyond_calibrated for f in found]) >= 0.99
    assert np.mean([f.interval[0] <= 0.15 <= f.interval[1] for f in found]) >= 0.85


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

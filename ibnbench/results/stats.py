"""Statistics over per-image answers: intervals, paired tests, calibration and agreement.

Everything here works on plain arrays (per-image correctness as booleans, confidences as floats) and
uses scipy.stats for the distributions. The choices, stated once:

- an error rate's 95% interval is Clopper-Pearson (exact, from beta quantiles);
- a drop (the error increase of a condition over the origin on the same images, or one model's error minus
  another's) gets Tango's asymptotic score interval for a difference of paired proportions (Tango, Stat Med 1998,
  17:891-908): the drop values whose score test is not rejected at the level, the variance taken under each tested
  value from the constrained maximum-likelihood cell probabilities. It is not exact, but it holds its level closely
  (Fagerland, Lydersen & Laake, Stat Med 2014, 33:2850-2875, recommend it) and, unlike a Clopper-Pearson interval of
  the discordant split scaled by the share of changed images, it accounts for that share being random: it reaches
  beyond ``+-m/n`` and is not [0, 0] when no answer changed;
- two answer sets on the same images are compared with McNemar's exact test (two-sided binomial test of
  ``b`` out of ``m`` at 1/2), several such tests at once with Holm's step-down correction;
- ECE uses 15 equal-width confidence bins (Guo et al., 2017), bins closed on the right;
- an ECE's 95% interval is the percentile bootstrap over images (``ECE_DRAWS`` resamples, numpy's generator seeded
  with ``ECE_SEED``), and beside it stands the ECE a perfectly calibrated model with the same confidences shows (each
  image right with probability its confidence, as many draws, same seed): its mean and central 95% range say
  whether the observed ECE can be told apart from calibration at this number of images;
- error consistency is Cohen's kappa over per-image correctness (Geirhos et al., 2020).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
ECE_BINS = 15
ECE_DRAWS = 2000
"""Bootstrap resamples, and simulated calibrated answer sets, behind an ECE's intervals."""
ECE_SEED = 0
"""Seed of those draws (``numpy.random.default_rng``): a record's ECE intervals are the same in every report."""
_CHUNK = 1 << 22
"""Images x draws held at once while drawing (bounds the memory of a 50,000-image bootstrap)."""


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / n`` as fractions in [0, 1]."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    tail = (1 - level) / 2
    lo = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1 - tail, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class Paired:
    """Two answer sets on the same ``n`` images: ``b`` images right in the first and wrong in the second,
    ``c`` the reverse. ``diff`` is the error increase from first to second as a fraction."""

    n: int
    b: int
    c: int

    @property
    def discordant(self) -> int:
        return self.b + self.c

    @property
    def diff(self) -> float:
        return (self.b - self.c) / self.n if self.n else float("nan")

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Tango's score interval of ``diff`` (fractions; see :func:`tango_interval`)."""
        lo, hi = tango_interval(self.b, self.c, self.n, level)
        return float(lo), float(hi)

    @property
    def pvalue(self) -> float:
        """McNemar's exact test: two-sided binomial test of ``b`` out of ``b + c`` at 1/2 (1.0 without pairs)."""
        m = self.discordant
        return float(sps.binomtest(self.b, m, 0.5).pvalue) if m else 1.0


def _constrained_share(delta: np.ndarray, c: np.ndarray, n: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Maximum-likelihood probability of the ``c`` cell when the paired difference is fixed at ``delta``: the
    positive root of ``2n p^2 + w p - c delta (1 - delta) = 0`` in the form without cancellation."""
    k = c * delta * (1 - delta)
    root = np.sqrt(np.maximum(w * w + 8 * n * k, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        stable = np.where(w > 0, 2 * k / (w + root), (root - w) / (4 * n))
    return np.where((w > 0) & (w + root == 0), 0.0, stable)


def tango_score(delta: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Tango's score statistic for the paired difference ``(b - c) / n`` at the tested value ``delta``: the
    observed minus expected ``b - c`` over its standard deviation under ``delta`` (0 where both are 0)."""
    w = -b - c + (2 * n - b + c) * delta
    share = _constrained_share(delta, c, n, w)
    variance = np.maximum(n * (2 * share + delta * (1 - delta)), 0.0)
    excess = b - c - n * delta
    with np.errstate(invalid="ignore", divide="ignore"):
        score = excess / np.sqrt(variance)
    return np.where(excess == 0, 0.0, score)


def tango_interval(b, c, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Tango's asymptotic score interval of the paired difference ``(b - c) / n`` (fractions in [-1, 1]) for
    scalars or arrays of counts: ``b`` pairs right-then-wrong, ``c`` wrong-then-right, out of ``n``. Each limit is
    where the score statistic crosses the normal quantile, found by bisection (the statistic decreases in the
    tested value); NaN where ``n`` is 0."""
    b, c, n = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(b, c, n))
    z = float(sps.norm.ppf(0.5 + level / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = (b - c) / n
    limits = []
    for target, start, end in ((z, -np.ones_like(b), estimate), (-z, estimate, np.ones_like(b))):
        low, high = start.copy(), end.copy()
        for _ in range(64):  # each step halves the bracket: 2**-64 of [-1, 1] is below float resolution
            middle = (low + high) / 2
            above = tango_score(middle, b, c, n) > target
            low, high = np.where(above, middle, low), np.where(above, high, middle)
        limits.append(np.where(n > 0, (low + high) / 2, np.nan))
    return limits[0], limits[1]


def paired(first: np.ndarray, second: np.ndarray) -> Paired:
    """Count the discordant pairs of two correctness arrays over the same images (booleans, or 1 right, 0 wrong
    and -1 for an image not evaluated, which is left out of the pairing)."""
    first, second = np.asarray(first, dtype=np.int8), np.asarray(second, dtype=np.int8)
    if first.shape != second.shape:
        raise ValueError(f"paired answers need the same images, got {first.shape} and {second.shape}")
    both = (first >= 0) & (second >= 0)
    first, second = first[both] == 1, second[both] == 1
    return Paired(n=int(both.sum()), b=int((first & ~second).sum()), c=int((~first & second).sum()))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


@dataclass(frozen=True)
class Reliability:
    """Per-bin counts, mean confidence and accuracy over ``bins`` equal-width confidence bins."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
        total = self.count.sum()
        if not total:
            return float("nan")
        used = self.count > 0
        return float((self.count[used] * np.abs(self.accuracy[used] - self.confidence[used])).sum() / total)


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin among ``bins`` equal-width bins ``(i/bins, (i+1)/bins]`` (0 goes to the first)."""
    return np.clip(np.ceil(confidence * bins).astype(np.intp) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin top-1 confidences into ``bins`` equal-width bins ``(i/bins, (i+1)/bins]`` (0 goes to the first)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = _bin_index(confidence, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return Reliability(np.linspace(0.0, 1.0, bins + 1), count, mean_conf, accuracy)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of top-1 ``confidence`` against ``correct`` (a fraction in [0, 1])."""
    return reliability(confidence, correct, bins).ece


def eces(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """:func:`ece` of every answer set along the last axis at once."""
    confidence, correct = np.broadcast_arrays(np.asarray(confidence, dtype=np.float64),
                                              np.asarray(correct, dtype=np.float64))
    return _binned_eces(_bin_index(confidence, bins), correct - confidence, bins)


def _binned_eces(index: np.ndarray, gap: np.ndarray, bins: int, axis: int = -1) -> np.ndarray:
    """ECEs of answer sets along ``axis`` from each image's bin ``index`` and ``gap`` (correct - confidence): a
    bin's ``count * |accuracy - confidence|`` is ``|sum(gap)|`` over its images, so it is one ``bincount``."""
    index, gap = np.broadcast_arrays(np.moveaxis(index, axis, -1), np.moveaxis(gap, axis, -1))
    shape, n = index.shape[:-1], index.shape[-1]
    sets = int(np.prod(shape))
    flat = (index.reshape(sets, n) + bins * np.arange(sets)[:, None]).ravel()
    sums = np.bincount(flat, weights=gap.reshape(-1), minlength=sets * bins)
    return (np.abs(sums.reshape(sets, bins)).sum(axis=1) / n).reshape(shape)


@dataclass(frozen=True)
class EceUncertainty:
    """An ECE (fraction) with its percentile-bootstrap ``interval`` over images, and the ECE of a perfectly
    calibrated model with the same confidences: its mean and central ``calibrated_range`` (see the module
    docstring)."""

    ece: float
    interval: tuple[float, float]
    calibrated_mean: float
    calibrated_range: tuple[float, float]

    @property
    def beyond_calibrated(self) -> bool:
        """Whether the ECE lies above the range a calibrated model shows: miscalibration told apart from noise."""
        return self.ece > self.calibrated_range[1]


def ece_uncertainty(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS, draws: int = ECE_DRAWS,
                    seed: int = ECE_SEED, level: float = LEVEL) -> EceUncertainty:
    """The ECE of ``confidence`` against ``correct`` with its bootstrap interval and the calibrated expectation."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    n = confidence.size
    if n == 0:
        return EceUncertainty(float("nan"), (float("nan"),) * 2, float("nan"), (float("nan"),) * 2)
    rng = np.random.default_rng(seed)
    observed = ece(confidence, correct, bins)
    index, batch = _bin_index(confidence, bins), max(1, _CHUNK // n)
    if n == 1:  # every resample is the one image
        interval = (observed, observed)
    else:
        boot = sps.bootstrap((index, correct - confidence), functools.partial(_binned_eces, bins=bins),
                             n_resamples=draws, batch=batch, vectorized=True, paired=True, confidence_level=level,
                             method="percentile", rng=rng)
        interval = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    calibrated = np.concatenate([_binned_eces(index, (rng.random((size, n)) < confidence) - confidence, bins)
                                 for size in _chunk_sizes(draws, batch)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(calibrated, [tail, 100 - tail])
    return EceUncertainty(observed, interval, float(calibrated.mean()), (float(low), float(high)))


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    """``total`` split into parts of at most ``chunk``."""
    return [min(chunk, total - start) for start in range(0, total, chunk)]


def format_p(p: float | None) -> str:
    """A p-value for a table: three decimals, two significant digits below 0.001, '-' when untested."""
    if p is None or np.isnan(p):
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def format_interval(lo: float, hi: float, scale: float = 100.0) -> str:
    """An interval of fractions for a table, in points by default: ``[-5.45, 2.74]``; '-' when undefined."""
    return "-" if math.isnan(lo) else f"[{scale * lo:.2f}, {scale * hi:.2f}]"


def error_consistency(first: np.ndarray, second: np.ndarray) -> float:
    """Geirhos et al. (2020) error consistency: kappa of the observed agreement in correctness over the
    agreement expected from the two accuracies alone (NaN when that expectation is 1)."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    observed = float((first == second).mean())
    p1, p2 = float(first.mean()), float(second.mean())
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    return (observed - expected) / (1 - expected) if expected < 1 else float("nan")

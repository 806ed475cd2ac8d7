"""ImageNet-P stability metrics (Hendrycks & Dietterich, ICLR 2019), as hendrycks/robustness ``ImageNet-P/test.py``
computes them, from each frame's top-5 classes.

A sequence of ``F`` frames is compared pairwise: a noise perturbation (name containing ``noise``) compares every
frame with the clean first frame, ``(0, j)`` for ``j = 1..F-1``, whatever the difficulty (difficulty only picks the
noise strength); the others compare frames ``difficulty`` apart, ``(j - d, j)`` for ``j = d..F-1``.

- flip probability (FP): the share of compared pairs whose top-1 classes differ, averaged per image, then over
  images;
- top-5 distance (T5D): test.py's ``ranking_dist(mode='top5')``: for each of the first frame's top-5 classes (rank
  ``k = 0..4``), ``|k - p|`` where ``p`` is its rank in the second frame, capped at 5 (``p = 5`` when it left the
  top 5); summed over the five, averaged as FP;
- FR and T5D ratios: a model's FP or T5D divided by a baseline's (the paper uses AlexNet) for the same
  perturbation; mFR and mT5D: their means over :data:`TEST_PERTURBATIONS`.

Image means are accumulated one image after another, in image order, as test.py's loop does, so FP and T5D equal
its values to the bit. FP's interval is Clopper-Pearson's (Clopper & Pearson, Biometrika 1934, 26:404-413) on the
total flip count, the ``images x pairs`` comparisons taken as independent trials (frames of one sequence are
correlated, so it is narrower than an interval over images would be).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ibnbench.conditions.perturbations import TEST_PERTURBATIONS, is_noise
from ibnbench.errors import UsageError
from ibnbench.results.stats import LEVEL, clopper_pearson

TOP = 5


def compared_frames(frames: int, difficulty: int, noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """The frame pairs test.py compares, as two index arrays ``(first, second)`` of equal length.

    ``frames``: frames per sequence; ``difficulty``: 1, 2 or 3; ``noise``: whether the perturbation is a noise one
    (every frame against frame 0) or not (frames ``difficulty`` apart)."""
    if difficulty not in (1, 2, 3):
        raise UsageError(f"ImageNet-P difficulty must be 1, 2 or 3, got {difficulty}")
    step = 1 if noise else difficulty
    if frames <= step:
        raise UsageError(f"an ImageNet-P sequence needs more than {step} frames, got {frames}")
    second = np.arange(step, frames)
    first = np.zeros_like(second) if noise else second - step
    return first, second


def _top5_array(top5) -> np.ndarray:
    """``top5`` (numpy or torch) as an integer numpy array ``[images, frames, 5]``, checked."""
    array = np.asarray(top5.cpu() if hasattr(top5, "cpu") else top5)
    if array.ndim != 3 or array.shape[-1] != TOP or not np.issubdtype(array.dtype, np.integer):
        raise UsageError(f"ImageNet-P predictions must be integer class indices [images, frames, 5], got "
                         f"{array.dtype} {list(array.shape)}")
    return array


def flip_counts(top5, difficulty: int, noise: bool) -> tuple[np.ndarray, int]:
    """Per image, how many compared pairs flip their top-1 class: ``(counts[images] int64, pairs per image)``.

    ``top5``: ``[images, frames, 5]`` class indices, best first (the top-1 is column 0)."""
    top1 = _top5_array(top5)[..., 0]
    first, second = compared_frames(top1.shape[1], difficulty, noise)
    return (top1[:, first] != top1[:, second]).sum(axis=1, dtype=np.int64), len(first)


def top5_distances(top5, difficulty: int, noise: bool) -> np.ndarray:
    """test.py's top-5 ranking distance of every compared pair, ``[images, pairs]`` int64 (0 to 15).

    ``top5``: ``[images, frames, 5]`` class indices, best first, distinct within a frame."""
    top5 = _top5_array(top5)
    first, second = compared_frames(top5.shape[1], difficulty, noise)
    before, after = top5[:, first], top5[:, second]  # [images, pairs, 5]
    same = before[..., :, None] == after[..., None, :]  # [images, pairs, rank before, rank after]
    rank_after = np.where(same.any(axis=-1), same.argmax(axis=-1), TOP)
    return np.abs(rank_after - np.arange(TOP)).sum(axis=-1, dtype=np.int64)


def _mean_of_image_means(per_image: np.ndarray) -> float:
    """The mean over images of per-image means, summed in image order as test.py does (bit-equal to it)."""
    if len(per_image) == 0:
        raise UsageError("ImageNet-P metrics need at least one image")
    return float(np.cumsum(per_image / len(per_image))[-1])


@dataclass(frozen=True)
class Stability:
    """One model's stability on one perturbation: ``fp`` and ``t5d`` (fractions and ranking units), ``flips``
    (flipped pairs over all images), ``pairs`` (compared pairs over all images) and FP's interval ``fp_low`` to
    ``fp_high`` (Clopper-Pearson at ``LEVEL``)."""

    fp: float
    t5d: float
    flips: int
    pairs: int
    fp_low: float
    fp_high: float


def stability(top5, perturbation: str, difficulty: int = 1, level: float = LEVEL) -> Stability:
    """FP and T5D of one perturbation from ``top5`` ``[images, frames, 5]`` (numpy or torch class indices, best
    first), for ``difficulty`` 1-3, with FP's Clopper-Pearson interval at ``level``."""
    noise = is_noise(perturbation)
    counts, pairs = flip_counts(top5, difficulty, noise)
    distances = top5_distances(top5, difficulty, noise)
    flips, trials = int(counts.sum()), pairs * len(counts)
    low, high = clopper_pearson(flips, trials, level)
    return Stability(fp=_mean_of_image_means(counts / pairs), t5d=_mean_of_image_means(distances.mean(axis=1)),
                     flips=flips, pairs=trials, fp_low=low, fp_high=high)


def normalised(values: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """Each perturbation's value divided by the baseline's (FR from FPs, the T5D ratio from T5Ds)."""
    missing = sorted(set(values) - set(baseline))
    if missing:
        raise UsageError(f"the baseline has no value for {', '.join(missing)}")
    zero = sorted(name for name in values if baseline[name] == 0)
    if zero:
        raise UsageError(f"the baseline's value is 0 for {', '.join(zero)}: cannot normalise by it")
    return {name: value / baseline[name] for name, value in values.items()}


def mean_over_test(values: Mapping[str, float]) -> float:
    """The mean over the 10 test perturbations (:data:`TEST_PERTURBATIONS`; others in ``values`` are ignored):
    mFR of FRs, mT5D of T5D ratios, the unnormalised mean FP or T5D of raw values."""
    missing = [name for name in TEST_PERTURBATIONS if name not in values]
    if missing:
        raise UsageError(f"a mean over ImageNet-P's test perturbations needs all 10; missing {', '.join(missing)}")
    return float(np.mean([values[name] for name in TEST_PERTURBATIONS]))

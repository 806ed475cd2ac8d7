"""Semantic segmentation scores: confusion matrices, IoU, mIoU, pixel accuracy, and their bootstrap intervals.

A confusion matrix is ``[C, C]`` int64, rows the ground-truth class and columns the predicted one, counted on the
tensors' device with one ``torch.bincount``; pixels whose ground truth is 255 (ignored) or any other value
``>= C`` are not counted. From it: a class's IoU = diag / (row + column - diag), NaN for a class absent from both
the ground truth and the predictions; mIoU = the mean of the IoUs that are not NaN (RobustNet's and
cityscapesScripts' ``nanmean``); pixel accuracy = diag sum / matrix sum.

Intervals come from the images: each image's sufficient statistics (:func:`image_statistics`, per class the
intersection, the ground-truth pixels and the predicted pixels) are resampled with replacement as whole images and
summed, and the mIoU of the sums is recomputed; the interval is the percentile bootstrap (Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 13) from ``scipy.stats.bootstrap`` with :data:`DRAWS` resamples and
numpy's generator seeded with :data:`SEED` (the conventions of :mod:`ibnbench.results.stats`). Two models on the
same images are compared with the paired bootstrap: each resample takes the same images for both, and the interval
is that of the difference of their mIoUs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

from ibnbench.results.stats import LEVEL

DRAWS = 2000
"""Bootstrap resamples behind an mIoU interval."""
SEED = 0
"""Seed of those resamples (``numpy.random.default_rng``): the same interval in every report."""
_CHUNK = 1 << 22
"""Resamples x images held at once (bounds the memory of a large bootstrap)."""


def _valid_pixels(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    valid = (target >= 0) & (target < num_classes)
    if bool(((prediction < 0) | (prediction >= num_classes))[valid].any()):
        raise ValueError(f"predictions outside 0..{num_classes - 1}")
    return valid


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` int64 counts on the tensors' device of (ground truth, prediction) pairs over the pixels of any
    shape; ground truth 255 or any other value ``>= num_classes`` not counted."""
    valid = _valid_pixels(prediction, target, num_classes)
    pairs = target[valid].long() * num_classes + prediction[valid].long()
    return torch.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def image_confusions(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, C, C]``: the confusion matrix of each image of a batch ``[N, H, W]``, in one ``bincount``."""
    valid = _valid_pixels(prediction, target, num_classes)
    image = torch.arange(len(target), device=target.device).view(-1, *[1] * (target.dim() - 1)).expand_as(target)
    cells = (image[valid] * num_classes + target[valid].long()) * num_classes + prediction[valid].long()
    counts = torch.bincount(cells, minlength=len(target) * num_classes ** 2)
    return counts.reshape(len(target), num_classes, num_classes)


def image_statistics(confusions: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-image sufficient statistics ``[N, 3, C]`` int64 of confusion matrices ``[N, C, C]`` (or one ``[C, C]``):
    per class the intersection (diagonal), the ground-truth pixels (row) and the predicted pixels (column)."""
    matrix = confusions.cpu().numpy() if isinstance(confusions, torch.Tensor) else np.asarray(confusions)
    matrix = matrix.astype(np.int64)
    return np.stack([np.diagonal(matrix, axis1=-2, axis2=-1), matrix.sum(-1), matrix.sum(-2)], axis=-2)


def class_iou(statistics: np.ndarray) -> np.ndarray:
    """IoU per class ``[..., C]`` of statistics ``[..., 3, C]``; NaN for a class in neither ground truth nor
    predictions."""
    intersection, truth, predicted = (statistics[..., k, :].astype(np.float64) for k in range(3))
    union = truth + predicted - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def mean_iou(statistics: np.ndarray) -> np.ndarray:
    """mIoU over the classes present (NaN IoUs skipped); NaN where no class is present."""
    iou = class_iou(statistics)
    present = ~np.isnan(iou)
    count = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(present, iou, 0.0).sum(-1) / count, np.nan)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one confusion matrix (fractions in [0, 1]): ``iou`` per class (NaN: class absent from ground truth
    and predictions), ``miou``, ``pixel_accuracy``, and the ``pixels`` counted."""

    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    pixels: int

    @property
    def present(self) -> np.ndarray:
        """Which classes count in the mIoU."""
        return ~np.isnan(self.iou)


def scores(confusion: torch.Tensor | np.ndarray) -> SegmentationScores:
    """IoU per class, mIoU and pixel accuracy of a confusion matrix ``[C, C]``."""
    statistics = image_statistics(confusion)
    pixels = int(statistics[1].sum())
    accuracy = float(statistics[0].sum() / pixels) if pixels else float("nan")
    return SegmentationScores(class_iou(statistics), float(mean_iou(statistics)), accuracy, pixels)


def _resampled(statistics: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Summed statistics ``[B, 3, C]`` of resamples ``index`` ``[B, n]`` of images, as image counts @ statistics."""
    index = np.atleast_2d(index)
    draws, n = index.shape
    counts = np.bincount((index + n * np.arange(draws)[:, None]).ravel(), minlength=draws * n).reshape(draws, n)
    return np.einsum("bn,nkc->bkc", counts, statistics)


def _bootstrap(statistic, n: int, draws: int, seed: int, level: float, per_draw: int) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic(index)`` over resampled image indices."""
    if n == 1:
        value = float(statistic(np.zeros((1, 1), dtype=np.intp))[0])
        return value, value
    boot = sps.bootstrap((np.arange(n),), statistic, n_resamples=draws, batch=max(1, _CHUNK // (n * per_draw)),
                         vectorized=True, confidence_level=level, method="percentile",
                         rng=np.random.default_rng(seed))
    return float(boot.confidence_interval.low), float(boot.confidence_interval.high)


def miou_interval(statistics: np.ndarray, draws: int = DRAWS, seed: int = SEED,
                  level: float = LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap interval (fractions) of the mIoU of images with statistics ``[N, 3, C]``
    (:func:`image_statistics`): images resampled with replacement, their statistics summed."""
    statistics = np.asarray(statistics, dtype=np.int64)
    if len(statistics) == 0:
        return float("nan"), float("nan")
    return _bootstrap(lambda index, axis=-1: mean_iou(_resampled(statistics, index)), len(statistics), draws, seed,
                      level, statistics[0].size)


@dataclass(frozen=True)
class MiouDifference:
    """Model B's mIoU minus model A's on the same images (fractions), with its paired-bootstrap ``interval``."""

    n: int
    miou_a: float
    miou_b: float
    interval: tuple[float, float]

    @property
    def diff(self) -> float:
        return self.miou_b - self.miou_a


def paired_miou_difference(statistics_a: np.ndarray, statistics_b: np.ndarray, draws: int = DRAWS, seed: int = SEED,
                           level: float = LEVEL) -> MiouDifference:
    """B's mIoU minus A's from both models' per-image statistics ``[N, 3, C]`` on the same N images, with the paired
    percentile-bootstrap interval (each resample takes the same images for both)."""
    a, b = np.asarray(statistics_a, dtype=np.int64), np.asarray(statistics_b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"paired statistics need the same images and classes, got {a.shape} and {b.shape}")
    miou_a, miou_b = float(mean_iou(a.sum(0))), float(mean_iou(b.sum(0)))
    if len(a) == 0:
        return MiouDifference(0, miou_a, miou_b, (float("nan"), float("nan")))
    both = np.concatenate([a, b], axis=1)  # [N, 6, C]: one resample of images sums both models' statistics

    def difference(index: np.ndarray, axis: int = -1) -> np.ndarray:
        summed = _resampled(both, index)
        return mean_iou(summed[:, 3:]) - mean_iou(summed[:, :3])

    return MiouDifference(len(a), miou_a, miou_b, _bootstrap(difference, len(a), draws, seed, level, both[0].size))

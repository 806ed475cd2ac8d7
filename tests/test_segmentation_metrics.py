"""Segmentation scores against an independent numpy confusion matrix, and the bootstrap intervals' coverage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ibnbench.results import segmentation_metrics as sm
from ibnbench.results.segmentation_metrics import confusion_matrix, image_confusions, image_statistics, mean_iou, scores

C = 19


def numpy_confusion(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """The confusion matrix pixel by pixel: rows ground truth, columns prediction, ground truth >= C ignored."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    keep = target < num_classes
    np.add.at(matrix, (target[keep], prediction[keep]), 1)
    return matrix


def numpy_scores(matrix: np.ndarray) -> tuple[list[float], float, float]:
    """IoU per class (NaN when the class is in neither ground truth nor predictions), their mean over the classes
    that have one, and pixel accuracy, class by class."""
    ious = []
    for c in range(len(matrix)):
        union = matrix[c, :].sum() + matrix[:, c].sum() - matrix[c, c]
        ious.append(matrix[c, c] / union if union else float("nan"))
    counted = [v for v in ious if v == v]
    return ious, sum(counted) / len(counted), np.trace(matrix) / matrix.sum()


def random_maps(seed: int, shape=(6, 40, 56), absent=(3, 11)) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and ground truth over 19 classes with 255 and out-of-range values in the ground truth, and the
    classes ``absent`` in neither."""
    rng = np.random.default_rng(seed)
    classes = np.array([c for c in range(C) if c not in absent])
    target = rng.choice(classes, shape).astype(np.uint8)
    target[rng.random(shape) < 0.1] = 255
    target[rng.random(shape) < 0.02] = 19 + rng.integers(0, 30)
    prediction = np.where(rng.random(shape) < 0.6, np.minimum(target, 18), rng.choice(classes, shape))
    return prediction.astype(np.uint8), target


def test_miou_and_pixel_accuracy_equal_an_independent_numpy_computation():
    prediction, target = random_maps(0)
    matrix = confusion_matrix(torch.from_numpy(prediction), torch.from_numpy(target), C)
    reference = numpy_confusion(prediction, target, C)
    assert matrix.dtype == torch.int64 and np.array_equal(matrix.numpy(), reference)
    ious, miou, accuracy = numpy_scores(reference)
    found = scores(matrix)
    np.testing.assert_allclose(found.iou, ious, rtol=1e-12)  # NaN at the same places
    assert np.isnan(found.iou[[3, 11]]).all() and found.present.sum() == C - 2
    assert found.miou == pytest.approx(miou, rel=1e-12) and found.pixel_accuracy == pytest.approx(accuracy, rel=1e-12)
    assert found.pixels == int(((target < C)).sum())


def test_a_class_only_predicted_counts_with_iou_zero():
    target = torch.tensor([[0, 0, 1, 255]])
    prediction = torch.tensor([[0, 2, 1, 5]])  # class 2 predicted, never true: IoU 0, counted; 5 on an ignored pixel
    found = scores(confusion_matrix(prediction, target, 6))
    assert found.iou[:3].tolist() == [0.5, 1.0, 0.0] and np.isnan(found.iou[3:]).all()
    assert found.miou == pytest.approx(0.5) and found.pixel_accuracy == pytest.approx(2 / 3)


def test_image_confusions_are_each_images_matrix():
    prediction, target = random_maps(1, shape=(4, 16, 24))
    per_image = image_confusions(torch.from_numpy(prediction), torch.from_numpy(target), C)
    assert per_image.shape == (4, C, C)
    for i in range(4):
        assert np.array_equal(per_image[i].numpy(), numpy_confusion(prediction[i], target[i], C))
    statistics = image_statistics(per_image)
    assert statistics.shape == (4, 3, C)
    assert mean_iou(statistics.sum(0)) == pytest.approx(numpy_scores(numpy_confusion(prediction, target, C))[1])


def test_predictions_out_of_range_are_refused():
    with pytest.raises(ValueError, match="outside 0..18"):
        confusion_matrix(torch.tensor([19]), torch.tensor([0]), C)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_confusion_matrix_is_counted_on_the_device():
    prediction, target = random_maps(2)
    matrix = confusion_matrix(torch.from_numpy(prediction).cuda(), torch.from_numpy(target).cuda(), C)
    assert matrix.device.type == "cuda"
    assert np.array_equal(matrix.cpu().numpy(), numpy_confusion(prediction, target, C))


def population(rng: np.random.Generator, images: int, skills=(0.7,), classes: int = 5,
               pixels: int = 400) -> np.ndarray:
    """Per-image statistics ``[models, images, 3, classes]`` of models (one per skill) on the same images, whose
    class mix and difficulty (shared by the models) vary by image."""
    matrices = np.zeros((len(skills), images, classes, classes), dtype=np.int64)
    for i in range(images):
        truth = rng.multinomial(pixels, rng.dirichlet(np.ones(classes)))
        difficulty = rng.normal(0, 0.15)
        for m, skill in enumerate(skills):
            right = rng.binomial(truth, np.clip(skill + difficulty, 0.05, 0.99))
            for c in range(classes):
                others = [k for k in range(classes) if k != c]
                matrices[m, i, c, c] = right[c]
                matrices[m, i, c, others] = rng.multinomial(truth[c] - right[c], np.ones(len(others)) / len(others))
    return image_statistics(matrices)


def test_the_miou_bootstrap_interval_covers_the_population_miou():
    """Seeded simulation: samples of 40 images drawn from a population of 400; the 95% interval holds the
    population's mIoU in about 95% of them."""
    rng = np.random.default_rng(0)
    pool = population(rng, 400)[0]
    truth = mean_iou(pool.sum(0))
    hits = []
    for rep in range(150):
        sample = pool[rng.integers(0, len(pool), 40)]
        lo, hi = sm.miou_interval(sample, draws=300, seed=rep)
        assert lo <= mean_iou(sample.sum(0)) <= hi
        hits.append(lo <= truth <= hi)
    assert 0.88 <= np.mean(hits) <= 0.99


def test_the_paired_bootstrap_interval_covers_the_population_difference():
    rng = np.random.default_rng(1)
    pool_a, pool_b = population(rng, 400, skills=(0.65, 0.7))
    assert np.array_equal(pool_a[:, 1], pool_b[:, 1])  # the same ground truth
    truth = mean_iou(pool_b.sum(0)) - mean_iou(pool_a.sum(0))
    hits = []
    for rep in range(150):
        rows = rng.integers(0, len(pool_a), 40)
        found = sm.paired_miou_difference(pool_a[rows], pool_b[rows], draws=300, seed=rep)
        assert found.interval[0] <= found.diff <= found.interval[1]
        hits.append(found.interval[0] <= truth <= found.interval[1])
    assert 0.88 <= np.mean(hits) <= 0.99


def test_intervals_are_seeded_and_a_model_against_itself_differs_by_zero():
    statistics = population(np.random.default_rng(3), 30)[0]
    assert sm.miou_interval(statistics) == sm.miou_interval(statistics, draws=sm.DRAWS, seed=sm.SEED)
    assert sm.miou_interval(statistics, seed=1) != sm.miou_interval(statistics, seed=2)
    same = sm.paired_miou_difference(statistics, statistics)
    assert same.diff == 0 and same.interval == (0.0, 0.0) and same.n == 30
    lo, hi = sm.miou_interval(statistics[:1])
    assert lo == hi == pytest.approx(mean_iou(statistics[0]))
    assert np.isnan(sm.miou_interval(statistics[:0])).all()

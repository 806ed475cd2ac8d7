"""Segmentation runs end to end on tiny synthetic Cityscapes folders with a tiny registered segmentation model:
the confusion matrices against an independent computation (a plain torch forward, numpy counting, the label table
written here), Table 1 and Cityscapes-C conditions, resume after an interruption and torchrun with 2 processes
giving identical matrices, and bad input as one line each."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import torchrun
from helpers.segmentation import TINY, make_cityscapes, register_tiny, unregister
from PIL import Image

from ibnbench.cli import main
from ibnbench.conditions.base import Corruption
from ibnbench.eval.checkpoint import RunInterrupted
from ibnbench.eval.options import RunOptions
from ibnbench.eval.segmentation_engine import SegmentationEvaluation
from ibnbench.eval.segmentation_runs import run_segmentation
from ibnbench.results.segmentation_record import read_segmentation_record
from ibnbench.zoo import create_model

TRAIN_ID = {0: 255, 7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 26: 13}
"""cityscapesScripts' labelIds -> trainIds for the ids the synthetic labels use (0: unlabeled, ignored)."""
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
OPTIONS = dict(device="cpu", workers=0, batch_size=3, progress=False)
TABLE1 = ["origin", "rgb+50", "r+50", "std*1.5"]
CITYSCAPES_C = ["origin", "gaussian_noise-2", "motion_blur-3", "fog-1", "jpeg_compression-4"]


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    """The tiny segmentation models, registered for this module only."""
    register_tiny()
    register_tiny("tiny_segmenter_10", classes=10)
    yield
    unregister(TINY, "tiny_segmenter_10")


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("seg") / "cityscapes", n=5)


def reference_confusion(root: Path, condition=None) -> np.ndarray:
    """The tiny model (random weights, as create_model seeds them) on every image, ``condition`` applied to the
    0..255 image first, counted in numpy against the label ids mapped by :data:`TRAIN_ID`."""
    model = create_model(TINY, weights="random")
    confusion = np.zeros((19, 19), dtype=np.int64)
    images = sorted((root / "leftImg8bit/val").rglob("*.png"))
    for index, path in enumerate(images):
        x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()
        x = condition(x, torch.tensor([index])) if condition else x
        mean, inv_std = torch.tensor(MEAN).view(1, 3, 1, 1), 1 / torch.tensor(STD).view(1, 3, 1, 1)
        with torch.no_grad():
            prediction = model((x - mean) * inv_std).argmax(1)[0].numpy()
        label_path = Path(str(path).replace("leftImg8bit", "gtFine").replace("gtFine.png", "gtFine_labelIds.png"))
        truth = np.vectorize(TRAIN_ID.get)(np.asarray(Image.open(label_path)))
        kept = truth != 255
        np.add.at(confusion, (truth[kept], prediction[kept]), 1)
    return confusion


def scores_by_hand(confusion: np.ndarray) -> tuple[float, float]:
    """mIoU over the classes present in ground truth or predictions, pixel accuracy; percent."""
    diag, rows, cols = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    union = rows + cols - diag
    present = union > 0
    return 100 * float(np.mean(diag[present] / union[present])), 100 * diag.sum() / confusion.sum()


def test_table1_run_matches_an_independent_computation(cityscapes, tmp_path):
    record = run_segmentation([TINY], {"cityscapes": cityscapes}, suite="table1", conditions=TABLE1,
                              weights=["random"], options=RunOptions(**OPTIONS), output=tmp_path / "t1.json")
    shifts = {"origin": None, "rgb+50": lambda x, i: x + 50, "r+50": lambda x, i: x + torch.tensor(
        [50.0, 0, 0]).view(1, 3, 1, 1), "std*1.5": lambda x, i: (x - x.mean((2, 3), keepdim=True)) * 1.5
        + x.mean((2, 3), keepdim=True)}
    for condition, op in shifts.items():
        theirs = reference_confusion(cityscapes, op)
        assert np.array_equal(record.confusion(TINY, condition, "cityscapes"), theirs), condition
        row = record.result(TINY, condition, "cityscapes")
        miou, accuracy = scores_by_hand(theirs)
        assert row["miou"] == pytest.approx(miou, abs=1e-3)
        assert row["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-3)
        assert row["n_images"] == 5 and row["miou_ci"][0] <= row["miou"] <= row["miou_ci"][1]
    again = read_segmentation_record(tmp_path / "t1.json")
    stats = again.image_statistics(TINY, "rgb+50", "cityscapes")
    assert stats.shape == (5, 3, 19) and np.array_equal(stats[:, 0].sum(0), np.diag(theirs_of(again, "rgb+50")))


def theirs_of(record, condition: str) -> np.ndarray:
    return record.confusion(TINY, condition, "cityscapes")


def test_cityscapes_c_run_applies_each_corruption_at_the_image_size(cityscapes, tmp_path):
    """ImageNet-C conditions on 48x24 frames: each matrix is the model on ``Corruption(...)(x, index)`` of every
    image (its dataset index keys the draws), and the report has the corruption x severity table."""
    out = tmp_path / "c.json"
    assert main(["run", "--task", "segmentation", "--model", TINY, "--weights", "random", "--data",
                 f"cityscapes={cityscapes}", "--suite", "imagenet-c", "--conditions", ",".join(CITYSCAPES_C),
                 "--device", "cpu", "--workers", "0", "--batch-size", "2", "--no-progress", "--output", str(out)]) == 0
    record = read_segmentation_record(out)
    for condition in CITYSCAPES_C[1:]:
        name, severity = condition.rsplit("-", 1)
        corruption = Corruption(condition, corruption=name, severity=int(severity))
        assert np.array_equal(record.confusion(TINY, condition, "cityscapes"),
                              reference_confusion(cityscapes, corruption)), condition
    assert [c["id"] for c in record.conditions] == CITYSCAPES_C and record.task == "segmentation"
    assert record.generator["imagenet-c"]["source"] == "on-the-fly"  # Cityscapes-C names its generator too


def test_interrupted_run_resumes_to_identical_matrices(cityscapes, tmp_path, monkeypatch):
    """Ctrl-C after the first batch: the checkpoint holds it, and --resume finishes with the matrices and per-image
    statistics of an uninterrupted run."""
    options = RunOptions(**{**OPTIONS, "batch_size": 2, "chunk_size": 2})
    args = dict(suite="table1", conditions=TABLE1[:2], weights=["random"], options=options)
    reference = run_segmentation([TINY], {"cityscapes": cityscapes}, output=tmp_path / "ref.json", **args)
    real = SegmentationEvaluation.evaluate_batch
    calls = []

    def interrupt_second(self, *a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a)

    monkeypatch.setattr(SegmentationEvaluation, "evaluate_batch", interrupt_second)
    with pytest.raises(RunInterrupted, match="progress saved in .*--resume continues it"):
        run_segmentation([TINY], {"cityscapes": cityscapes}, output=tmp_path / "cut.json", **args)
    assert (tmp_path / ".cut.json.rank0.resume.pt").exists() and not (tmp_path / "cut.json").exists()
    monkeypatch.setattr(SegmentationEvaluation, "evaluate_batch", real)
    resumed = run_segmentation([TINY], {"cityscapes": cityscapes}, output=tmp_path / "cut.json", resume=True, **args)
    for condition in TABLE1[:2]:
        assert np.array_equal(resumed.confusion(TINY, condition, "cityscapes"),
                              reference.confusion(TINY, condition, "cityscapes"))
        assert np.array_equal(resumed.image_statistics(TINY, condition, "cityscapes"),
                              reference.image_statistics(TINY, condition, "cityscapes"))
    assert not (tmp_path / ".cut.json.rank0.resume.pt").exists()


@pytest.mark.slow  # two torchrun processes start torch and the gloo group: ~15 s on 2 cores
def test_two_ranks_give_identical_matrices(cityscapes, tmp_path):
    args = ["run", "--task", "segmentation", "--model", TINY, "--weights", "random", "--data",
            f"cityscapes={cityscapes}", "--suite", "imagenet-c", "--conditions", "origin,gaussian_noise-3",
            "--device", "cpu", "--workers", "0", "--batch-size", "2", "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "one.json")]) == 0
    tests = Path(__file__).parent
    done = torchrun(2, [*args, "--output", str(tmp_path / "two.json")], tmp_path, module="helpers.segmentation",
                    env={"PYTHONPATH": f"{tests}:{tests.parent}"})
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["timing"]["world_size"] == 2 and two["timing"]["images"] == 5
    assert [(r["condition"], r["confusion"], r["miou"]) for r in one["results"]] == \
           [(r["condition"], r["confusion"], r["miou"]) for r in two["results"]]
    assert read_segmentation_record(tmp_path / "two.json").image_statistics(TINY, "origin", "cityscapes").tolist() \
        == read_segmentation_record(tmp_path / "one.json").image_statistics(TINY, "origin", "cityscapes").tolist()


def _segmentation_cli(capsys, data: Path, tmp_path: Path, *extra: str, model: str = TINY) -> tuple[int, str]:
    code = main(["run", "--task", "segmentation", "--model", model, "--weights", "random", "--data",
                 f"cityscapes={data}", "--device", "cpu", "--workers", "0", "--no-progress",
                 "--output", str(tmp_path / "r.json"), *extra])
    return code, capsys.readouterr().err.strip()


def _broken_copy(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A 3-image Cityscapes folder whose second label map is resized (``size``) or holds id 99 (``values``)."""
    root = make_cityscapes(tmp_path / how, n=3)
    label = sorted((root / "gtFine/val").rglob("*.png"))[1]
    ids = np.asarray(Image.open(label))
    broken = ids[:-4] if how == "size" else np.where(ids == 7, 99, ids).astype(np.uint8)
    Image.fromarray(broken).save(label)
    return root, label


@pytest.mark.parametrize("how, message", [("size", "is 48x20 but its image"), ("values", "99")])
def test_bad_label_maps_are_one_line_or_skipped(tmp_path, capsys, how, message):
    root, label = _broken_copy(tmp_path, how)
    code, err = _segmentation_cli(capsys, root, tmp_path)
    assert code == 2 and len(err.splitlines()) == 1 and str(label) in err and message in err, err
    if how == "size":
        assert "_leftImg8bit.png" in err  # names the image too
    code, err = _segmentation_cli(capsys, root, tmp_path, "--on-bad-image", "skip")
    record = read_segmentation_record(tmp_path / "r.json")
    assert code == 0 and record.result(TINY, "origin", "cityscapes")["n_images"] == 2
    assert record.datasets["cityscapes"]["n_skipped"] == 1 and str(label) in record.datasets["cityscapes"]["skipped"][0]


def test_wrong_models_are_one_line(cityscapes, tmp_path, capsys):
    """A classification model under --task segmentation, a segmentation model in a classification run, and a
    segmentation model with another class count: one line each, nothing written."""


    code, err = _segmentation_cli(capsys, cityscapes, tmp_path, model="resnet18")
    assert code == 2 and "--model resnet18 is a classification model; --task segmentation" in err
    code = main(["run", "--model", TINY, "--data", str(cityscapes), "--device", "cpu", "--output",
                 str(tmp_path / "c.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"--model {TINY} is a segmentation model; run it with --task segmentation" in err
    code, err = _segmentation_cli(capsys, cityscapes, tmp_path, model="tiny_segmenter_10")
    assert code == 2 and len(err.splitlines()) == 1 and "returned [" in err and ", 10, 24, 48]" in err, err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "c.json").exists()


def test_sliding_window_and_flip_agree_with_the_whole_image_for_a_pointwise_model():
    """A 1x1-convolution model sees each pixel alone: tiles (any stride, padded edges) and the mirrored image give
    the whole image's classes."""
    from ibnbench.eval.segmentation_inference import Inference, SegmentationRunner, window_starts
    from ibnbench.zoo.meta import Preprocessing

    assert window_starts(50, 16, 11) == [0, 11, 22, 33, 34] and window_starts(10, 16, 11) == [0]
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 19, 1)
    x = torch.rand(2, 3, 21, 50) * 255
    whole = SegmentationRunner("m", model, Preprocessing(), torch.device("cpu"), RunOptions(device="cpu"),
                               Inference()).predict(x)
    for inference in (Inference(window=16, stride=11), Inference(flip=True), Inference(window=32, flip=True)):
        runner = SegmentationRunner("m", model, Preprocessing(), torch.device("cpu"), RunOptions(device="cpu"),
                                    inference)
        assert torch.equal(runner.predict(x), whole), inference

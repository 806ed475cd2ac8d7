"""ImageNet-C scores against a hand computation; the report's corruptions x severities layout; the leaderboard's
mCE ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.records import graded_record as make_record

from ibnbench.conditions.c_bar import C_BAR_LABELS, C_BAR_NAMES
from ibnbench.conditions.imagenet_c_release import is_released_tree
from ibnbench.errors import UsageError
from ibnbench.results import imagenet_c, leaderboard
from ibnbench.results.record import write_record
from ibnbench.results.report import report

# The AlexNet constants, typed again here (mean top-1 error over the 5 severities; clean 43.5).
ALEXNET = {"gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640, "defocus_blur": 81.9880,
           "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360, "snow": 86.6816, "frost": 82.6572,
           "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204, "elastic_transform": 64.6056,
           "pixelate": 71.7840, "jpeg_compression": 60.6500}


def half_alexnet_errors(clean: float = 20.0, scale: float = 0.5) -> dict[str, float]:
    """Errors whose mean over severities is ``scale`` x AlexNet's: severity s gets ``scale A + (s - 3)``."""
    errors = {"origin": clean}
    for name, a in ALEXNET.items():
        errors.update({f"{name}-{s}": scale * a + (s - 3) for s in range(1, 6)})
    return errors


def test_ce_and_mce_match_a_hand_computation():
    result = imagenet_c.scores(half_alexnet_errors())
    # CE = sum_s E / sum_s E_AlexNet = (5 x A/2) / (5 x A) = 50 for every corruption, so mCE = 50
    assert result["ce"]["gaussian_noise"] == pytest.approx(50.0) and result["mce"] == pytest.approx(50.0)
    # relative CE of Gaussian noise: (88.6428/2 - 20) / (88.6428 - 43.5) = 24.3214 / 45.1428 = 0.538766...
    assert result["relative_ce"]["gaussian_noise"] == pytest.approx(53.8766, abs=1e-3)
    # relative CE of brightness: (28.2296 - 20) / (56.4592 - 43.5) = 8.2296 / 12.9592 = 0.635039...
    assert result["relative_ce"]["brightness"] == pytest.approx(63.5039, abs=1e-3)
    by_hand = sum((a / 2 - 20) / (a - 43.5) for a in ALEXNET.values()) / 15 * 100
    assert result["relative_mce"] == pytest.approx(by_hand)
    assert result["mean_error"] == pytest.approx(sum(ALEXNET.values()) / 30)  # plain mean, no normalisation
    assert result["clean_error"] == 20.0


def test_mce_needs_every_corruption_and_severity():
    errors = half_alexnet_errors()
    del errors["fog-4"]
    result = imagenet_c.scores(errors)
    assert "fog" not in result["ce"] and result["mce"] is None and result["ce"]["snow"] == pytest.approx(50.0)


def test_mean_error_averages_the_15_corruptions_and_reports_the_4_extra_apart():
    errors = half_alexnet_errors()
    errors.update({f"{name}-{s}": 99.0 for name in ("speckle_noise", "gaussian_blur", "spatter", "saturate")
                   for s in range(1, 6)})
    result = imagenet_c.scores(errors)
    assert result["mean_error"] == pytest.approx(sum(ALEXNET.values()) / 30)  # the extras' 99s left out
    assert result["mean_error_extra"] == pytest.approx(99.0)
    table = imagenet_c.model_table(errors)
    assert table.loc[imagenet_c.MEAN_ERROR_EXTRA, "mean"] == "99.00"
    assert imagenet_c.scores(half_alexnet_errors())["mean_error_extra"] is None


def test_alexnet_normalisers_are_the_augmix_values_x100():
    """google-research/augmix ``imagenet.py`` ``ALEXNET_ERR`` (fractions, in its corruption order), x100."""
    augmix = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572, 0.819324,
              0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
    assert list(imagenet_c.ALEXNET_ERRORS) == list(ALEXNET)
    assert list(imagenet_c.ALEXNET_ERRORS.values()) == pytest.approx([100 * a for a in augmix], abs=1e-9)
    assert imagenet_c.ALEXNET_CLEAN_ERROR == 43.5


def test_report_lays_imagenet_c_out_as_corruptions_by_severities(tmp_path):
    path = write_record(make_record({"lite0": half_alexnet_errors()}), tmp_path / "c.json")
    text = report([path])
    lines = text.splitlines()
    header = [h.strip() for h in next(line for line in lines if line.startswith("| corruption")).split("|")[1:-1]]
    assert header == ["corruption (top-1 error %)", "1", "2", "3", "4", "5", "mean", "CE", "relative CE"]
    gauss = [c.strip() for c in next(line for line in lines if line.startswith("| Gaussian Noise")).split("|")[1:-1]]
    assert gauss == ["Gaussian Noise", "42.32", "43.32", "44.32", "45.32", "46.32", "44.32", "50.00", "53.88"]
    assert sum(line.startswith("| ") for line in lines) == 1 + 15 + 4  # header, corruptions, summary rows
    mce = next(line for line in lines if line.startswith(f"| {imagenet_c.MCE}"))
    assert "50.00" in mce and "relative mCE (AlexNet-normalised, %)" in text and imagenet_c.MEAN_ERROR in text
    with pytest.raises(ValueError, match="ImageNet-C records"):
        report([path], vs="paper")


def test_report_lays_imagenet_c_bar_out_as_corruptions_by_severities(tmp_path):
    """C-bar records: the same layout over the 10 C-bar corruptions, a mean per corruption, no CE columns."""
    errors = {"origin": 10.0, **{f"sparkles-{s}": 10.0 * s for s in range(1, 6)}, "plasma_noise-2": 30.0}
    record = make_record({"lite0": errors}, "imagenet-c-bar", C_BAR_LABELS)
    path = write_record(record, tmp_path / "bar.json")
    assert imagenet_c.is_imagenet_c_bar([record]) and not imagenet_c.is_imagenet_c([record])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in report([path]).splitlines() if line.startswith("| ")}
    assert list(rows) == ["corruption (top-1 error %)", "Plasma Noise", "Sparkles", imagenet_c.CLEAN_ERROR,
                          imagenet_c.MEAN_ERROR_BAR]
    assert rows["corruption (top-1 error %)"] == ["1", "2", "3", "4", "5", "mean"]
    assert rows["Sparkles"] == ["10.00", "20.00", "30.00", "40.00", "50.00", "30.00"]
    assert rows["Plasma Noise"] == ["-", "30.00", "-", "-", "-", "30.00"]
    assert rows[imagenet_c.MEAN_ERROR_BAR][-1] == "30.00" and rows[imagenet_c.CLEAN_ERROR][-1] == "10.00"


def test_c_bar_ce_and_mce_bar_are_normalised_by_a_baseline_model(tmp_path):
    """``report --baseline``: CE-bar = the model's errors summed over severities / the baseline's (x100), mCE-bar
    their mean over the 10 corruptions; '-' where a severity is missing; a baseline not in the records, or
    ImageNet-C records, refused."""
    base = {"origin": 20.0, **{f"{n}-{s}": 40.0 + i + s for i, n in enumerate(C_BAR_NAMES) for s in range(1, 6)}}
    model = {c: e / 2 for c, e in base.items()}
    model["sparkles-2"] = base["sparkles-2"]  # sparkles (the 10th): base 49 + s sums to 260, the model 130 + 51 / 2
    path = write_record(make_record({"model": model, "base": base}, "imagenet-c-bar", C_BAR_LABELS),
                        tmp_path / "bar.json")
    text = report([path], baseline="base")
    sections = text.split("### ")
    table = next(s for s in sections if s.startswith("model"))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ")}
    assert rows["corruption (top-1 error %)"][-1] == "CE-bar"
    assert rows["Plasma Noise"][-1] == "50.00"
    assert rows["Sparkles"][-1] == f"{100 * (130 + 25.5) / 260:.2f}"
    assert rows[imagenet_c.MCE_BAR][5] == f"{(9 * 50 + 100 * (130 + 25.5) / 260) / 10:.2f}"
    del model["perlin_noise-4"]
    incomplete = write_record(make_record({"model": model, "base": base}, "imagenet-c-bar", C_BAR_LABELS),
                              tmp_path / "incomplete.json")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in report([incomplete], baseline="base").split("### ")[1].splitlines() if line.startswith("| ")}
    assert rows["Perlin Noise"][-1] == "-" and rows[imagenet_c.MCE_BAR][5] == "-"
    with pytest.raises(UsageError, match="--baseline alexnet: no such model in the records"):
        report([path], baseline="alexnet")
    c_path = write_record(make_record({"lite0": half_alexnet_errors()}), tmp_path / "c.json")
    with pytest.raises(UsageError, match="--baseline normalises ImageNet-C-bar records"):
        report([c_path], baseline="lite0")


def test_leaderboard_ranks_imagenet_c_by_mce(tmp_path):
    records = tmp_path / "board" / "records"
    records.mkdir(parents=True)
    worse = half_alexnet_errors(clean=10.0, scale=0.7)  # lower clean error, yet the higher mCE (70)
    write_record(make_record({"worse": worse, "better": half_alexnet_errors()}), records / "c.json")
    leaderboard.build(tmp_path / "board")
    board = (tmp_path / "board" / "imagenet-c.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| worse") or line.startswith("| better")]
    assert [r.split("|")[1].strip() for r in rows] == ["better", "worse"]
    header = [h.strip() for h in next(line for line in board.splitlines() if line.startswith("| model")).split("|")]
    column = header.index(imagenet_c.MCE)
    assert "ranked by mCE" in board and [r.split("|")[column].strip() for r in rows] == ["50.00", "70.00"]


def test_released_imagenet_c_tree_is_read_as_224_crops(tmp_path):
    """``--data ImageNet-C/`` (<corruption>/<severity>/<wnid>/*.JPEG): each corruption read from its folder, the
    images taken as they are (centre crop only, no second resize), and the record says so."""
    from PIL import Image

    from ibnbench import RunOptions, run
    from ibnbench.data import discovery as data
    from ibnbench.data.classes import imagenet_wnids
    from ibnbench.data.decode import decode_file
    from ibnbench.data.geometry import Geometry
    from ibnbench.data.loader import CropDataset

    wnid = imagenet_wnids()[5]
    gen = np.random.default_rng(0)
    for name, severity in (("contrast", 1), ("contrast", 2), ("fog", 5)):
        folder = tmp_path / "ImageNet-C" / name / str(severity) / wnid
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(gen.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"v{i}.JPEG", quality=85)
    root = tmp_path / "ImageNet-C"
    assert is_released_tree(root) and not is_released_tree(root / "contrast" / "1")
    record = run(["resnet18"], root, suite="imagenet-c", weights=["random"], output=tmp_path / "r.json",
                 options=RunOptions(device="cpu", workers=0, batch_size=2, progress=False))
    assert record.dataset["layout"] == "imagenet-c-released" and record.dataset["already_cropped"] is True
    assert sorted(r["condition"] for r in record.results) == ["contrast-1", "contrast-2", "fog-5"]
    not_run = {c["id"] for c in record.conditions if c.get("not_run")}
    assert "origin" in not_run and "gaussian_noise-1" in not_run and "contrast-1" not in not_run
    assert record.per_image["files"] == [f"{wnid}/v0.JPEG", f"{wnid}/v1.JPEG"]
    dataset = data.ValDataset(root / "fog" / "5", "imagefolder", (f"{wnid}/v0.JPEG",), torch.tensor([5]), (0,),
                              cropped=True)
    crop = CropDataset(dataset, [Geometry()])[0].crops[Geometry().key]
    assert torch.equal(crop, decode_file(root / "fog" / "5" / wnid / "v0.JPEG"))  # the file itself, no resize

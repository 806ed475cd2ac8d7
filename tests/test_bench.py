"""Speed tooling on CPU: fan-out vs baseline decode counts, pipeline stages, the fake val generator."""
from __future__ import annotations

import math

from helpers.images import make_folder, write_image

from ibnbench.data import decode as data
from ibnbench.data.classes import imagenet_wnids
from ibnbench.data.discovery import open_dataset
from ibnbench.tools import bench
from ibnbench.tools.fake_val import make_fake_val


def test_compare_baseline_counts_decodes_and_agrees(tmp_path):
    root = make_folder(tmp_path / "val", {imagenet_wnids()[3]: [1, 2, 3], imagenet_wnids()[7]: [4, 5]})
    out = bench.compare_baseline(["resnet18", "resnet18_ibn_b"], root, conditions=["origin", "rgb+50"],
                                 workers=0, batch_size=4, device="cpu", progress=False)
    assert out["fanout"]["decodes"] == 5 and out["baseline"]["decodes"] == 5 * 4  # 2 models x 2 conditions
    assert out["n_images"] == 5
    fanout, baseline = out["fanout"]["seconds"], out["baseline"]["seconds"]
    assert all(math.isfinite(s) and s > 0 for s in (fanout, baseline))
    assert out["speedup"] == round(baseline / fanout, 2)  # the ratio of the two timings it reports
    # both modes score the same 4 (model, condition) pairs on all 5 images, identically
    rows = out["fanout"]["results"]
    assert out["identical_counts"] and rows == out["baseline"]["results"]
    assert sorted((r["model"], r["condition"]) for r in rows) == \
        [(m, c) for m in ("resnet18", "resnet18_ibn_b") for c in ("origin", "rgb+50")]
    assert {r["n_images"] for r in rows} == {5}


def test_pipeline_times_every_stage(tmp_path):
    root = make_folder(tmp_path / "val", {imagenet_wnids()[3]: [1, 2, 3]})
    out = bench.pipeline(["resnet18"], root, conditions=["origin", "std*1.5"], batch_size=2, device="cpu",
                         cache=str(tmp_path / "cache"))
    stages = [row["stage"] for row in out["stages"]]
    assert stages[:4] == ["decode (1 CPU process)", "resize + crop (1 CPU process)", "loader, decoding (0 workers)",
                          f"loader, from the crop cache ({tmp_path / 'cache'})"]
    assert len(list((tmp_path / "cache").glob("*.filled"))) == 1
    assert "condition std*1.5 (photometric)" in stages and "forward resnet18" in stages
    assert stages[-1] == "whole fan-out evaluation (0 workers)" and out["pairs"] == 2  # 1 model x 2 conditions
    assert len(stages) == len(set(stages)) == 8  # 4 above, 2 conditions, 1 forward, the whole evaluation
    assert out["n_images"] == 3 and out["batch_size"] == 2 and out["device"] == "cpu"
    for row in out["stages"]:  # every stage took time, and its rate is the sample over that time
        assert math.isfinite(row["seconds"]) and row["seconds"] >= 0  # rounded to 0.1 ms: a fast stage shows 0
        assert row["images_per_s"] is not None and math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0
        assert math.isclose(out["n_images"] / row["images_per_s"], row["seconds"], rel_tol=0.02, abs_tol=1e-3)


def test_fake_val_is_a_valid_labelled_imagefolder(tmp_path):
    root = make_fake_val(6, tmp_path / "fake", workers=1, progress=False)
    dataset = open_dataset(root)
    assert len(dataset) == 6 and dataset.labels.tolist() == [0, 1, 2, 3, 4, 5]
    image = data.decode_file(dataset.path(0))
    assert image.shape[0] == 3 and min(image.shape[1:]) >= 281 and float(image.float().std()) > 20


def test_nvjpeg_stage_sends_nvjpeg_only_what_the_engine_sends_it(tmp_path, monkeypatch):
    """The GPU decode stage of --pipeline, run with torchvision's CPU decoder standing in for nvJPEG: the greyscale
    and CMYK files, which the engine decodes on the CPU (nvJPEG would raise on CMYK), are left out."""
    import torch
    from torchvision import io

    root = make_folder(tmp_path / "val", {imagenet_wnids()[3]: [1, 2, 3, 4, 5]})
    write_image(root / imagenet_wnids()[3] / "grey.JPEG", mode="L")
    write_image(root / imagenet_wnids()[3] / "cmyk.JPEG", mode="CMYK")
    seen = []

    def stand_in(batch, mode, device):
        assert all(data.nvjpeg_can_decode(d) for d in batch)
        seen.append(len(batch))
        return io.decode_jpeg(batch, mode=mode)

    monkeypatch.setattr(data, "decode_jpeg", stand_in)
    timed = []
    real_timed = bench._timed
    monkeypatch.setattr(bench, "_timed", lambda fn, device, repeat=1: timed.append(real_timed(fn, device, repeat))
                        or timed[-1])
    seconds = bench._nvjpeg_seconds(sorted(root.rglob("*.JPEG")), 2, torch.device("cpu"))
    assert seen == [2, 2, 2, 1]  # one warm-up batch, then the 5 RGB files in batches of 2
    # the time of the 5 files nvJPEG decodes, scaled to all 7 (the other 2 go to CPU workers at about that rate)
    assert len(timed) == 1 and math.isfinite(timed[0]) and timed[0] > 0
    assert seconds == timed[0] * 7 / 5


def test_corruptions_table_has_every_op_side_by_side_with_the_reference(tmp_path, monkeypatch):
    """A tiny --corruptions run with a stand-in reference that records what it is given: a row per op and
    severity, ms per image each side, ratio = reference / ours, the geometric mean of the ratios; the reference
    corrupts each HxWx3 uint8 crop once per repeat at the row's severity."""
    import time

    import numpy as np
    import pytest

    from ibnbench.conditions.corruptions import COMMON, EXTRA
    from ibnbench.conditions.frost import frost_dir

    seen = []

    def stand_in(image, severity, corruption_name):
        seen.append((corruption_name, severity, image.shape, image.dtype))
        time.sleep(0.001 * severity)
        return image

    monkeypatch.setattr(bench, "load_reference", lambda spec: stand_in)
    names = [n for n in COMMON + EXTRA if n != "glass_blur" and (n != "frost" or frost_dir() is not None)]
    root = make_folder(tmp_path / "val", {imagenet_wnids()[3]: [1, 2]})
    out = bench.corruptions(root, limit=2, batch_size=3, device="cpu", conditions=names, severities=(1, 4),
                            repeat=2, threads=1)
    assert [(r["op"], r["severity"]) for r in out["rows"]] == [(n, s) for n in names for s in (1, 4)]
    for row in out["rows"]:
        assert row["ours_ms"] > 0 and row["reference_ms"] >= row["severity"]  # it slept 1 ms per severity
        assert row["ratio"] == row["reference_ms"] / row["ours_ms"]
    assert sorted(seen) == sorted((n, s, (224, 224, 3), np.uint8) for n in names for s in (1, 4) for _ in range(4))
    assert out["geometric_mean"] == pytest.approx(math.exp(np.mean([math.log(r["ratio"]) for r in out["rows"]])))
    assert (out["n_images"], out["batch_size"], out["repeat"], out["threads"]) == (2, 3, 2, 1)
    table = bench.corruption_table(out).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["op", "ratio, severity 1", "ratio, severity 4"] and \
        len(table) == 2 + len(names) + 2
    assert table[-1].endswith(f"{out['geometric_mean']:.2f}x")


def test_severity_list_reads_single_ranges_lists_and_all():
    import argparse

    import pytest

    from ibnbench.cli.evaluate import severity_list

    assert severity_list("3") == (3,) and severity_list("all") == severity_list("1-5") == (1, 2, 3, 4, 5)
    assert severity_list("5,1-2") == (1, 2, 5)
    for bad in ("0", "6", "4-2", "x", "1-", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            severity_list(bad)

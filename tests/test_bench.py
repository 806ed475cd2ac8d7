"""Speed tooling on CPU: fan-out vs baseline decode counts, pipeline stages, the fake val generator."""
from __future__ import annotations

from ibnbench import bench, data
from images import make_folder, write_image


def test_compare_baseline_counts_decodes_and_agrees(tmp_path):
    root = make_folder(tmp_path / "val", {data.imagenet_wnids()[3]: [1, 2, 3], data.imagenet_wnids()[7]: [4, 5]})
    out = bench.compare_baseline(["resnet18", "resnet18_ibn_b"], root, conditions=["origin", "rgb+50"],
                                 workers=0, batch_size=4, device="cpu", progress=False)
    assert out["fanout"]["decodes"] == 5 and out["baseline"]["decodes"] == 5 * 4  # 2 models x 2 conditions
    assert out["identical_counts"] and out["n_images"] == 5 and out["speedup"] > 0


def test_pipeline_times_every_stage(tmp_path):
    root = make_folder(tmp_path / "val", {data.imagenet_wnids()[3]: [1, 2, 3]})
    out = bench.pipeline(["resnet18"], root, conditions=["origin", "std*1.5"], batch_size=2, device="cpu",
                         cache=str(tmp_path / "cache"))
    stages = [row["stage"] for row in out["stages"]]
    assert stages[:4] == ["decode (1 CPU process)", "resize + crop (1 CPU process)", "loader, decoding (0 workers)",
                          f"loader, from the crop cache ({tmp_path / 'cache'})"]
    assert len(list((tmp_path / "cache").glob("*.filled"))) == 1
    assert "condition std*1.5 (photometric)" in stages and "forward resnet18" in stages
    assert stages[-1].startswith("whole fan-out evaluation") and out["pairs"] == 2
    assert all(row["seconds"] >= 0 for row in out["stages"])


def test_fake_val_is_a_valid_labelled_imagefolder(tmp_path):
    root = bench.make_fake_val(6, tmp_path / "fake", workers=1, progress=False)
    dataset = data.open_dataset(root)
    assert len(dataset) == 6 and dataset.labels.tolist() == [0, 1, 2, 3, 4, 5]
    image = data.decode_file(dataset.path(0))
    assert image.shape[0] == 3 and min(image.shape[1:]) >= 281 and float(image.float().std()) > 20


def test_nvjpeg_stage_sends_nvjpeg_only_what_the_engine_sends_it(tmp_path, monkeypatch):
    """The GPU decode stage of --pipeline, run with torchvision's CPU decoder standing in for nvJPEG: the greyscale
    and CMYK files, which the engine decodes on the CPU (nvJPEG would raise on CMYK), are left out."""
    import torch
    from torchvision import io

    root = make_folder(tmp_path / "val", {data.imagenet_wnids()[3]: [1, 2, 3, 4, 5]})
    write_image(root / data.imagenet_wnids()[3] / "grey.JPEG", mode="L")
    write_image(root / data.imagenet_wnids()[3] / "cmyk.JPEG", mode="CMYK")
    seen = []

    def stand_in(batch, mode, device):
        assert all(data.nvjpeg_can_decode(d) for d in batch)
        seen.append(len(batch))
        return io.decode_jpeg(batch, mode=mode)

    monkeypatch.setattr(data, "decode_jpeg", stand_in)
    assert bench._nvjpeg_seconds(sorted(root.rglob("*.JPEG")), 2, torch.device("cpu")) > 0
    assert seen == [2, 2, 2, 1]  # one warm-up batch, then the 5 RGB files in batches of 2

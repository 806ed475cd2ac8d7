"""The released ImageNet-P files: synthetic H.264 videos written here with PyAV in the released layout
(``<perturbation>/<wnid>/*.mp4``, the noise difficulty 2 in ``gaussian_noise_2``), read back against the frames
encoded and against OpenCV's decoder (the one ``ImageNet-P/test.py`` reads them with), labelled by their wnid
folders; a corrupt video named in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ibnbench.data.classes import wnid_index
from ibnbench.data.geometry import Geometry
from ibnbench.data.imagenet_p_release import (
    RELEASED_P_LAYOUT,
    folder_names,
    is_released_p_tree,
    open_videos,
    read_video,
    released_folder,
)
from ibnbench.data.loader import make_loader
from ibnbench.errors import BadImageError, MissingFileError, UsageError

av = pytest.importorskip("av", reason="PyAV (the `video` extra, in the `test` extra) is not installed")

WNIDS = ("n01440764", "n01443537")
FOLDERS = ("gaussian_noise", "gaussian_noise_2", "rotate")
FRAMES, SIDE = 5, 32
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"  # the released files are H.264 (libx264)


def smooth_frames(seed: int, frames: int = FRAMES, side: int = SIDE) -> np.ndarray:
    """``[frames, side, side, 3]`` uint8: a smooth random picture (bilinear upsampling of 4x4 noise) drifting from
    frame to frame, which a video codec keeps within a few grey levels."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(30, 225, size=(frames, 3, 4, 4)))
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=True)
    return fine.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_video(path: Path, frames: np.ndarray) -> None:
    """``frames`` ``[T, H, W, 3]`` uint8 RGB as an MP4 of yuv420p frames (libx264 as the released files; CRF 0, so
    the loss is the RGB -> YUV 4:2:0 -> RGB round trip's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=1)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"} if CODEC == "libx264" else {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture
def released_p(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A released ImageNet-P tree (3 folders x 2 wnids x 2 videos of 5 frames) and the frames encoded, by path."""
    root, encoded = tmp_path / "ImageNet-P", {}
    for f, folder in enumerate(FOLDERS):
        for w, wnid in enumerate(WNIDS):
            for v in range(2):
                path = root / folder / wnid / f"ILSVRC2012_val_{w * 2 + v + 1:08d}.mp4"
                encoded[str(path)] = smooth_frames(100 * f + 10 * w + v)
                write_video(path, encoded[str(path)])
    return root, encoded


def opencv_frames(path: Path) -> np.ndarray:
    """The frames as test.py reads them: ``cv2.VideoCapture``, BGR to RGB."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def test_reader_returns_the_frames_encoded_and_the_wnid_labels(released_p):
    root, encoded = released_p
    videos = open_videos(root, "gaussian_noise_2", FRAMES)
    assert videos.layout == RELEASED_P_LAYOUT and videos.cropped and len(videos) == 4
    assert [f.split("/")[0] for f in videos.files] == [WNIDS[0]] * 2 + [WNIDS[1]] * 2
    assert videos.labels.tolist() == [wnid_index()[WNIDS[0]]] * 2 + [wnid_index()[WNIDS[1]]] * 2
    for i in range(len(videos)):
        frames = read_video(videos.path(i))
        assert frames.dtype == torch.uint8 and frames.shape == (FRAMES, 3, SIDE, SIDE)
        ours = frames.permute(0, 2, 3, 1).numpy().astype(np.int64)
        sent = encoded[str(videos.path(i))].astype(np.int64)
        error = np.abs(ours - sent)
        assert error.mean() < 4 and error.max() <= 24  # 4:2:0 chroma subsampling (measured: mean 3, max 20)
        to_each = np.abs(ours[:, None] - sent[None]).mean(axis=(2, 3, 4))  # [frame read, frame sent]
        assert (to_each.argmin(axis=1) == np.arange(FRAMES)).all()  # each frame is its own, in order
        assert np.abs(ours - opencv_frames(videos.path(i))).max() <= 1  # test.py's decoder, to rounding


def test_folders_and_tree_detection(released_p):
    root, _ = released_p
    assert released_folder("gaussian_noise", 1, True) == "gaussian_noise"
    assert released_folder("gaussian_noise", 3, True) == "gaussian_noise_3"
    assert released_folder("rotate", 2, False) == "rotate"
    with pytest.raises(UsageError, match="difficulty must be 1, 2 or 3"):
        released_folder("rotate", 4, False)
    known = folder_names(["gaussian_noise", "rotate"], [True, False])
    assert is_released_p_tree(root, known)
    assert not is_released_p_tree(root, folder_names(["rotate"], [False]))  # gaussian_noise* is unknown to it
    assert not is_released_p_tree(root / "rotate", known)  # wnid folders, not perturbations
    assert open_videos(root, "rotate", FRAMES, limit=3).files[-1].startswith(WNIDS[1])
    with pytest.raises(MissingFileError, match="shot_noise"):
        open_videos(root, "shot_noise", FRAMES)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50, "truncated"])
def test_a_bad_video_is_one_error_naming_it(released_p, content):
    root, _ = released_p
    path = root / "rotate" / WNIDS[0] / "ILSVRC2012_val_00000001.mp4"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3] if content == "truncated" else content)
    with pytest.raises(BadImageError) as caught:
        frames = read_video(path)
        assert len(frames) == FRAMES  # a truncated video that still decodes must have lost frames
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_loader_cuts_every_frame_and_applies_the_bad_image_policy(released_p):
    root, _ = released_p
    bad = root / "rotate" / WNIDS[1] / "ILSVRC2012_val_00000003.mp4"
    bad.write_bytes(b"\0" * 100)
    videos = open_videos(root, "rotate", FRAMES)
    geometry = Geometry(resize=32, crop=24)
    batches = list(make_loader(videos, [geometry], batch_size=3, workers=0, on_bad_image="skip", decoder="cpu"))
    crops = torch.cat([b["crops"][geometry.key] for b in batches])
    assert crops.shape == (4, FRAMES, 3, 24, 24)
    ok = torch.cat([b["ok"] for b in batches])
    assert ok.tolist() == [True, True, False, True]
    assert [path for b in batches for path, _ in b["bad"]] == [f"{WNIDS[1]}/{bad.name}"]
    for i in (0, 1, 3):  # the centre 24x24 of each decoded frame, not resized
        assert torch.equal(crops[i], read_video(videos.path(i))[..., 4:28, 4:28])
    with pytest.raises(BadImageError, match=bad.name):
        list(make_loader(videos, [geometry], batch_size=3, workers=0, decoder="cpu"))
    with pytest.raises(BadImageError, match="3 frames, expected 5"):
        write_video(bad, smooth_frames(0, frames=3))
        read_video(bad, FRAMES)


# ---------------------------------------------------------------------------------------------------------------
# the route: `run --suite imagenet-p --data <released tree>`, the same FP as computed here on the decoded frames

TINY = "helpers.tiny:tiny_classifier"
P_FRAMES, P_SIDE = 31, 64


@pytest.fixture
def released_31(tmp_path) -> Path:
    """A released tree of 31-frame videos (ImageNet-P's length) of 64x64 frames: gaussian_noise_2 and rotate."""
    root = tmp_path / "ImageNet-P"
    for f, folder in enumerate(("gaussian_noise_2", "rotate")):
        for w, wnid in enumerate(WNIDS):
            for v in range(2):
                write_video(root / folder / wnid / f"ILSVRC2012_val_{w * 2 + v + 1:08d}.mp4",
                            smooth_frames(10 * f + 2 * w + v, P_FRAMES, P_SIDE))
    return root


def run_released(root: Path, output: Path, difficulty: int = 2):
    import ibnbench

    options = ibnbench.RunOptions(difficulty=difficulty, workers=0, device="cpu", batch_size=3, progress=False)
    return ibnbench.run([TINY], root, suite="imagenet-p", conditions=["gaussian_noise", "rotate"], options=options,
                        preprocessing=["resize=64,crop=64"], weights=["random"], output=output)


def clean_val(val: Path) -> Path:
    """A val folder of 4 smooth pictures named as the released tree's videos (the same wnids and file stems)."""
    from PIL import Image

    for w, wnid in enumerate(WNIDS):
        for v in range(2):
            (val / wnid).mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(smooth_frames(w * 2 + v, 1, P_SIDE)[0])
            image.save(val / wnid / f"ILSVRC2012_val_{w * 2 + v + 1:08d}.JPEG")
    return val


def test_released_route_fp_equals_the_metrics_on_predictions_made_here(released_31, tmp_path):
    from helpers.tiny import tiny_classifier

    from ibnbench.results import perturbation_metrics as M
    from ibnbench.results.imagenet_p import scores
    from ibnbench.results.predictions import for_record

    record = run_released(released_31, tmp_path / "released.json")
    entries = {c["id"]: c for c in record.conditions}
    assert record.dataset["layout"] == RELEASED_P_LAYOUT and record.dataset["n_images"] == 4
    for name in ("gaussian_noise", "rotate"):
        assert entries[name]["difficulty"] == 2
    assert record.generator["imagenet-p"]["source"] == "released-files"
    assert "released ImageNet-P videos" in record.generator["imagenet-p"]["reference"]
    assert entries["gaussian_noise"]["released"].endswith("gaussian_noise_2")
    model = tiny_classifier().eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # ImageNet's, as test.py
    stored, found = for_record(record), scores([record])[0][TINY]
    for name, folder in (("gaussian_noise", "gaussian_noise_2"), ("rotate", "rotate")):
        videos = sorted((released_31 / folder).rglob("*.mp4"))
        with torch.no_grad():
            top5 = np.stack([model(((read_video(v).float() / 255 - mean[:, None, None]) / std[:, None, None]))
                             .topk(5, dim=1).indices.numpy() for v in videos])
        assert np.array_equal(stored.sequence(TINY, name), top5)
        expected = M.stability(top5, name, difficulty=2)
        assert found[name].fp == expected.fp and found[name].t5d == expected.t5d
        assert record.result(TINY, name)["top1_err"] == 100 * np.mean(
            top5[:, 0, 0] != np.array([wnid_index()[v.parent.name] for v in videos]))


def test_released_vs_on_the_fly_table_and_its_refusals(released_31, tmp_path):
    from ibnbench.errors import RecordError
    from ibnbench.results.imagenet_p import scores
    from ibnbench.results.imagenet_p_sources import released_vs_on_the_fly

    val = clean_val(tmp_path / "val")
    released = run_released(released_31, tmp_path / "released.json")
    fly = run_released(val, tmp_path / "fly.json")
    table = released_vs_on_the_fly(fly, released)
    assert list(table.index) == ["gaussian_noise", "rotate"]
    for name in table.index:
        assert table.loc[name, "FP released"] == pytest.approx(100 * scores([released])[0][TINY][name].fp)
        assert table.loc[name, "FP on the fly"] == pytest.approx(100 * scores([fly])[0][TINY][name].fp)
    with pytest.raises(RecordError, match="difficulties differ"):
        released_vs_on_the_fly(run_released(val, tmp_path / "fly1.json", difficulty=1), released)
    with pytest.raises(RecordError, match="on-the-fly"):
        released_vs_on_the_fly(released, released)
    from ibnbench.results.loading import require_mergeable  # a report never mixes the two sources silently
    with pytest.raises(RecordError, match="generators differ: imagenet-p"):
        require_mergeable([fly, released])


def test_report_released_vs_on_the_fly_route_and_its_refusals(released_31, tmp_path, capsys):
    """`report FLY RELEASED --released-vs-on-the-fly` (either order, no --allow-generator-mismatch): FP per
    perturbation from both sources equal test.py's flip_prob (transcribed) on each sidecar's frames; wrong records
    and options that do not apply are refused in one line; a plain report of the two is refused as before."""
    from helpers.imagenet_p_reference import flip_prob

    from ibnbench.cli import main
    from ibnbench.results.predictions import for_record
    from ibnbench.results.record import read_record

    val = clean_val(tmp_path / "val")
    released, fly = tmp_path / "released.json", tmp_path / "fly.json"
    run_released(released_31, released)
    run_released(val, fly)
    capsys.readouterr()
    fp = {path: {name: 100 * flip_prob(for_record(read_record(path)).sequence(TINY, name)[..., 0], 2,
                                       "noise" in name) for name in ("gaussian_noise", "rotate")}
          for path in (fly, released)}
    for order in ((fly, released), (released, fly)):
        assert main(["report", *map(str, order), "--released-vs-on-the-fly"]) == 0
        text = capsys.readouterr().out
        assert f"### ImageNet-P FP of {TINY} at difficulty 2: on the fly vs the released videos" in text
        rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                for line in text.splitlines() if line.startswith("| ") and "perturbation" not in line}
        for name in ("gaussian_noise", "rotate"):
            assert rows[name] == [f"{fp[fly][name]:.2f}", f"{fp[released][name]:.2f}",
                                  f"{fp[fly][name] - fp[released][name]:.2f}"]
    fly_1 = tmp_path / "fly1.json"
    run_released(val, fly_1, difficulty=1)
    capsys.readouterr()
    refused = {(str(fly),): "takes two records, one made on the fly and one of the released videos (got 1)",
               (str(fly), str(fly_1)): "both records hold frames made on the fly",
               (str(fly_1), str(released)): "difficulties differ",
               (str(fly), str(released), "--ci"): "--ci does not apply to --released-vs-on-the-fly",
               (str(fly), str(released), "--model", "alexnet"): "has no model 'alexnet'"}
    for args, message in refused.items():
        assert main(["report", *args, "--released-vs-on-the-fly"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert main(["report", str(fly), str(released), "--model", TINY]) == 2
    assert "--model applies only with --released-vs-on-the-fly" in capsys.readouterr().err
    assert main(["report", str(fly), str(released)]) == 2
    assert "generators differ: imagenet-p" in capsys.readouterr().err

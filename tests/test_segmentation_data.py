"""Segmentation datasets made here in each released layout (tiny PNGs and JPEGs): discovered, paired and decoded to
train ids by label tables written here from the sources (cityscapesScripts' labels.py, RobustNet's datasets/)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image, ImageOps

from ibnbench.data.segmentation import load_pair, open_segmentation
from ibnbench.data.segmentation_loader import make_segmentation_loader
from ibnbench.data.segmentation_protocols import robustnet_mapillary
from ibnbench.errors import BadImageError, BadLabelError, DatasetError, UsageError

# cityscapesScripts helpers/labels.py, id -> trainId for the 19 evaluated classes; every other id 0..33 is 255
CITYSCAPES_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# the same classes' colours (labels.py), as RobustNet's GTAV loader reads colour labels
CITYSCAPES_COLOUR = {(128, 64, 128): 0, (244, 35, 232): 1, (70, 70, 70): 2, (102, 102, 156): 3, (190, 153, 153): 4,
                     (153, 153, 153): 5, (250, 170, 30): 6, (220, 220, 0): 7, (107, 142, 35): 8, (152, 251, 152): 9,
                     (70, 130, 180): 10, (220, 20, 60): 11, (255, 0, 0): 12, (0, 0, 142): 13, (0, 0, 70): 14,
                     (0, 60, 100): 15, (0, 80, 100): 16, (0, 0, 230): 17, (119, 11, 32): 18,
                     (0, 0, 0): 255, (111, 74, 0): 255, (81, 0, 81): 255, (250, 170, 160): 255}
# RobustNet datasets/mapillary.py gen_id_to_ignore: Vistas v1.2 id -> train id; the other ids of 0..65 are 255
MAPILLARY_TRAIN = {13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7, 30: 8, 29: 9,
                   27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18}
# RobustNet datasets/synthia.py trainid_to_trainid: SYNTHIA class id (0..22) -> train id
SYNTHIA_TRAIN = {0: 255, 1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18, 12: 17, 13: 255,
                 14: 255, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3, 22: 255}

H, W = 6, 8


def lookup(table: dict, raw: np.ndarray, default: int = 255) -> np.ndarray:
    return np.vectorize(lambda v: table.get(v, default))(raw).astype(np.uint8)


def write_image(path: Path, seed: int, size=(H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return pixels


def write_ids(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), "P" if palette else "L")
    if palette:
        image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    image.save(path)


def random_ids(seed: int, high: int, size=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size)


def check(dataset, expected: dict[str, np.ndarray]) -> None:
    """Every pair found, in sorted order, each image beside its own label map, decoded to ``expected`` train ids."""
    assert list(dataset.images) == sorted(expected)
    for index, name in enumerate(dataset.images):
        image, label = load_pair(dataset, index)
        assert image.dtype == torch.uint8 and image.shape == (3, *expected[name].shape)
        assert label.dtype == torch.uint8 and np.array_equal(label.numpy(), expected[name]), name


@pytest.mark.parametrize("nested", [False, True], ids=["release", "robustnet"])
def test_cityscapes_label_ids_become_train_ids(tmp_path, nested):
    images = tmp_path / ("leftImg8bit_trainvaltest/leftImg8bit" if nested else "leftImg8bit")
    labels = tmp_path / ("gtFine_trainvaltest/gtFine" if nested else "gtFine")
    expected = {}
    for seed, (city, frame) in enumerate([("frankfurt", "000000_000294"), ("lindau", "000001_000019"),
                                          ("munster", "000002_000019")]):
        ids = random_ids(seed, 34)
        write_image(images / "val" / city / f"{city}_{frame}_leftImg8bit.png", seed)
        write_ids(labels / "val" / city / f"{city}_{frame}_gtFine_labelIds.png", ids)
        write_ids(labels / "val" / city / f"{city}_{frame}_gtFine_labelTrainIds.png", ids)  # beside, not read
        expected[str((images / "val" / city / f"{city}_{frame}_leftImg8bit.png").relative_to(tmp_path))] = \
            lookup(CITYSCAPES_TRAIN, ids)
    write_image(images / "train/aachen/aachen_000000_000019_leftImg8bit.png", 9)  # another split: left out
    dataset = open_segmentation("cityscapes", tmp_path)
    check(dataset, expected)
    assert dataset.layout == "cityscapes" and dataset.labels[0].endswith("_gtFine_labelIds.png")
    assert open_segmentation("cityscapes", tmp_path, limit=2).images == dataset.images[:2]


def test_acdc_per_condition(tmp_path):
    expected = {}
    for seed, condition in enumerate(["fog", "night", "rain", "snow"]):
        stem = f"GOPR0{seed}75_frame_000{seed}41"
        image = tmp_path / f"rgb_anon/{condition}/val/GOPR0{seed}75/{stem}_rgb_anon.png"
        write_image(image, seed)
        ids = random_ids(seed, 20)
        ids[ids == 19] = 255
        write_ids(tmp_path / f"gt/{condition}/val/GOPR0{seed}75/{stem}_gt_labelTrainIds.png", ids)
        write_ids(tmp_path / f"gt/{condition}/val/GOPR0{seed}75/{stem}_gt_labelIds.png", random_ids(seed, 34))
        expected[str(image.relative_to(tmp_path))] = ids.astype(np.uint8)
    check(open_segmentation("acdc", tmp_path), expected)
    night = open_segmentation("acdc", tmp_path, condition="night")
    assert len(night) == 1 and night.images[0].startswith("rgb_anon/night/val/") and night.condition == "night"
    with pytest.raises(UsageError, match="'dusk' is not one of fog, night, rain, snow"):
        open_segmentation("acdc", tmp_path, condition="dusk")


@pytest.mark.parametrize("images,labels,suffix", [("images/10k/val", "labels/sem_seg/masks/val", ".png"),
                                                  ("seg/images/val", "seg/labels/val", "_train_id.png"),
                                                  ("images/val", "labels/val", "_train_id.png")],
                         ids=["release-10k", "release-2018", "robustnet"])
def test_bdd100k_train_id_masks(tmp_path, images, labels, suffix):
    expected = {}
    for seed, name in enumerate(["7d2f7975-e0c1c5a7", "b1c66a42-6f7d68ca"]):
        ids = random_ids(seed, 20)
        ids[ids == 19] = 255
        write_image(tmp_path / images / f"{name}.jpg", seed)
        write_ids(tmp_path / labels / f"{name}{suffix}", ids)
        expected[f"{images}/{name}.jpg"] = ids.astype(np.uint8)
    check(open_segmentation("bdd100k", tmp_path), expected)


@pytest.mark.parametrize("labels", ["validation/labels", "validation/v1.2/labels"])
def test_mapillary_66_classes_map_to_19(tmp_path, labels):
    ids = np.arange(66).reshape(6, 11)  # every class once
    write_image(tmp_path / "validation/images/--Ox6dBvbh8Bp2mHxaAhnA.jpg", 0, size=(6, 11))
    write_ids(tmp_path / labels / "--Ox6dBvbh8Bp2mHxaAhnA.png", ids, palette=True)
    check(open_segmentation("mapillary", tmp_path), {"validation/images/--Ox6dBvbh8Bp2mHxaAhnA.jpg":
                                                     lookup(MAPILLARY_TRAIN, ids)})


def test_gta5_release_split_by_split_mat_with_palette_ids(tmp_path):
    expected = {}
    for number in range(1, 6):
        ids = random_ids(number, 34)
        write_image(tmp_path / f"images/{number:05d}.png", number)
        write_ids(tmp_path / f"labels/{number:05d}.png", ids, palette=True)
        expected[f"images/{number:05d}.png"] = lookup(CITYSCAPES_TRAIN, ids)
    scipy.io.savemat(tmp_path / "split.mat", {"trainIds": np.array([[1], [3]]), "valIds": np.array([[2], [5]]),
                                              "testIds": np.array([[4]])})
    check(open_segmentation("gta5", tmp_path), {k: expected[k] for k in ("images/00002.png", "images/00005.png")})
    assert len(open_segmentation("gta5", tmp_path, split="all")) == 5
    listed = tmp_path / "gtav_split_test.txt"
    listed.write_text("00004.png\n00001.png\n")
    assert open_segmentation("gta5", tmp_path, split="test", split_file=listed).images == ("images/00001.png",
                                                                                           "images/00004.png")
    (tmp_path / "split.mat").unlink()
    with pytest.raises(DatasetError, match="needs a split file"):
        open_segmentation("gta5", tmp_path)


def test_gta5_robustnet_layout_with_colour_labels(tmp_path):
    colours = list(CITYSCAPES_COLOUR)
    choice = random_ids(0, len(colours))
    rgb = np.array([[colours[c] for c in row] for row in choice], dtype=np.uint8)
    write_image(tmp_path / "images/valid/folder/00022.png", 0)
    (tmp_path / "labels/valid/folder").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "labels/valid/folder/00022.png")
    expected = np.array([[CITYSCAPES_COLOUR[colours[c]] for c in row] for row in choice], dtype=np.uint8)
    dataset = open_segmentation("gta5", tmp_path)
    assert dataset.layout == "robustnet"
    check(dataset, {"images/valid/folder/00022.png": expected})
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "labels/valid/folder/00022.png")
    with pytest.raises(BadLabelError, match=r"00022.png: holds 1 label value.*rgb\(1, 2, 3\)"):
        load_pair(dataset, 0)


def write_synthia_label(path: Path, classes: np.ndarray) -> None:
    """A 16-bit 3-channel PNG: the class in the first channel, an instance id in the second (as released)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    planes = np.stack([classes, np.full_like(classes, 1234), np.zeros_like(classes)], axis=-1).astype(np.uint16)
    assert cv2.imwrite(str(path), planes[:, :, ::-1])  # OpenCV writes BGR


@pytest.mark.parametrize("robustnet", [False, True])
def test_synthia_first_channel_class_ids(tmp_path, robustnet):
    expected = {}
    folder = "val/" if robustnet else ""
    for seed, name in enumerate(["0000000.png", "0000003.png", "0000007.png"]):
        classes = random_ids(seed, 23)
        write_image(tmp_path / f"RGB/{folder}{name}", seed)
        write_synthia_label(tmp_path / f"GT/LABELS/{folder}{name}", classes)
        expected[f"RGB/{folder}{name}"] = lookup(SYNTHIA_TRAIN, classes)
    split_file = None
    if not robustnet:
        split_file = tmp_path / "synthia_split_val.txt"
        split_file.write_text("0000000.png\n0000003.png\n0000007.png\n")
    check(open_segmentation("synthia", tmp_path, split_file=split_file), expected)


def cityscapes_pair(root: Path, ids: np.ndarray, image_size=(H, W)) -> None:
    write_image(root / "leftImg8bit/val/bonn/bonn_000000_000019_leftImg8bit.png", 0, size=image_size)
    write_ids(root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png", ids)


def test_a_label_map_of_another_size_names_both_files_or_is_skipped(tmp_path):
    cityscapes_pair(tmp_path, random_ids(0, 34, size=(H + 1, W)))
    write_image(tmp_path / "leftImg8bit/val/bonn/bonn_000001_000019_leftImg8bit.png", 1)
    write_ids(tmp_path / "gtFine/val/bonn/bonn_000001_000019_gtFine_labelIds.png", random_ids(1, 34))
    dataset = open_segmentation("cityscapes", tmp_path)
    with pytest.raises(BadLabelError) as caught:
        load_pair(dataset, 0)
    message = str(caught.value)
    assert str(dataset.label_path(0)) in message and str(dataset.image_path(0)) in message
    assert f"is {W}x{H + 1} but its image" in message and f"is {W}x{H} (width x height)" in message
    with pytest.raises(BadLabelError, match="bonn_000000_000019_gtFine_labelIds.png"):
        list(make_segmentation_loader(dataset, workers=0))
    batches = list(make_segmentation_loader(dataset, batch_size=2, workers=0, on_bad_image="skip"))
    assert len(batches) == 1 and batches[0]["ok"].tolist() == [False, True]
    assert batches[0]["bad"] == [(dataset.images[0], message)]
    assert batches[0]["images"][0] is None and batches[0]["labels"][1].shape == (H, W)


def test_unknown_label_values_and_undecodable_files_are_named(tmp_path):
    ids = random_ids(0, 34)
    ids[0, :2] = (34, 200)
    cityscapes_pair(tmp_path, ids)
    dataset = open_segmentation("cityscapes", tmp_path)
    with pytest.raises(BadLabelError, match=r"labelIds.png: holds 2 label value\(s\) that the Cityscapes labelIds "
                                            r"table does not define \(34, 200\)"):
        load_pair(dataset, 0)
    dataset.label_path(0).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(BadLabelError, match="labelIds.png: cannot decode"):
        load_pair(dataset, 0)
    dataset.image_path(0).write_bytes(b"")
    with pytest.raises(BadImageError, match="leftImg8bit.png: empty file"):
        load_pair(dataset, 0)


def test_missing_labels_and_wrong_folders_are_named(tmp_path):
    cityscapes_pair(tmp_path, random_ids(0, 34))
    write_image(tmp_path / "leftImg8bit/val/bonn/bonn_000009_000019_leftImg8bit.png", 1)
    with pytest.raises(DatasetError, match="1 of the 2 images .*/bonn_000009_000019_gtFine_labelIds.png is missing"):
        open_segmentation("cityscapes", tmp_path)
    with pytest.raises(DatasetError, match="is not a Mapillary Vistas folder"):
        open_segmentation("mapillary", tmp_path)
    with pytest.raises(UsageError, match="unknown segmentation dataset 'kitti'"):
        open_segmentation("kitti", tmp_path)


def test_the_fingerprint_follows_the_label_files(tmp_path):
    cityscapes_pair(tmp_path, random_ids(0, 34))
    before = open_segmentation("cityscapes", tmp_path).fingerprint()
    write_ids(tmp_path / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png", random_ids(0, 34, (H * 3, W * 3)))
    after = open_segmentation("cityscapes", tmp_path).fingerprint()
    assert before["n_images"] == after["n_images"] == 1 and before["sha256"] != after["sha256"]
    assert open_segmentation("cityscapes", tmp_path, protocol="robustnet-mapillary").fingerprint()["protocol"] == \
        "robustnet-mapillary"


def robustnet_reference(image: np.ndarray, label: np.ndarray, size: int = 1536) -> tuple[np.ndarray, np.ndarray]:
    """RobustNet's ResizeHeight(1536) + CenterCropPad(1536) (transforms/joint_transforms.py), in PIL as it is."""
    img, mask = Image.fromarray(image), Image.fromarray(label)
    w, h = img.size
    target_w = int(w / h * size)
    img, mask = img.resize((target_w, size), Image.BICUBIC), mask.resize((target_w, size), Image.NEAREST)
    w, h = img.size
    pad_x, pad_y = max(size - w, 0), max(size - h, 0)
    if pad_x or pad_y:
        img = ImageOps.expand(img, border=(pad_x, pad_y, pad_x, pad_y), fill=0)
        mask = ImageOps.expand(mask, border=(pad_x, pad_y, pad_x, pad_y), fill=0)
    x1, y1 = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    box = (x1, y1, x1 + size, y1 + size)
    return np.asarray(img.crop(box)), np.asarray(mask.crop(box))


@pytest.mark.parametrize("shape", [(9, 13), (12, 9), (4, 3)], ids=["landscape", "portrait", "portrait-4:3"])
def test_robustnet_mapillary_protocol_equals_its_pil_transform(shape):
    rng = np.random.default_rng(shape[1])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    label = rng.integers(1, 19, shape, dtype=np.uint8)
    ref_image, ref_label = robustnet_reference(image, label)
    out_image, out_label = robustnet_mapillary(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(label))
    assert out_label.shape == (1536, 1536) and np.array_equal(out_label.numpy(), ref_label)
    difference = np.abs(out_image.permute(1, 2, 0).numpy().astype(int) - ref_image.astype(int))
    assert difference.max() <= 2 and (difference == 0).mean() > 0.98
    if shape[1] * 1536 // shape[0] < 1536:  # portrait: zero columns (label 0, road) on the left
        assert (out_label[:, 0] == 0).all()

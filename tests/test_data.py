"""Dataset discovery, labels, fingerprint, decoding and crops on synthetic images made in tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.images import (
    GPU_MAX_TOLERANCE,
    GPU_MEAN_TOLERANCE,
    WNIDS,
    A,
    B,
    make_flat,
    make_folder,
    val_name,
    write_image,
)
from PIL import Image

from ibnbench.data import decode as data
from ibnbench.data.classes import class_names
from ibnbench.data.discovery import FULL_VAL_SIZE, open_dataset
from ibnbench.data.geometry import Geometry, geometry_key
from ibnbench.data.loader import CropDataset, CropLoader, GpuDecoder, crop_grouped, make_loader
from ibnbench.errors import BadImageError, DatasetError
from ibnbench.zoo.meta import EFFICIENTNET_LITE_PREPROCESSING, Preprocessing


def write_kaggle(path: Path, rows: dict[int, str]) -> Path:
    lines = ["ImageId,PredictionString"] + [f"{val_name(i)[:-5]},{w} 10 20 30 40 {w} 1 2 3 4" for i, w in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ layouts


def test_imagefolder_numbers_classes_by_all_1000_wnids(tmp_path):
    root = make_folder(tmp_path / "val", {B: [3, 1], A: [2]})
    ds = open_dataset(root)
    assert ds.layout == "imagefolder" and ds.root == root
    assert ds.files == (f"{A}/{val_name(2)}", f"{B}/{val_name(1)}", f"{B}/{val_name(3)}")
    assert ds.labels.dtype == torch.long and ds.labels.tolist() == [5, 900, 900]
    assert len(WNIDS) == 1000 and list(WNIDS) == sorted(WNIDS) and WNIDS[0] == "n01440764"
    assert class_names()[0].startswith("tench")


def test_parent_of_val_folder_is_accepted(tmp_path):
    make_folder(tmp_path / "val", {A: [1]})
    assert open_dataset(tmp_path).root == tmp_path / "val"


def test_flat_with_kaggle_solution_in_folder_or_parent(tmp_path):
    root = make_flat(tmp_path / "val", [2, 1])
    write_kaggle(tmp_path / "LOC_val_solution.csv", {1: B, 2: A})
    ds = open_dataset(root)
    assert ds.layout == "flat" and ds.files == (val_name(1), val_name(2)) and ds.labels.tolist() == [900, 5]
    assert ds.labels_file == tmp_path / "LOC_val_solution.csv"
    write_kaggle(root / "LOC_val_solution.csv", {1: A, 2: A})  # the folder's own file wins
    assert open_dataset(root).labels.tolist() == [5, 5]


def test_flat_with_explicit_labels_file_in_both_text_forms(tmp_path):
    root = make_flat(tmp_path / "val", [1, 2])
    two = tmp_path / "val.txt"
    two.write_text(f"{val_name(2)} 900\n\n{val_name(1)} 5\n")
    three = tmp_path / "labels.txt"
    three.write_text(f"{val_name(1)} {A} 5\n{val_name(2)} {B} 900\n")
    assert open_dataset(root, labels=two).labels.tolist() == [5, 900]
    assert open_dataset(root, labels=three).labels.tolist() == [5, 900]


def test_imagefolder_checked_against_a_labels_file(tmp_path):
    root = make_folder(tmp_path / "val", {A: [1], B: [2]})
    good = tmp_path / "labels.txt"
    good.write_text(f"{val_name(1)} {A} 5\n{val_name(2)} {B} 900\n")
    assert open_dataset(root, labels=good).labels.tolist() == [5, 900]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{val_name(1)} 5\n{val_name(2)} 7\n")
    with pytest.raises(DatasetError, match=rf"bad.txt disagrees with the class folders .* {B}/{val_name(2)}: "
                                           r"folder says class 900, labels file says 7"):
        open_dataset(root, labels=bad)


def test_full_val_labels_file_allows_a_subset_folder(tmp_path):
    root = make_flat(tmp_path / "val", [7])
    labels = tmp_path / "all.txt"
    labels.write_text("".join(f"{val_name(i)} {i % 1000}\n" for i in range(1, FULL_VAL_SIZE + 1)))
    ds = open_dataset(root, labels=labels)
    assert ds.labels.tolist() == [7] and ds.fingerprint()["subset"]


def test_limit_keeps_first_images_in_sorted_order(tmp_path):
    root = make_folder(tmp_path / "val", {A: [1, 2], B: [3]})
    ds = open_dataset(root, limit=2)
    assert ds.files == (f"{A}/{val_name(1)}", f"{A}/{val_name(2)}") and ds.labels.tolist() == [5, 5]
    with pytest.raises(DatasetError, match="limit must be a positive"):
        open_dataset(root, limit=0)


# ------------------------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"dataset folder {tmp_path / 'nope'} does not exist"):
        open_dataset(tmp_path / "nope")


def test_empty_folder_and_folder_without_images(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset folder {tmp_path} is empty"):
        open_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / A).mkdir()
    with pytest.raises(DatasetError, match=rf"no images \(\*\.jpeg, \*\.jpg, \*\.png\) in {tmp_path}"):
        open_dataset(tmp_path)


def test_path_that_is_a_file(tmp_path):
    file = write_image(tmp_path / "x.JPEG")
    with pytest.raises(DatasetError, match=f"dataset path {file} is not a folder"):
        open_dataset(file)


def test_folders_that_are_not_wnids(tmp_path):
    make_folder(tmp_path, {"cat": [1], "dog": [2], A: [3]})
    with pytest.raises(DatasetError, match=rf"{tmp_path}: folders cat, dog are not ImageNet wnids"):
        open_dataset(tmp_path)


def test_mixed_layout(tmp_path):
    make_folder(tmp_path, {A: [1]})
    make_flat(tmp_path, [2])
    with pytest.raises(DatasetError, match=f"{tmp_path} mixes images"):
        open_dataset(tmp_path)


def test_flat_folder_without_labels_says_what_to_provide(tmp_path):
    root = make_flat(tmp_path / "val", [1, 2])
    with pytest.raises(DatasetError, match=rf"{root} holds 2 images but no labels: put LOC_val_solution.csv .*"
                                           r"--labels FILE"):
        open_dataset(root)


def test_missing_labels_file(tmp_path):
    root = make_flat(tmp_path / "val", [1])
    with pytest.raises(FileNotFoundError, match=f"labels file {tmp_path / 'x.txt'} does not exist"):
        open_dataset(root, labels=tmp_path / "x.txt")


@pytest.mark.parametrize("content, message", [
    (f"{val_name(1)} 5\n", r"labels.txt has no label for 1 of the 2 images in .* \(e.g. ILSVRC2012_val_00000002"),
    (f"{val_name(1)} 5\n{val_name(2)} 5\n{val_name(3)} 5\n",
     r"labels.txt labels 1 files that are not in .* \(e.g. ILSVRC2012_val_00000003\)"),
    (f"{val_name(1)} 5\n{val_name(2)} 1000\n", r"labels.txt:2: class index 1000 is out of range 0..999"),
    (f"{val_name(1)} {A} 5\n{val_name(2)} {A} 6\n", rf"labels.txt:2: wnid {A} is class 5, not 6"),
    (f"{val_name(1)} n99999999 5\n", r"labels.txt:1: 'n99999999' is not an ImageNet-1k wnid"),
    (f"{val_name(1)} 5\n{val_name(1)} 6\n", r"labels.txt:2: .* is labelled twice, as class 5 and 6"),
    (f"{val_name(1)},5\n", r"labels.txt:1: expected '<file> <class index>'"),
    ("\n", r"labels file .*labels.txt has no labels"),
])
def test_labels_file_that_disagrees_with_the_files(tmp_path, content, message):
    root = make_flat(tmp_path / "val", [1, 2])
    (tmp_path / "labels.txt").write_text(content)
    with pytest.raises(DatasetError, match=message):
        open_dataset(root, labels=tmp_path / "labels.txt")


def test_kaggle_csv_errors_name_file_and_line(tmp_path):
    root = make_flat(tmp_path / "val", [1, 2])
    write_kaggle(tmp_path / "LOC_val_solution.csv", {1: A, 2: "n00000000"})
    with pytest.raises(DatasetError, match=r"LOC_val_solution.csv:3: 'n00000000' is not an ImageNet-1k wnid"):
        open_dataset(root)
    (tmp_path / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\n{val_name(1)[:-5]},\n")
    with pytest.raises(DatasetError, match=r"LOC_val_solution.csv:2: expected 'ImageId,<wnid> x y x y"):
        open_dataset(root)


# -------------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive_to_files_and_labels(tmp_path):
    root = make_flat(tmp_path / "val", [1, 2])
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{val_name(1)} 5\n{val_name(2)} 900\n")
    base = open_dataset(root, labels=labels).fingerprint()
    assert base == open_dataset(root, labels=labels).fingerprint()
    assert base["layout"] == "flat" and base["n_images"] == 2 and base["subset"] is True
    assert base["root"] == str(root.resolve()) and len(base["sha256"]) == 64

    os.utime(root / val_name(1), (0, 0))  # timestamps are not content: no change
    assert open_dataset(root, labels=labels).fingerprint() == base

    labels.write_text(f"{val_name(1)} 5\n{val_name(2)} 901\n")
    relabelled = open_dataset(root, labels=labels).fingerprint()
    assert relabelled["sha256"] != base["sha256"] and relabelled["labels_sha256"] != base["labels_sha256"]

    labels.write_text(f"{val_name(1)} 5\n{val_name(2)} 900\n{val_name(3)} 7\n")
    write_image(root / val_name(3), seed=3)
    added = open_dataset(root, labels=labels).fingerprint()
    assert added["n_images"] == 3 and added["sha256"] != base["sha256"]

    labels.write_text(f"{val_name(1)} 5\n{val_name(2)} 900\n")
    (root / val_name(3)).unlink()
    assert open_dataset(root, labels=labels).fingerprint() == base

    write_image(root / val_name(2), seed=99, height=48)  # replaced by a file of another size
    assert open_dataset(root, labels=labels).fingerprint()["sha256"] != base["sha256"]


# ------------------------------------------------------------------------------------------------ geometry


def test_geometry_key_groups_models_by_crop_not_normalisation():
    assert geometry_key(Preprocessing()) == geometry_key(EFFICIENTNET_LITE_PREPROCESSING) == "bilinear256-crop224"
    assert geometry_key(Preprocessing(resize=320, crop=288, interpolation="bicubic")) == "bicubic320-crop288"
    with pytest.raises(ValueError, match="interpolation 'area' is not one of bilinear, bicubic, nearest"):
        Geometry(interpolation="area")


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """Channel 0: column mod 256, channel 1: column // 256, channel 2: row."""
    cols = torch.arange(width).expand(height, width)
    rows = torch.arange(height)[:, None].expand(height, width)
    return torch.stack([cols % 256, cols // 256, rows]).to(torch.uint8)


@pytest.mark.parametrize("height, width", [(256, 301), (256, 302), (257, 256), (300, 256)])
def test_centre_crop_offsets_round_like_torchvision(tmp_path, height, width):
    """The shorter side is already 256, so resize is the identity and the crop position is visible."""
    image = coordinate_image(height, width)
    path = tmp_path / "coords.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    crop = Geometry().apply(data.decode_file(path))
    top, left = round((height - 224) / 2), round((width - 224) / 2)  # torchvision center_crop
    assert crop.shape == (3, 224, 224) and crop.dtype == torch.uint8
    assert int(crop[0, 0, 0]) + 256 * int(crop[1, 0, 0]) == left and int(crop[2, 0, 0]) == top
    assert torch.equal(crop, image[:, top:top + 224, left:left + 224])


def test_crop_matches_pil_bilinear_resize_within_one_level(tmp_path):
    path = write_image(tmp_path / "x.JPEG", seed=4, height=300, width=451)
    pil = Image.open(path).convert("RGB")
    pil = pil.resize((int(256 * 451 / 300), 256), Image.BILINEAR)
    left, top = round((pil.width - 224) / 2), round((pil.height - 224) / 2)
    reference = torch.from_numpy(np.array(pil.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1)
    crop = Geometry().apply(data.decode_file(path))
    assert (crop.int() - reference.int()).abs().max() <= 1


# ------------------------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG"), ("RGBA", "PNG")])
def test_unusual_files_decode_to_rgb_like_pil(tmp_path, mode, fmt):
    path = write_image(tmp_path / "x.JPEG", seed=1, mode=mode, fmt=fmt)  # PNG data behind a .JPEG name
    image = data.decode_file(path)
    reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert image.shape == (3, 40, 56) and image.dtype == torch.uint8
    assert (image.int() - reference.int()).abs().max() <= 1


def bad_files(folder: Path) -> dict[str, str]:
    """Bad images written into ``folder``: name -> the reason decode_file must give."""
    good = write_image(folder / "good.JPEG").read_bytes()
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (folder / "text.JPEG").write_text("this is not an image\n")
    (folder / "corrupt.JPEG").write_bytes(good[:200] + bytes(range(256)) * 4)
    return {"empty.JPEG": r"empty file \(0 bytes\)", "truncated.JPEG": "cannot decode .*truncated",
            "text.JPEG": r"cannot decode \(Unsupported image file", "corrupt.JPEG": "cannot decode"}


def test_bad_files_raise_one_line_naming_file_and_reason(tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(BadImageError, match=reason) as caught:
            data.decode_file(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(caught.value)
        assert caught.value.path == str(tmp_path / name) and isinstance(caught.value, ValueError)


def test_unreadable_file(tmp_path):
    folder = tmp_path / "folder.JPEG"
    folder.mkdir()
    with pytest.raises(BadImageError, match=f"{folder}: unreadable \\(Is a directory\\)"):
        data.decode_file(folder)
    if os.name == "posix" and os.geteuid() != 0:  # root reads files without permission
        path = write_image(tmp_path / "x.JPEG")
        path.chmod(0)
        with pytest.raises(BadImageError, match=f"{path}: unreadable \\(Permission denied\\)"):
            data.decode_file(path)


def flat_with_bad_images(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "val"
    root.mkdir()
    names = ["good.JPEG", *bad_files(root)]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    return root, labels


def test_loader_skips_bad_images_and_lists_them(tmp_path):
    root, labels = flat_with_bad_images(tmp_path)
    ds = open_dataset(root, labels=labels)
    batches = list(make_loader(ds, [Preprocessing()], batch_size=3, workers=0, on_bad_image="skip"))
    ok = torch.cat([b["ok"] for b in batches])
    crops = torch.cat([b["crops"]["bilinear256-crop224"] for b in batches])
    assert ok.tolist() == [name == "good.JPEG" for name in ds.files]
    assert crops[~ok].eq(0).all() and crops[ok].float().std() > 10
    bad = dict(pair for b in batches for pair in b["bad"])
    assert sorted(bad) == ["corrupt.JPEG", "empty.JPEG", "text.JPEG", "truncated.JPEG"]
    assert bad["empty.JPEG"] == "empty file (0 bytes)" and "truncated" in bad["truncated.JPEG"]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_fails_on_first_bad_image_with_a_clean_error(tmp_path, workers):
    root, labels = flat_with_bad_images(tmp_path)
    loader = make_loader(open_dataset(root, labels=labels), [Preprocessing()], batch_size=8, workers=workers)
    with pytest.raises(BadImageError, match=rf"^{root / 'corrupt.JPEG'}: cannot decode"):
        list(loader)


# -------------------------------------------------------------------------------------------------- loader


def test_loader_batches_one_decode_per_image_for_several_geometries(tmp_path, decoded):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3], B: [4, 5]})
    for i, wnid in [(1, A), (4, B)]:  # bigger pictures, landscape and portrait
        write_image(root / wnid / val_name(i), seed=i, height=300, width=420 if i == 1 else 200)
    ds = open_dataset(root)
    geometries = [Preprocessing(), EFFICIENTNET_LITE_PREPROCESSING, Geometry(320, 288, "bicubic")]
    batches = list(make_loader(ds, geometries, batch_size=2, workers=0))

    # once each, not once per geometry
    assert sorted(Path(f).name for f in decoded) == sorted(Path(f).name for f in ds.files)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert torch.cat([b["label"] for b in batches]).tolist() == [5, 5, 5, 900, 900]
    first = batches[0]
    assert set(first) == {"index", "label", "ok", "crops", "bad"} and first["ok"].all() and first["bad"] == []
    assert first["crops"]["bilinear256-crop224"].shape == (2, 3, 224, 224)
    assert first["crops"]["bicubic320-crop288"].shape == (2, 3, 288, 288)
    assert first["crops"]["bilinear256-crop224"].dtype == torch.uint8
    for b in batches:
        for row, index in enumerate(b["index"].tolist()):
            image = data.decode_file(ds.path(index))
            for g in (Geometry(), Geometry(320, 288, "bicubic")):
                assert torch.equal(b["crops"][g.key][row], g.apply(image))


def test_loader_with_worker_processes_gives_the_same_batches(tmp_path):
    root = make_folder(tmp_path / "val", {A: [1, 2], B: [3]})
    ds = open_dataset(root)
    single = list(make_loader(ds, [Preprocessing()], batch_size=2, workers=0))
    parallel = list(make_loader(ds, [Preprocessing()], batch_size=2, workers=2))
    assert len(single) == len(parallel) == 2
    for a, b in zip(single, parallel):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["crops"]["bilinear256-crop224"], b["crops"]["bilinear256-crop224"])


def test_loader_options_are_checked(tmp_path):
    ds = open_dataset(make_folder(tmp_path / "val", {A: [1]}))
    with pytest.raises(ValueError, match="on_bad_image must be one of fail, skip, got 'ignore'"):
        make_loader(ds, [Preprocessing()], on_bad_image="ignore")
    with pytest.raises(ValueError, match="decoder must be one of cpu, nvjpeg"):
        make_loader(ds, [Preprocessing()], decoder="pil")
    with pytest.raises(ValueError, match="no geometry requested"):
        make_loader(ds, [])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="decoder 'nvjpeg' needs a CUDA device"):
            make_loader(ds, [Preprocessing()], decoder="nvjpeg")


def test_nvjpeg_routing_keeps_unusual_and_incomplete_files_on_the_cpu(tmp_path):
    def routed(path: Path) -> bool:
        return data.nvjpeg_can_decode(data.read_bytes(path))

    good = write_image(tmp_path / "rgb.JPEG")
    assert routed(good)
    assert not routed(write_image(tmp_path / "grey.JPEG", mode="L"))
    assert not routed(write_image(tmp_path / "cmyk.JPEG", mode="CMYK"))
    assert not routed(write_image(tmp_path / "png.JPEG", fmt="PNG"))
    truncated = tmp_path / "truncated.JPEG"
    truncated.write_bytes(good.read_bytes()[:-100])
    assert not routed(truncated)


def test_device_decoding_bookkeeping_with_a_stand_in_for_nvjpeg(tmp_path, monkeypatch):
    """The nvJPEG path's routing, packing, one-by-one retry and CPU fallback, run on the CPU: the
    stand-in decodes like libjpeg but rejects any batch holding ``refused``, as nvJPEG would."""
    root = make_folder(tmp_path / "val", {A: [1, 2, 3], B: [4]})
    write_image(root / A / val_name(3), seed=3, mode="L")  # decoded in the workers, never sent
    refused = data.read_bytes(root / A / val_name(2))

    def stand_in(batch, mode, device):
        assert all(data.nvjpeg_can_decode(d) for d in batch)
        if any(torch.equal(d, refused) for d in batch):
            raise RuntimeError("nvjpeg refused")
        return [data.decode_image(d, mode=mode) for d in batch]

    monkeypatch.setattr(data, "decode_jpeg", stand_in)
    ds = open_dataset(root)
    crops = CropDataset(ds, [Preprocessing()], nvjpeg=True)
    decoder = GpuDecoder(crops, device="cpu")
    loader = CropLoader(torch.utils.data.DataLoader(crops, batch_size=4, collate_fn=crops.collate),
                             crops, "skip", decoder, batches=[[0, 1, 2, 3]])
    (batch,) = list(loader)
    (expected,) = list(make_loader(ds, [Preprocessing()], batch_size=4, workers=0))
    assert decoder.decoded_on_device == 2 and decoder.fallbacks == 1
    assert batch["ok"].all() and batch["bad"] == [] and "encoded" not in batch
    assert torch.equal(batch["crops"]["bilinear256-crop224"], expected["crops"]["bilinear256-crop224"])


def test_nvjpeg_worker_batch_ships_bytes_not_zero_filled_crops(tmp_path):
    """Issue 25, fault 11: with nvJPEG, a worker's batch holds the encoded bytes of the images left to the device
    and crops only of the rows it decoded itself (a greyscale one here), not a zero-filled crop per image."""
    root = make_folder(tmp_path / "val", {A: [1, 2, 3], B: [4]})
    write_image(root / A / val_name(2), seed=2, mode="L")
    crops = CropDataset(open_dataset(root), [Preprocessing(), Geometry(320, 288, "bicubic")], nvjpeg=True)
    batch = crops.collate([crops[i] for i in range(4)])
    rows, lengths, packed = batch["encoded"]
    assert batch["crop_rows"] == [1] and rows == [0, 2, 3]
    assert {key: tuple(c.shape) for key, c in batch["crops"].items()} == {
        "bilinear256-crop224": (1, 3, 224, 224), "bicubic320-crop288": (1, 3, 288, 288)}
    assert torch.equal(batch["crops"]["bilinear256-crop224"][0], Geometry().apply(data.decode_file(crops.val.path(1))))
    assert sum(lengths) == packed.numel() == sum((root / f).stat().st_size for f in crops.val.files
                                                     if Path(f).name != val_name(2))


def test_nvjpeg_path_with_every_image_decoded_by_the_workers(tmp_path):
    """PNGs (a pre-rendered style folder) never reach nvJPEG: the workers' crops are the batch's, unchanged."""
    root = tmp_path / "val"
    for i, wnid in [(1, A), (2, A), (3, B)]:
        write_image(root / wnid / val_name(i).replace(".JPEG", ".png"), seed=i, fmt="PNG")
    ds = open_dataset(root)
    crops = CropDataset(ds, [Preprocessing()], nvjpeg=True)
    decoder = GpuDecoder(crops, device="cpu")
    (batch,) = list(CropLoader(torch.utils.data.DataLoader(crops, batch_size=3, collate_fn=crops.collate),
                               crops, "fail", decoder, batches=[[0, 1, 2]]))
    (expected,) = list(make_loader(ds, [Preprocessing()], batch_size=3, workers=0))
    assert decoder.decoded_on_device == 0 and decoder.fallbacks == 0
    assert torch.equal(batch["crops"]["bilinear256-crop224"], expected["crops"]["bilinear256-crop224"])


def test_grouped_crops_equal_per_image_crops_with_one_call_per_size(monkeypatch):
    """Issue 25, fault 11: device-decoded images are resized in one call per distinct size, bit for bit as one
    call per image."""
    generator = torch.Generator().manual_seed(0)
    sizes = [(375, 500), (500, 375), (375, 500), (333, 500), (375, 500), (500, 375)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes]
    calls = []
    apply = Geometry.apply

    def counted(self: Geometry, x: torch.Tensor, resize: bool = True) -> torch.Tensor:
        calls.append(x.shape)
        return apply(self, x, resize)

    for geometry in (Geometry(), Geometry(320, 288, "bicubic")):
        expected = [geometry.apply(image) for image in images]
        calls.clear()
        monkeypatch.setattr(Geometry, "apply", counted)
        grouped = crop_grouped(images, geometry)
        monkeypatch.undo()
        assert len(calls) == 3 and sorted(shape[0] for shape in calls) == [1, 2, 3]
        assert all(torch.equal(a, b) for a, b in zip(grouped, expected))


# ----------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("workers", [0, 2])
def test_nvjpeg_crops_agree_with_cpu_crops(tmp_path, workers):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3], B: [4]})
    write_image(root / A / val_name(1), seed=1, height=300, width=420)
    write_image(root / A / val_name(2), seed=2, mode="L")
    write_image(root / A / val_name(3), seed=3, mode="CMYK")
    write_image(root / B / val_name(4), seed=4, fmt="PNG")
    write_image(root / B / val_name(5), seed=5, height=500, width=333)
    ds = open_dataset(root)
    geometries = [Preprocessing(), Geometry(320, 288, "bicubic")]
    cpu = list(make_loader(ds, geometries, batch_size=8, workers=0))[0]
    loader = make_loader(ds, geometries, batch_size=8, workers=workers, decoder="nvjpeg")
    gpu_batch = list(loader)[0]
    assert loader.gpu.decoded_on_device == 2 and loader.gpu.fallbacks == 0
    for key, crops in cpu["crops"].items():
        assert gpu_batch["crops"][key].is_cuda
        diff = (gpu_batch["crops"][key].cpu().float() - crops.float()).abs()
        assert diff.mean() < GPU_MEAN_TOLERANCE and diff.max() < GPU_MAX_TOLERANCE, (key, diff.mean(), diff.max())


@pytest.mark.gpu
def test_nvjpeg_path_applies_the_same_bad_image_policy(tmp_path):
    root, labels = flat_with_bad_images(tmp_path)
    ds = open_dataset(root, labels=labels)
    cpu = list(make_loader(ds, [Preprocessing()], batch_size=8, workers=0, on_bad_image="skip"))[0]
    gpu_batch = list(make_loader(ds, [Preprocessing()], batch_size=8, workers=0, on_bad_image="skip",
                                 decoder="nvjpeg"))[0]
    assert torch.equal(cpu["ok"], gpu_batch["ok"].cpu())
    assert sorted(p for p, _ in cpu["bad"]) == sorted(p for p, _ in gpu_batch["bad"])
    with pytest.raises(BadImageError, match="corrupt.JPEG: cannot decode"):
        list(make_loader(ds, [Preprocessing()], batch_size=8, workers=0, decoder="nvjpeg"))

"""Segmentation datasets in their released layouts: find the (image, label map) pairs and decode them to train ids.

:func:`open_segmentation` takes a dataset name and its root folder (the folder as unpacked, or RobustNet's
re-arrangement of it) and returns a :class:`SegmentationDataset`; :func:`load_pair` decodes one pair to a uint8
``[3, H, W]`` image and uint8 ``[H, W]`` train ids (:data:`~ibnbench.data.label_maps.IGNORE` not scored) under the
dataset's protocol (:mod:`ibnbench.data.segmentation_protocols`). Layouts (``<split>``: ``val`` unless asked):

* ``cityscapes``: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
  (also under ``leftImg8bit_trainvaltest/`` and ``gtFine_trainvaltest/``, RobustNet's layout).
* ``acdc``: ``rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png`` with ``gt/<condition>/<split>/<seq>/
  *_gt_labelTrainIds.png`` (also under ``rgb_anon_trainvaltest/``, ``gt_trainval/``); conditions fog, night, rain,
  snow (all four unless one is asked).
* ``bdd100k``: ``images/10k/<split>/*.jpg`` with ``labels/sem_seg/masks/<split>/*.png`` (the current release), or
  ``seg/images/<split>/*.jpg`` with ``seg/labels/<split>/*_train_id.png`` (the 2018 release), or RobustNet's
  ``images/<split>/*.jpg`` with ``labels/<split>/*_train_id.png``.
* ``mapillary``: ``validation/images/*.jpg`` with ``validation/labels/*.png`` or ``validation/v1.2/labels/*.png``
  (``training/`` for ``train``), v1.2's 66 classes.
* ``gta5``: RobustNet's ``images/valid/<folder>/*.png`` with ``labels/valid/<folder>/*.png`` (``train``, ``test``), or
  the release's flat ``images/*.png`` with ``labels/*.png``, split by the official ``split.mat`` (``trainIds``,
  ``valIds``, ``testIds``; found in the root or given) or a list of file names (RobustNet's
  ``split_data/gtav_split_val.txt``); ``split="all"`` takes every image. Labels as palette indices or ids
  (Cityscapes ids) or as colours.
* ``synthia`` (RAND-CITYSCAPES): RobustNet's ``RGB/<split>/*.png`` with ``GT/LABELS/<split>/*.png``, or the release's
  flat ``RGB/*.png`` with ``GT/LABELS/*.png`` split by a list of file names (RobustNet's
  ``split_data/synthia_split_val.txt``) or ``split="all"``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ibnbench.data import label_maps
from ibnbench.data.decode import decode_file, decode_unchanged
from ibnbench.data.label_maps import LabelMap
from ibnbench.data.segmentation_protocols import PROTOCOLS, apply_protocol
from ibnbench.errors import BadImageError, BadLabelError, DatasetError, MissingFileError, UsageError

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")
SEGMENTATION_DATASETS = ("cityscapes", "acdc", "bdd100k", "mapillary", "gta5", "synthia")


@dataclass(frozen=True, eq=False)
class SegmentationDataset:
    """Image and label-map paths relative to ``root`` (sorted by image), with how to read the labels."""

    name: str
    root: Path
    layout: str
    split: str
    images: tuple[str, ...]
    labels: tuple[str, ...]
    label_maps: tuple[LabelMap, ...]
    sizes: tuple[tuple[int, int], ...] = field(repr=False)
    """Bytes of each image and its label map (``os.stat``)."""
    condition: str | None = None
    protocol: str = "native"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def files(self) -> tuple[str, ...]:
        """The images' relative paths: how records name them."""
        return self.images

    def image_path(self, index: int) -> Path:
        return self.root / self.images[index]

    def label_path(self, index: int) -> Path:
        return self.root / self.labels[index]

    def fingerprint(self) -> dict:
        """Identity of the data a result was computed on: dataset, layout, split, condition, protocol, size, and
        sha256 over the relative image and label paths and their sizes in bytes."""
        digest = hashlib.sha256()
        for image, label, (image_bytes, label_bytes) in zip(self.images, self.labels, self.sizes):
            digest.update(f"{image}\t{image_bytes}\t{label}\t{label_bytes}\n".encode())
        return {"dataset": self.name, "layout": self.layout, "split": self.split, "condition": self.condition,
                "protocol": self.protocol, "n_images": len(self), "sha256": digest.hexdigest(),
                "root": str(self.root.resolve())}


def read_label(path: str | os.PathLike, maps: tuple[LabelMap, ...]) -> torch.Tensor:
    """Train ids (uint8 ``[H, W]``) of the label map at ``path`` read with the table among ``maps`` made for its
    channel count; :class:`BadLabelError` naming the file otherwise."""
    try:
        decoded = decode_unchanged(path)
    except BadImageError as exc:
        raise BadLabelError(path, exc.reason) from None
    for label_map in maps:
        if decoded.shape[0] in label_map.channels:
            return label_map.decode(decoded, path)
    expected = " or ".join(f"{m.channels} ({m.name})" for m in maps)
    raise BadLabelError(path, f"has {decoded.shape[0]} channel(s); expected {expected}")


def load_pair(dataset: SegmentationDataset, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (uint8 ``[3, H, W]``) and train ids (uint8 ``[H, W]``) of pair ``index`` under the dataset's protocol.
    :class:`~ibnbench.errors.BadImageError` for an undecodable image; :class:`BadLabelError` for a bad label map,
    one whose size differs from its image's (naming both files) included."""
    image_path, label_path = dataset.image_path(index), dataset.label_path(index)
    image = decode_file(image_path)
    label = read_label(label_path, dataset.label_maps)
    if tuple(image.shape[-2:]) != tuple(label.shape):
        raise BadLabelError(label_path, f"is {label.shape[1]}x{label.shape[0]} but its image {image_path} is "
                                        f"{image.shape[2]}x{image.shape[1]} (width x height)")
    return apply_protocol(dataset.protocol, image, label)


# ---- discovery ----

Pairs = list[tuple[str, str]]


def _files(folder: Path, suffix: str, recursive: bool = False) -> list[Path]:
    """Files under ``folder`` whose names end with ``suffix`` (any case), hidden files left out."""
    try:
        found = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(p for p in found if p.name.lower().endswith(suffix) and not p.name.startswith(".")
                      and p.is_file())
    except OSError as exc:
        raise DatasetError(f"{exc.filename or folder}: cannot be read ({exc.strerror or exc})") from None


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _paired(root: Path, images: list[Path], label_of: Callable[[Path], Path]) -> Pairs:
    """(image, label) paths relative to ``root``; a missing label map is an error naming one."""
    pairs = [(image, label_of(image)) for image in images]
    missing = [label for _, label in pairs if not label.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of the {len(pairs)} images under {root} have no label map (e.g. "
                           f"{missing[0]} is missing)")
    return [(str(i.relative_to(root)), str(lbl.relative_to(root))) for i, lbl in pairs]


def _need(folder: Path | None, root: Path, name: str, expected: str) -> Path:
    if folder is None:
        raise DatasetError(f"{root} is not a {name} folder: expected {expected}")
    return folder


def _cityscapes(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    images = _need(_first_dir(root / "leftImg8bit" / split, root / "leftImg8bit_trainvaltest/leftImg8bit" / split),
                   root, "Cityscapes", f"leftImg8bit/{split}/<city>/*_leftImg8bit.png")
    labels = _need(_first_dir(root / "gtFine" / split, root / "gtFine_trainvaltest/gtFine" / split), root,
                   "Cityscapes", f"gtFine/{split}/<city>/*_gtFine_labelIds.png beside leftImg8bit/")
    return "cityscapes", _paired(root, _files(images, "_leftimg8bit.png", recursive=True), lambda p: (
        labels / p.relative_to(images).parent / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")))


def _acdc(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    conditions = ACDC_CONDITIONS if condition is None else (condition,)
    if condition is not None and condition not in ACDC_CONDITIONS:
        raise UsageError(f"ACDC condition {condition!r} is not one of {', '.join(ACDC_CONDITIONS)}")
    images = _need(_first_dir(root / "rgb_anon", root / "rgb_anon_trainvaltest/rgb_anon"), root, "ACDC",
                   "rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png")
    labels = _need(_first_dir(root / "gt", root / "gt_trainval/gt"), root, "ACDC",
                   "gt/<condition>/<split>/<sequence>/*_gt_labelTrainIds.png beside rgb_anon/")
    pairs: Pairs = []
    for name in conditions:
        folder = _need(_first_dir(images / name / split), root, "ACDC", f"{images / name / split}")
        pairs += _paired(root, _files(folder, "_rgb_anon.png", recursive=True), lambda p: (
            labels / p.relative_to(images).parent / p.name.replace("_rgb_anon.png", "_gt_labelTrainIds.png")))
    return "acdc", pairs


def _bdd100k(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    layouts = (("bdd100k-10k", root / "images/10k" / split, root / "labels/sem_seg/masks" / split, ".png"),
               ("bdd100k-seg", root / "seg/images" / split, root / "seg/labels" / split, "_train_id.png"),
               ("robustnet", root / "images" / split, root / "labels" / split, "_train_id.png"))
    found = next((layout for layout in layouts if layout[1].is_dir() and layout[2].is_dir()), None)
    if found is not None:
        layout, images, labels, suffix = found
        return layout, _paired(root, _files(images, ".jpg"), lambda p: labels / (p.stem + suffix))
    raise DatasetError(f"{root} is not a BDD100K folder: expected images/10k/{split}/*.jpg with "
                       f"labels/sem_seg/masks/{split}/*.png, or seg/images/{split}/ with seg/labels/{split}/"
                       "*_train_id.png")


def _mapillary(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    folder = root / {"val": "validation", "train": "training"}.get(split, split)
    images = _need(_first_dir(folder / "images"), root, "Mapillary Vistas", f"{folder.name}/images/*.jpg")
    labels = _need(_first_dir(folder / "v1.2/labels", folder / "labels"), root, "Mapillary Vistas",
                   f"{folder.name}/labels/*.png (v1.2, 66 classes) beside {folder.name}/images/")
    return "mapillary-v1.2", _paired(root, _files(images, ".jpg"), lambda p: labels / (p.stem + ".png"))


def _gta5(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    arranged = {"val": "valid"}.get(split, split)
    if (root / "images" / arranged).is_dir():  # RobustNet's images/valid/<folder>/
        images, labels = root / "images" / arranged, root / "labels" / arranged
        return "robustnet", _paired(root, _files(images, ".png", recursive=True),
                                    lambda p: labels / p.relative_to(images))
    images = _need(_first_dir(root / "images"), root, "GTA5", "images/*.png with labels/*.png")
    found = _split_subset(root, _files(images, ".png"), split, split_file or _found(root / "split.mat"), "GTA5")
    return "gta5", _paired(root, found, lambda p: root / "labels" / p.name)


def _synthia(root: Path, split: str, condition: str | None, split_file: Path | None) -> tuple[str, Pairs]:
    labels = _need(_first_dir(root / "GT/LABELS"), root, "SYNTHIA", "RGB/*.png with GT/LABELS/*.png")
    if (root / "RGB" / split).is_dir():  # RobustNet's RGB/<split>/
        images = root / "RGB" / split
        return "robustnet", _paired(root, _files(images, ".png"), lambda p: labels / split / p.name)
    images = _need(_first_dir(root / "RGB"), root, "SYNTHIA", "RGB/*.png with GT/LABELS/*.png")
    found = _split_subset(root, _files(images, ".png"), split, split_file, "SYNTHIA")
    return "synthia", _paired(root, found, lambda p: labels / p.name)


def _found(path: Path) -> Path | None:
    return path if path.is_file() else None


def _split_subset(root: Path, images: list[Path], split: str, split_file: Path | None, name: str) -> list[Path]:
    """The images of ``split`` among a flat folder's ``images``: all of them for ``all``, else those the split file
    names (``split.mat`` or a list of file names)."""
    if split == "all":
        return images
    if split_file is None:
        raise DatasetError(f"{root}: a flat {name} folder needs a split file to find its {split!r} images "
                           "(split_file=..., e.g. split.mat or RobustNet's split_data lists) or split='all'")
    names = _split_names(split_file, split)
    by_name = {p.name: p for p in images}
    missing = sorted(names - by_name.keys())
    if missing:
        raise DatasetError(f"{split_file} names {len(missing)} {split} images that are not in {root} "
                           f"(e.g. {missing[0]})")
    return sorted(by_name[n] for n in names)


def _split_names(split_file: Path, split: str) -> set[str]:
    """File names of ``split``: from GTA5's ``split.mat`` (``<split>Ids``, 1-based numbers of ``%05d.png``) or from
    a text file with one file name per line."""
    if not split_file.is_file():
        raise MissingFileError(f"split file {split_file} does not exist")
    if split_file.suffix == ".mat":
        from scipy.io import loadmat

        key = f"{split}Ids"
        try:
            table = loadmat(split_file)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"split file {split_file} cannot be read ({exc})") from None
        if key not in table:
            raise DatasetError(f"split file {split_file} has no {key}")
        return {f"{int(i):05d}.png" for i in table[key].ravel()}
    try:
        lines = split_file.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {split_file} cannot be read ({exc})") from None
    if not lines:
        raise DatasetError(f"split file {split_file} names no images")
    return {Path(line).name for line in lines}


_FINDERS = {"cityscapes": (_cityscapes, (label_maps.CITYSCAPES_IDS,)),
            "acdc": (_acdc, (label_maps.TRAIN_IDS,)),
            "bdd100k": (_bdd100k, (label_maps.TRAIN_IDS,)),
            "mapillary": (_mapillary, (label_maps.MAPILLARY_V12,)),
            "gta5": (_gta5, (label_maps.CITYSCAPES_IDS, label_maps.GTA5_COLOURS)),
            "synthia": (_synthia, (label_maps.SYNTHIA,))}


def open_segmentation(name: str, root: str | os.PathLike, split: str = "val", condition: str | None = None,
                      protocol: str = "native", split_file: str | os.PathLike | None = None,
                      limit: int | None = None) -> SegmentationDataset:
    """Find the (image, label map) pairs of dataset ``name`` (one of :data:`SEGMENTATION_DATASETS`) under ``root``.

    ``condition``: ACDC's fog, night, rain or snow (None: all four). ``protocol``: one of
    :data:`~ibnbench.data.segmentation_protocols.PROTOCOLS`. ``split_file``: which images of a flat GTA5 or SYNTHIA
    folder form ``split``. ``limit``: the first ``limit`` pairs (sorted)."""
    if name not in _FINDERS:
        raise UsageError(f"unknown segmentation dataset {name!r}; known: {', '.join(SEGMENTATION_DATASETS)}")
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown segmentation protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if condition is not None and name != "acdc":
        raise UsageError(f"condition={condition!r}: only ACDC has conditions")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of images, got {limit}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"{name} folder {root} {'is not a folder' if root.exists() else 'does not exist'}")
    finder, maps = _FINDERS[name]
    layout, pairs = finder(root, split, condition, Path(split_file).expanduser() if split_file else None)
    if not pairs:
        raise DatasetError(f"no {name} images of split {split!r} under {root}")
    pairs = sorted(pairs)[:limit]
    try:
        sizes = tuple(((root / i).stat().st_size, (root / lbl).stat().st_size) for i, lbl in pairs)
    except OSError as exc:
        raise DatasetError(f"{exc.filename}: cannot be read ({exc.strerror or exc})") from None
    return SegmentationDataset(name=name, root=root, layout=layout, split=split, images=tuple(i for i, _ in pairs),
                               labels=tuple(lbl for _, lbl in pairs), label_maps=maps, sizes=sizes,
                               condition=condition, protocol=protocol)

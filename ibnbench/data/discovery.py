"""ImageNet validation data: find and label the files.

Layouts (auto-detected by :func:`open_dataset`):

* ``imagefolder``: ``val/<wnid>/*.JPEG``. Labels come from the folder names, numbered by the full
  sorted list of the 1000 ImageNet wnids (timm's ``ImageNetInfo``), so a subset keeps its true labels.
* ``numeric``: ``<root>/<class index>/*.jpeg`` with folders ``0`` .. ``999`` (ImageNetV2): the folder name is
  the class index.
* ``flat``: ``val/*.JPEG`` with labels from Kaggle's ``LOC_val_solution.csv`` (looked up in the folder
  and up to four folders above it, which covers the Kaggle download's ``ILSVRC/Data/CLS-LOC/val``) or
  from a labels file given explicitly: lines ``<file> <class index>`` or ``<file> <wnid> <class index>``.

Shift datasets in wnid folders (ImageNet-R, -A, -Sketch, Stylized-ImageNet) are ``imagefolder``. A dataset may
be scored on a class subset (:func:`class_subset`): the classes of its folders (ImageNet-R and -A: 200) or a
class-list file; a plain subset of val stays a 1000-way task unless asked.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from ibnbench.data.classes import ClassSubset, imagenet_wnids, read_class_list, wnid_index
from ibnbench.errors import DatasetError, MissingFileError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
FULL_VAL_SIZE = 50_000
KAGGLE_SOLUTION = "LOC_val_solution.csv"
KAGGLE_HEADER = ["ImageId", "PredictionString"]
KAGGLE_SEARCH_DEPTH = 4  # val/ -> CLS-LOC/ -> Data/ -> ILSVRC/ -> Kaggle download root
LAYOUT_FOLDER = "imagefolder"
LAYOUT_FLAT = "flat"
LAYOUT_NUMERIC = "numeric"


@dataclass(frozen=True, eq=False)
class ValDataset:
    """A labelled list of validation images: ``files`` are sorted paths relative to ``root``."""

    root: Path
    layout: str
    files: tuple[str, ...]
    labels: torch.Tensor
    sizes: tuple[int, ...] = field(repr=False)
    labels_file: Path | None = None
    folder_classes: tuple[int, ...] = ()
    """Class indices of the class folders that hold images (sorted; empty in the flat layout)."""
    cropped: bool = False
    """The images are already the crop (the released ImageNet-C files, 224x224): centre crop only, no resize."""
    image_list: dict | None = None
    """The ``--subset`` file the images were narrowed to (file name, sha256, count: ``data.image_list``)."""
    frames: int = 0
    """Frames per file when the files are videos (the released ImageNet-P: 31 or 41); 0 for images."""

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def fingerprint(self) -> dict:
        """Identity of the data a result was computed on: layout, size, and sha256 over the sorted
        relative paths + file sizes (from ``os.stat``, not contents) + labels."""
        digest = hashlib.sha256()
        for name, size, label in zip(self.files, self.sizes, self.labels.tolist()):
            digest.update(f"{name}\t{size}\t{label}\n".encode())
        labels_digest = hashlib.sha256(" ".join(map(str, self.labels.tolist())).encode())
        return {"layout": self.layout, "n_images": len(self), "sha256": digest.hexdigest(),
                "labels_sha256": labels_digest.hexdigest(), "subset": len(self) < FULL_VAL_SIZE,
                "root": str(self.root.resolve()), **({"already_cropped": True} if self.cropped else {}),
                **({"image_list": self.image_list} if self.image_list else {})}


def _is_image(entry: os.DirEntry, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    return not entry.name.startswith(".") and entry.name.lower().endswith(suffixes) and entry.is_file()


def _listing_error(exc: OSError, folder: Path) -> DatasetError:
    """A folder or file that cannot be listed or stat-ed (permissions, a symlink loop), named."""
    return DatasetError(f"{exc.filename or folder}: cannot be read ({exc.strerror or exc})")


def _images_in(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, int]:
    """File names ending in ``suffixes`` (images by default) directly in ``folder``, with their sizes in bytes."""
    try:
        with os.scandir(folder) as entries:
            images = {e.name: e.stat().st_size for e in entries if _is_image(e, suffixes)}
    except OSError as exc:
        raise _listing_error(exc, folder) from None
    for name in images:  # the record lists every file in UTF-8 JSON: a name that is not UTF-8 cannot be named there
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise DatasetError(f"{os.fsencode(folder / name)!r}: file name is not UTF-8; rename it (the record "
                               "names every image in UTF-8)") from None
    return images


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise _listing_error(exc, folder) from None


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def open_dataset(root: str | os.PathLike, labels: str | os.PathLike | None = None,
                 limit: int | None = None, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> ValDataset:
    """Find and label the ImageNet validation images under ``root`` (layout auto-detected).

    ``root`` may also be the folder that holds ``val/``. ``labels``: a labels file (Kaggle csv,
    ``<file> <index>`` or ``<file> <wnid> <index>``), required for a flat folder without
    ``LOC_val_solution.csv``, checked against the class folders in the folder layout.
    ``limit``: keep the first ``limit`` images (sorted order) after all checks. ``suffixes``: the file endings
    listed (lower-case; ``(".mp4",)`` for the released ImageNet-P videos)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingFileError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a folder (expected val/<wnid>/*.JPEG or val/*.JPEG)")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of images, got {limit}")
    top, folders = _images_in(root, suffixes), _subfolders(root)
    if not top and "val" in folders and not set(folders) & set(wnid_index()):
        root, top, folders = root / "val", _images_in(root / "val", suffixes), _subfolders(root / "val")
    class_folders = {name: images for name in folders if (images := _images_in(root / name, suffixes))}
    labels_path = Path(labels).expanduser() if labels is not None else None

    if class_folders and top:
        raise DatasetError(f"{root} mixes images ({_examples(top)}) with image folders ({_examples(class_folders)});"
                           " expected either val/<wnid>/*.JPEG or val/*.JPEG")
    folder_classes: dict[str, int] = {}
    if class_folders:
        layout, folder_classes = _folder_classes(root, list(class_folders))
        sizes = {f"{wnid}/{name}": size for wnid, images in class_folders.items() for name, size in images.items()}
        files = sorted(sizes)
        folder_labels = [folder_classes[f.split("/", 1)[0]] for f in files]
        if labels_path is None:
            label_list = folder_labels
        else:
            label_list = _match_labels(root, files, read_labels(labels_path), labels_path)
            wrong = [(f, a, b) for f, a, b in zip(files, folder_labels, label_list) if a != b]
            if wrong:
                f, a, b = wrong[0]
                raise DatasetError(f"{labels_path} disagrees with the class folders of {root} on {len(wrong)} "
                                   f"images (e.g. {f}: folder says class {a}, labels file says {b})")
    elif top:
        layout = LAYOUT_FLAT
        sizes, files = top, sorted(top)
        labels_path = labels_path or _find_kaggle_solution(root)
        if labels_path is None:
            raise DatasetError(f"{root} holds {len(files)} images but no labels: put {KAGGLE_SOLUTION} (Kaggle) "
                               "in it or its parent, or pass labels=FILE / --labels FILE with lines "
                               "'<file> <class index>'")
        label_list = _match_labels(root, files, read_labels(labels_path), labels_path)
    else:
        with os.scandir(root) as entries:
            empty = next(entries, None) is None
        raise DatasetError(f"dataset folder {root} is empty" if empty else
                           f"no images ({', '.join('*' + s for s in suffixes)}) in {root} or its class folders")

    files = files[:limit] if limit is not None else files
    return ValDataset(root=root, layout=layout, files=tuple(files),
                      labels=torch.tensor(label_list[:len(files)], dtype=torch.long),
                      sizes=tuple(sizes[f] for f in files), labels_file=labels_path,
                      folder_classes=tuple(sorted(folder_classes.values())))


def _folder_classes(root: Path, folders: list[str]) -> tuple[str, dict[str, int]]:
    """The layout of class folders and each folder's class index: wnids (``imagefolder``) or the numbers
    ``0`` .. ``999`` written plainly (``numeric``, ImageNetV2)."""
    n_classes = len(imagenet_wnids())
    numeric = [name for name in folders if name.isdigit() and str(int(name)) == name and int(name) < n_classes]
    if numeric and len(numeric) == len(folders):
        return LAYOUT_NUMERIC, {name: int(name) for name in folders}
    not_wnids = [name for name in folders if name not in wnid_index()]
    if not_wnids:
        mixed = " (numeric class folders must all be 0..999, not mixed with others)" if numeric else ""
        raise DatasetError(f"{root}: folders {_examples(not_wnids)} are not ImageNet wnids{mixed}; expected the "
                           "ImageFolder layout <root>/<wnid>/*.JPEG with wnids like n01440764, or ImageNetV2's "
                           "<root>/<class index>/*.jpeg with folders 0..999")
    return LAYOUT_FOLDER, {name: wnid_index()[name] for name in folders}


def _find_kaggle_solution(root: Path) -> Path | None:
    for folder in [root, *root.resolve().parents][:KAGGLE_SEARCH_DEPTH + 1]:
        if (folder / KAGGLE_SOLUTION).is_file():
            return folder / KAGGLE_SOLUTION
    return None


def _image_key(name: str) -> str:
    """What a labels file calls an image: its file name without folder and extension."""
    return Path(name).stem


def read_labels(path: str | os.PathLike) -> dict[str, int]:
    """Read a labels file into ``{image id: class index}`` (image id = file name without extension).

    Formats: Kaggle ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the first token of
    the prediction string is the wnid), or text lines ``<file> <index>`` / ``<file> <wnid> <index>``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"labels file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"labels file {path} cannot be read ({exc})") from None
    lines = text.splitlines()
    if lines and lines[0].replace(" ", "").split(",")[:2] == KAGGLE_HEADER:
        return _read_kaggle(path, lines)
    table: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) not in (2, 3) or not tokens[-1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{lineno}: expected '<file> <class index>' or '<file> <wnid> <class index>' "
                               f"(or a Kaggle {KAGGLE_SOLUTION}), got {line.strip()!r}")
        index = int(tokens[-1])
        if not 0 <= index < len(imagenet_wnids()):
            raise DatasetError(f"{path}:{lineno}: class index {index} is out of range 0..{len(imagenet_wnids()) - 1}")
        if len(tokens) == 3 and _class_of_wnid(path, lineno, tokens[1]) != index:
            raise DatasetError(f"{path}:{lineno}: wnid {tokens[1]} is class {wnid_index()[tokens[1]]}, not {index}")
        _put(table, path, lineno, tokens[0], index)
    if not table:
        raise DatasetError(f"labels file {path} has no labels")
    return table


def _read_kaggle(path: Path, lines: list[str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for lineno, row in enumerate(csv.reader(lines[1:]), 2):
        if not row:
            continue
        if len(row) < 2 or not row[1].split():
            raise DatasetError(f"{path}:{lineno}: expected 'ImageId,<wnid> x y x y ...', got {','.join(row)!r}")
        _put(table, path, lineno, row[0], _class_of_wnid(path, lineno, row[1].split()[0]))
    if not table:
        raise DatasetError(f"labels file {path} has no labels")
    return table


def _class_of_wnid(path: Path, lineno: int, wnid: str) -> int:
    if wnid not in wnid_index():
        raise DatasetError(f"{path}:{lineno}: {wnid!r} is not an ImageNet-1k wnid")
    return wnid_index()[wnid]


def _put(table: dict[str, int], path: Path, lineno: int, name: str, index: int) -> None:
    key = _image_key(name)
    if table.setdefault(key, index) != index:
        raise DatasetError(f"{path}:{lineno}: {name} is labelled twice, as class {table[key]} and {index}")


def _match_labels(root: Path, files: list[str], table: dict[str, int], source: Path) -> list[int]:
    """Labels of ``files`` from ``table``; every disagreement between the two is an error."""
    keys = [_image_key(f) for f in files]
    if len(set(keys)) != len(keys):
        twice = {k for k in keys if keys.count(k) > 1}
        raise DatasetError(f"{root}: image names {_examples(twice)} occur in several folders, so {source} "
                           "cannot tell them apart")
    unlabelled = [f for f, k in zip(files, keys) if k not in table]
    if unlabelled:
        raise DatasetError(f"{source} has no label for {len(unlabelled)} of the {len(files)} images in {root} "
                           f"(e.g. {_examples(unlabelled)})")
    absent = table.keys() - set(keys)
    if absent and len(table) < FULL_VAL_SIZE:
        raise DatasetError(f"{source} labels {len(absent)} files that are not in {root} (e.g. {_examples(absent)}); "
                           f"only a labels file for the complete {FULL_VAL_SIZE}-image set may cover more files")
    return [table[k] for k in keys]


def class_subset(dataset: ValDataset, from_folders: bool = False,
                 classes: str | os.PathLike | ClassSubset | None = None, check: bool = True) -> ClassSubset | None:
    """The class subset ``dataset`` is scored on, or None (a 1000-way task). ``from_folders``: the classes
    of its class folders; ``classes``: a class-list file (:func:`read_class_list`) or a subset. With
    ``check``, every image's label must be in the subset; a subset of all 1000 classes is no subset (None)."""
    if from_folders and classes is not None:
        raise DatasetError("give either --classes-from-folders or --classes FILE, not both")
    if isinstance(classes, ClassSubset):
        subset = classes
    elif classes is not None:
        subset = ClassSubset(read_class_list(classes), f"from {Path(classes).expanduser()}")
    elif from_folders:
        if not dataset.folder_classes:
            raise DatasetError(f"--classes-from-folders: {dataset.root} has no class folders (layout "
                               f"{dataset.layout}); pass --classes FILE")
        subset = ClassSubset(dataset.folder_classes, "from folders")
    else:
        return None
    if len(subset.indices) == len(imagenet_wnids()):
        return None  # all 1000 classes: nothing to mask
    outside = sorted(set(dataset.labels.tolist()) - set(subset.indices))
    if outside and check:
        raise DatasetError(f"{dataset.root}: images of {len(outside)} classes outside the class subset "
                           f"{subset.source} (e.g. class {outside[0]}, {imagenet_wnids()[outside[0]]})")
    return subset


def restrict(dataset: ValDataset, indices: Iterable[int]) -> ValDataset:
    """The images of ``dataset`` whose label is one of the classes ``indices`` (val on a shift set's classes)."""
    keep = set(indices)
    rows = [i for i, label in enumerate(dataset.labels.tolist()) if label in keep]
    if not rows:
        raise DatasetError(f"{dataset.root} holds no image of the {len(keep)} classes asked for")
    return dataclasses.replace(dataset, files=tuple(dataset.files[i] for i in rows), labels=dataset.labels[rows],
                               sizes=tuple(dataset.sizes[i] for i in rows),
                               folder_classes=tuple(c for c in dataset.folder_classes if c in keep))

"""ImageNet validation data: find and label the files, decode each image once, crop it per model geometry.

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

A labels file must agree with the folder: every image labelled, no labels for absent files (unless the
file lists the complete 50,000-image validation set, of which the folder is then a subset) and, in the
folder layout, the same class as the image's folder.

Decoding: :func:`decode_file` is the one CPU decoder (``torchvision.io.decode_image``, RGB). It rejects
zero-byte, unreadable and non-image files, JPEGs whose headers are broken, and truncated JPEGs:
torchvision's libjpeg wrapper turns libjpeg's "premature end of data" warning into an error, as PIL
does by default, so a truncated file is never scored on a half-grey picture. Corrupt entropy-coded
data that libjpeg can resynchronise past (the end marker present) decodes with libjpeg's warning on
stderr, as it does in PIL. PNGs whose image data libpng would fail on mid-image (which crashes
torchvision's decoder) are caught first by :func:`png_stream_problem`; 16-bit PNGs become 8-bit; a JPEG or
PNG header claiming more than :data:`MAX_PIXELS` pixels is refused before anything is allocated.
A :class:`CropDataset` decodes each image once and cuts one uint8 crop per :class:`Geometry` from it. Resizing runs on the uint8 tensor: on CPUs with
AVX2 torchvision uses its native uint8 antialiased bilinear kernel, which matches PIL's
``Image.BILINEAR`` resize (the reference pipeline) on 99.7 % of pixels and within 1 grey level on all
of them on the 100 real val images; resizing in float32 and rounding also stays within 1 level but
differs from PIL on about 16 % of pixels. Without AVX2 (and on CUDA) torchvision itself falls back to
float32 + rounding.

On CUDA, ``make_loader(..., decoder="nvjpeg")`` decodes baseline/progressive 3-component JPEGs in
batches with nvJPEG (``torchvision.io.decode_jpeg(list, device="cuda")``) and resizes/crops on the
GPU. Everything nvJPEG should not see (greyscale, CMYK, PNG data in a ``.JPEG`` file, arithmetic
coding, files not ending in the JPEG end marker, e.g. truncated ones) is decoded by
:func:`decode_file` in the loader's CPU workers, so both paths apply the same bad-image policy.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode

from .cache import CropCache, open_caches

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
FULL_VAL_SIZE = 50_000
KAGGLE_SOLUTION = "LOC_val_solution.csv"
KAGGLE_HEADER = ["ImageId", "PredictionString"]
KAGGLE_SEARCH_DEPTH = 4  # val/ -> CLS-LOC/ -> Data/ -> ILSVRC/ -> Kaggle download root
LAYOUT_FOLDER = "imagefolder"
LAYOUT_FLAT = "flat"
LAYOUT_NUMERIC = "numeric"
BAD_IMAGE_POLICIES = ("fail", "skip")
DECODERS = ("cpu", "nvjpeg")
MAX_PIXELS = 2**28
"""Largest image :func:`decode_file` decodes (16384 x 16384; 768 MiB as uint8 RGB): a header claiming
more (a decompression bomb or a corrupt size field) is refused before memory is allocated."""
INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

DECODE_COUNT = 0
"""Calls of :func:`decode_file` in this process. With ``workers=0`` that is every CPU decode; worker
processes count in their own copies, so use ``workers=0`` when checking decode-once."""


class DatasetError(ValueError):
    """The folder or its labels file cannot be read as the ImageNet validation set."""


class BadImageError(ValueError):
    """An image file that cannot be decoded (empty, unreadable, truncated, corrupt, not an image)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable with its two arguments
        return type(self), (self.path, self.reason)


# ---------------------------------------------------------------------------------------------- classes


@lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo  # imported on first use: timm takes seconds to import

    return ImageNetInfo()


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted: the torchvision / IBN-Net numbering)."""
    return tuple(sorted(_imagenet_info().label_names()))


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Human-readable names of the 1000 classes in class-index order (timm's lemmas)."""
    return tuple(_imagenet_info().label_name_to_description(wnid) for wnid in imagenet_wnids())


# --------------------------------------------------------------------------------------------- discovery


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
                "root": str(self.root.resolve()), **({"already_cropped": True} if self.cropped else {})}


def _is_image(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()


def _images_in(folder: Path) -> dict[str, int]:
    """Image file names directly in ``folder`` with their sizes in bytes."""
    with os.scandir(folder) as entries:
        return {e.name: e.stat().st_size for e in entries if _is_image(e)}


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def open_dataset(root: str | os.PathLike, labels: str | os.PathLike | None = None,
                 limit: int | None = None) -> ValDataset:
    """Find and label the ImageNet validation images under ``root`` (layout auto-detected).

    ``root`` may also be the folder that holds ``val/``. ``labels``: a labels file (Kaggle csv,
    ``<file> <index>`` or ``<file> <wnid> <index>``), required for a flat folder without
    ``LOC_val_solution.csv``, checked against the class folders in the folder layout.
    ``limit``: keep the first ``limit`` images (sorted order) after all checks.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a folder (expected val/<wnid>/*.JPEG or val/*.JPEG)")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of images, got {limit}")
    top, folders = _images_in(root), _subfolders(root)
    if not top and "val" in folders and not set(folders) & set(_wnid_index()):
        root, top, folders = root / "val", _images_in(root / "val"), _subfolders(root / "val")
    class_folders = {name: images for name in folders if (images := _images_in(root / name))}
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
                           f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in {root} or its class folders")

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
    not_wnids = [name for name in folders if name not in _wnid_index()]
    if not_wnids:
        mixed = " (numeric class folders must all be 0..999, not mixed with others)" if numeric else ""
        raise DatasetError(f"{root}: folders {_examples(not_wnids)} are not ImageNet wnids{mixed}; expected the "
                           "ImageFolder layout <root>/<wnid>/*.JPEG with wnids like n01440764, or ImageNetV2's "
                           "<root>/<class index>/*.jpeg with folders 0..999")
    return LAYOUT_FOLDER, {name: _wnid_index()[name] for name in folders}


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
        raise FileNotFoundError(f"labels file {path} does not exist")
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
            raise DatasetError(f"{path}:{lineno}: wnid {tokens[1]} is class {_wnid_index()[tokens[1]]}, not {index}")
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
    if wnid not in _wnid_index():
        raise DatasetError(f"{path}:{lineno}: {wnid!r} is not an ImageNet-1k wnid")
    return _wnid_index()[wnid]


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


# ------------------------------------------------------------------------------------------ class subsets


@dataclass(frozen=True)
class ClassSubset:
    """The classes a dataset is scored on: argmax and top-5 over these logits only (ImageNet-R, -A: 200)."""

    indices: tuple[int, ...]
    source: str
    """Where the subset comes from: ``"from folders"`` or ``"from <file>"``."""

    def mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean ``[1000]``: True for the subset's classes."""
        mask = torch.zeros(len(imagenet_wnids()), dtype=torch.bool, device=device)
        mask[list(self.indices)] = True
        return mask

    def as_dict(self) -> dict:
        """For the record: ``{"n": 200, "mask": "from folders", "indices": [...]}``."""
        return {"n": len(self.indices), "mask": self.source, "indices": list(self.indices)}


def read_class_list(path: str | os.PathLike) -> tuple[int, ...]:
    """Class indices from a class-list file: one class per line, a wnid (``n01440764``) or a class index
    (``0``) as the first word; blank lines and ``#`` comments are ignored (``LOC_synset_mapping.txt`` reads)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"class-list file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"class-list file {path} cannot be read ({exc})") from None
    indices: set[int] = set()
    for lineno, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        word = words[0]
        if word.isdigit() and int(word) < len(imagenet_wnids()):
            indices.add(int(word))
        elif word in _wnid_index():
            indices.add(_wnid_index()[word])
        else:
            raise DatasetError(f"{path}:{lineno}: {word!r} is neither an ImageNet-1k wnid nor a class index 0..999")
    if not indices:
        raise DatasetError(f"class-list file {path} lists no classes")
    return tuple(sorted(indices))


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


# ---------------------------------------------------------------------------------------------- geometry


class HasGeometry(Protocol):
    resize: int
    crop: int
    interpolation: str


@dataclass(frozen=True)
class Geometry:
    """Shorter side -> ``resize`` (antialiased ``interpolation``), then centre crop ``crop`` x ``crop``."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.resize < 1 or self.crop < 1:
            raise ValueError(f"resize and crop must be positive, got resize={self.resize} crop={self.crop}")

    @classmethod
    def of(cls, spec: HasGeometry) -> Geometry:
        """The geometry of a :class:`~ibnbench.models.registry.Preprocessing` (or of a Geometry)."""
        return spec if isinstance(spec, Geometry) else cls(spec.resize, spec.crop, spec.interpolation)

    @property
    def key(self) -> str:
        return f"{self.interpolation}{self.resize}-crop{self.crop}"

    def apply(self, image: torch.Tensor, resize: bool = True) -> torch.Tensor:
        """Resize + centre crop a uint8 ``[3,H,W]`` image (CPU or CUDA) to uint8 ``[3,crop,crop]``
        (``resize=False``: the centre crop alone, for images that are already crops).

        Crop offsets are ``round((h - crop) / 2)`` like torchvision's ``center_crop`` (which also
        zero-pads an image smaller than the crop)."""
        if resize:
            image = TF.resize(image, [self.resize], interpolation=INTERPOLATIONS[self.interpolation], antialias=True)
        return TF.center_crop(image, [self.crop, self.crop])


def geometry_key(preprocessing: HasGeometry) -> str:
    """A key shared by every model whose inputs are cut the same way (normalisation aside)."""
    return Geometry.of(preprocessing).key


def _unique_geometries(specs: Iterable[HasGeometry]) -> tuple[Geometry, ...]:
    geometries = tuple(dict.fromkeys(Geometry.of(s) for s in specs))
    if not geometries:
        raise ValueError("no geometry requested: pass at least one Preprocessing or Geometry")
    return geometries


# ---------------------------------------------------------------------------------------------- decoding


def _decoder_reason(exc: Exception) -> str:
    """torchvision's message without its ``function, /source/file.cpp:123,`` prefix."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    parts = message.split(", ", 2)
    return parts[2] if len(parts) == 3 and ".cpp:" in parts[1] else message


def read_bytes(path: str | os.PathLike) -> torch.Tensor:
    """The bytes of an image file as a uint8 tensor; BadImageError if unreadable or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadImageError(path, f"unreadable ({exc.strerror or exc})") from None
    if not data:
        raise BadImageError(path, "empty file (0 bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_file(path: str | os.PathLike) -> torch.Tensor:
    """Read and decode one image file (JPEG, PNG, ...; greyscale and CMYK too) to uint8 RGB ``[3,H,W]``.

    16-bit PNGs are scaled to 8 bits (the high byte). A JPEG or PNG whose header claims more than
    :data:`MAX_PIXELS` pixels is refused before any memory is allocated for it."""
    global DECODE_COUNT
    DECODE_COUNT += 1
    data = read_bytes(path)
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadImageError(path, f"too large to decode ({size[0]}x{size[1]} pixels, more than the "
                                  f"{MAX_PIXELS:,} an image may have)")
    problem = png_stream_problem(data)
    if problem:
        raise BadImageError(path, f"cannot decode (corrupt PNG: {problem})")
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise BadImageError(path, f"cannot decode ({_decoder_reason(exc)})") from None
    return TF.to_dtype(image, torch.uint8, scale=True) if image.dtype != torch.uint8 else image


_SOF_NVJPEG = {0xC0, 0xC1, 0xC2}  # Huffman baseline, extended, progressive
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_frame(raw: memoryview) -> int | None:
    """Offset of the frame header (SOFn marker) of JPEG bytes; None if the markers before it are broken
    or a scan starts first."""
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_NVJPEG or marker in _SOF_OTHER:
            return pos
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(bytes(raw[pos + 2:pos + 4]), "big")
    return None


def image_size(data: torch.Tensor) -> tuple[int, int] | None:
    """``(width, height)`` from the header of JPEG or PNG bytes, without decoding; None for other data."""
    raw = memoryview(data.numpy())
    if bytes(raw[:8]) == _PNG_SIGNATURE and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if bytes(raw[:2]) == b"\xff\xd8":
        pos = _jpeg_frame(raw)
        if pos is not None and pos + 9 <= len(raw):
            return int.from_bytes(raw[pos + 7:pos + 9], "big"), int.from_bytes(raw[pos + 5:pos + 7], "big")
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_stream_problem(data: torch.Tensor) -> str | None:
    """What is wrong with the image data of PNG bytes, or None (also for non-PNG data).

    torchvision's PNG decoder crashes the process (segmentation fault) when libpng fails while reading
    rows: an IDAT chunk with a bad CRC, a corrupt or short zlib stream, a row filter byte above 4. This
    checks exactly those in Python (one extra inflate per PNG) so that such a file raises instead.
    Header problems and files cut short are left to the decoder, which reports them cleanly."""
    raw = data.numpy().tobytes() if data[:8].numpy().tobytes() == _PNG_SIGNATURE else b""
    header, stream, pos = b"", [], 8
    while pos + 12 <= len(raw):
        length, kind = int.from_bytes(raw[pos:pos + 4], "big"), raw[pos + 4:pos + 8]
        end = pos + 8 + length
        if end + 4 > len(raw):
            break
        if kind == b"IHDR":
            header = raw[pos + 8:end]
        elif kind == b"IDAT":
            if zlib.crc32(raw[pos + 4:end]) != int.from_bytes(raw[end:end + 4], "big"):
                return "IDAT chunk CRC error"
            stream.append(raw[pos + 8:end])
        elif kind == b"IEND":
            break
        pos = end + 4
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    if len(header) != 13 or not stream or header[9] not in _PNG_CHANNELS or header[12] > 1 or not width * height:
        return None
    bits = header[8] * _PNG_CHANNELS[header[9]]
    passes = [(width, height)] if header[12] == 0 else [
        (-(-(width - x) // dx), -(-(height - y) // dy)) for x, y, dx, dy in _ADAM7 if width > x and height > y]
    rows = [(1 + (w * bits + 7) // 8, h) for w, h in passes]
    expected = sum(stride * h for stride, h in rows)
    inflate = zlib.decompressobj()
    try:
        pixels = inflate.decompress(b"".join(stream), expected)
        while inflate.unconsumed_tail:  # extra data after the rows: libpng checks it up to the checksum
            inflate.decompress(inflate.unconsumed_tail, 1 << 16)
        inflate.flush()
    except zlib.error as exc:
        return f"corrupt image data ({str(exc).split(': ')[-1]})"
    if len(pixels) < expected or not inflate.eof:
        return "not enough image data"
    start = 0
    for stride, h in rows:
        if max(pixels[start:start + stride * h:stride]) > 4:
            return "bad row filter"
        start += stride * h
    return None


def nvjpeg_can_decode(data: torch.Tensor) -> bool:
    """Whether JPEG bytes are a complete, Huffman-coded, 3-component (YCbCr) image that nvJPEG decodes
    like libjpeg; greyscale, CMYK, non-JPEG data and files without the end marker go to the CPU."""
    raw = memoryview(data.numpy())
    if bytes(raw[:2]) != b"\xff\xd8" or bytes(raw[-2:]) != b"\xff\xd9":
        return False
    pos = _jpeg_frame(raw)
    return pos is not None and raw[pos + 1] in _SOF_NVJPEG and pos + 9 < len(raw) and raw[pos + 9] == 3


# ----------------------------------------------------------------------------------------- dataset / loader


@dataclass
class Sample:
    """One image: its crops, or why it could not be decoded, or its bytes left to nvJPEG."""

    index: int
    label: int
    crops: dict[str, torch.Tensor]
    error: str = ""
    encoded: torch.Tensor | None = None


class CropDataset(Dataset):
    """Decode each image of ``val`` once and cut one uint8 crop per geometry from it.

    A bad image comes back as a :class:`Sample` with ``error`` set and no crops: the policy is applied
    by :class:`CropLoader` in the main process, because an exception raised in a DataLoader worker
    reaches the caller as a multi-line RuntimeError. ``nvjpeg=True``: JPEGs that nvJPEG can decode
    come back undecoded (``encoded`` bytes, no crops).
    """

    def __init__(self, val: ValDataset, geometries: Iterable[HasGeometry], nvjpeg: bool = False) -> None:
        self.val = val
        self.geometries = _unique_geometries(geometries)
        self.nvjpeg = nvjpeg

    def __len__(self) -> int:
        return len(self.val)

    def __getitem__(self, index: int) -> Sample:
        label = int(self.val.labels[index])
        path = self.val.path(index)
        try:
            if self.nvjpeg:
                data = read_bytes(path)
                if nvjpeg_can_decode(data):
                    return Sample(index, label, {}, encoded=data)
            image = decode_file(path)
        except BadImageError as exc:
            return Sample(index, label, {}, error=exc.reason)
        return Sample(index, label, {g.key: g.apply(image, not self.val.cropped) for g in self.geometries})

    def collate(self, samples: list[Sample]) -> dict:
        """Stack samples into a batch (zero crops where there is none yet). ``bad``: ``(index, reason)``
        of images that failed; ``encoded``: ``(rows, lengths, bytes)`` of images to decode on the device."""
        crops = {}
        for g in self.geometries:
            stacked = torch.zeros(len(samples), 3, g.crop, g.crop, dtype=torch.uint8)
            for row, sample in enumerate(samples):
                if g.key in sample.crops:
                    stacked[row] = sample.crops[g.key]
            crops[g.key] = stacked
        pending = [(row, s.encoded) for row, s in enumerate(samples) if s.encoded is not None]
        return {"index": torch.tensor([s.index for s in samples], dtype=torch.long),
                "label": torch.tensor([s.label for s in samples], dtype=torch.long),
                "ok": torch.tensor([not s.error for s in samples], dtype=torch.bool),
                "crops": crops,
                "bad": [(s.index, s.error) for s in samples if s.error],
                # one flat tensor, not one per image: each tensor a worker sends costs a shared-memory handle
                "encoded": ([row for row, _ in pending], [len(d) for _, d in pending],
                            torch.cat([d for _, d in pending]) if pending else torch.empty(0, dtype=torch.uint8))}


def nvjpeg_device(device: torch.device | str) -> torch.device:
    """``device`` with its index (``cuda`` -> ``cuda:N``, the current one): torchvision keeps one global nvJPEG
    decoder and rebuilds it whenever the device it is asked for differs, ``cuda`` from ``cuda:0`` included."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@lru_cache(maxsize=None)
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def nvjpeg_decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Decode JPEG bytes to RGB on ``device`` in one batched nvJPEG call; the images are ready for use on
    ``device``'s current stream.

    torchvision 0.29 allocates the outputs on the current stream but has nvJPEG write them from a stream of its
    own that does not wait for the current one, so memory that kernels still queued there had just freed could
    be overwritten (pytorch/vision#9606). So the call runs on a side stream on which no kernel ever runs (it
    waits for the current stream first): the outputs come from that stream's memory pool, whose blocks return
    only once every stream that used them is done (``record_stream``). The current stream then waits for the
    decode. No host synchronisation is added. Off CUDA (tests), ``decode_jpeg`` is called as it is."""
    if device.type != "cuda":
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    current, side = torch.cuda.current_stream(device), _decode_stream(device)
    side.wait_stream(current)
    with torch.cuda.device(device), torch.cuda.stream(side):
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    current.wait_stream(side)
    for image in images:
        image.record_stream(current)
    return images


class GpuDecoder:
    """Decode a batch's pending JPEGs with nvJPEG in one call and resize/crop them on ``device``.

    If the batched call fails, images are retried one by one; one that nvJPEG still rejects is decoded
    by :func:`decode_file` on the CPU, so a corrupt file gets the same error as on the CPU path.
    ``decoded_on_device`` and ``fallbacks`` count what happened.
    """

    def __init__(self, dataset: CropDataset, device: torch.device | str = "cuda") -> None:
        self.dataset = dataset
        self.device = nvjpeg_device(device)
        self.decoded_on_device = 0
        self.fallbacks = 0

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        try:
            return nvjpeg_decode(data, self.device)
        except RuntimeError:
            if len(data) == 1:
                return [None]
            return [self._decode([d])[0] for d in data]

    def __call__(self, batch: dict) -> dict:
        """Move the batch's crops to ``device`` and fill in the rows listed in ``batch["encoded"]``."""
        batch["crops"] = {k: v.to(self.device, non_blocking=True) for k, v in batch["crops"].items()}
        rows, lengths, packed = batch.pop("encoded")
        images = self._decode(list(packed.split(lengths))) if rows else []
        for row, image in zip(rows, images):
            if image is None:
                self.fallbacks += 1
                index = int(batch["index"][row])
                try:
                    image = decode_file(self.dataset.val.path(index)).to(self.device)
                except BadImageError as exc:
                    batch["ok"][row] = False
                    batch["bad"].append((index, exc.reason))
                    continue
            else:
                self.decoded_on_device += 1
            for g in self.dataset.geometries:
                batch["crops"][g.key][row] = g.apply(image, not self.dataset.val.cropped)
        return batch


class CropLoader:
    """Iterates batches ``{"index": [N], "label": [N], "ok": [N] bool, "crops": {geometry key: uint8
    [N,3,c,c]}, "bad": [(relative path, reason)]}``; skipped images have ``ok`` False and zero crops.

    ``batches`` fixes which images go in each batch; with ``caches``, images found there are read from
    them, the others (``loader`` yields exactly those, batch by batch) are decoded and stored."""

    def __init__(self, loader: DataLoader, dataset: CropDataset, on_bad_image: str, gpu: GpuDecoder | None,
                 batches: list[list[int]], missing: list[list[int]] | None = None,
                 caches: dict[str, CropCache] | None = None) -> None:
        self.loader = loader
        self.dataset = dataset
        self.on_bad_image = on_bad_image
        self.gpu = gpu
        self.batches = batches
        self.missing = batches if missing is None else missing
        self.caches = caches or {}
        self.from_cache = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        decoded = iter(self.loader)
        for chunk, missing in zip(self.batches, self.missing):
            batch = None
            if missing:
                batch = next(decoded)
                batch = self.gpu(batch) if self.gpu is not None else batch
                batch.pop("encoded", None)
                self._store(batch)
            if len(missing) < len(chunk):
                batch = self._with_cached(chunk, missing, batch)
            if batch["bad"] and self.on_bad_image == "fail":
                index, reason = batch["bad"][0]
                raise BadImageError(self.dataset.val.path(index), reason)
            batch["bad"] = [(self.dataset.val.files[i], reason) for i, reason in batch["bad"]]
            yield batch

    def _store(self, batch: dict) -> None:
        for key, cache in self.caches.items():
            cache.put(batch["index"], batch["crops"][key], batch["ok"])

    def _with_cached(self, chunk: list[int], missing: list[int], decoded: dict | None) -> dict:
        """The batch of ``chunk`` read from the caches (its ``missing`` rows were decoded and stored first),
        with the ok flags and problems of the decoded rows."""
        index = torch.tensor(chunk, dtype=torch.long)
        batch = {"index": index, "label": self.dataset.val.labels[index], "ok": torch.ones(len(chunk), dtype=torch.bool),
                 "crops": {key: cache.get(index) for key, cache in self.caches.items()}, "bad": []}
        self.from_cache += len(chunk) - len(missing)
        if decoded is not None:
            row_of = {i: row for row, i in enumerate(chunk)}
            batch["ok"][[row_of[i] for i in missing]] = decoded["ok"]
            batch["bad"] = decoded["bad"]
        return batch


def make_loader(dataset: ValDataset, geometries: Iterable[HasGeometry], batch_size: int = 64, workers: int = 4,
                pin_memory: bool = False, on_bad_image: str = "fail", decoder: str = "cpu",
                device: torch.device | str = "cuda", indices: Sequence[int] | None = None,
                cache: str | None = None) -> CropLoader:
    """Batches of crops for every distinct geometry in ``geometries``, each image decoded once.

    ``decoder="cpu"``: decode + resize + crop in ``workers`` processes (crops on the CPU, pinned with
    ``pin_memory``). ``decoder="nvjpeg"``: workers read the files, JPEGs are decoded and cropped on
    ``device`` (the rest decoded in the workers), crops on ``device``. ``on_bad_image``: "fail" raises
    :class:`BadImageError`; "skip" marks the image not ok and lists it in the batch's ``bad``.
    ``indices``: visit only these images, in this order (a rank's shard, or what a resumed run has left).
    ``cache``: a folder, or "gpu", for the uint8 crop cache (:mod:`ibnbench.cache`).
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    gpu = decoder == "nvjpeg"
    if gpu and not (torch.device(device).type == "cuda" and torch.cuda.is_available()):
        raise ValueError(f"decoder 'nvjpeg' needs a CUDA device, got {device!r} (CUDA available: "
                         f"{torch.cuda.is_available()}); use decoder='cpu'")
    crops = CropDataset(dataset, geometries, nvjpeg=gpu)
    order = list(range(len(dataset)) if indices is None else indices)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    caches = open_caches(cache, dataset, crops.geometries, decoder, torch.device(device)) if cache else {}
    missing = batches
    if caches:
        cached = torch.stack([c.filled.cpu().bool() for c in caches.values()]).all(dim=0).tolist()
        missing = [[i for i in chunk if not cached[i]] for chunk in batches]
    loader = DataLoader(crops, batch_sampler=[m for m in missing if m], num_workers=workers,
                        collate_fn=crops.collate, pin_memory=pin_memory)
    return CropLoader(loader, crops, on_bad_image, GpuDecoder(crops, device) if gpu else None, batches, missing,
                      caches)

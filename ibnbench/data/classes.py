"""ImageNet's 1000 classes (timm's metadata) and class subsets (ImageNet-R/-A's 200 classes, class-list files)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ibnbench.errors import DatasetError, MissingFileError

NUM_CLASSES = 1000
"""Classes of ImageNet-1k: the width of the logits every scored model must return."""


@lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo  # imported on first use: timm takes seconds to import

    return ImageNetInfo()


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted: the torchvision / IBN-Net numbering)."""
    return tuple(sorted(_imagenet_info().label_names()))


@lru_cache(maxsize=1)
def wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Human-readable names of the 1000 classes in class-index order (timm's lemmas)."""
    return tuple(_imagenet_info().label_name_to_description(wnid) for wnid in imagenet_wnids())


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
        raise MissingFileError(f"class-list file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
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
        elif word in wnid_index():
            indices.add(wnid_index()[word])
        else:
            raise DatasetError(f"{path}:{lineno}: {word!r} is neither an ImageNet-1k wnid nor a class index 0..999")
    if not indices:
        raise DatasetError(f"class-list file {path} lists no classes")
    return tuple(sorted(indices))

"""The frost textures ImageNet-C's frost corruption lays over the image (six images of the Apache-2.0
``imagecorruptions`` package): where they are found, how they are downloaded and checked, and how they are read."""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ibnbench.errors import MissingFileError
from ibnbench.io import cache_dir, fetch

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_DIR_ENV = "IBNBENCH_FROST_DIR"
FROST_URL = "https://raw.githubusercontent.com/bethgelab/imagecorruptions/master/imagecorruptions/frost/{name}"
FROST_URL_ENV = "IBNBENCH_FROST_URL"  # another base URL (a mirror) holding the six files
FROST_CACHE = "imagecorruptions-frost"
FROST_SHA256 = {  # the files of imagecorruptions 1.1.2 (Apache-2.0)
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
    "frost6.jpg": "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25",
}


def _frost_candidates() -> list[Path]:
    """``$IBNBENCH_FROST_DIR``, the installed ``imagecorruptions`` package, then torch hub's cache."""
    if os.environ.get(FROST_DIR_ENV):
        return [Path(os.environ[FROST_DIR_ENV]).expanduser()]
    spec = importlib.util.find_spec("imagecorruptions")
    package = [] if spec is None or spec.origin is None else [Path(spec.origin).parent / "frost"]
    return package + [cache_dir() / FROST_CACHE]


def frost_dir() -> Path | None:
    """The first folder holding the frost textures (see :func:`_frost_candidates`), or None."""
    return next((folder for folder in _frost_candidates()
                 if all((folder / name).is_file() for name in FROST_FILES[:5])), None)


def missing_frost() -> str | None:
    """A line naming the missing frost textures and how to get them, or None when all are there; no network."""
    if frost_dir() is not None:
        return None
    looked = " or ".join(str(folder) for folder in _frost_candidates())
    return (f"frost textures {', '.join(FROST_FILES[:5])}: run `ibnbench fetch frost` (downloads them into torch "
            f"hub's cache, sha256-checked), install the `imagecorruptions` package, or set ${FROST_DIR_ENV} to a "
            f"folder holding them; looked in {looked}")


def fetch_frost(progress: bool = True) -> Path:
    """Download the six frost textures into torch hub's cache (``imagecorruptions-frost/``), each checked against
    its sha256; files already there are checked, not downloaded again. Returns the folder."""
    base = os.environ.get(FROST_URL_ENV)
    for name, sha256 in FROST_SHA256.items():
        url = f"{base.rstrip('/')}/{name}" if base else FROST_URL.format(name=name)
        fetch(url, sha256, f"frost texture {name}", progress, folder=FROST_CACHE,
              otherwise=f"set ${FROST_DIR_ENV} to a folder holding the six files, or ${FROST_URL_ENV} to a mirror")
    return cache_dir() / FROST_CACHE


def fitting_scale(texture: tuple[int, int], image: tuple[int, int]) -> float:
    """imagecorruptions' resize factor of a frost texture of ``(height, width)`` for an image of ``(height, width)``:
    1 when the texture covers the image, else the larger ratio of a side it falls short on, times 1.1."""
    short = [i / t for t, i in zip(texture, image) if t < i]
    return max(short, default=1.0) * 1.1


@lru_cache(maxsize=4)
def frost_textures(folder: str, height: int = 224, width: int = 224) -> tuple[torch.Tensor, ...]:
    """The first five frost images (ImageNet-C draws among them), RGB float 0..255, each resized (bicubic) by its
    :func:`fitting_scale` for an image of ``height`` x ``width`` (1.1 for ImageNet-C's 224 crops)."""
    from PIL import Image

    textures = []
    for name in FROST_FILES[:5]:
        with Image.open(Path(folder) / name) as image:
            rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            rgb = rgb.view(image.height, image.width, 3).permute(2, 0, 1)[None].float()
        scale = fitting_scale(tuple(rgb.shape[-2:]), (height, width))
        size = (int(math.ceil(rgb.shape[-2] * scale)), int(math.ceil(rgb.shape[-1] * scale)))
        textures.append(F.interpolate(rgb, size=size, mode="bicubic", align_corners=False)[0])
    return tuple(textures)


@lru_cache(maxsize=4)
def frost_stack(folder: str, height: int, width: int, device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`frost_textures` for ``height`` x ``width`` images on ``device``, once per size, device and dtype:
    zero-padded to one ``[5, 3, H, W]`` tensor, with each texture's ``[5, 2]`` (height, width)."""
    textures = frost_textures(folder, height, width)
    stack = torch.zeros(len(textures), 3, max(t.shape[-2] for t in textures), max(t.shape[-1] for t in textures),
                        dtype=dtype)
    for k, texture in enumerate(textures):
        stack[k, :, :texture.shape[-2], :texture.shape[-1]] = texture
    sizes = torch.tensor([tuple(t.shape[-2:]) for t in textures])
    return stack.to(device), sizes.to(device)


@dataclass(frozen=True)
class FrostTextures:
    """The frost textures of ``folder`` for images on ``device``; :meth:`fitted` resizes them for an image size."""

    folder: str
    device: torch.device

    def fitted(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`frost_stack` in float32 for ``height`` x ``width`` images (made once per size)."""
        return frost_stack(self.folder, height, width, self.device, torch.float32)


def frost_textures_on(device: torch.device) -> FrostTextures:
    """The textures :func:`frost_dir` finds, for images on ``device``; a :class:`~ibnbench.errors.MissingFileError`
    saying how to get them when they are missing."""
    folder = frost_dir()
    if folder is None:
        raise MissingFileError(missing_frost())
    return FrostTextures(str(folder), torch.device(device))

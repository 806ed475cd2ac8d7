"""Synthetic pictures, ImageNet-style folders of them, and checks on written image files: helpers shared by
test modules (not a test module itself)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ibnbench.data import classes as data

WNIDS = data.imagenet_wnids()
A, B = WNIDS[5], WNIDS[900]  # two classes far apart: a loader numbering folders found gives 0 and 1

# nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's, so decoded pixels differ by a few
# levels (more on sharp colour edges); the antialiased resize averages that out. Mean < 1.5 and max < 40
# levels catch wrong geometry, channel order or colour conversion (which give means of tens of levels).
GPU_MEAN_TOLERANCE, GPU_MAX_TOLERANCE = 1.5, 40


def picture(seed: int, height: int = 40, width: int = 56) -> Image.Image:
    """A smooth random RGB picture (JPEG-friendly)."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def write_image(path: Path, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG", **size) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    picture(seed, **size).convert(mode).save(buffer, format=fmt, quality=95)
    path.write_bytes(buffer.getvalue())
    return path


def val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def make_folder(root: Path, classes: dict[str, list[int]]) -> Path:
    for wnid, ids in classes.items():
        for i in ids:
            write_image(root / wnid / val_name(i), seed=i)
    return root


def make_flat(root: Path, ids: list[int]) -> Path:
    for i in ids:
        write_image(root / val_name(i), seed=i)
    return root


def assert_png(path: Path, min_size: tuple[int, int] = (800, 400)) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    assert path.stat().st_size > 20_000

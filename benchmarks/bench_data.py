"""Decode + resize + crop of one real ImageNet val image (skips without ../shared/data/imagenet-val-100)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ibnbench.data.decode import decode_file
from ibnbench.data.geometry import Geometry

SHARED = Path(os.environ.get("IBNBENCH_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
VAL100 = SHARED / "data" / "imagenet-val-100" / "val"


@pytest.fixture(scope="module")
def real_image() -> Path:
    images = sorted(VAL100.glob("*/*.JPEG"))
    if not images:
        pytest.skip(f"{VAL100} is absent: this benchmark needs ../shared beside the checkout (or $IBNBENCH_SHARED)")
    return images[0]


def test_decode_resize_crop(benchmark, real_image):
    geometry = Geometry()
    crop = benchmark(lambda: geometry.apply(decode_file(real_image)))
    assert crop.shape == (3, 224, 224)


def test_decode_once_crop_twice(benchmark, real_image):
    geometries = (Geometry(), Geometry(320, 288, "bicubic"))

    def run():
        image = decode_file(real_image)
        return [g.apply(image) for g in geometries]

    crops = benchmark(run)
    assert [c.shape[-1] for c in crops] == [224, 288]

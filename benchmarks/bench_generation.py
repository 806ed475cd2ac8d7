"""Generating ImageNet-P frames and ImageNet-C-bar corruptions, ours and the numpy reference of
benchmarks/references/ on the same 224 crop (one perturbation and one corruption, so that ``--benchmark-disable``
stays quick). The full side-by-side comparison is ``ibnbench bench --imagenet-p`` / ``--c-bar``; numbers:
benchmarks/RESULTS.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.references import c_bar as c_bar_reference
from benchmarks.references import imagenet_p as p_reference
from ibnbench.conditions import perturbations as P
from ibnbench.conditions.c_bar import corrupt_bar

IMAGE = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
BATCH = 2


def batch(side: int) -> torch.Tensor:
    crop = (256 - side) // 2
    return torch.from_numpy(IMAGE[crop:crop + side, crop:crop + side]).permute(2, 0, 1)[None].float().repeat(
        BATCH, 1, 1, 1)


@pytest.mark.parametrize("side", ["ours", "reference"])
def test_imagenet_p_rotate_sequence(benchmark, side):
    if side == "ours":
        x = batch(256)
        out = benchmark(P.frames, x, torch.arange(BATCH), "rotate")
        assert out.shape == (31, BATCH, 3, 224, 224)
    else:
        out = benchmark(p_reference.sequence, IMAGE, "rotate")
        assert out.shape == (31, 224, 224, 3)
    benchmark.extra_info["images_per_call"] = BATCH if side == "ours" else 1


@pytest.mark.parametrize("side", ["ours", "reference"])
def test_c_bar_plasma_noise(benchmark, side):
    if side == "ours":
        x = batch(224)
        out = benchmark(corrupt_bar, x, torch.arange(BATCH), "plasma_noise", 3, 0)
        assert out.shape == x.shape
    else:
        out = benchmark(c_bar_reference.corrupt, IMAGE[16:240, 16:240], 3, "plasma_noise")
        assert out.shape == (224, 224, 3)
    benchmark.extra_info["images_per_call"] = BATCH if side == "ours" else 1

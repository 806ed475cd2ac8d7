"""The reference implementation, ``imagecorruptions`` 1.1.2, made importable on today's stack (test-only shims:
``pkg_resources`` is gone from setuptools >= 81, ``np.float_`` from numpy 2, ``multichannel`` from scikit-image),
and the crops ImageNet-C was made from (PIL Resize 256 + CenterCrop 224)."""
from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch


def imagecorruptions():
    """The reference package with its shims (skips when it is not installed)."""
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("the reference package `imagecorruptions` is not installed (pip install -e .[test])")
    shimmed = "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None
    if shimmed:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: os.path.join(
            os.path.dirname(sys.modules[package].__file__), name)
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    try:
        module = importlib.import_module("imagecorruptions")
    finally:  # the package keeps the name it imported; other code must not find a stub pkg_resources
        if shimmed:
            del sys.modules["pkg_resources"]
    corruptions = sys.modules["imagecorruptions.corruptions"]
    if not getattr(corruptions.gaussian, "shimmed", False):
        from skimage.filters import gaussian

        def gaussian_shim(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs["channel_axis"] = -1
            return gaussian(image, *args, **kwargs)

        gaussian_shim.shimmed = True
        corruptions.gaussian = gaussian_shim
    return module


def reference(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``imagecorruptions.corrupt`` of one HxWx3 uint8 image with numpy's global generator seeded."""
    module = imagecorruptions()
    np.random.seed(seed)
    return module.corrupt(image, severity=severity, corruption_name=name)


def imagenet_c_crops(folder: Path, n: int) -> np.ndarray:
    """The first ``n`` images (sorted paths) as ImageNet-C cropped them: PIL Resize 256 + CenterCrop 224, uint8 NHWC."""
    from PIL import Image
    from torchvision import transforms

    crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[:n]
    return np.stack([np.asarray(crop(Image.open(f).convert("RGB"))) for f in files])


def to_batch(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 -> NCHW float 0..255."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def corrupt(image: np.ndarray, severity: int, corruption_name: str) -> np.ndarray:
    """``imagecorruptions.corrupt`` with the shims: what ``ibnbench bench --corruptions --reference
    tests/helpers/corruption_reference.py:corrupt`` times."""
    return imagecorruptions().corrupt(image, severity=severity, corruption_name=corruption_name)

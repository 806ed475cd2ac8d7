"""The reference implementation, ``imagecorruptions`` 1.1.2, made importable on today's stack
(:mod:`benchmarks.references.imagecorruptions_package`; skipped when absent), and the crops ImageNet-C was made from
(PIL Resize 256 + CenterCrop 224)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.references.imagecorruptions_package import load


def imagecorruptions():
    """The reference package with its shims (skips when it is not installed)."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        pytest.skip(str(exc))


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

"""The reference implementation, ``imagecorruptions`` 1.1.2, made importable on today's stack
(:mod:`benchmarks.references.imagecorruptions_package`; skipped when absent), and the crops ImageNet-C was made from
(PIL Resize 256 + CenterCrop 224); our corruption and the reference side by side, and how far random ones may
differ in distribution."""
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


# Relative tolerance on the mean absolute change |corrupted - clean| (averaged over the crops) per random corruption:
# tight where the draws are per pixel (the average is over ~10^6 draws), looser where one draw per image decides much
# (the frost texture and its crop, the fog's fractal, the motion angle), loosest where ours stands in for an OpenCV
# step (spatter's Canny edges). Glass blur's sequential sweeps are computed exactly (test below): its draws decide.
CHANGE_TOLERANCE = {"gaussian_noise": 0.02, "shot_noise": 0.02, "impulse_noise": 0.03, "speckle_noise": 0.02,
                    "motion_blur": 0.1, "snow": 0.05, "frost": 0.25, "fog": 0.25, "elastic_transform": 0.08,
                    "spatter": 0.3, "glass_blur": 0.03}


def ours(images: np.ndarray, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Our condition ``name-severity`` of uint8 NHWC ``images`` (dataset indices 0..N-1), NCHW 0..255."""
    from ibnbench.conditions.base import Corruption

    condition = Corruption(f"{name}-{severity}", corruption=name, severity=severity, seed=seed)
    return condition(to_batch(images), torch.arange(len(images)))


def references(images: np.ndarray, name: str, severity: int) -> torch.Tensor:
    """The reference's corruption of each of ``images`` (numpy seeded with the image's position), NCHW 0..255."""
    return to_batch(np.stack([reference(image, name, severity, seed=i) for i, image in enumerate(images)]))


def assert_equals_reference(images: np.ndarray, name: str, severity: int) -> None:
    """A deterministic corruption of ``images`` (uint8 NHWC) equals the reference's to within a grey level on
    average (two for the PIL ops, pixelate and JPEG), in integers as the uint8 files hold."""
    mine, theirs = ours(images, name, severity), references(images, name, severity)
    assert mine.shape == theirs.shape and torch.equal(mine, mine.round())
    mad = float((mine - theirs).abs().mean())
    assert mad <= (2.0 if name in ("pixelate", "jpeg_compression") else 1.0), f"{name}-{severity}: MAD {mad:.3f}"


def _noise_std(y: torch.Tensor, x: torch.Tensor) -> float:
    """Std of the change where the clean value is far from the clipping limits (what the noise level sets)."""
    mid = (x > 40) & (x < 215)
    return float((y - x)[mid].std())


def assert_agrees_in_distribution(images: np.ndarray, name: str, severity: int) -> None:
    """A random corruption of ``images`` changes them as much as the reference's does (:data:`CHANGE_TOLERANCE`);
    for the noises, the noise level and the share of clipped values agree too."""
    x = to_batch(images)
    mine, theirs = ours(images, name, severity), references(images, name, severity)
    assert mine.shape == theirs.shape
    change = float((mine - x).abs().mean()), float((theirs - x).abs().mean())
    assert abs(change[0] - change[1]) <= CHANGE_TOLERANCE[name] * change[1] + 0.2, (name, severity, change)
    if name.endswith("_noise"):
        assert _noise_std(mine, x) == pytest.approx(_noise_std(theirs, x), rel=0.03), (name, severity)
        clipped = [float(((y == 0) | (y == 255)).float().mean()) for y in (mine, theirs)]
        assert clipped[0] == pytest.approx(clipped[1], abs=0.005), (name, severity)

"""Tiny segmentation stand-ins for the engine tests (not a test module itself): a synthetic Cityscapes folder in its
released layout and a small registered segmentation model (a few convolutions giving 19-class logits at the input's
size)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ibnbench.zoo import register_model
from ibnbench.zoo.meta import Preprocessing

TINY = "tiny_segmenter_test"
"""A registered segmentation model small enough to run on CPU in milliseconds."""
CITIES = ("frankfurt", "lindau")


class TinySegmenter(nn.Module):
    """Two 3x3 convolutions and a 1x1 head to 19 classes, the input's size kept."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def register_tiny(name: str = TINY, classes: int = 19) -> str:
    """Register a :class:`TinySegmenter` as ``name`` (once per process) and return the name."""
    from ibnbench.zoo.registry import _REGISTRY

    if name not in _REGISTRY:
        register_model(lambda: TinySegmenter(classes), name=name, family="test", variant="tiny", task="segmentation",
                       preprocessing=Preprocessing(source="ImageNet mean/std"))
    return name


def unregister(*names: str) -> None:
    """Take test models out of the registry again (other tests list the registered segmentation models)."""
    from ibnbench.zoo.registry import _REGISTRY

    for name in names:
        _REGISTRY.pop(name, None)


def make_cityscapes(root: Path, n: int = 4, height: int = 24, width: int = 48, seed: int = 0) -> Path:
    """``leftImg8bit/val/<city>/*_leftImg8bit.png`` with ``gtFine/val/<city>/*_gtFine_labelIds.png``: smooth random
    pictures and label ids drawn from Cityscapes' ids (0 unlabeled, 7 road, 8 sidewalk, 11 building, 21
    vegetation, 23 sky, 26 car)."""
    rng = np.random.default_rng(seed)
    ids = np.array([0, 7, 8, 11, 21, 23, 26], dtype=np.uint8)
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        stem = f"{city}_{i:06d}_000019"
        image_dir, label_dir = root / "leftImg8bit/val" / city, root / "gtFine/val" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(image_dir / f"{stem}_leftImg8bit.png")
        label = ids[rng.integers(0, len(ids), (height // 4, width // 4))].repeat(4, 0).repeat(4, 1)
        Image.fromarray(label[:height, :width]).save(label_dir / f"{stem}_gtFine_labelIds.png")
    return root


def main() -> int:
    """The CLI with :data:`TINY` registered (``python -m helpers.segmentation run ...`` from ``tests/``)."""
    import sys

    from ibnbench.cli import main as cli

    register_tiny()
    return cli(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

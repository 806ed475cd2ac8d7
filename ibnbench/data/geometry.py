"""Crop geometry: the resize and centre crop a model's preprocessing asks for, and the key that groups the models
sharing one crop (each image is decoded once and cut once per geometry).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ibnbench.errors import UsageError

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


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
            raise UsageError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.resize < 1 or self.crop < 1:
            raise UsageError(f"resize and crop must be positive, got resize={self.resize} crop={self.crop}")

    @classmethod
    def of(cls, spec: HasGeometry) -> Geometry:
        """The geometry of a :class:`~ibnbench.zoo.meta.Preprocessing` (or of a Geometry)."""
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


def unique_geometries(specs: Iterable[HasGeometry]) -> tuple[Geometry, ...]:
    geometries = tuple(dict.fromkeys(Geometry.of(s) for s in specs))
    if not geometries:
        raise UsageError("no geometry requested: pass at least one Preprocessing or Geometry")
    return geometries

"""What the zoo knows about a model besides its architecture: preprocessing, its releases (timm's ``arch.tag``:
URL, sha256 prefix, licence, preprocessing, reference metrics and their source), the :class:`ModelInfo` that carries
them and :class:`LoadedWeights`, what a built model was given."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Callable

import torch
from torch import nn

from ibnbench.errors import UnknownModelError, UsageError
from ibnbench.io import hash_prefix_from_name

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
MAX_SIDE = 4096
"""Largest resize or crop (pixels) a preprocessing may ask for: above any ImageNet model's input, and a
4096 x 4096 crop batch of 64 already takes 12 GiB in float32."""


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing: shorter side -> ``resize``, centre crop ``crop``, then
    ``(x - mean) / std`` with ``x`` RGB on the 0..255 scale."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    interpolation: str = "bilinear"
    source: str = "torchvision ImageNet default"

    @property
    def convention(self) -> str:
        """A short human description of the input normalisation."""
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return f"(x-{self.mean[0]:g})/{self.std[0]:g}"
        return "imagenet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN_255, IMAGENET_STD_255) else "mean/std"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a 0..255 RGB batch ``[N,3,H,W]`` to the model's input."""
        mean, inv_std = _normalization(self.mean, self.std, x.device, x.dtype)
        return (x - mean) * inv_std

    @classmethod
    def from_spec(cls, spec: str, base: Preprocessing | None = None) -> Preprocessing:
        """Parse ``resize=274,crop=240,mean=127,std=128[,interpolation=bicubic]`` (``--preprocessing``).

        ``mean``/``std`` take one value or three (``mean=123.675,116.28,103.53``) on the 0..255 scale; keys
        left out keep ``base``'s values (torchvision's ImageNet default without a base)."""
        from ibnbench.data.geometry import INTERPOLATIONS

        where = f"--preprocessing {spec!r}"
        values = _spec_pairs(spec, where)
        base = base or cls()
        fields: dict = {}
        for name in ("resize", "crop"):
            if name in values:
                fields[name] = _spec_numbers(values, name, (1,), int, where)[0]
                if not 1 <= fields[name] <= MAX_SIDE:
                    raise UsageError(f"{where}: {name} must be 1 to {MAX_SIDE} pixels, not {fields[name]}")
        for name in ("mean", "std"):
            if name in values:
                triple = _spec_numbers(values, name, (1, 3), float, where)
                fields[name] = tuple(triple * 3 if len(triple) == 1 else triple)
        if any(s == 0 for s in fields.get("std", ())):
            raise UsageError(f"{where}: std must not be 0")
        _check_float32(fields.get("mean", base.mean), fields.get("std", base.std), where)
        if fields.get("crop", base.crop) > fields.get("resize", base.resize):
            raise UsageError(f"{where}: crop {fields.get('crop', base.crop)} is larger than resize "
                             f"{fields.get('resize', base.resize)} (the centre crop would be mostly padding)")
        if max(fields.get("std", base.std)) < 1 and max(fields.get("mean", base.mean)) <= 1:
            raise UsageError(f"{where}: mean and std look like the 0..1 scale; give them on the 0..255 scale "
                             "(times 255, e.g. mean=123.675,116.28,103.53,std=58.395,57.12,57.375)")
        if "interpolation" in values:
            fields["interpolation"] = values["interpolation"][0]
            if len(values["interpolation"]) != 1 or fields["interpolation"] not in INTERPOLATIONS:
                raise UsageError(f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}")
        return replace(base, **fields, source=f"--preprocessing {spec}")

    def as_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "convention": self.convention, "source": self.source}


PREPROCESSING_KEYS = ("resize", "crop", "mean", "std", "interpolation")


def _check_float32(mean: tuple[float, ...], std: tuple[float, ...], where: str) -> None:
    """Refuse a mean/std that float32 cannot hold (``mean``, ``1/std``) or whose normalised 0..255 pixels,
    ``(x - mean) / std``, would overflow there (``std=1e-300`` is 0 in float32)."""
    limit = torch.finfo(torch.float32).max
    if not all(max(m, 1 / s, max(m, abs(255 - m)) / s) <= limit for m, s in zip(mean, std)):
        raise UsageError(f"{where}: mean, 1/std or (x - mean) / std would overflow float32 (std too small or "
                         "mean too large for pixels on the 0..255 scale)")


def _spec_pairs(spec: str, where: str) -> dict[str, list[str]]:
    """``resize=274,mean=1,2,3`` -> ``{"resize": ["274"], "mean": ["1", "2", "3"]}`` (only mean and std take more
    than one value)."""
    values: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in spec.split(",")):
        if "=" in token:
            key, _, token = (part.strip() for part in token.partition("="))
            if key not in PREPROCESSING_KEYS:
                raise UsageError(f"{where}: unknown key {key!r} (keys: {', '.join(PREPROCESSING_KEYS)})")
            if key in values:
                raise UsageError(f"{where}: {key} is given twice")
            values[key] = []
        elif key not in ("mean", "std"):
            key = None
        if key is None or not token:
            raise UsageError(f"{where}: expected KEY=VALUE pairs separated by commas, e.g. "
                             "resize=274,crop=240,mean=127,std=128")
        values[key].append(token)
    return values


def _spec_numbers(values: dict[str, list[str]], name: str, count: tuple[int, ...], kind: type, where: str) -> list:
    """The ``count`` finite, non-negative numbers of key ``name``."""
    if len(values[name]) not in count:
        raise UsageError(f"{where}: {name} takes {' or '.join(map(str, count))} value(s), not {len(values[name])}")
    try:
        out = [kind(v) for v in values[name]]
    except ValueError:
        raise UsageError(f"{where}: {name} must be {'a whole number' if kind is int else 'numbers'}, "
                         f"not {','.join(values[name])}") from None
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise UsageError(f"{where}: {name} must be finite and not negative, not {','.join(values[name])}")
    return out


@cache
def _normalization(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``1/std`` as ``[1,3,1,1]`` tensors on ``device``, made once per (statistics, device, dtype):
    made from Python numbers on every call, they would cost a copy to the device and a host sync per forward."""
    values = torch.tensor([mean, [1.0 / s for s in std]], dtype=dtype, device=device)
    return values[0].view(1, 3, 1, 1), values[1].view(1, 3, 1, 1)


EFFICIENTNET_LITE_PREPROCESSING = Preprocessing(
    mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), source="efficientnet-lite: (x-127)/128"
)


@dataclass(frozen=True)
class Reference:
    """A published error of one checkpoint (percent, ImageNet-1k val) and where it is published."""

    top1_err: float
    top5_err: float | None
    source: str

    def __str__(self) -> str:
        top5 = "-" if self.top5_err is None else f"{self.top5_err:.2f}"
        return f"{self.top1_err:.2f}/{top5} ({self.source})"


def to_255(values) -> tuple[float, ...]:
    """0..1 statistics on the 0..255 scale, rounded so that ImageNet's equal the registry constants."""
    return tuple(round(255 * v, 4) for v in values)


def torchvision_preprocessing(enum) -> Preprocessing:
    """The eval preprocessing of a torchvision weights enum entry, from its ``transforms()``."""
    transform = enum.transforms()
    return Preprocessing(resize=transform.resize_size[0], crop=transform.crop_size[0],
                         mean=to_255(transform.mean), std=to_255(transform.std),
                         interpolation=transform.interpolation.value, source=f"torchvision {enum}.transforms()")


@dataclass(frozen=True)
class Weights:
    """A released checkpoint: where it is, how to verify it, what it scores (``metrics``, each with its source).

    ``tag`` names the release within its architecture (``resnet50.tv2_in1k``: architecture ``resnet50``, tag
    ``tv2_in1k``, as timm); ``preprocessing`` is the release's eval preprocessing (None when declared: the
    architecture's, filled in at registration). ``url`` is None for files that cannot be downloaded automatically
    (``how_to_get`` says where they are); ``local_path``, when set, returns the path of a copy shipped inside an
    installed Python package; it is used instead of downloading ``url`` (which then only names the file's origin).
    """

    url: str | None
    sha256_prefix: str | None = None
    metrics: tuple[Reference, ...] = ()
    source: str = ""
    license: str = ""
    how_to_get: str = ""
    local_path: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    tag: str = ""
    preprocessing: Preprocessing | None = None

    @classmethod
    def from_torchvision(cls, enum, license: str, tag: str = "") -> Weights:
        """A torchvision weights enum entry: its URL, the hash prefix in its file name, its preprocessing and its
        ImageNet-1K metrics."""
        acc = enum.meta.get("_metrics", {}).get("ImageNet-1K", {})
        metrics = ((Reference(round(100 - acc["acc@1"], 3), round(100 - acc["acc@5"], 3) if "acc@5" in acc else None,
                              f"torchvision {enum}"),) if "acc@1" in acc else ())
        return cls(url=enum.url, sha256_prefix=hash_prefix_from_name(enum.url), metrics=metrics,
                   source=f"torchvision {enum}", license=license, tag=tag,
                   preprocessing=torchvision_preprocessing(enum))


@dataclass(frozen=True)
class LoadedWeights:
    """What a built model was given (``model.ibnbench_weights``, and a record's model entry): ``source`` as asked
    ("random", "official", a path or a URL), the file read and its sha256 (None for random init or weights a
    library fetched itself), and ``release``: the release whose hash the file has (``resnet50.tv_in1k``; for an
    external model its weights' source), whatever its name or origin, else None."""

    source: str
    path: str | None = None
    sha256: str | None = None
    release: str | None = None

    def as_dict(self) -> dict:
        return {"source": self.source, "path": self.path, "sha256": self.sha256, "release": self.release}


RANDOM_WEIGHTS = LoadedWeights("random")


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model."""

    name: str
    builder: Callable[..., nn.Module] = field(repr=False)
    family: str
    variant: str
    preprocessing: Preprocessing = Preprocessing()
    weights: Weights | None = None
    license: str = ""
    task: str = "classification"
    """"classification" (logits per image), "segmentation" (logits per pixel, at the input's size) or "generator"
    (an image out)."""
    num_classes: int | None = 1000
    """Classes scored: ImageNet's 1000 for a classifier, Cityscapes' 19 train ids for a segmentation model (the
    label space every segmentation dataset is mapped to); None for a generator."""
    research: bool = False
    description: str = ""
    params: int | None = None
    """The stored parameter count (None for external specs and unlisted models)."""
    releases: tuple[Weights, ...] = ()
    """Every release of the architecture, the default (what the bare name loads) first; ``weights`` is the one
    this info selects."""
    architecture: str = ""
    """The registered name without a release tag ("" for external specs)."""

    def with_release(self, tag: str | None = None) -> ModelInfo:
        """This architecture with release ``tag`` selected (its weights and preprocessing, named ``arch.tag``);
        the default release, under the bare name, when ``tag`` is None."""
        release = next((w for w in self.releases if tag is None or w.tag == tag), None)
        if release is None:
            known = ", ".join(self.release_name(w) for w in self.releases) or "none"
            raise UnknownModelError(f"{self.architecture} has no release {tag!r} (its releases: {known})")
        return replace(self, name=self.architecture if tag is None else f"{self.architecture}.{tag}",
                       weights=release, preprocessing=release.preprocessing)

    def release_name(self, release: Weights) -> str:
        """``arch.tag`` of one of this architecture's releases (an external model's weights: their source)."""
        return f"{self.architecture}.{release.tag}" if self.architecture and release.tag else release.source

    def release_of(self, sha256: str) -> str | None:
        """The name of the release whose file has this sha256 (the selected one first), else None."""
        for release in (*([self.weights] if self.weights else []), *self.releases):
            if release.sha256_prefix and sha256.startswith(release.sha256_prefix):
                return self.release_name(release)
        return None

    def num_params(self) -> int:
        """Parameter count, computed on the meta device (no memory, no init cost)."""
        with torch.device("meta"):
            model = self.builder()
        return sum(p.numel() for p in model.parameters())

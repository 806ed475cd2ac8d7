"""Appearance conditions: pure batched tensor ops under thin classes.

A condition maps a batch ``x: Tensor[N,3,H,W]`` (RGB, float, 0..255 scale: the 224x224 centre crop
before the model's normalisation) to a batch of the same shape and scale. Semantics:

- ``shift``: ``x + [r, g, b]`` (``rgb+50`` is ``[50, 50, 50]``, ``r+50`` is ``[50, 0, 0]``);
  ``brightness``: ``x + delta`` on every channel.
- ``contrast``: ``mu_c + factor * (x - mu_c)``, ``mu_c`` the image's mean of channel ``c`` over H x W
  (``std*1.5`` is factor 1.5: it scales each channel's standard deviation and keeps its mean).
- ``style``: a CycleGAN generator on the batch (0..255 -> [-1, 1] -> generator -> 0..255, clamped).
- ``dir``: the images themselves come from a pre-stylised folder (``path_for``); the op is the identity.
- ``identity``: the unchanged batch.
- ``corruption``: an ImageNet-C corruption at a severity (:mod:`ibnbench.corruptions`), its random draws a function
  of (suite seed, condition id, image index, element); optionally finished by a JPEG round trip (``jpeg = 85``).

Then, per condition, ``clip`` clamps to [0, 255] and ``quantize`` rounds to integers and clamps (the
values a uint8 image holds; the result stays float). Everything runs on the batch's device with no
host synchronisation and gives the same result on CPU and GPU.
"""
from __future__ import annotations

import inspect
import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn

from . import corruptions
from .style import (ON_THE_FLY_INPUT, check_style, load_generator, missing_style_weights, read_manifest, stylize_batch,
                    weights_identity)


def shift(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``x + offsets`` with ``offsets`` of shape ``[3]`` (one per RGB channel)."""
    return x + offsets.view(1, -1, 1, 1)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``mu + factor * (x - mu)`` with ``mu`` each image's per-channel mean over H x W (computed in float32)."""
    mean = x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32).to(x.dtype)
    return (x - mean).mul_(factor).add_(mean)


def finish(x: torch.Tensor, clip: bool, quantize: bool) -> torch.Tensor:
    """Clamp to [0, 255] (``clip``) or round and clamp (``quantize``: uint8 values, float dtype)."""
    if quantize:
        return x.round().clamp_(0.0, 255.0)
    return x.clamp(0.0, 255.0) if clip else x


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field {field!r}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"field {field!r}: expected a finite number, got {value!r}")
    return float(value)


def _string(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {field!r}: expected a non-empty string, got {value!r}")
    return value


class Condition(ABC):
    """A named appearance condition: ``condition(x)`` maps a 0..255 RGB batch to a 0..255 RGB batch
    (a new tensor, or ``x`` itself when nothing changes: never modify the result in place).

    ``id`` names it in results and on the command line, ``label`` is its display name (the paper's column
    header), ``kind`` is one of "identity", "photometric", "style", "dir", "corruption", ``requires`` lists the
    assets it needs that are missing (empty when it can run), ``spec`` is its canonical definition (what the
    suite's hash covers).
    """

    op: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, id: str, label: str | None = None, *, clip: bool = False, quantize: bool = False):
        self.id = id
        self.label = label or id
        self.clip = clip
        self.quantize = quantize

    @classmethod
    def parameters(cls) -> dict[str, bool]:
        """The op's own parameters (beyond id, label, clip, quantize), each mapped to whether it is required."""
        common = inspect.signature(Condition.__init__).parameters
        own = inspect.signature(cls.__init__).parameters
        return {name: p.default is inspect.Parameter.empty for name, p in own.items() if name not in common}

    def params(self) -> dict:
        """The op's parameters as plain JSON values."""
        return {}

    @property
    def spec(self) -> dict:
        return {"id": self.id, "op": self.op, **self.params(), "clip": self.clip, "quantize": self.quantize}

    @property
    def requires(self) -> list[str]:
        return []

    def provenance(self) -> dict:
        """What a result record keeps about how this condition's images were made, beyond its definition."""
        return {}

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The op itself, before ``clip``/``quantize``."""

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The condition of ``x``; ``index`` (each image's dataset index) matters only to random conditions."""
        return finish(self.apply(x), self.clip, self.quantize)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "id")
        return f"{type(self).__name__}(id={self.id!r}, {params})"


class Identity(Condition):
    """The unchanged images (the paper's "origin")."""

    op, kind = "identity", "identity"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _ChannelOffsets(Condition):
    """A per-channel constant added to every pixel; the device copy of the offsets is made once."""

    kind = "photometric"

    def _set_offsets(self, offsets: Sequence[float]) -> None:
        self.offsets = tuple(offsets)
        self._device_offsets: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._device_offsets:
            self._device_offsets[key] = torch.tensor(self.offsets, dtype=x.dtype).to(x.device, non_blocking=True)
        return shift(x, self._device_offsets[key])


class Shift(_ChannelOffsets):
    """``x + [r, g, b]``."""

    op = "shift"

    def __init__(self, id: str, label: str | None = None, *, offsets: Sequence[float], clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence) or len(offsets) != 3:
            raise ValueError(f"field 'offsets': expected 3 numbers [r, g, b], got {offsets!r}")
        self._set_offsets(_number("offsets", v) for v in offsets)

    def params(self) -> dict:
        return {"offsets": list(self.offsets)}


class Brightness(_ChannelOffsets):
    """``x + delta`` on every channel."""

    op = "brightness"

    def __init__(self, id: str, label: str | None = None, *, delta: float, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.delta = _number("delta", delta)
        self._set_offsets((self.delta,) * 3)

    def params(self) -> dict:
        return {"delta": self.delta}


class Contrast(Condition):
    """``mu_c + factor * (x - mu_c)`` per image and channel (``std*1.5``: factor 1.5)."""

    op, kind = "contrast", "photometric"

    def __init__(self, id: str, label: str | None = None, *, factor: float, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.factor = _number("factor", factor)
        if self.factor < 0:
            raise ValueError(f"field 'factor': expected a number >= 0, got {factor!r}")

    def params(self) -> dict:
        return {"factor": self.factor}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return contrast(x, self.factor)


class Style(Condition):
    """A CycleGAN photo-to-painting generator run on the batch, on the batch's device.

    ``weights``: "official" (the authors' ``style_<style>.pth``, see :mod:`ibnbench.style`), a path,
    a URL or "random". The generator is built on first use, in eval mode, and follows the batch's
    device and dtype.
    """

    op, kind = "style", "style"

    def __init__(self, id: str, label: str | None = None, *, style: str, weights: str = "official",
                 clip: bool = False, quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.style = _string("style", style)
        self.weights = _string("weights", weights)
        try:
            check_style(self.style, self.weights)
        except ValueError as exc:
            raise ValueError(f"field 'style': {exc}") from None
        self._generator: nn.Module | None = None

    def params(self) -> dict:
        return {"style": self.style, "weights": weights_identity(self.weights)}

    @property
    def requires(self) -> list[str]:
        missing = None if self._generator is not None else missing_style_weights(self.style, self.weights)
        return [missing] if missing else []

    @property
    def generator(self) -> nn.Module:
        """The generator (loaded, and downloaded if need be, on first access)."""
        if self._generator is None:
            self._generator = load_generator(self.style, self.weights)
        return self._generator

    def provenance(self) -> dict:
        return {"style_input": ON_THE_FLY_INPUT}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        generator = self.generator
        weight = next(generator.parameters())
        if weight.device != x.device or weight.dtype != x.dtype:
            generator.to(device=x.device, dtype=x.dtype)
        return stylize_batch(generator, x)


class Dir(Condition):
    """Images read from a pre-stylised copy of the dataset (``ibnbench stylize``), the paper's own set-up.

    The data loader reads ``path_for(relative_path)`` instead of the original file; the op on the
    batch is the identity. ``root`` (in a suite file: relative to that file) is part of the definition.
    """

    op, kind = "dir", "dir"

    def __init__(self, id: str, label: str | None = None, *, root: str | Path, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.root = (root if isinstance(root, Path) else Path(_string("root", root))).expanduser()

    def params(self) -> dict:
        return {"root": str(self.root)}

    @property
    def requires(self) -> list[str]:
        if self.root.is_dir():
            return []
        return [f"pre-stylised folder {self.root} for condition {self.id!r} "
                f"(make it with `ibnbench stylize --style STYLE --data VAL --out {self.root}`)"]

    def provenance(self) -> dict:
        return {"stylized": read_manifest(self.root)}

    def path_for(self, relative_path: str | Path) -> Path:
        """The stylised file for ``relative_path`` (relative to the dataset root)."""
        if Path(relative_path).is_absolute():
            raise ValueError(f"condition {self.id!r}: expected a path relative to the dataset, got {relative_path}")
        path = self.root / relative_path
        if not path.is_file():
            raise FileNotFoundError(f"condition {self.id!r}: {self.root} lacks {relative_path} "
                                    f"(complete it with `ibnbench stylize --data VAL --out {self.root} ...`)")
        return path

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Corruption(Condition):
    """An ImageNet-C corruption (``name`` as ``imagecorruptions`` spells it, ``severity`` 1-5) on the batch's
    device; the result holds integers in 0..255 as ImageNet-C's uint8 files did. ``seed`` (the suite's) and the
    condition id key the random draws; ``jpeg`` (a quality, e.g. 85) adds the JPEG round trip the released files
    went through."""

    op, kind = "corruption", "corruption"

    def __init__(self, id: str, label: str | None = None, *, corruption: str, severity: int, seed: int = 0,
                 jpeg: int | None = None, clip: bool = False, quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.corruption = _string("corruption", corruption)
        if self.corruption not in corruptions.OPS:
            raise ValueError(f"field 'corruption': expected one of {', '.join(corruptions.OPS)}, got {corruption!r}")
        if severity not in corruptions.SEVERITIES or isinstance(severity, bool):
            raise ValueError(f"field 'severity': expected an integer 1-5, got {severity!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"field 'seed': expected an integer, got {seed!r}")
        if jpeg is not None and (isinstance(jpeg, bool) or not isinstance(jpeg, int) or not 1 <= jpeg <= 100):
            raise ValueError(f"field 'jpeg': expected a JPEG quality 1-100, got {jpeg!r}")
        self.severity, self.seed, self.jpeg = severity, seed, jpeg
        self.key = corruptions.condition_key(seed, id)

    def params(self) -> dict:
        return {"corruption": self.corruption, "severity": self.severity, "seed": self.seed, "jpeg": self.jpeg}

    @property
    def requires(self) -> list[str]:
        missing = corruptions.missing_frost() if self.corruption == "frost" else None
        return [missing] if missing else []

    def apply(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        index = torch.arange(len(x), device=x.device) if index is None else index.to(x.device)
        y = corruptions.corrupt(x, index, self.corruption, self.severity, self.key)
        return corruptions.jpeg_round_trip(y, self.jpeg) if self.jpeg else y

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return finish(self.apply(x, index), self.clip, self.quantize)


OPS: dict[str, type[Condition]] = {cls.op: cls for cls in (Identity, Shift, Brightness, Contrast, Style, Dir,
                                                            Corruption)}


def canonical_json(specs: list[dict]) -> str:
    """The canonical text of condition specs: sorted keys, no whitespace (what a suite's hash covers)."""
    return json.dumps(specs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

"""Appearance conditions: pure batched tensor ops under thin classes.

A condition maps a batch ``x: Tensor[N,3,H,W]`` (RGB, float, 0..255 scale: the 224x224 centre crop
before the model's normalisation) to a batch of the same shape and scale. Semantics:

- ``shift``: ``x + [r, g, b]`` (``rgb+50`` is ``[50, 50, 50]``, ``r+50`` is ``[50, 0, 0]``);
  ``brightness``: ``x + delta`` on every channel.
- ``contrast``: ``mu_c + factor * (x - mu_c)``, ``mu_c`` the image's mean of channel ``c`` over H x W
  (``std*1.5`` is factor 1.5: it scales each channel's standard deviation and keeps its mean).
- ``style`` and ``dir`` (a generator on the batch, or a pre-stylised folder): :mod:`ibnbench.conditions.style`.
- ``identity``: the unchanged batch.
- ``corruption``: an ImageNet-C corruption at a severity (:mod:`ibnbench.conditions.corruptions`), its random draws
  a function of (suite seed, condition id, image index, element); optionally finished by a JPEG round trip
  (``jpeg = 85``); ``c-bar-corruption``: an ImageNet-C-bar corruption at a severity (:mod:`ibnbench.conditions.c_bar`),
  keyed and finished the same way.

Then, per condition, ``clip`` clamps to [0, 255] and ``quantize`` rounds to integers and clamps (the
values a uint8 image holds; the result stays float). Everything runs on the batch's device with no
host synchronisation and gives the same result on CPU and GPU.
"""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch

from ibnbench.conditions import c_bar, corruptions
from ibnbench.conditions.benchmark_generator import BenchmarkGenerator
from ibnbench.conditions.frost import missing_frost
from ibnbench.conditions.imaging import condition_key, jpeg_round_trip
from ibnbench.conditions.ops import contrast, finish, shift
from ibnbench.errors import UsageError

if TYPE_CHECKING:
    from ibnbench.data.discovery import ValDataset

FLOAT32_MAX = torch.finfo(torch.float32).max
"""Conditions run in float32: a larger number would be inf there."""


def number_field(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"field {field!r}: expected a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:  # 1e39 is finite in TOML, inf on the device
        raise UsageError(f"field {field!r}: expected a finite number (in float32: magnitude at most "
                         f"{FLOAT32_MAX:.3g}), got {value!r}")
    return float(value)


def string_field(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"field {field!r}: expected a non-empty string, got {value!r}")
    return value


class Condition(ABC):
    """A named appearance condition: ``condition(x)`` or ``condition(x, index)`` maps a float 0..255 RGB batch to a
    0..255 RGB batch (a new tensor, or ``x`` itself when nothing changes: never modify the result in place);
    ``index`` is each image's dataset index, which keys the random draws (by default 0..N-1). A subclass implements
    :meth:`apply` (the op) and, when it needs assets, :meth:`prepare` (run once per device before its first batch).

    ``id`` names it in results and on the command line, ``label`` is its display name (the paper's column
    header), ``kind`` is one of "identity", "photometric", "style", "dir", "corruption", ``requires`` lists the
    assets it needs that are missing (empty when it can run), ``spec`` is its canonical definition (what the
    suite's hash covers).
    """

    op: ClassVar[str]
    kind: ClassVar[str]
    handed_in: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments that are not fields of a suite file (given by the suite's loader)."""

    def __init__(self, id: str, label: str | None = None, *, clip: bool = False, quantize: bool = False):
        self.id = id
        self.label = label or id
        self.clip = clip
        self.quantize = quantize
        self._prepared_on: torch.device | None = None

    @classmethod
    def parameters(cls) -> dict[str, bool]:
        """The op's own parameters (beyond id, label, clip, quantize), each mapped to whether it is required."""
        common = inspect.signature(Condition.__init__).parameters
        own = inspect.signature(cls.__init__).parameters
        return {name: p.default is inspect.Parameter.empty for name, p in own.items()
                if name not in common and name not in cls.handed_in}

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

    def benchmark_generator(self) -> BenchmarkGenerator | None:
        """The benchmark this condition's images belong to and how they were made (what the record's ``generator``
        names, :mod:`~ibnbench.conditions.benchmark_generator`); None for conditions of no benchmark."""
        return None

    def source(self, dataset: ValDataset) -> ValDataset | None:
        """Where this condition's images come from when not from ``dataset`` itself (a pre-stylised copy), checked
        to hold every image of it; None for the conditions that transform the dataset's own crops."""
        return None

    def prepare(self, device: torch.device) -> None:
        """Read the assets the op needs onto ``device`` (once: a call runs it when its batch is on another device
        than the last one's); nothing for most conditions."""
        return None

    @abstractmethod
    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The op itself, before ``clip``/``quantize``; ``index``: each image's dataset index (None: 0..N-1)."""

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The condition of a float 0..255 batch ``x``; ``index`` (each image's dataset index, by default 0..N-1)
        matters only to random conditions."""
        if self._prepared_on != x.device:
            self.prepare(x.device)
            self._prepared_on = x.device
        return finish(self.apply(x, index), self.clip, self.quantize)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "id")
        return f"{type(self).__name__}(id={self.id!r}, {params})"


class Identity(Condition):
    """The unchanged images (the paper's "origin")."""

    op, kind = "identity", "identity"

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return x


class _ChannelOffsets(Condition):
    """A per-channel constant added to every pixel; the device copy of the offsets is made once."""

    kind = "photometric"

    def _set_offsets(self, offsets: Sequence[float]) -> None:
        self.offsets = tuple(offsets)
        self._device_offsets: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
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
            raise UsageError(f"field 'offsets': expected 3 numbers [r, g, b], got {offsets!r}")
        self._set_offsets(number_field("offsets", v) for v in offsets)

    def params(self) -> dict:
        return {"offsets": list(self.offsets)}


class Brightness(_ChannelOffsets):
    """``x + delta`` on every channel."""

    op = "brightness"

    def __init__(self, id: str, label: str | None = None, *, delta: float, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.delta = number_field("delta", delta)
        self._set_offsets((self.delta,) * 3)

    def params(self) -> dict:
        return {"delta": self.delta}


class Contrast(Condition):
    """``mu_c + factor * (x - mu_c)`` per image and channel (``std*1.5``: factor 1.5)."""

    op, kind = "contrast", "photometric"

    def __init__(self, id: str, label: str | None = None, *, factor: float, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.factor = number_field("factor", factor)
        if self.factor < 0:
            raise UsageError(f"field 'factor': expected a number >= 0, got {factor!r}")

    def params(self) -> dict:
        return {"factor": self.factor}

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return contrast(x, self.factor)


class _GradedCorruption(Condition):
    """A corruption of a benchmark (``corruption``: a name of :attr:`names`, ``severity`` 1-5) on the batch's device,
    its random draws keyed by ``seed`` (the suite's) and the condition id, optionally finished by a JPEG round trip
    (``jpeg``: a quality, e.g. 85); a subclass gives :meth:`corrupt`, the corruption ending in integers 0..255."""

    kind = "corruption"
    names: ClassVar[tuple[str, ...]]
    benchmark: ClassVar[str]

    def __init__(self, id: str, label: str | None = None, *, corruption: str, severity: int, seed: int = 0,
                 jpeg: int | None = None, clip: bool = False, quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.corruption = string_field("corruption", corruption)
        if self.corruption not in self.names:
            raise UsageError(f"field 'corruption': expected one of {', '.join(self.names)}, got {corruption!r}")
        if severity not in corruptions.SEVERITIES or isinstance(severity, bool):
            raise UsageError(f"field 'severity': expected an integer 1-5, got {severity!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"field 'seed': expected an integer, got {seed!r}")
        if jpeg is not None and (isinstance(jpeg, bool) or not isinstance(jpeg, int) or not 1 <= jpeg <= 100):
            raise UsageError(f"field 'jpeg': expected a JPEG quality 1-100, got {jpeg!r}")
        self.severity, self.seed, self.jpeg = severity, seed, jpeg
        self.key = condition_key(seed, id)

    def params(self) -> dict:
        return {"corruption": self.corruption, "severity": self.severity, "seed": self.seed, "jpeg": self.jpeg}

    def benchmark_generator(self) -> BenchmarkGenerator:
        """Computed on the fly to equal the benchmark's reference, with this condition's JPEG round trip."""
        return BenchmarkGenerator(self.benchmark, jpeg=self.jpeg)

    @abstractmethod
    def corrupt(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The corruption of ``x`` (images at dataset indices ``index``), before the JPEG round trip."""

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        index = torch.arange(len(x), device=x.device) if index is None else index.to(x.device)
        y = self.corrupt(x, index)
        return jpeg_round_trip(y, self.jpeg) if self.jpeg else y


class Corruption(_GradedCorruption):
    """An ImageNet-C corruption (``name`` as ``imagecorruptions`` spells it, ``severity`` 1-5) on the batch's
    device; the result holds integers in 0..255 as ImageNet-C's uint8 files did. ``seed`` (the suite's) and the
    condition id key the random draws; ``jpeg`` (a quality, e.g. 85) adds the JPEG round trip the released files
    went through."""

    op, benchmark = "corruption", "imagenet-c"
    names = tuple(corruptions.CORRUPTIONS)
    _assets: dict[str, object] | None = None

    @property
    def requires(self) -> list[str]:
        missing = missing_frost() if self.corruption == "frost" else None
        return [missing] if missing else []

    def prepare(self, device: torch.device) -> None:
        """Frost: its textures read onto ``device`` once (:func:`corruptions.corruption_assets`)."""
        self._assets = corruptions.corruption_assets(self.corruption, device)

    def corrupt(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return corruptions.corrupt(x, index, self.corruption, self.severity, self.key, self._assets)


class CBarCorruption(_GradedCorruption):
    """An ImageNet-C-bar corruption (Mintun et al. 2021: ``corruption`` one of :data:`~c_bar.C_BAR_NAMES`,
    ``severity`` 1-5) of the square crop on the batch's device (:func:`~c_bar.corrupt_bar`); the result holds
    integers in 0..255 as the reference's uint8 images did. ``seed`` and the condition id key the random draws;
    ``jpeg`` (a quality: the released files were saved at 85) adds a JPEG round trip."""

    op, benchmark = "c-bar-corruption", "imagenet-c-bar"
    names = c_bar.C_BAR_NAMES

    def corrupt(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return corruptions.in_cpu_slices(
            lambda xs, ids: c_bar.corrupt_bar(xs, ids, self.corruption, self.severity, self.key), x, index)

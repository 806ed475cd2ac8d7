"""Style conditions: a CycleGAN photo-to-painting generator on the batch (``style``: 0..255 -> [-1, 1] -> generator ->
0..255, clamped) or the images of a pre-stylised copy of the dataset (``dir``, made by ``ibnbench stylize``).

The generators come from a :class:`GeneratorSource` handed in by whoever loads the suite
(:func:`ibnbench.load_suite` hands in :mod:`ibnbench.zoo.generators`). The on-the-fly ``style`` condition runs the
generator on the classifier's 224x224 centre crop as it is (no resize); its record entry says so.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ibnbench.conditions.base import Condition, string_field
from ibnbench.errors import MissingFileError, UsageError
from ibnbench.precision import full_fp32

if TYPE_CHECKING:
    from ibnbench.data.discovery import ValDataset
    from ibnbench.data.geometry import Geometry

STYLES = ("monet", "cezanne", "ukiyoe", "vangogh")
MANIFEST = "stylize.json"
ON_THE_FLY_INPUT = "the classifier's 224x224 centre crop as it is (no resize)"
CROP_INPUT = "crop"
"""``ibnbench stylize``'s resize mode that stylises the classifier's crop, the on-the-fly condition's own input."""


class GeneratorSource(Protocol):
    """Where style conditions get their CycleGAN generators (:mod:`ibnbench.zoo.generators` is one): handed in
    by whoever loads the suite, so that reading a suite never imports the model zoo."""

    def missing_style_weights(self, style: str, weights: str = "official") -> str | None: ...

    def load_generator(self, style: str, weights: str = "official", progress: bool = True) -> nn.Module: ...


def check_style(style: str, weights: str = "official") -> None:
    """Raise ValueError unless ``style`` has released weights or ``weights`` names others."""
    if weights == "official" and style not in STYLES:
        raise UsageError(f"unknown style {style!r}: released styles are {', '.join(STYLES)} "
                         "(give weights=PATH for another generator)")


def weights_identity(weights: str) -> str:
    """What a weights spec means for a result: "official", "random", or the file's name (not its folder)."""
    return weights if weights in ("official", "random") else weights.rstrip("/").rsplit("/", 1)[-1]


def stylize_batch(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``generator`` on a 0..255 RGB batch ``[N,3,H,W]``: scale to [-1, 1], generate, scale back to 0..255.

    Sides that are not multiples of 4 are reflect-padded for the generator and cropped back. Float32
    convolutions run in IEEE precision, not TF32 (:func:`ibnbench.precision.full_fp32`), and in float32 under a
    caller's autocast too (TF32 and bf16 are not offered: tests/test_style_precision.py shows them changing
    answers on the 100 real images).
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % 4, -width % 4
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False), full_fp32():
        inputs = x / 127.5 - 1.0
        if pad_h or pad_w:
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h), mode="reflect")
        out = generator(inputs)[..., :height, :width]
    return out.add_(1.0).mul_(127.5).clamp_(0.0, 255.0)


def read_manifest(out: str | os.PathLike) -> dict | None:
    """What ``ibnbench stylize`` recorded about a stylised folder (None for a folder made otherwise)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable stylize manifest ({exc})") from None


class Style(Condition):
    """A CycleGAN photo-to-painting generator run on the batch, on the batch's device, or its output pre-rendered.

    ``weights``: "official" (the authors' ``style_<style>.pth``), a path, a URL or "random". The generator comes
    from ``generators`` (a :class:`GeneratorSource`, set by the suite's loader) on first use, in eval mode, and
    follows the batch's device and dtype. ``rendered``: a folder where ``ibnbench stylize --resize crop`` wrote the
    generator's output on the classifier's crop of every image, read instead of running the generator (the same
    condition, computed ahead: the suite's hash stays).
    """

    op, kind = "style", "style"

    handed_in = ("generators", "rendered")

    def __init__(self, id: str, label: str | None = None, *, style: str, weights: str = "official",
                 clip: bool = False, quantize: bool = False, generators: GeneratorSource | None = None,
                 rendered: str | os.PathLike | None = None):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.style = string_field("style", style)
        self.weights = string_field("weights", weights)
        try:
            check_style(self.style, self.weights)
        except ValueError as exc:
            raise UsageError(f"field 'style': {exc}") from None
        self._generator: nn.Module | None = None
        self.generators = generators
        self.rendered = None if rendered is None else Path(rendered).expanduser()

    def params(self) -> dict:
        return {"style": self.style, "weights": weights_identity(self.weights)}

    @property
    def requires(self) -> list[str]:
        if self.rendered is not None:
            problem = self._rendered_problem()
            return [problem] if problem else []
        if self._generator is not None:
            return []
        if self.generators is None:
            return [f"a CycleGAN generator source for condition {self.id!r} (load the suite with "
                    "ibnbench.load_suite, which hands in the zoo's generators)"]
        missing = self.generators.missing_style_weights(self.style, self.weights)
        return [missing] if missing else []

    def _rendered_problem(self) -> str | None:
        """Why ``rendered`` cannot stand for this condition (None when it can)."""
        make = (f"make it with `ibnbench stylize --style {self.style} --weights {self.weights} --resize crop "
                f"--data VAL --out {self.rendered}`")
        if not self.rendered.is_dir():
            return f"pre-rendered folder {self.rendered} for condition {self.id!r} ({make})"
        manifest = read_manifest(self.rendered) or {}
        if manifest.get("resize") != CROP_INPUT:
            return f"{self.rendered} does not hold the classifier's crops stylised for condition {self.id!r} ({make})"
        made = (manifest.get("style"), weights_identity(str(manifest.get("weights"))))
        if made != (self.style, weights_identity(self.weights)):
            return (f"{self.rendered} holds style {made[0]!r} with weights {made[1]!r}, condition {self.id!r} "
                    f"is style {self.style!r} with weights {weights_identity(self.weights)!r} ({make})")
        return None

    @property
    def rendered_geometry(self) -> Geometry | None:
        """The crop the pre-rendered images were cut with (None without ``rendered``)."""
        from ibnbench.data.geometry import Geometry  # reading a suite imports no data package

        if self.rendered is None:
            return None
        manifest = read_manifest(self.rendered) or {}
        return Geometry(manifest["size"], manifest["crop"], manifest["interpolation"])

    @property
    def generator(self) -> nn.Module:
        """The generator (loaded, and downloaded if need be, on first access)."""
        if self._generator is None:
            if self.generators is None:
                raise UsageError(self.requires[0])
            self._generator = self.generators.load_generator(self.style, self.weights)
        return self._generator

    def provenance(self) -> dict:
        if self.rendered is None:
            return {"style_input": ON_THE_FLY_INPUT}
        manifest = read_manifest(self.rendered)
        return {"style_input": ON_THE_FLY_INPUT, "rendered": {"root": str(self.rendered), **manifest}}

    def source(self, dataset: ValDataset) -> ValDataset | None:
        """With ``rendered``: ``dataset`` read from there (every image must be there: fails before any work, naming
        one that is not), as crops."""
        if self.rendered is None:
            return None
        files = tuple(rendered_name(relative) for relative in dataset.files)
        absent = next((f for f in files if not (self.rendered / f).is_file()), None)
        if absent is not None:
            raise MissingFileError(f"condition {self.id!r}: {self.rendered} lacks {absent} (complete it with "
                                   f"`ibnbench stylize --resize crop --data VAL --out {self.rendered} ...`)")
        return dataclasses.replace(dataset, root=self.rendered, files=files, cropped=True)

    def prepare(self, device: torch.device) -> None:
        """The generator loaded (downloaded if need be) and moved to ``device``, unless the output is pre-rendered."""
        if self.rendered is None:
            self.generator.to(device)

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if self.rendered is not None:
            return x  # the images read from the pre-rendered folder are the generator's output
        generator = self.generator
        weight = next(generator.parameters())
        if weight.device != x.device or weight.dtype != x.dtype:
            generator.to(device=x.device, dtype=x.dtype)
        return stylize_batch(generator, x)


def rendered_name(relative: str | os.PathLike) -> str:
    """Where ``ibnbench stylize --resize crop`` writes the stylised crop of the image at ``relative``: the same
    path as a PNG (lossless)."""
    return Path(relative).with_suffix(".png").as_posix()


class Dir(Condition):
    """Images read from a pre-stylised copy of the dataset (``ibnbench stylize``), the paper's own set-up.

    The data loader reads ``path_for(relative_path)`` instead of the original file; the op on the
    batch is the identity. ``root`` (in a suite file: relative to that file) is part of the definition.
    """

    op, kind = "dir", "dir"

    def __init__(self, id: str, label: str | None = None, *, root: str | Path, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.root = (root if isinstance(root, Path) else Path(string_field("root", root))).expanduser()

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

    def source(self, dataset: ValDataset) -> ValDataset:
        """``dataset`` read from this folder; every image must be there (fails before any work, naming one that is
        not)."""
        for relative in dataset.files:
            self.path_for(relative)
        return dataclasses.replace(dataset, root=self.root)

    def path_for(self, relative_path: str | Path) -> Path:
        """The stylised file for ``relative_path`` (relative to the dataset root)."""
        if Path(relative_path).is_absolute():
            raise UsageError(f"condition {self.id!r}: expected a path relative to the dataset, got {relative_path}")
        path = self.root / relative_path
        if not path.is_file():
            raise MissingFileError(f"condition {self.id!r}: {self.root} lacks {relative_path} "
                                    f"(complete it with `ibnbench stylize --data VAL --out {self.root} ...`)")
        return path

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return x

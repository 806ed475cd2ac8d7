"""A segmentation model on the device: from a 0..255 batch to a class per pixel.

By default the whole image at its own size, once, no flip (RobustNet's ``valid.py``): the argmax of the model's
logits ``[N, 19, H, W]``. :class:`Inference` adds the usual test-time options: several ``scales`` (the image resized
bilinearly, the logits resized back) and horizontal ``flip``, whose softmax probabilities are averaged, and a
sliding ``window`` (square tiles of that side, ``stride`` apart, the logits of overlapping tiles averaged; an image
smaller than the window is zero-padded after normalisation and the padding cut off).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ibnbench.errors import ModelOutputError, UsageError
from ibnbench.eval.options import RunOptions
from ibnbench.precision import full_fp32
from ibnbench.zoo.meta import Preprocessing

NUM_CLASSES = 19
"""The Cityscapes train ids every segmentation model of the zoo predicts."""


@dataclass(frozen=True)
class Inference:
    """How a prediction is made: ``scales`` (1.0 alone: the image as it is), ``flip`` (add the mirrored image),
    ``window`` (a tile side in pixels for sliding-window inference; None: the whole image) and ``stride`` (pixels
    between tiles; default two thirds of the window)."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        if not self.scales or any(not isinstance(s, (int, float)) or not 0 < s <= 8 for s in self.scales):
            raise UsageError(f"--scales must be numbers in (0, 8], e.g. 0.5,1.0,1.5; got {self.scales!r}")
        if self.window is not None and self.window < 8:
            raise UsageError(f"--window must be at least 8 pixels, not {self.window}")
        if self.stride is not None and (self.window is None or not 1 <= self.stride <= self.window):
            raise UsageError(f"--stride needs --window and must be 1 to the window's side, not {self.stride}")

    @property
    def whole_image(self) -> bool:
        return self.scales == (1.0,) and not self.flip and self.window is None

    def as_dict(self) -> dict:
        return {**asdict(self), "scales": list(self.scales)}


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Tile origins along one side: ``stride`` apart, the last one flush with the end (one tile if it fits)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


class SegmentationRunner:
    """``model`` (a module mapping a normalised ``[N, 3, H, W]`` batch to logits ``[N, 19, H, W]``) on ``device``
    with its ``preprocessing`` (mean and std), the precision of ``options`` and an :class:`Inference`; ``name``
    names it in errors."""

    def __init__(self, name: str, model: nn.Module, preprocessing: Preprocessing, device: torch.device,
                 options: RunOptions, inference: Inference) -> None:
        self.name, self.preprocessing, self.device, self.inference = name, preprocessing, device, inference
        self.amp_dtype = options.amp_dtype(device)
        model = model.to(device).eval()
        self.channels_last = options.channels_last
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's float32 logits of a normalised batch, their shape checked."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=bool(self.amp_dtype))
        with full_fp32(), autocast:
            logits = self.model(x)
        expected = (len(x), NUM_CLASSES, *x.shape[-2:])
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelOutputError(f"model {self.name}: returned {shape} for an input of {list(x.shape)}; expected "
                                   f"logits {list(expected)} (the {NUM_CLASSES} Cityscapes classes at the input's "
                                   "size): a classification model, or a checkpoint with another class count?")
        return logits.float()

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch, tile by tile when a window is set."""
        window = self.inference.window
        if window is None:
            return self._logits(x)
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, max(window - w, 0), 0, max(window - h, 0)))
        stride = self.inference.stride or max(1, math.ceil(window * 2 / 3))
        ph, pw = padded.shape[-2:]
        total = x.new_zeros(len(x), NUM_CLASSES, ph, pw)
        count = x.new_zeros(1, 1, ph, pw)
        for top in window_starts(ph, window, stride):
            for left in window_starts(pw, window, stride):
                tile = (..., slice(top, top + window), slice(left, left + window))
                total[tile] += self._logits(padded[tile])
                count[tile] += 1
        return (total / count)[..., :h, :w]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The class of every pixel ``[N, H, W]`` (int64) of a 0..255 batch ``[N, 3, H, W]``."""
        x = self.preprocessing.normalize(x)
        if self.inference.whole_image:
            return self._logits(x).argmax(dim=1)
        size = x.shape[-2:]
        probabilities = None
        for scale in self.inference.scales:
            scaled = x if scale == 1.0 else F.interpolate(
                x, size=(max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), mode="bilinear",
                align_corners=False)
            for flipped in (False, True) if self.inference.flip else (False,):
                logits = self._windowed(scaled.flip(-1) if flipped else scaled)
                logits = logits.flip(-1) if flipped else logits
                if logits.shape[-2:] != size:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                p = logits.softmax(dim=1)
                probabilities = p if probabilities is None else probabilities.add_(p)
        return probabilities.argmax(dim=1)

"""ImageNet-P's perturbations as conditions: a thin class over the pure frame op
:func:`ibnbench.conditions.perturbations.frames`.

A :class:`Perturbation` is a condition whose images are sequences: :meth:`Perturbation.frames` returns a batch's
frames ``(frames, N, C, H, W)``, :meth:`Perturbation.stream` yields them one at a time (what the engine scores, so
memory stays one frame whatever the sequence's length), and, used as an ordinary condition, it gives frame 0. The
random draws are keyed by (suite seed, perturbation, image index, frame, element): the key is
``condition_key(seed, "imagenet-p/<perturbation>")``, not the condition id, so every suite naming the perturbation
makes the same frames. ``difficulty`` (1-3) is the run's (``--difficulty``), not the suite's: it changes only the noise
strength of the noise perturbations and which frames the metrics compare.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ibnbench.conditions import perturbations
from ibnbench.conditions.base import Condition, string_field
from ibnbench.conditions.benchmark_generator import BenchmarkGenerator
from ibnbench.conditions.imaging import condition_key
from ibnbench.conditions.ops import finish
from ibnbench.errors import UsageError


class Perturbation(Condition):
    """ImageNet-P's perturbation ``perturbation`` (one of :data:`~perturbations.PERTURBATIONS`) of the square crop it
    is given, its random draws keyed by ``seed`` (the suite's) and the perturbation's name. The geometric ones
    (translate, rotate, tilt, scale, shear, zoom_blur) see only that crop: black comes in from outside it where the
    reference, which transformed the 256-pixel resize, showed more of the picture."""

    op, kind = "perturbation", "perturbation"

    def __init__(self, id: str, label: str | None = None, *, perturbation: str, seed: int = 0, clip: bool = False,
                 quantize: bool = False):
        super().__init__(id, label, clip=clip, quantize=quantize)
        self.perturbation = string_field("perturbation", perturbation)
        if self.perturbation not in perturbations.PERTURBATIONS:
            raise UsageError(f"field 'perturbation': expected one of {', '.join(perturbations.PERTURBATIONS)}, "
                             f"got {perturbation!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"field 'seed': expected an integer, got {seed!r}")
        self.seed = seed
        self.key = condition_key(seed, f"imagenet-p/{self.perturbation}")

    @property
    def frame_count(self) -> int:
        """Frames in a sequence: 41 for translate, 31 for the others."""
        return perturbations.frame_count(self.perturbation)

    def params(self) -> dict:
        return {"perturbation": self.perturbation, "seed": self.seed}

    def provenance(self) -> dict:
        return {**self.params(), "frames": self.frame_count}

    def benchmark_generator(self) -> BenchmarkGenerator:
        """Computed on the fly to equal ``make_imagenet_p.py``'s frames."""
        return BenchmarkGenerator("imagenet-p")

    def stream(self, x: torch.Tensor, index: torch.Tensor | None = None, difficulty: int = 1,
               start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        """The frames ``[start, stop)`` (default: all) of a float 0..255 RGB batch ``x[N,3,S,S]``, one
        ``[N, 3, S, S]`` tensor at a time, each finished by ``clip``/``quantize``; ``index``: each image's dataset
        index (None: 0..N-1), ``difficulty``: 1, 2 or 3."""
        index = torch.arange(len(x), device=x.device) if index is None else index.to(x.device)
        size = min(x.shape[-2:])
        frames = perturbations.frame_stream(x, index, self.perturbation, difficulty, self.key, start, stop, size)
        return (finish(frame.to(x.dtype), self.clip, self.quantize) for frame in frames)

    def frames(self, x: torch.Tensor, index: torch.Tensor | None = None, difficulty: int = 1, start: int = 0,
               stop: int | None = None) -> torch.Tensor:
        """The frames ``[start, stop)`` (default: all :attr:`frame_count`) of a float 0..255 RGB batch
        ``x[N,3,S,S]`` as one tensor ``(frames, N, C, S, S)`` in ``x``'s dtype (integer values 0..255), as
        :meth:`stream` gives them."""
        return torch.stack(list(self.stream(x, index, difficulty, start, stop)))

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Frame 0 (the clean crop for the noise perturbations; the same at every difficulty)."""
        index = torch.arange(len(x), device=x.device) if index is None else index.to(x.device)
        return next(perturbations.frame_stream(x, index, self.perturbation, 1, self.key, 0, 1, min(x.shape[-2:])))

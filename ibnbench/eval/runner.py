"""A model on the device: preprocessing, precision, memory format, out-of-memory halving, refinement of close calls."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ibnbench.data.classes import NUM_CLASSES, ClassSubset
from ibnbench.data.geometry import geometry_key
from ibnbench.errors import ModelOutputError
from ibnbench.eval.options import RunOptions
from ibnbench.precision import AMP_DTYPES, full_fp32
from ibnbench.zoo.fuse import fold_batch_norms
from ibnbench.zoo.meta import Preprocessing

if TYPE_CHECKING:
    from ibnbench.conditions.base import Condition

CLOSE_CALL = 0.25
"""Logit gap under which a reduced-precision decision counts as a close call: about the largest change of a
top-1/top-5 decision gap that bf16 autocast caused on the 100 real images (benchmarks/RESULTS.md)."""


T = TypeVar("T")


FINE, BAD_LOGITS, BAD_INPUT = 0, 1, 2
"""Per-image :attr:`Scores.fault` codes: scored, non-finite logits (the model's), non-finite pixels (the input's)."""


def probability_source(options: RunOptions, device: torch.device) -> str:
    """How the stored softmax probabilities were made, for the record: "fp32", or under autocast e.g. "bf16 logits
    (refined rows fp32)" (a softmax in float32 of reduced-precision logits; the ``--refine`` rows' logits, and so
    their probabilities, come from the fp32 re-score)."""
    dtype = options.amp_dtype(device)
    if dtype is None:
        return "fp32"
    name = next(n for n, d in AMP_DTYPES.items() if d == dtype)
    return f"{name} logits (refined rows fp32)" if options.refine else f"{name} logits"


class Scores(NamedTuple):
    """A batch's answers: the top-5 class indices ``[N, 5]``, their softmax probabilities ``[N, 5]``, the
    label's probability ``[N]`` and each image's ``fault`` ``[N]`` (``FINE``, ``BAD_LOGITS`` or ``BAD_INPUT``)."""

    top5_index: torch.Tensor
    top5_prob: torch.Tensor
    label_prob: torch.Tensor
    fault: torch.Tensor

    def hits(self, label: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits ``[N, 2]`` (bool)."""
        top5 = self.top5_index == label[:, None]
        return torch.stack([top5[:, 0], top5.any(dim=1)], dim=1)


def decision_gap(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """How far each sample is from changing its top-1 or top-5 hit: the smaller distance between the label's
    logit and the best other logit (top-1) or the fifth-best other logit (top-5)."""
    own = logits.gather(1, label[:, None])
    others = logits.scatter(1, label[:, None], float("-inf")).topk(5, dim=1).values
    return (own - others[:, ::4]).abs().amin(dim=1)  # a strided view: a list index would be copied from the host


class ModelRunner:
    """A model on the device with its preprocessing, precision and memory format; halves its
    micro-batch on out-of-memory instead of failing.

    Under autocast, the ``refine`` share of each batch closest to a top-1/top-5 decision is scored again
    in full precision, so bf16 does not move near ties; those rows' probabilities are the softmax of their fp32
    logits. The share is fixed (no host sync); close calls (gap < ``CLOSE_CALL``) that did not fit in it are
    counted on the device in ``close_calls_left``.

    ``classes``: score on this class subset only (the other logits are -inf before the top-k, on the device).
    Logits must be ``[N, 1000]`` (checked on the host, from the shape); images with non-finite pixels or final
    logits (in fp32, or after the refine; the -inf outside a class subset excepted) are marked in
    :attr:`Scores.fault`, on the device, for the engine to check once per chunk. ``name`` names the model in errors."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, device: torch.device,
                 options: RunOptions, classes: ClassSubset | None = None, name: str = "model"):
        self.name = name
        self.preprocessing = preprocessing
        self.geometry = geometry_key(preprocessing)
        self.device = device
        self.channels_last = options.channels_last
        self.amp_dtype = options.amp_dtype(device)
        self.refine = options.refine
        model = model.to(device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(fold_batch_norms(model)) if options.compile else model
        self.micro_batch: int | None = None
        self.close_calls_left = torch.zeros((), dtype=torch.int64, device=device)
        self.outside_classes = None if classes is None else ~classes.mask(device)

    def _forward(self, x: torch.Tensor, reduced: bool = True) -> torch.Tensor:
        x = self.preprocessing.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # fp32 is autocast turned off, not left alone: a caller's outer autocast would run it in reduced precision
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=bool(self.amp_dtype and reduced))
        with full_fp32(), autocast:
            logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(x), NUM_CLASSES):
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelOutputError(f"model {self.name}: returned {shape} for a batch of {len(x)} images; expected "
                                   f"logits of shape [N, {NUM_CLASSES}] (the ImageNet-1k classes)")
        logits = logits.float()
        return logits if self.outside_classes is None else logits.masked_fill(self.outside_classes, float("-inf"))

    def _finite_rows(self, logits: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: every logit finite (the -inf of classes outside a class subset are by design)."""
        finite = logits.isfinite() if self.outside_classes is None else logits.isfinite() | self.outside_classes
        return finite.all(dim=1)

    def _bounded(self, logits: torch.Tensor) -> torch.Tensor:
        """Reduced-precision logits with their overflow replaced by the nearest numbers the dtype holds: ``inf`` by
        its largest, ``-inf`` and NaN (no information) by its lowest; the -inf outside a class subset kept."""
        info = torch.finfo(self.amp_dtype)
        bounded = logits.nan_to_num(nan=info.min, posinf=info.max, neginf=info.min)
        return bounded if self.outside_classes is None else bounded.masked_fill(self.outside_classes, float("-inf"))

    def _refine(self, x: torch.Tensor, label: torch.Tensor, logits: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """Score the ``refine`` share closest to a decision again in fp32, in place in ``logits`` (marking those rows
        in ``final``); returns the close calls left (a device scalar). Rows with a non-finite logit (fp16 overflow)
        have no meaningful gap: they come first, then the smallest gaps."""
        finite = self._finite_rows(logits)
        gap = decision_gap(logits, label).where(finite, -1.0)
        close = gap < CLOSE_CALL
        if self.refine:  # index_fill_, not close[chosen] = False: on CUDA that copies the number from the host
            chosen = gap.topk(min(len(x), math.ceil(self.refine * len(x))), largest=False).indices
            logits[chosen] = self._forward(x[chosen], reduced=False)
            close.index_fill_(0, chosen, False)
            final.index_fill_(0, chosen, True)
        return close.sum()

    def _score(self, x: torch.Tensor, label: torch.Tensor) -> tuple[Scores, torch.Tensor | int]:
        """The batch's :class:`Scores` and the number of close calls left unrefined (a device scalar under autocast).

        Rows left in reduced precision with a non-finite logit (an fp16 overflow beyond the refine share) are
        counted as close calls left and scored from :meth:`_bounded` logits, so that no probability is NaN; rows
        non-finite in fp32 are :data:`BAD_LOGITS`, which stops the run."""
        logits = self._forward(x)
        close_calls = 0
        final = torch.full((len(x),), not self.amp_dtype, device=x.device)  # rows whose logits are fp32 ones
        if self.amp_dtype:
            close_calls = self._refine(x, label, logits, final)
        fault = torch.full_like(label, FINE, dtype=torch.int8)
        fault.masked_fill_(final & ~self._finite_rows(logits), BAD_LOGITS)
        fault.masked_fill_(~x.isfinite().flatten(1).all(dim=1), BAD_INPUT)
        if self.amp_dtype:
            logits = logits.where(final[:, None], self._bounded(logits))
        top5 = logits.topk(5, dim=1).indices
        probs = logits.softmax(dim=1)
        return Scores(top5, probs.gather(1, top5), probs.gather(1, label[:, None])[:, 0], fault), close_calls

    def hits(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits ``[N, 2]`` (bool) for a 0..255 batch and its labels."""
        return self.score(x, label).hits(label)

    @torch.no_grad()
    def score(self, x: torch.Tensor, label: torch.Tensor) -> Scores:
        """Top-5 classes with their probabilities and the label's probability for a 0..255 batch."""
        def attempt(step: int) -> Scores:
            parts = [self._score(*part) for part in zip(x.split(step), label.split(step))]
            if self.amp_dtype:  # counted once the whole batch is through: an out-of-memory retry rescores it
                self.close_calls_left += sum(close_calls for _, close_calls in parts)
            return Scores(*(torch.cat(column) for column in zip(*(scores for scores, _ in parts))))

        scores, step = halve_on_oom(attempt, self.micro_batch or x.shape[0], self.device)
        if step < x.shape[0]:
            self.micro_batch = step
        return scores


def halve_on_oom(attempt: Callable[[int], T], size: int, device: torch.device, what: str = "micro-batch") -> tuple[T,
                                                                                                                   int]:
    """``attempt(size)``, retried with half the size after each out-of-memory error (down to 1, then the error is
    raised); returns the result and the size that fitted. The allocator's cache is emptied after leaving the
    ``except`` block: inside it, the traceback still holds the failed attempt's tensors."""
    while True:
        try:
            return attempt(size), size
        except torch.OutOfMemoryError:
            if size == 1:
                raise
        size = max(1, size // 2)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        tqdm.write(f"out of memory: {what} reduced to {size}")


def apply_condition(condition: Condition, x: torch.Tensor, index: torch.Tensor, fitted: dict[str, int]) -> torch.Tensor:
    """``condition(x, index)`` in parts of half the batch after each out-of-memory error (a style generator needs
    ~10-13 GB for 256 crops); ``fitted`` keeps the part size that fitted per condition id for the next batches.
    Every condition works image by image (random draws keyed by ``index``), so the parts give the same images."""
    def attempt(step: int) -> torch.Tensor:
        parts = [condition(part, part_index) for part, part_index in zip(x.split(step), index.split(step))]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    out, step = halve_on_oom(attempt, fitted.get(condition.id, len(x)), x.device, f"condition {condition.id} batch")
    if step < len(x):
        fitted[condition.id] = step
    return out

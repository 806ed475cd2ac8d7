"""Per-image hits and predictions of every (model, condition) pair, kept on the device until a chunk ends."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ibnbench.conditions.perturbations import is_noise
from ibnbench.errors import ModelOutputError, UsageError
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.runner import BAD_INPUT, BAD_LOGITS, Scores
from ibnbench.results.perturbation_metrics import TOP, flip_counts
from ibnbench.results.predictions import Predictions, SequencePredictions

PREDICTION_DTYPES = {"top5_index": torch.int32, "top5_prob": torch.float16, "label_prob": torch.float16}
"""Stored predictions on the device (the sidecar keeps indices as uint16)."""
FRAME_DTYPE = torch.int16
"""Each frame's top-5 classes on the device: ImageNet-1k's indices (a model must give 1000 logits) fit in int16."""


@dataclass
class EvalState:
    """Per-image hits and predictions for every (model, condition), kept on the device until a chunk ends."""

    n_images: int
    pairs: list[tuple[str, str]]
    device: torch.device
    sequence_of: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """The sequence conditions (ImageNet-P's perturbations) by id: their perturbation and frames per image."""
    done: torch.Tensor = field(init=False)
    valid: torch.Tensor = field(init=False)
    label: torch.Tensor = field(init=False)
    top1: dict[tuple[str, str], torch.Tensor] = field(init=False)
    top5: dict[tuple[str, str], torch.Tensor] = field(init=False)
    predicted: dict[str, dict[tuple[str, str], torch.Tensor]] = field(init=False)
    frame_top5: dict[tuple[str, str], torch.Tensor] = field(init=False)
    """``[images, frames, 5]`` top-5 classes of every frame, for the pairs whose condition is a sequence."""
    faults: torch.Tensor = field(init=False)
    """``[pairs, 2]`` images scored with non-finite logits / non-finite pixels (any stops the run at
    :meth:`check_finite`)."""

    def __post_init__(self) -> None:
        def zeros(*shape, dtype=torch.bool):
            return torch.zeros(self.n_images, *shape, dtype=dtype, device=self.device)

        self.done, self.valid, self.label = zeros(), zeros(), zeros(dtype=torch.int32)
        self.top1 = {p: zeros() for p in self.pairs}
        self.top5 = {p: zeros() for p in self.pairs}
        self.predicted = {name: {p: zeros(*([5] if name.startswith("top5") else []), dtype=dtype) for p in self.pairs}
                          for name, dtype in PREDICTION_DTYPES.items()}
        self.frame_top5 = {(m, c): zeros(self.sequence_of[c][1], TOP, dtype=FRAME_DTYPE) for m, c in self.pairs
                           if c in self.sequence_of}
        self.faults = torch.zeros(len(self.pairs), 2, dtype=torch.int64, device=self.device)

    def store(self, model: str, condition: str, index: torch.Tensor, label: torch.Tensor, scores: Scores) -> None:
        """Keep a batch's hits and predictions for one (model, condition) at the images' dataset ``index``."""
        hits = scores.hits(label)
        self.top1[model, condition][index] = hits[:, 0]
        self.top5[model, condition][index] = hits[:, 1]
        for name, dtype in PREDICTION_DTYPES.items():
            self.predicted[name][model, condition][index] = getattr(scores, name).to(dtype)
        self._count_faults(model, condition, scores)

    def store_frame(self, model: str, condition: str, index: torch.Tensor, frame: int, scores: Scores) -> None:
        """Keep one frame's top-5 classes of a sequence condition at the images' dataset ``index``."""
        self.frame_top5[model, condition][index, frame] = scores.top5_index.to(FRAME_DTYPE)
        self._count_faults(model, condition, scores)

    def _count_faults(self, model: str, condition: str, scores: Scores) -> None:
        """Add a batch's non-finite logits and pixels to the pair's fault counts (on the device)."""
        counts = self.faults[self.pairs.index((model, condition))]
        counts[0] += (scores.fault == BAD_LOGITS).sum()
        counts[1] += (scores.fault == BAD_INPUT).sum()

    def check_finite(self) -> None:
        """Raise :class:`ModelOutputError` naming the first (model, condition) that scored an image with non-finite
        logits or pixels (one host sync: the engine calls it once per chunk)."""
        faults = self.faults.cpu()
        for (model, condition), (logits, pixels) in zip(self.pairs, faults.tolist()):
            if pixels:
                raise ModelOutputError(f"condition {condition}: {pixels} image(s) got non-finite pixels (NaN or inf) "
                                       f"from it (model {model}); check the condition's parameters")
            if logits:
                raise ModelOutputError(f"model {model}: non-finite logits (NaN or inf) for {logits} image(s) under "
                                       f"condition {condition}, in fp32; its output cannot be scored (a fault of the "
                                       "model, or of inputs the condition drove out of its range)")

    def state_dict(self) -> dict:
        return {"n_images": self.n_images, "done": self.done.cpu(), "valid": self.valid.cpu(),
                "label": self.label.cpu(),
                "top1": {"|".join(p): t.cpu() for p, t in self.top1.items()},
                "top5": {"|".join(p): t.cpu() for p, t in self.top5.items()},
                "predicted": {name: {"|".join(p): t.cpu() for p, t in by_pair.items()}
                              for name, by_pair in self.predicted.items()},
                "frame_top5": {"|".join(p): t.cpu() for p, t in self.frame_top5.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "predicted" not in state:
            raise UsageError("the checkpoint was written by an older ibnbench (no stored predictions); "
                             "delete it or run without --resume")
        if self.frame_top5 and "frame_top5" not in state:
            raise UsageError("the checkpoint was written by an older ibnbench (no stored frames); "
                             "delete it or run without --resume")
        self.done.copy_(state["done"])
        self.valid.copy_(state["valid"])
        self.label.copy_(state["label"])
        for p in self.pairs:
            self.top1[p].copy_(state["top1"]["|".join(p)])
            self.top5[p].copy_(state["top5"]["|".join(p)])
            for name, by_pair in self.predicted.items():
                by_pair[p].copy_(state["predicted"][name]["|".join(p)])
            if p in self.frame_top5:
                self.frame_top5[p].copy_(state["frame_top5"]["|".join(p)])

    def reduce(self, dist: DistContext) -> None:
        """Combine the disjoint shards of all ranks (each image was counted by exactly one rank)."""
        if not dist.enabled:
            return
        tensors = [self.done, self.valid, *self.top1.values(), *self.top5.values()]
        stacked = torch.stack([t.to(torch.int32) for t in tensors])
        dist.all_reduce_sum(stacked)
        for t, reduced in zip(tensors, stacked):
            t.copy_(reduced > 0)
        # every other rank holds zeros for an image: the sum is the one rank's value (exact in float32)
        for t in [self.label, *(t for by_pair in self.predicted.values() for t in by_pair.values()),
                  *self.frame_top5.values()]:
            wide = t.to(torch.float32 if t.is_floating_point() else torch.int32)
            dist.all_reduce_sum(wide)
            t.copy_(wide)

    def summary(self) -> list[dict]:
        """Percent errors over the valid (decoded) images, one row per (model, condition)."""
        valid = self.valid.cpu()
        n = int(valid.sum())
        rows = []
        for model, cond in self.pairs:
            hits1 = int(self.top1[model, cond].cpu()[valid].sum())
            hits5 = int(self.top5[model, cond].cpu()[valid].sum())
            rows.append({"model": model, "condition": cond, "n_images": n,
                         "top1_err": round(100.0 * (1 - hits1 / n), 4) if n else float("nan"),
                         "top5_err": round(100.0 * (1 - hits5 / n), 4) if n else float("nan")})
        return rows

    def per_image(self) -> dict:
        """Per-image hits as '0'/'1' strings in dataset order ('-' for images not evaluated)."""
        valid = self.valid.cpu().tolist()

        def encode(t: torch.Tensor) -> str:
            return "".join("-" if not v else ("1" if h else "0") for v, h in zip(valid, t.cpu().tolist()))

        out: dict = {"top1": {}, "top5": {}}
        for model, cond in self.pairs:
            out["top1"].setdefault(model, {})[cond] = encode(self.top1[model, cond])
            out["top5"].setdefault(model, {})[cond] = encode(self.top5[model, cond])
        return out

    def predictions(self, difficulty: int = 1) -> Predictions:
        """The stored predictions of every pair as arrays (uint16 indices, float16 probabilities); with the
        sequences' frames and per-image flip counts at ``difficulty`` when a condition is a sequence."""
        models = list(dict.fromkeys(m for m, _ in self.pairs))
        conditions = list(dict.fromkeys(c for _, c in self.pairs))

        def stacked(name: str) -> torch.Tensor:
            by_pair = self.predicted[name]
            return torch.stack([torch.stack([by_pair[m, c] for c in conditions]) for m in models]).cpu()

        index, label = stacked("top5_index"), self.label.cpu()
        wide = max(int(index.max()) if index.numel() else 0, int(label.max()) if label.numel() else 0) > 65535
        classes = "uint32" if wide else "uint16"  # uint16 for ImageNet-1k and -21k heads
        return Predictions(models=models, conditions=conditions, label=label.numpy().astype(classes),
                           valid=self.valid.cpu().numpy(), top5_index=index.numpy().astype(classes),
                           top5_prob=stacked("top5_prob").numpy(), label_prob=stacked("label_prob").numpy(),
                           sequences=self.sequences(models, difficulty))

    def sequences(self, models: list[str], difficulty: int) -> SequencePredictions | None:
        """The sequence conditions' frames as :class:`SequencePredictions` (None when there are none), with the
        flips per image at ``difficulty``; images not evaluated hold zeros."""
        conditions = [c for c in dict.fromkeys(c for _, c in self.pairs) if c in self.sequence_of]
        if not conditions:
            return None
        names = [self.sequence_of[c][0] for c in conditions]
        counts = np.array([self.sequence_of[c][1] for c in conditions], dtype=np.int32)
        valid = self.valid.cpu().numpy()[:, None, None]
        top5 = np.zeros((len(models), len(conditions), self.n_images, int(counts.max()), TOP), dtype=np.uint16)
        flips = np.zeros((len(models), len(conditions), self.n_images), dtype=np.int16)
        for m, model in enumerate(models):
            for c, condition in enumerate(conditions):
                frames = self.frame_top5[model, condition].cpu().numpy().astype(np.uint16) * valid
                top5[m, c, :, :counts[c]] = frames
                flips[m, c] = flip_counts(frames, difficulty, is_noise(names[c]))[0]
        return SequencePredictions(conditions, names, counts, top5, flips, difficulty)

"""The segmentation evaluation loop: every image decoded once, every condition applied to it on the device, every
model fed every condition; one confusion matrix per (model, condition, dataset) counted on the device with
``bincount``, and each image's sufficient statistics (per class: intersection, ground-truth and predicted pixels)
kept for the bootstrap.

The datasets of a run are numbered one after another (image ``i`` of the second dataset is ``len(first) + i``), so
one state, one checkpoint per rank and one sharding cover them all. A checkpoint is saved every ``chunk_size``
images and on Ctrl-C or a bad image; under torchrun each rank takes every ``world_size``-th image and the matrices
are summed (``all_reduce``) at the end.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ibnbench.data.segmentation import SegmentationDataset
from ibnbench.data.segmentation_loader import make_segmentation_loader
from ibnbench.errors import BadImageError
from ibnbench.eval.checkpoint import Checkpoint
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.options import RunOptions
from ibnbench.eval.runner import apply_condition
from ibnbench.eval.segmentation_inference import NUM_CLASSES, SegmentationRunner
from ibnbench.progress import Progress
from ibnbench.results.segmentation_metrics import image_confusions


@dataclass
class SegmentationState:
    """Per (model, condition, dataset) a confusion matrix ``[C, C]``, per (model, condition) each image's statistics
    ``[n, 3, C]`` (int64, on the device), and which images are done and were readable (``valid``)."""

    offsets: dict[str, int]
    n_images: int
    models: list[str]
    conditions: list[str]
    device: torch.device
    confusion: dict[tuple[str, str, str], torch.Tensor] = field(init=False)
    statistics: dict[tuple[str, str], torch.Tensor] = field(init=False)
    done: torch.Tensor = field(init=False)
    valid: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        c, device = NUM_CLASSES, self.device
        self.confusion = {(m, k, d): torch.zeros(c, c, dtype=torch.int64, device=device)
                          for m in self.models for k in self.conditions for d in self.offsets}
        self.statistics = {(m, k): torch.zeros(self.n_images, 3, c, dtype=torch.int64, device=device)
                           for m in self.models for k in self.conditions}
        self.done = torch.zeros(self.n_images, dtype=torch.bool, device=device)
        self.valid = torch.zeros(self.n_images, dtype=torch.bool, device=device)

    def store(self, model: str, condition: str, dataset: str, index: torch.Tensor, prediction: torch.Tensor,
              label: torch.Tensor) -> None:
        """Count a batch of same-size images (global ``index``) into the pair's matrix and per-image statistics."""
        per_image = image_confusions(prediction, label, NUM_CLASSES)
        self.confusion[model, condition, dataset] += per_image.sum(0)
        stats = torch.stack([per_image.diagonal(dim1=-2, dim2=-1), per_image.sum(-1), per_image.sum(-2)], dim=1)
        self.statistics[model, condition][index] = stats

    def state_dict(self) -> dict:
        return {"n_images": self.n_images, "done": self.done.cpu(), "valid": self.valid.cpu(),
                "confusion": {"|".join(k): t.cpu() for k, t in self.confusion.items()},
                "statistics": {"|".join(k): t.cpu() for k, t in self.statistics.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.done.copy_(state["done"])
        self.valid.copy_(state["valid"])
        for key, t in self.confusion.items():
            t.copy_(state["confusion"]["|".join(key)])
        for key, t in self.statistics.items():
            t.copy_(state["statistics"]["|".join(key)])

    def reduce(self, dist: DistContext) -> None:
        """Sum the ranks' matrices and their disjoint per-image statistics."""
        if not dist.enabled:
            return
        for t in [*self.confusion.values(), *self.statistics.values()]:
            dist.all_reduce_sum(t)
        flags = torch.stack([self.done, self.valid]).to(torch.int32)
        dist.all_reduce_sum(flags)
        self.done.copy_(flags[0] > 0)
        self.valid.copy_(flags[1] > 0)


@dataclass
class SegmentationResult:
    """What :func:`evaluate_segmentation` found: the state (summed over ranks), unreadable pairs per dataset and
    the timing."""

    state: SegmentationState
    skipped: dict[str, list[str]]
    timing: dict


def _same_size_groups(batch: dict) -> list[list[int]]:
    """Positions of a batch's readable pairs grouped by image size (a batch may mix sizes)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(batch["images"]):
        if image is not None:
            groups.setdefault(tuple(image.shape), []).append(position)
    return list(groups.values())


class SegmentationEvaluation:
    """One run over ``datasets`` (by name) with ``runners`` under ``conditions``; build it, then :meth:`run`."""

    def __init__(self, runners: dict[str, SegmentationRunner], conditions: Sequence,
                 datasets: dict[str, SegmentationDataset], options: RunOptions, checkpoint: Checkpoint,
                 dist: DistContext, on_batch: Callable[[int], None] | None = None) -> None:
        self.runners, self.conditions, self.datasets = runners, list(conditions), datasets
        self.options, self.checkpoint, self.dist, self.on_batch = options, checkpoint, dist, on_batch
        self.device = dist.device(options.resolved_device())
        offsets, total = {}, 0
        for name, dataset in datasets.items():
            offsets[name], total = total, total + len(dataset)
        self.state = SegmentationState(offsets, total, list(runners), [c.id for c in self.conditions], self.device)
        self.skipped: dict[str, list[str]] = {name: [] for name in datasets}
        self.fitted: dict[str, int] = {}
        self.images = 0

    def run(self) -> SegmentationResult:
        started = time.perf_counter()
        saved = self.checkpoint.load()
        if saved is not None:
            self.state.load_state_dict(saved["state"])
            self.skipped = saved.get("skipped", self.skipped)
            if self.options.progress and self.dist.is_main:
                print(f"resuming from {self.checkpoint.path}: {Checkpoint.images_done(saved)} of "
                      f"{self.state.n_images} images already done", file=sys.stderr, flush=True)
        for name in self.datasets:
            self.run_dataset(name)
        elapsed = time.perf_counter() - started
        self.state.reduce(self.dist)
        skipped = {name: sorted(set(self.dist.gather_lists(paths))) for name, paths in self.skipped.items()}
        timing = {"seconds": round(elapsed, 3), "images": int(self.state.done.sum()),
                  "images_per_s": round(self.images / elapsed, 2) if elapsed else None,
                  "world_size": self.dist.world_size}
        return SegmentationResult(self.state, skipped, timing)

    def save(self) -> None:
        self.checkpoint.save(self.state, {"skipped": self.skipped})

    def run_dataset(self, name: str) -> None:
        """This rank's images of dataset ``name`` not done yet; a checkpoint every ``chunk_size`` images and on
        Ctrl-C or a bad pair."""
        dataset, offset = self.datasets[name], self.state.offsets[name]
        done = self.state.done.cpu()
        todo = [i for i in self.dist.shard(range(len(dataset))) if not done[offset + i]]
        options = self.options
        loader = make_segmentation_loader(dataset, options.batch_size, options.workers, options.on_bad_image, todo)
        since_checkpoint = 0
        with Progress(len(todo), f"evaluate {name}", enabled=options.progress and self.dist.is_main) as progress:
            try:
                for batch in loader:
                    self.evaluate_batch(name, offset, batch)
                    n = len(batch["index"])
                    self.images += n
                    since_checkpoint += n
                    progress.update(n)
                    if self.on_batch is not None:
                        self.on_batch(self.images)
                    if since_checkpoint >= options.chunk_size:
                        self.save()
                        since_checkpoint = 0
            except (KeyboardInterrupt, BadImageError):
                if self.images:
                    self.save()
                raise

    def evaluate_batch(self, name: str, offset: int, batch: dict) -> None:
        """Every condition on the batch's images, every model on every condition, counted; pairs marked done."""
        self.skipped[name].extend(reason for _, reason in batch["bad"])
        index = batch["index"].to(self.device) + offset
        for group in _same_size_groups(batch):
            x = torch.stack([batch["images"][i] for i in group]).to(self.device).float()
            label = torch.stack([batch["labels"][i] for i in group]).to(self.device)
            at = index[group]
            for condition in self.conditions:
                y = apply_condition(condition, x, at - offset, self.fitted)
                for model, runner in self.runners.items():
                    self.state.store(model, condition.id, name, at, runner.predict(y), label)
        self.state.valid[index] = batch["ok"].to(self.device)
        self.state.done.index_fill_(0, index, True)


def evaluate_segmentation(runners: dict[str, SegmentationRunner], conditions: Sequence,
                          datasets: dict[str, SegmentationDataset], options: RunOptions | None = None,
                          checkpoint: Checkpoint | None = None, dist: DistContext | None = None,
                          on_batch: Callable[[int], None] | None = None) -> SegmentationResult:
    """Every runner under every condition on every dataset (this rank's share under torchrun); ``on_batch`` is
    called with the images scored so far."""
    return SegmentationEvaluation(runners, conditions, datasets, options or RunOptions(),
                                  checkpoint or Checkpoint(None, {}), dist or DistContext.detect(), on_batch).run()

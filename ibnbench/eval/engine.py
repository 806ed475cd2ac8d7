"""The evaluation engine: decode each batch once, apply every condition on the device, feed every
model, and count top-1/top-5 hits per image on the device (synchronising once per chunk), keeping each
image's top-5 classes and softmax probabilities from the same forward pass."""
from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ibnbench.data.classes import ClassSubset
from ibnbench.data.discovery import ValDataset
from ibnbench.data.loader import make_loader
from ibnbench.errors import BadImageError
from ibnbench.eval.checkpoint import Checkpoint
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import Classifier
from ibnbench.eval.runner import ModelRunner, apply_condition, probability_source
from ibnbench.eval.sequences import score_sequence, sequence_conditions
from ibnbench.eval.state import EvalState
from ibnbench.eval.streams import SideStream
from ibnbench.eval.timing import WarmClock
from ibnbench.precision import fp32_conv_precision
from ibnbench.progress import Progress
from ibnbench.results.predictions import Predictions


def environment(device: torch.device, options: RunOptions, close_calls_left: int | None = None) -> dict:
    """Versions, hardware, precision and how the crops were made, for the record.

    ``decoder``: "nvjpeg" (nvJPEG and a float32 resize on the GPU; libjpeg in CPU workers for the files nvJPEG
    cannot decode) or "cpu" (libjpeg/libpng and torchvision's resize in CPU workers: uint8 on CPUs whose
    ``cpu_capability`` is AVX2/AVX512 or on arm64, float32 otherwise). ``cache``: "gpu", "dir" or None.
    ``fp32_conv``: the precision of float32 convolutions ("ieee": no TF32, :mod:`ibnbench.precision`).
    ``probabilities``: the logits the stored softmax probabilities (and the ECE) come from
    (:func:`~ibnbench.eval.runner.probability_source`)."""
    import kornia
    import timm
    import torchvision

    from ibnbench._version import __version__

    env = {"ibnbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "kornia": kornia.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device),
           "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                           else platform.processor() or "cpu"),
           "dtype": options.precision(device)[0],
           "channels_last": options.channels_last, "compile": options.compile, "overlap": options.overlap,
           "batch_size": options.batch_size,
           "fp32_conv": fp32_conv_precision(device), "probabilities": probability_source(options, device),
           "decoder": options.resolved_decoder(device),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cache": None if options.cache is None else ("gpu" if options.cache == "gpu" else "dir")}
    if options.amp_dtype(device):
        env.update(refine=options.refine, close_calls_left=close_calls_left)
    return env


@dataclass
class EvalResult:
    """What :func:`evaluate` found: per (model, condition) ``results`` rows, ``per_image`` hits, the top-5
    ``predictions`` (for the sidecar), the ``skipped`` unreadable files, the reduced-precision close calls left
    unrefined (None in full precision) and the ``timing`` (``seconds`` from start-up to the end; ``warm``: seconds,
    images and images/s after each pass's first batch, :class:`~ibnbench.eval.timing.WarmClock`, None when no pass
    had a second batch)."""

    results: list[dict]
    per_image: dict
    predictions: Predictions
    skipped: list[str]
    close_calls_left: int | None
    timing: dict


def _on_device(crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch's uint8 crops on ``device``: float 0..255 images, or videos ``[N, frames, 3, c, c]`` (the released
    ImageNet-P) kept uint8 there, a frame made float as it is scored (a batch of 64 videos of 31 frames at 224 is
    0.3 GB in uint8, 1.2 GB in float32)."""
    crops = crops.to(device, non_blocking=True)
    return crops if crops.dim() == 5 else crops.float()


def _evaluate_batch(batch: dict, runners: dict[str, ModelRunner], conditions: Sequence, state: EvalState,
                    device: torch.device, own_batches: dict[str, dict] | None = None,
                    fitted: dict[str, int] | None = None, side: SideStream | None = None,
                    difficulty: int = 1) -> None:
    """Every condition on the batch's crops, every model on every condition; hits stay on the device.

    ``own_batches`` holds, per condition with images of its own (:meth:`Condition.source`), the same images read
    from there; ``fitted``, per condition id, the part size that fitted after an out-of-memory error
    (:func:`~ibnbench.eval.runner.apply_condition`; kept from batch to batch). With an enabled ``side`` stream
    (``--overlap``), each next condition is computed on it while the models score the current one. A sequence
    condition (ImageNet-P) has every frame scored, one at a time (:func:`~ibnbench.eval.sequences.score_sequence`),
    at ``difficulty``."""
    fitted = {} if fitted is None else fitted
    index = batch["index"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    ok = batch["ok"]
    crops = {key: _on_device(crop, device) for key, crop in batch["crops"].items()}
    jobs = []  # (condition, geometry key, crops)
    for condition in conditions:
        source = crops
        if own_batches and condition.id in own_batches:
            ok = ok & own_batches[condition.id]["ok"]
            source = {key: _on_device(crop, device) for key, crop in own_batches[condition.id]["crops"].items()}
        jobs.extend((condition, key, crop) for key, crop in source.items())
    ahead = None
    sequences = sequence_conditions(conditions)
    for number, (condition, key, crop) in enumerate(jobs):
        if condition.id in sequences:
            score_sequence(condition, crop, index, label, runners, key, state, difficulty)
            continue
        x = side.take(ahead) if ahead is not None else apply_condition(condition, crop, index, fitted)
        ahead = None
        if side is not None and side.enabled and number + 1 < len(jobs) and jobs[number + 1][0].id not in sequences:
            after, _, after_crop = jobs[number + 1]
            ahead = side.run(apply_condition, after, after_crop, index, fitted)
        for name, runner in runners.items():
            if runner.geometry == key:
                state.store(name, condition.id, index, label, runner.score(x, label))
    state.label[index] = label.to(torch.int32)
    state.valid[index] = ok.to(device, non_blocking=True)
    state.done.index_fill_(0, index, True)  # not done[index] = True: on CUDA that copies the number from the host


@dataclass
class EvalCounts:
    """What this process's passes counted: images scored, images the loaders decoded (the main loader and those of
    conditions with images of their own) and images served from the crop cache."""

    images: int = 0
    decoded: int = 0
    from_cache: int = 0


class Evaluation:
    """One :func:`evaluate` call: the model runners, the evaluation state, its checkpoint and the counts, with a
    method per step (resume, one pass over the data, the result). Build it, then call :meth:`run` once."""

    def __init__(self, models: Mapping[str, Classifier | nn.Module], conditions: Sequence, dataset: ValDataset,
                 options: RunOptions, checkpoint: Checkpoint, dist: DistContext,
                 on_batch: Callable[[int], None] | None = None, classes: ClassSubset | None = None) -> None:
        self.options, self.dist, self.dataset, self.on_batch = options, dist, dataset, on_batch
        self.device = dist.device(options.resolved_device())
        self.runners = {name: ModelRunner(c.module, c.preprocessing, self.device, options, classes, name)
                        for name, c in ((n, Classifier.of(m)) for n, m in models.items())}
        self.geometries = list({r.geometry: r.preprocessing for r in self.runners.values()}.values())
        self.conditions = list(conditions)
        self.state = EvalState(len(dataset), [(m, c.id) for m in models for c in conditions], self.device,
                               sequence_conditions(self.conditions))
        self.checkpoint = checkpoint
        self.passes = ([(list(models), self.conditions)] if options.fanout
                       else [([m], [c]) for m in models for c in self.conditions])
        self.shard = dist.shard(range(len(dataset)))
        self.skipped: list[str] = []
        self.close_calls_before = 0
        self.counts = EvalCounts()
        self.fitted: dict[str, int] = {}  # condition batch sizes that fitted after an out-of-memory error
        self.side = SideStream(self.device, options.overlap)
        self.warm = WarmClock(self.device)
        self.own_sources: dict[str, ValDataset | None] = {}

    def run(self) -> EvalResult:
        """Resume from the checkpoint, run every pass, reduce across ranks and build the result."""
        self.resume()
        started = time.perf_counter()
        self.own_sources = {c.id: c.source(self.dataset) for c in self.conditions}  # checked once, not per pass
        for model_names, conditions in self.passes:
            self.run_pass(model_names, conditions)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.result(time.perf_counter() - started)

    def resume(self) -> None:
        """Load the state, skipped files and close-call count an interrupted run saved, if any."""
        saved = self.checkpoint.load()
        if saved is None:
            return
        self.state.load_state_dict(saved["state"])
        self.skipped = saved.get("skipped", [])
        self.close_calls_before = saved.get("close_calls_left", 0)
        if self.options.progress and self.dist.is_main:
            print(f"resuming from {self.checkpoint.path}: {Checkpoint.images_done(saved)} of {len(self.dataset)} "
                  "images already done", file=sys.stderr, flush=True)

    def close_calls_left(self) -> torch.Tensor | int:
        """Reduced-precision close calls left unrefined, this process's and those of the resumed run."""
        return self.close_calls_before + sum(r.close_calls_left for r in self.runners.values())

    def save_checkpoint(self) -> None:
        """Save the state; never a chunk with a non-finite score (that stops the run, the last save stays)."""
        self.state.check_finite()
        if self.checkpoint.path is not None:  # the close-call count is read from the device only for a file
            extra = {"skipped": self.skipped, "close_calls_left": int(self.close_calls_left())}
            self.checkpoint.save(self.state, extra)

    def loaders(self, todo: list[int], own: Mapping[str, ValDataset]) -> list:
        """A loader over ``todo`` for the dataset and for each condition's own images."""
        options, device = self.options, self.device
        return [make_loader(source, self.geometries, batch_size=options.batch_size, workers=options.workers,
                            pin_memory=device.type == "cuda", on_bad_image=options.on_bad_image,
                            decoder=options.resolved_decoder(device), device=device, indices=todo,
                            cache=options.cache) for source in [self.dataset, *own.values()]]

    def run_pass(self, model_names: list[str], conditions: list) -> None:
        """One pass over this rank's images: every model in ``model_names`` under every condition in ``conditions``
        (in fan-out mode the images already done are skipped); a checkpoint every ``chunk_size`` images, and one
        on Ctrl-C or an unreadable image."""
        fanout = self.options.fanout
        done = self.state.done.cpu()  # one transfer, not one device sync per image
        todo = [i for i in self.shard if not done[i]] if fanout else self.shard
        own = {c.id: self.own_sources[c.id] for c in conditions if self.own_sources[c.id] is not None}
        loaders = self.loaders(todo, own)
        runners = {n: self.runners[n] for n in model_names}
        desc = "evaluate" if fanout else f"{model_names[0]} / {conditions[0].id}"
        with Progress(len(todo), desc, enabled=self.options.progress and self.dist.is_main,
                      initial=len(self.shard) - len(todo)) as progress:
            since_checkpoint = 0
            try:
                for batch, *own_batches in zip(*loaders):
                    _evaluate_batch(batch, runners, conditions, self.state, self.device, dict(zip(own, own_batches)),
                                    self.fitted, self.side, self.options.difficulty)
                    since_checkpoint += self.batch_done(batch, own_batches, progress)
                    if fanout and since_checkpoint >= self.options.chunk_size:
                        self.save_checkpoint()
                        since_checkpoint = 0
            except (KeyboardInterrupt, BadImageError):
                if fanout and self.counts.images:  # every image marked done is complete: keep them all
                    self.save_checkpoint()
                raise
        self.warm.pass_done()
        self.state.check_finite()
        self.counts.from_cache += loaders[0].from_cache
        self.counts.decoded -= sum(loader.from_cache for loader in loaders)

    def batch_done(self, batch: dict, own_batches: Sequence[dict], progress: Progress) -> int:
        """Count a scored batch (and note its unreadable files); returns its number of images."""
        self.skipped.extend(path for b in (batch, *own_batches) for path, _reason in b["bad"])
        n = len(batch["index"])
        self.warm.batch_done(n)
        self.counts.decoded += sum(len(b["index"]) for b in (batch, *own_batches))
        progress.update(n)
        self.counts.images += n
        if self.on_batch is not None:
            self.on_batch(self.counts.images)
        return n

    def result(self, elapsed: float) -> EvalResult:
        """The :class:`EvalResult`, its state, skipped files and counts summed over the ranks."""
        dist, device = self.dist, self.device
        self.state.reduce(dist)
        skipped = dist.gather_lists(self.skipped)
        counts = torch.stack([torch.as_tensor(self.close_calls_left(), device=device),
                              torch.tensor(self.counts.from_cache, device=device),
                              torch.tensor(self.counts.decoded, device=device)])
        dist.all_reduce_sum(counts)
        close_calls, from_cache, decoded = counts.tolist()
        images = self.counts.images
        return EvalResult(
            results=self.state.summary(), per_image=self.state.per_image(),
            predictions=self.state.predictions(self.options.difficulty),
            skipped=sorted(set(skipped)), close_calls_left=close_calls if self.options.amp_dtype(device) else None,
            timing={"seconds": round(elapsed, 3), "images": int(self.state.done.sum()), "passes": len(self.passes),
                    "images_per_s": round(images / elapsed, 2) if elapsed else None, "decoded": decoded,
                    "world_size": dist.world_size, "warm": self.warm.result(),
                    **({"from_cache": from_cache} if self.options.cache else {})})


def evaluate(models: Mapping[str, Classifier | nn.Module], conditions: Sequence, dataset: ValDataset,
             options: RunOptions | None = None, checkpoint: Checkpoint | None = None,
             dist: DistContext | None = None, on_batch: Callable[[int], None] | None = None,
             classes: ClassSubset | None = None) -> EvalResult:
    """Evaluate every model under every condition (on ``options.device``, this rank's share under torchrun).

    ``models`` map result columns to :class:`Classifier` s (or modules made by :func:`ibnbench.create_model`). In
    fan-out mode (default) each batch is decoded once; ``options.fanout=False`` is the per-(model, condition)
    baseline that re-reads the data for every pair, kept for honest speed comparisons. ``classes``: score
    argmax and top-5 over this class subset's logits only. ``on_batch`` is called with the images scored so far.
    """
    return Evaluation(models, conditions, dataset, options or RunOptions(), checkpoint or Checkpoint(None, {}),
                      dist or DistContext.detect(), on_batch, classes).run()

"""The evaluation engine: decode each batch once, apply every condition on the device, feed every
model, and count top-1/top-5 hits per image on the device (synchronising once per chunk), keeping each
image's top-5 classes and softmax probabilities from the same forward pass."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as data_mod
from .distributed import DistContext
from .files import write_atomic
from .models.registry import Preprocessing
from .options import RunOptions
from .progress import Progress
from .precision import fp32_conv_precision, full_fp32
from .predictions import Predictions
from .results import Record

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # keys: options.AMP_NAMES
CLOSE_CALL = 0.25
"""Logit gap under which a reduced-precision decision counts as a close call: about the largest change of a
top-1/top-5 decision gap that bf16 autocast caused on the 100 real images (benchmarks/RESULTS.md)."""


class Scores(NamedTuple):
    """A batch's answers: the top-5 class indices ``[N, 5]``, their softmax probabilities ``[N, 5]`` and the
    label's probability ``[N]``."""

    top5_index: torch.Tensor
    top5_prob: torch.Tensor
    label_prob: torch.Tensor

    def hits(self, label: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits ``[N, 2]`` (bool)."""
        top5 = self.top5_index == label[:, None]
        return torch.stack([top5[:, 0], top5.any(dim=1)], dim=1)


PREDICTION_DTYPES = {"top5_index": torch.int32, "top5_prob": torch.float16, "label_prob": torch.float16}
"""Stored predictions on the device (the sidecar keeps indices as uint16)."""


@dataclass
class EvalState:
    """Per-image hits and predictions for every (model, condition), kept on the device until a chunk ends."""

    n_images: int
    pairs: list[tuple[str, str]]
    device: torch.device
    done: torch.Tensor = field(init=False)
    valid: torch.Tensor = field(init=False)
    label: torch.Tensor = field(init=False)
    top1: dict[tuple[str, str], torch.Tensor] = field(init=False)
    top5: dict[tuple[str, str], torch.Tensor] = field(init=False)
    predicted: dict[str, dict[tuple[str, str], torch.Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        def zeros(*shape, dtype=torch.bool):
            return torch.zeros(self.n_images, *shape, dtype=dtype, device=self.device)

        self.done, self.valid, self.label = zeros(), zeros(), zeros(dtype=torch.int32)
        self.top1 = {p: zeros() for p in self.pairs}
        self.top5 = {p: zeros() for p in self.pairs}
        self.predicted = {name: {p: zeros(*([5] if name.startswith("top5") else []), dtype=dtype) for p in self.pairs}
                          for name, dtype in PREDICTION_DTYPES.items()}

    def store(self, model: str, condition: str, index: torch.Tensor, label: torch.Tensor, scores: Scores) -> None:
        """Keep a batch's hits and predictions for one (model, condition) at the images' dataset ``index``."""
        hits = scores.hits(label)
        self.top1[model, condition][index] = hits[:, 0]
        self.top5[model, condition][index] = hits[:, 1]
        for name, value in scores._asdict().items():
            self.predicted[name][model, condition][index] = value.to(PREDICTION_DTYPES[name])

    def state_dict(self) -> dict:
        return {"n_images": self.n_images, "done": self.done.cpu(), "valid": self.valid.cpu(),
                "label": self.label.cpu(),
                "top1": {"|".join(p): t.cpu() for p, t in self.top1.items()},
                "top5": {"|".join(p): t.cpu() for p, t in self.top5.items()},
                "predicted": {name: {"|".join(p): t.cpu() for p, t in by_pair.items()}
                              for name, by_pair in self.predicted.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "predicted" not in state:
            raise ValueError("the checkpoint was written by an older ibnbench (no stored predictions); "
                             "delete it or run without --resume")
        self.done.copy_(state["done"])
        self.valid.copy_(state["valid"])
        self.label.copy_(state["label"])
        for p in self.pairs:
            self.top1[p].copy_(state["top1"]["|".join(p)])
            self.top5[p].copy_(state["top5"]["|".join(p)])
            for name, by_pair in self.predicted.items():
                by_pair[p].copy_(state["predicted"][name]["|".join(p)])

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
        for t in [self.label, *(t for by_pair in self.predicted.values() for t in by_pair.values())]:
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

    def predictions(self) -> Predictions:
        """The stored predictions of every pair as arrays (uint16 indices, float16 probabilities)."""
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
                           top5_prob=stacked("top5_prob").numpy(), label_prob=stacked("label_prob").numpy())


def decision_gap(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """How far each sample is from changing its top-1 or top-5 hit: the smaller distance between the label's
    logit and the best other logit (top-1) or the fifth-best other logit (top-5)."""
    own = logits.gather(1, label[:, None])
    others = logits.scatter(1, label[:, None], float("-inf")).topk(5, dim=1).values
    return (own - others[:, [0, 4]]).abs().amin(dim=1)


class ModelRunner:
    """A model on the device with its preprocessing, precision and memory format; halves its
    micro-batch on out-of-memory instead of failing.

    Under autocast, the ``refine`` share of each batch closest to a top-1/top-5 decision is scored again
    in full precision, so bf16 does not move near ties. The share is fixed (no host sync); close calls
    (gap < ``CLOSE_CALL``) that did not fit in it are counted on the device in ``close_calls_left``.

    ``classes``: score on this class subset only (the other logits are -inf before the top-k, on the device)."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, device: torch.device,
                 options: RunOptions, classes: data_mod.ClassSubset | None = None):
        self.preprocessing = preprocessing
        self.geometry = data_mod.geometry_key(preprocessing)
        self.device = device
        self.channels_last = options.channels_last
        self.amp_dtype = options.amp_dtype(device)
        self.refine = options.refine
        model = model.to(device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if options.compile else model
        self.micro_batch: int | None = None
        self.close_calls_left = torch.zeros((), dtype=torch.int64, device=device)
        self.outside_classes = None if classes is None else ~classes.mask(device)

    def _forward(self, x: torch.Tensor, reduced: bool = True) -> torch.Tensor:
        x = self.preprocessing.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype and reduced
                    else contextlib.nullcontext())
        with full_fp32(), autocast:
            logits = self.model(x).float()
        return logits if self.outside_classes is None else logits.masked_fill(self.outside_classes, float("-inf"))

    def _score(self, x: torch.Tensor, label: torch.Tensor) -> tuple[Scores, torch.Tensor | int]:
        """The batch's :class:`Scores` and the number of close calls left unrefined (a device scalar under autocast)."""
        logits = self._forward(x)
        close_calls = 0
        if self.amp_dtype:
            # a row with an inf/NaN logit (fp16 overflow) has no meaningful gap: the closest of calls
            # (the -inf of classes outside a class subset are by design, not an overflow)
            finite = logits.isfinite() if self.outside_classes is None else logits.isfinite() | self.outside_classes
            gap = decision_gap(logits, label).where(finite.all(dim=1), 0.0)
            close = gap < CLOSE_CALL
            if self.refine:
                chosen = gap.topk(min(len(x), math.ceil(self.refine * len(x))), largest=False).indices
                logits[chosen] = self._forward(x[chosen], reduced=False)
                close[chosen] = False
            close_calls = close.sum()
        top5 = logits.topk(5, dim=1).indices
        probs = logits.softmax(dim=1)
        return Scores(top5, probs.gather(1, top5), probs.gather(1, label[:, None])[:, 0]), close_calls

    def hits(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits ``[N, 2]`` (bool) for a 0..255 batch and its labels."""
        return self.score(x, label).hits(label)

    @torch.no_grad()
    def score(self, x: torch.Tensor, label: torch.Tensor) -> Scores:
        """Top-5 classes with their probabilities and the label's probability for a 0..255 batch."""
        while True:
            step = self.micro_batch or x.shape[0]
            try:
                parts = [self._score(*part) for part in zip(x.split(step), label.split(step))]
                if self.amp_dtype:  # counted once the whole batch is through: an out-of-memory retry rescores it
                    self.close_calls_left += sum(close_calls for _, close_calls in parts)
                return Scores(*(torch.cat(column) for column in zip(*(scores for scores, _ in parts))))
            except torch.OutOfMemoryError:
                if step == 1:
                    raise
                self.micro_batch = max(1, step // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tqdm.write(f"out of memory: micro-batch reduced to {self.micro_batch}")


def environment(device: torch.device, options: RunOptions, close_calls_left: int | None = None) -> dict:
    """Versions, hardware, precision and how the crops were made, for the record.

    ``decoder``: "nvjpeg" (nvJPEG and a float32 resize on the GPU; libjpeg in CPU workers for the files nvJPEG
    cannot decode) or "cpu" (libjpeg/libpng and torchvision's resize in CPU workers: uint8 on CPUs whose
    ``cpu_capability`` is AVX2/AVX512 or on arm64, float32 otherwise). ``cache``: "gpu", "dir" or None.
    ``fp32_conv``: the precision of float32 convolutions ("ieee": no TF32, :mod:`ibnbench.precision`)."""
    import kornia
    import timm
    import torchvision

    from . import __version__

    env = {"ibnbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "kornia": kornia.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "dtype": str(options.amp_dtype(device) or torch.float32).removeprefix("torch."),
           "channels_last": options.channels_last, "compile": options.compile, "batch_size": options.batch_size,
           "fp32_conv": fp32_conv_precision(device), "decoder": options.resolved_decoder(device),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cache": None if options.cache is None else ("gpu" if options.cache == "gpu" else "dir")}
    if options.amp_dtype(device):
        env.update(refine=options.refine, close_calls_left=close_calls_left)
    return env


class Checkpoint:
    """Resume file: the evaluation state after the last completed chunk, tied to the run's identity."""

    def __init__(self, path: Path | None, identity: dict):
        self.path = path
        self.identity = identity

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def load(self) -> dict | None:
        if not self.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated or foreign file: say which, and what to do
            raise ValueError(f"{self.path}: unreadable checkpoint ({type(exc).__name__}); "
                             "start over with --restart") from None
        if not isinstance(saved, dict) or "state" not in saved:
            raise ValueError(f"{self.path}: not an ibnbench checkpoint; start over with --restart")
        if saved.get("identity") != self.identity:
            diff = sorted(k for k in set(saved.get("identity", {})) | set(self.identity)
                          if saved.get("identity", {}).get(k) != self.identity.get(k))
            raise ValueError(f"{self.path}: checkpoint belongs to a different run (differs in {', '.join(diff)}); "
                             "start over with --restart")
        return saved

    def save(self, state: EvalState, extra: dict) -> None:
        if self.path is None:
            return
        saved = {"identity": self.identity, "state": state.state_dict(), **extra}
        write_atomic(self.path, lambda f: torch.save(saved, f), what="checkpoint")

    @staticmethod
    def images_done(saved: dict) -> int:
        return int(saved["state"]["done"].sum())

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _evaluate_batch(batch: dict, runners: dict[str, ModelRunner], conditions: Sequence, state: EvalState,
                    device: torch.device, dir_batches: dict[str, dict] | None = None) -> None:
    """Every condition on the batch's crops, every model on every condition; hits stay on the device.

    ``dir_batches`` holds, per ``dir`` condition, the same images read from its pre-stylised folder."""
    index = batch["index"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    ok = batch["ok"]
    crops = {key: crop.to(device, non_blocking=True).float() for key, crop in batch["crops"].items()}
    for condition in conditions:
        source = crops
        if dir_batches and condition.id in dir_batches:
            ok = ok & dir_batches[condition.id]["ok"]
            source = {key: crop.to(device, non_blocking=True).float()
                      for key, crop in dir_batches[condition.id]["crops"].items()}
        for key, crop in source.items():
            x = condition(crop, index)
            for name, runner in runners.items():
                if runner.geometry != key:
                    continue
                state.store(name, condition.id, index, label, runner.score(x, label))
    state.label[index] = label.to(torch.int32)
    state.valid[index] = ok.to(device, non_blocking=True)
    state.done[index] = True


def evaluate(models: dict[str, nn.Module], conditions: Sequence, dataset: data_mod.ValDataset,
             options: RunOptions | None = None, checkpoint: Checkpoint | None = None,
             dist: DistContext | None = None, on_batch: Callable[[int], None] | None = None,
             classes: data_mod.ClassSubset | None = None) -> dict:
    """Evaluate every model under every condition; returns ``{"results", "per_image", "predictions", "timing",
    "skipped"}`` (``predictions``: the top-5 classes and probabilities per image, for the sidecar).

    ``models`` map names to modules carrying ``ibnbench_info`` (for preprocessing). In fan-out mode
    (default) each batch is decoded once; ``options.fanout=False`` is the per-(model, condition)
    baseline that re-reads the data for every pair, kept for honest speed comparisons. ``classes``: score
    argmax and top-5 over this class subset's logits only.
    """
    options = options or RunOptions()
    dist = dist or DistContext.detect()
    device = dist.device(options.resolved_device())
    runners = {name: ModelRunner(m, m.ibnbench_info.preprocessing, device, options, classes)
               for name, m in models.items()}
    geometries = {r.geometry: r.preprocessing for r in runners.values()}
    pairs = [(m, c.id) for m in models for c in conditions]
    state = EvalState(len(dataset), pairs, device)
    checkpoint = checkpoint or Checkpoint(None, {})
    skipped: list[str] = []
    close_calls_before = 0
    saved = checkpoint.load()
    if saved is not None:
        state.load_state_dict(saved["state"])
        skipped = saved.get("skipped", [])
        close_calls_before = saved.get("close_calls_left", 0)
        if options.progress and dist.is_main:
            print(f"resuming from {checkpoint.path}: {Checkpoint.images_done(saved)} of {len(dataset)} images "
                  "already done", file=sys.stderr, flush=True)

    def close_calls_left() -> torch.Tensor:
        return close_calls_before + sum(r.close_calls_left for r in runners.values())

    def save_checkpoint() -> None:
        checkpoint.save(state, {"skipped": skipped, "close_calls_left": int(close_calls_left())})

    t0 = time.perf_counter()
    passes = [(list(models), list(conditions))] if options.fanout else [([m], [c]) for m in models for c in conditions]
    shard = dist.shard(range(len(dataset)))
    images = 0
    from_cache = 0
    for model_names, pass_conditions in passes:
        done = state.done.cpu()  # one transfer, not one device sync per image
        todo = [i for i in shard if not done[i]] if options.fanout else shard
        dir_conditions = [c for c in pass_conditions if c.kind == "dir"]
        sources = [dataset] + [dataclasses.replace(dataset, root=c.root) for c in dir_conditions]
        loaders = [data_mod.make_loader(source, list(geometries.values()), batch_size=options.batch_size,
                                        workers=options.workers, pin_memory=device.type == "cuda",
                                        on_bad_image=options.on_bad_image, decoder=options.resolved_decoder(device),
                                        device=device, indices=todo, cache=options.cache) for source in sources]
        desc = "evaluate" if options.fanout else f"{model_names[0]} / {pass_conditions[0].id}"
        with Progress(len(todo), desc, enabled=options.progress and dist.is_main,
                      initial=len(shard) - len(todo)) as progress:
            since_checkpoint = 0
            try:
                for batch, *dir_batches in zip(*loaders):
                    _evaluate_batch(batch, {n: runners[n] for n in model_names}, pass_conditions, state, device,
                                    {c.id: b for c, b in zip(dir_conditions, dir_batches)})
                    skipped.extend(path for b in (batch, *dir_batches) for path, _reason in b["bad"])
                    n = len(batch["index"])
                    progress.update(n)
                    images += n
                    if on_batch is not None:
                        on_batch(images)
                    since_checkpoint += n
                    if options.fanout and since_checkpoint >= options.chunk_size:
                        save_checkpoint()
                        since_checkpoint = 0
            except KeyboardInterrupt:
                if options.fanout and images:  # every image marked done is complete: keep them all
                    save_checkpoint()
                raise
        from_cache += loaders[0].from_cache
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    state.reduce(dist)
    skipped = dist.gather_lists(skipped)
    counts = torch.stack([torch.as_tensor(close_calls_left(), device=device), torch.tensor(from_cache, device=device)])
    dist.all_reduce_sum(counts)
    close_calls, from_cache = counts.tolist()
    n_done = int(state.done.sum())
    return {"results": state.summary(), "per_image": state.per_image(), "predictions": state.predictions(),
            "skipped": sorted(set(skipped)),
            "close_calls_left": close_calls if options.amp_dtype(device) else None,
            "timing": {"seconds": round(elapsed, 3), "images": n_done, "passes": len(passes),
                       "images_per_s": round(images / elapsed, 2) if elapsed else None,
                       "world_size": dist.world_size, **({"from_cache": from_cache} if options.cache else {})},
            "device": device}


def per_model(values: Sequence[str] | None, names: Sequence[str], default: str | None, option: str) -> list:
    """One value per model: ``values`` holds one for all, one per model, or none (``default``)."""
    given = list(values or [default])
    if len(given) not in (1, len(names)):
        raise ValueError(f"{option}: give one for all models or one per --model ({len(names)}), not {len(given)}")
    return given * len(names) if len(given) == 1 else given


def weights_per_model(weights: Sequence[str] | None, names: Sequence[str], default: str) -> list[str]:
    """One weights spec per model: ``weights`` holds one for all, one per model, or none (``default``)."""
    return per_model(weights, names, default, "--weights")


def _weights_label(spec: str) -> str:
    return spec.rstrip("/").rsplit("/", 1)[-1] if spec not in ("official", "random") else spec


def column_names(names: Sequence[str], weights: Sequence[str], preprocessing: Sequence[str | None]) -> list[str]:
    """One result column per ``--model``: a name given more than once is told apart by its weights
    (``resnet18[random]``, ``resnet18[a.pth]``) or, where those agree, by its position (``resnet18#2``)."""
    runs = list(zip(names, weights, preprocessing))
    twin = next((r for i, r in enumerate(runs) if r in runs[:i]), None)
    if twin is not None:
        raise ValueError(f"--model {twin[0]} is given twice with the same --weights {twin[1]}"
                         + (f" and --preprocessing {twin[2]}" if twin[2] else "") + ": drop one")
    columns = []
    for i, (name, spec, _) in enumerate(runs):
        same = [j for j, n in enumerate(names) if n == name]
        labels = [_weights_label(weights[j]) for j in same]
        if len(same) == 1:
            columns.append(name)
        elif len(set(labels)) == len(labels):
            columns.append(f"{name}[{_weights_label(spec)}]")
        else:
            columns.append(f"{name}#{same.index(i) + 1}")
    return columns


def _checkpoint_paths(stem: Path) -> list[Path]:
    return sorted(stem.parent.glob(f".{stem.name}.rank*.resume.pt"))


def _check_checkpoint(stem: Path, ckpt_path: Path, resume: bool, restart: bool, world_size: int) -> None:
    """Before any work: an interrupted run's checkpoint is continued (``resume``), deleted (``restart``) or,
    with neither, left alone and reported, so that no finished image is lost silently."""
    if restart:
        for path in _checkpoint_paths(stem):
            path.unlink(missing_ok=True)  # every rank does this: another may have been first
        return
    if resume:
        found = sorted(int(p.name.rsplit(".rank", 1)[1].split(".")[0]) for p in _checkpoint_paths(stem))
        if found and found != list(range(world_size)):
            raise ValueError(f"--resume: the interrupted run left checkpoints for {len(found)} process(es) "
                             f"(ranks {found}) but this run has {world_size}; resume with the same "
                             "world size, or start over with --restart")
        return
    found = _checkpoint_paths(stem)  # all ranks' files, so that every rank of a distributed run agrees
    if found:
        ckpt_path = ckpt_path if ckpt_path in found else found[0]
        try:
            saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            done = f" ({Checkpoint.images_done(saved)} of {saved['state']['n_images']} images done)"
        except Exception:
            done = ""
        raise ValueError(f"{ckpt_path}: an interrupted run of this command left a checkpoint{done}; "
                         f"{RESUME_HINT}")


RESUME_HINT = "--resume continues it, --restart starts over"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`; the message says what was saved and how to continue."""


def run(model: Sequence[str], data: str | os.PathLike, suite: str = "table1", conditions: Sequence[str] | None = None,
        weights: Sequence[str] | None = None, output: str | os.PathLike | None = None,
        results_dir: str | os.PathLike = "results", labels: str | os.PathLike | None = None, resume: bool = False,
        restart: bool = False, skip_missing: bool = False, style_weights: dict[str, str] | None = None,
        preprocessing: Sequence[str] | None = None, classes_from_folders: bool = False,
        classes: str | os.PathLike | data_mod.ClassSubset | None = None, restrict_to_classes: bool = False,
        **options) -> Record:
    """``ibnbench run`` as a function: evaluate models under a suite on a dataset and write the record.

    ``weights`` gives one spec per model (or one for all): "official", "random", a path or a URL;
    ``preprocessing`` likewise gives ``resize=..,crop=..,mean=..,std=..`` specs (None keeps each model's own).
    Everything the run needs (models, suite assets, data listing, a writable output, the checkpoint state) is
    checked before any image is decoded. A checkpoint left by an interrupted run stops the run unless
    ``resume`` (continue it) or ``restart`` (delete it) is given.
    ``classes_from_folders`` / ``classes`` (a class-list file): score on that class subset (ImageNet-R, -A);
    ``restrict_to_classes``: keep only the images of those classes (val on a shift set's classes).
    """
    from datetime import datetime, timezone

    from . import imagenet_c
    from .files import ensure_writable
    from .models import create_model, model_info
    from .predictions import sidecar_path, staged_predictions
    from .results import RecordError, write_record
    from .stats import ece
    from .suites import load_suite

    opts = RunOptions(**options)
    names = list(model)
    if not names:
        raise ValueError("give at least one --model")
    if resume and restart:
        raise ValueError("--resume continues an interrupted run and --restart deletes it: give one of them")
    infos = [model_info(name) for name in names]  # an unknown model fails before anything else is looked at
    specs = weights_per_model(weights, names, "official")
    prep_specs = per_model(preprocessing, names, None, "--preprocessing")
    chosen_prep = [Preprocessing.from_spec(p, info.preprocessing) if p else None for p, info in zip(prep_specs, infos)]
    columns = column_names(names, specs, prep_specs)
    chosen = load_suite(suite, style_weights=style_weights)
    if conditions is not None:
        chosen = chosen.select(conditions)
    labels_by_id = {c.id: c.label for c in chosen.conditions}
    not_run = []
    released = imagenet_c.is_released_tree(data)
    if released:  # the downloaded ImageNet-C files: each corruption read from its folder, already 224x224
        chosen, not_run = imagenet_c.released_suite(chosen, data)
    missing = {c.id: c.requires for c in chosen.conditions if c.requires}
    if missing:
        if not skip_missing:
            details = "; ".join(f"{cid}: {', '.join(req)}" for cid, req in missing.items())
            raise ValueError(f"missing assets for condition(s) {details} (or pass --skip-missing)")
        not_run += list(missing)
        chosen = chosen.select([c.id for c in chosen.conditions if c.id not in missing])
    if released:
        dataset = dataclasses.replace(data_mod.open_dataset(chosen.conditions[0].root, labels=labels, limit=opts.limit),
                                      layout=imagenet_c.RELEASED_LAYOUT, cropped=True)
    else:
        dataset = data_mod.open_dataset(data, labels=labels, limit=opts.limit)
    subset = data_mod.class_subset(dataset, classes_from_folders, classes, check=not restrict_to_classes)
    if restrict_to_classes:
        if subset is None:
            raise ValueError("--restrict-to-classes needs a class subset (--classes FILE or --classes-from-folders)")
        dataset = data_mod.restrict(dataset, subset.indices)
    for condition in chosen.conditions:
        if condition.kind == "dir":  # a pre-stylised copy must hold every image: fail before any work
            for relative in dataset.files:
                condition.path_for(relative)
    dist = DistContext.detect()
    stem = Path(output) if output else Path(results_dir) / f"{chosen.name}-{'+'.join(names)}.json"
    out_path = Path(output) if output else stem.with_name(f"{stem.stem}-{datetime.now():%Y%m%d-%H%M%S}.json")
    ckpt_path = stem.with_name(f".{stem.name}.rank{dist.rank}.resume.pt")
    if dist.is_main:
        ensure_writable(out_path, "record")
    ensure_writable(ckpt_path, "checkpoint")
    _check_checkpoint(stem, ckpt_path, resume, restart, dist.world_size)

    models = {}
    for column, name, spec, prep in zip(columns, names, specs, chosen_prep):
        built = create_model(name, weights=spec)
        if prep is not None:
            built.ibnbench_info = dataclasses.replace(built.ibnbench_info, preprocessing=prep)
        elif "assumed" in built.ibnbench_info.preprocessing.source and dist.is_main:
            pre = built.ibnbench_info.preprocessing
            print(f"note: {column}: preprocessing assumed: torchvision's ImageNet default (resize {pre.resize}, "
                  f"crop {pre.crop}, {pre.convention}); pass --preprocessing resize=..,crop=..,mean=..,std=.. "
                  "if it expects another",
                  file=sys.stderr, flush=True)
        models[column] = built

    fingerprint = dataset.fingerprint()
    identity = {"suite_hash": chosen.hash, "conditions": [c.id for c in chosen.conditions],
                "dataset": fingerprint["sha256"], "world_size": dist.world_size, "rank": dist.rank,
                "models": {n: m.ibnbench_weights.get("sha256") for n, m in models.items()},
                "preprocessing": {n: m.ibnbench_info.preprocessing.as_dict() for n, m in models.items()},
                "precision": (opts.amp, opts.refine)}
    if subset is not None:
        identity["classes"] = subset.indices
    checkpoint = Checkpoint(ckpt_path, identity)
    try:
        result = evaluate(models, chosen.conditions, dataset, opts, checkpoint, dist, classes=subset)
    except KeyboardInterrupt:
        saved = f"progress saved in {ckpt_path}; " if checkpoint.exists() else "no chunk finished, nothing saved; "
        raise RunInterrupted(saved + (RESUME_HINT if checkpoint.exists() else "run the command again")) from None
    predictions = result["predictions"]
    for row in result["results"]:  # from the stored (float16) confidences, so the sidecar reproduces it exactly
        row["ece"] = round(100 * ece(predictions.confidence(row["model"], row["condition"]),
                                     predictions.correct(row["model"], row["condition"])), 4)

    record = Record(
        suite=chosen.name, suite_hash=chosen.hash,
        conditions=[{"id": c.id, "label": c.label, **c.provenance()} for c in chosen.conditions]
        + [{"id": cid, "label": labels_by_id[cid], "not_run": True} for cid in not_run],
        dataset={**fingerprint, "n_skipped": len(result["skipped"]), "skipped": result["skipped"],
                 **({"classes": subset.as_dict()} if subset is not None else {})},
        models={n: {"model": name, "weights": m.ibnbench_weights.get("source"),
                    "sha256": m.ibnbench_weights.get("sha256"), "release": m.ibnbench_weights.get("release"),
                    "preprocessing": m.ibnbench_info.preprocessing.as_dict()}
                for (n, m), name in zip(models.items(), names)},
        environment=environment(result["device"], opts, result["close_calls_left"]),
        timing=result["timing"],
        results=result["results"],
        per_image={"files": list(dataset.files), **result["per_image"]},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if not any(row["n_images"] for row in record.results):
        checkpoint.remove()
        skipped = result["skipped"]
        raise ValueError(f"no image could be scored: all {len(dataset)} image(s) of {data} were unreadable and "
                         f"skipped (e.g. {', '.join(skipped[:3])}); nothing was written")
    if dist.is_main:
        sidecar = sidecar_path(out_path)
        try:  # the sidecar is staged, the record written, then the sidecar moved into place
            with staged_predictions(predictions, sidecar) as reference:
                record.predictions = reference
                write_record(record, out_path)
        except (OSError, RecordError) as exc:
            error = exc if isinstance(exc, RecordError) else RecordError(
                f"cannot write record {out_path}: {exc.strerror or exc} (its predictions, {sidecar.name})")
            error.record = record  # the caller can still show the numbers
            raise error from None
    dist.barrier()
    checkpoint.remove()
    return record

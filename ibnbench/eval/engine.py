"""The evaluation engine: decode each batch once, apply every condition on the device, feed every
model, and count top-1/top-5 hits per image on the device (synchronising once per chunk), keeping each
image's top-5 classes and softmax probabilities from the same forward pass."""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ibnbench.data.classes import ClassSubset
from ibnbench.data.discovery import ValDataset
from ibnbench.data.loader import make_loader
from ibnbench.errors import BadImageError, UsageError
from ibnbench.eval.checkpoint import RESUME_HINT, Checkpoint, RunInterrupted, check_checkpoint
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import Classifier, RunPlan
from ibnbench.eval.runner import ModelRunner, apply_condition, probability_source
from ibnbench.eval.state import EvalState
from ibnbench.eval.streams import SideStream
from ibnbench.eval.timing import WarmClock
from ibnbench.precision import fp32_conv_precision
from ibnbench.progress import Progress
from ibnbench.results.predictions import Predictions
from ibnbench.results.record import Record


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

    from ibnbench import __version__

    env = {"ibnbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "kornia": kornia.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device),
           "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                           else platform.processor() or "cpu"),
           "dtype": str(options.amp_dtype(device) or torch.float32).removeprefix("torch."),
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


def _evaluate_batch(batch: dict, runners: dict[str, ModelRunner], conditions: Sequence, state: EvalState,
                    device: torch.device, own_batches: dict[str, dict] | None = None,
                    fitted: dict[str, int] | None = None, side: SideStream | None = None) -> None:
    """Every condition on the batch's crops, every model on every condition; hits stay on the device.

    ``own_batches`` holds, per condition with images of its own (:meth:`Condition.source`), the same images read
    from there; ``fitted``, per condition id, the part size that fitted after an out-of-memory error
    (:func:`~ibnbench.eval.runner.apply_condition`; kept from batch to batch). With an enabled ``side`` stream
    (``--overlap``), each next condition is computed on it while the models score the current one."""
    fitted = {} if fitted is None else fitted
    index = batch["index"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    ok = batch["ok"]
    crops = {key: crop.to(device, non_blocking=True).float() for key, crop in batch["crops"].items()}
    jobs = []  # (condition, geometry key, crops)
    for condition in conditions:
        source = crops
        if own_batches and condition.id in own_batches:
            ok = ok & own_batches[condition.id]["ok"]
            source = {key: crop.to(device, non_blocking=True).float()
                      for key, crop in own_batches[condition.id]["crops"].items()}
        jobs.extend((condition, key, crop) for key, crop in source.items())
    ahead = None
    for number, (condition, key, crop) in enumerate(jobs):
        x = side.take(ahead) if ahead is not None else apply_condition(condition, crop, index, fitted)
        if side is not None and side.enabled and number + 1 < len(jobs):
            after, _, after_crop = jobs[number + 1]
            ahead = side.run(apply_condition, after, after_crop, index, fitted)
        for name, runner in runners.items():
            if runner.geometry == key:
                state.store(name, condition.id, index, label, runner.score(x, label))
    state.label[index] = label.to(torch.int32)
    state.valid[index] = ok.to(device, non_blocking=True)
    state.done.index_fill_(0, index, True)  # not done[index] = True: on CUDA that copies the number from the host


def evaluate(models: Mapping[str, Classifier | nn.Module], conditions: Sequence, dataset: ValDataset,
             options: RunOptions | None = None, checkpoint: Checkpoint | None = None,
             dist: DistContext | None = None, on_batch: Callable[[int], None] | None = None,
             classes: ClassSubset | None = None) -> EvalResult:
    """Evaluate every model under every condition (on ``options.device``, this rank's share under torchrun).

    ``models`` map result columns to :class:`Classifier` s (or modules made by :func:`ibnbench.create_model`). In
    fan-out mode
    (default) each batch is decoded once; ``options.fanout=False`` is the per-(model, condition)
    baseline that re-reads the data for every pair, kept for honest speed comparisons. ``classes``: score
    argmax and top-5 over this class subset's logits only.
    """
    options = options or RunOptions()
    dist = dist or DistContext.detect()
    device = dist.device(options.resolved_device())
    runners = {name: ModelRunner(c.module, c.preprocessing, device, options, classes, name)
               for name, c in ((n, Classifier.of(m)) for n, m in models.items())}
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

    def save_checkpoint() -> None:  # never a chunk with a non-finite score: that stops the run, the last save stays
        state.check_finite()
        if checkpoint.path is not None:  # the close-call count is read from the device only for a file
            checkpoint.save(state, {"skipped": skipped, "close_calls_left": int(close_calls_left())})

    t0 = time.perf_counter()
    warm = WarmClock(device)
    passes = [(list(models), list(conditions))] if options.fanout else [([m], [c]) for m in models for c in conditions]
    shard = dist.shard(range(len(dataset)))
    images = 0
    read = 0  # images the loaders delivered (the main one and those of conditions with images of their own)
    from_cache = 0
    own_sources = {c.id: c.source(dataset) for c in conditions}  # checked once, not once per pass
    fitted: dict[str, int] = {}  # condition batch sizes that fitted after an out-of-memory error
    side = SideStream(device, options.overlap)
    for model_names, pass_conditions in passes:
        done = state.done.cpu()  # one transfer, not one device sync per image
        todo = [i for i in shard if not done[i]] if options.fanout else shard
        own = {c.id: own_sources[c.id] for c in pass_conditions if own_sources[c.id] is not None}
        sources = [dataset, *own.values()]
        loaders = [make_loader(source, list(geometries.values()), batch_size=options.batch_size,
                                        workers=options.workers, pin_memory=device.type == "cuda",
                                        on_bad_image=options.on_bad_image, decoder=options.resolved_decoder(device),
                                        device=device, indices=todo, cache=options.cache) for source in sources]
        desc = "evaluate" if options.fanout else f"{model_names[0]} / {pass_conditions[0].id}"
        with Progress(len(todo), desc, enabled=options.progress and dist.is_main,
                      initial=len(shard) - len(todo)) as progress:
            since_checkpoint = 0
            try:
                for batch, *own_batches in zip(*loaders):
                    _evaluate_batch(batch, {n: runners[n] for n in model_names}, pass_conditions, state, device,
                                    dict(zip(own, own_batches)), fitted, side)
                    skipped.extend(path for b in (batch, *own_batches) for path, _reason in b["bad"])
                    n = len(batch["index"])
                    warm.batch_done(n)
                    read += sum(len(b["index"]) for b in (batch, *own_batches))
                    progress.update(n)
                    images += n
                    if on_batch is not None:
                        on_batch(images)
                    since_checkpoint += n
                    if options.fanout and since_checkpoint >= options.chunk_size:
                        save_checkpoint()
                        since_checkpoint = 0
            except (KeyboardInterrupt, BadImageError):
                if options.fanout and images:  # every image marked done is complete: keep them all
                    save_checkpoint()
                raise
        warm.pass_done()
        state.check_finite()
        from_cache += loaders[0].from_cache
        read -= sum(loader.from_cache for loader in loaders)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    state.reduce(dist)
    skipped = dist.gather_lists(skipped)
    counts = torch.stack([torch.as_tensor(close_calls_left(), device=device), torch.tensor(from_cache, device=device),
                          torch.tensor(read, device=device)])
    dist.all_reduce_sum(counts)
    close_calls, from_cache, decoded = counts.tolist()
    n_done = int(state.done.sum())
    return EvalResult(
        results=state.summary(), per_image=state.per_image(), predictions=state.predictions(),
        skipped=sorted(set(skipped)), close_calls_left=close_calls if options.amp_dtype(device) else None,
        timing={"seconds": round(elapsed, 3), "images": n_done, "passes": len(passes),
                "images_per_s": round(images / elapsed, 2) if elapsed else None, "decoded": decoded,
                "world_size": dist.world_size, "warm": warm.result(),
                **({"from_cache": from_cache} if options.cache else {})})

RECORD_START = re.compile(rb'\A\{\s*"suite"\s*:')
"""How every record :func:`ibnbench.results.record.write_record` writes begins."""


def check_replaceable_record(path: str | os.PathLike) -> None:
    """An existing output file is replaced only when it is an ibnbench record (a rerun) or empty: any other
    file is refused, so that ``--output notes.txt`` does not overwrite notes (nor ``--output /dev/null``, run as
    root, replace the device)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # the rename would replace the device itself
        raise UsageError(f"--output {path}: not a regular file (a device, pipe or socket); give a file path")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            start = f.read(256)
    except OSError as exc:
        raise UsageError(f"--output {path}: an existing file that cannot be read ({exc.strerror or exc}), so it "
                         "cannot be told to be a record; give another path") from None
    if not RECORD_START.match(start):
        raise UsageError(f"--output {path}: an existing file that is not an ibnbench record; give another path "
                         "(a record is replaced, any other file is kept)")


def run(model: Sequence[str], data: str | os.PathLike, suite: str = "table1", conditions: Sequence[str] | None = None,
        weights: Sequence[str] | None = None, output: str | os.PathLike | None = None,
        results_dir: str | os.PathLike = "results", labels: str | os.PathLike | None = None, resume: bool = False,
        restart: bool = False, skip_missing: bool = False, style_weights: dict[str, str] | None = None,
        preprocessing: Sequence[str] | None = None, classes_from_folders: bool = False,
        classes: str | os.PathLike | ClassSubset | None = None, restrict_to_classes: bool = False,
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

    from ibnbench.errors import RecordError
    from ibnbench.io import ensure_writable
    from ibnbench.results.predictions import sidecar_path, staged_predictions
    from ibnbench.results.record import write_record
    from ibnbench.results.stats import ece

    opts = RunOptions(**options)
    if resume and restart:
        raise UsageError("--resume continues an interrupted run and --restart deletes it: give one of them")
    plan = RunPlan.make(model, data, suite, conditions, weights, labels=labels, limit=opts.limit,
                        skip_missing=skip_missing, style_weights=style_weights, preprocessing=preprocessing,
                        classes_from_folders=classes_from_folders, classes=classes,
                        restrict_to_classes=restrict_to_classes, style_dirs=opts.style_dirs())
    chosen, dataset, subset = plan.suite, plan.dataset, plan.classes
    dist = DistContext.detect()
    stem = Path(output) if output else Path(results_dir) / f"{chosen.name}-{'+'.join(plan.names)}.json"
    out_path = Path(output) if output else stem.with_name(f"{stem.stem}-{datetime.now():%Y%m%d-%H%M%S}.json")
    ckpt_path = stem.with_name(f".{stem.name}.rank{dist.rank}.resume.pt")
    if dist.is_main:
        ensure_writable(out_path, "record")
        check_replaceable_record(out_path)
    ensure_writable(ckpt_path, "checkpoint")
    check_checkpoint(stem, ckpt_path, resume, restart, dist.world_size)
    models = plan.build(announce=dist.is_main)

    fingerprint = dataset.fingerprint()
    identity = {"suite_hash": chosen.hash, "conditions": [c.id for c in chosen.conditions],
                "dataset": fingerprint["sha256"], "world_size": dist.world_size, "rank": dist.rank,
                "models": {n: m.weights.get("sha256") for n, m in models.items()},
                "preprocessing": {n: m.preprocessing.as_dict() for n, m in models.items()},
                "precision": (opts.amp, opts.refine)}
    if subset is not None:
        identity["classes"] = subset.indices
    checkpoint = Checkpoint(ckpt_path, identity)
    try:
        result = evaluate(models, chosen.conditions, dataset, opts, checkpoint, dist, classes=subset)
    except KeyboardInterrupt:
        saved = f"progress saved in {ckpt_path}; " if checkpoint.exists() else "no chunk finished, nothing saved; "
        raise RunInterrupted(saved + (RESUME_HINT if checkpoint.exists() else "run the command again")) from None
    except BadImageError as exc:  # the images finished before it were saved: say so, and how to go on
        if checkpoint.exists():
            exc.args = (f"{exc}; the images done before it are saved in {ckpt_path}: --resume --on-bad-image skip "
                        "continues and skips unreadable images (--restart starts over)",)
        raise
    predictions = result.predictions
    for row in result.results:  # from the stored (float16) confidences, so the sidecar reproduces it exactly
        row["ece"] = round(100 * ece(predictions.confidence(row["model"], row["condition"]),
                                     predictions.correct(row["model"], row["condition"])), 4)

    record = Record(
        suite=chosen.name, suite_hash=chosen.hash,
        conditions=[{"id": c.id, "label": c.label, **c.provenance()} for c in chosen.conditions]
        + [{"id": cid, "label": plan.labels[cid], "not_run": True} for cid in plan.not_run],
        dataset={**fingerprint, "n_skipped": len(result.skipped), "skipped": result.skipped,
                 **({"classes": subset.as_dict()} if subset is not None else {})},
        models={n: {"model": name, "weights": m.weights.get("source"), "sha256": m.weights.get("sha256"),
                    "release": m.weights.get("release"), "preprocessing": m.preprocessing.as_dict()}
                for (n, m), name in zip(models.items(), plan.names)},
        environment=environment(dist.device(opts.resolved_device()), opts, result.close_calls_left),
        timing=result.timing,
        results=result.results,
        per_image={"files": list(dataset.files), **result.per_image},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if not any(row["n_images"] for row in record.results):
        checkpoint.remove()
        skipped = result.skipped
        raise UsageError(f"no image could be scored: all {len(dataset)} image(s) of {data} were unreadable and "
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

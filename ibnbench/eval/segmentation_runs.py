"""Segmentation runs (``ibnbench run --task segmentation``): segmentation models on one or more datasets in their
released layouts, under a condition suite (``none``: the images as they are; ``table1``; ``imagenet-c``, which on
Cityscapes is Cityscapes-C), one record with a row per (model, condition, dataset).

Everything is checked before any weight is loaded: the models are segmentation models, the datasets are found, the
suite's assets are there, the record can be written and no interrupted run is overwritten.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ibnbench.conditions.base import Identity
from ibnbench.conditions.benchmark_generator import record_generator
from ibnbench.conditions.suite import Suite
from ibnbench.data.segmentation import ACDC_CONDITIONS, SegmentationDataset, open_segmentation
from ibnbench.errors import UsageError
from ibnbench.eval.checkpoint import Checkpoint, check_checkpoint, telling_how_to_go_on
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.engine import environment
from ibnbench.eval.options import RunOptions
from ibnbench.eval.output import RecordOutput, created_now
from ibnbench.eval.plan import load_suite, select_conditions, weights_per_model
from ibnbench.eval.segmentation_engine import SegmentationResult, evaluate_segmentation
from ibnbench.eval.segmentation_inference import Inference, SegmentationRunner
from ibnbench.io import ensure_writable
from ibnbench.results.segmentation_metrics import miou_interval, scores
from ibnbench.results.segmentation_record import SegmentationRecord, write_segmentation_record
from ibnbench.zoo import create_model, model_info

NO_SUITE = "none"
"""``--suite none``: the images as they are (one condition, ``origin``)."""


def parse_data(data: Mapping[str, str | os.PathLike] | Sequence[str]) -> dict[str, str]:
    """``["cityscapes=/data/cs", "acdc=/data/acdc"]`` (or a mapping) as ``{name: path}``; each name a dataset of
    :data:`~ibnbench.data.segmentation.SEGMENTATION_DATASETS`, at most once."""
    if isinstance(data, Mapping):
        return {str(k): str(v) for k, v in data.items()}
    if isinstance(data, (str, os.PathLike)):
        data = [str(data)]
    pairs: dict[str, str] = {}
    for item in data:
        name, equals, path = str(item).partition("=")
        if not equals or not name or not path:
            raise UsageError(f"--data {item}: a segmentation run takes NAME=PATH (e.g. cityscapes=/data/cityscapes)")
        if name in pairs:
            raise UsageError(f"--data {name} is given twice")
        pairs[name] = path
    if not pairs:
        raise UsageError("give at least one --data NAME=PATH")
    return pairs


def open_datasets(data: Mapping[str, str], limit: int | None) -> dict[str, SegmentationDataset]:
    """Every dataset by result name; ACDC becomes one dataset per condition (``acdc/fog``, ...)."""
    datasets = {}
    for name, path in data.items():
        if name == "acdc":
            for condition in ACDC_CONDITIONS:
                datasets[f"acdc/{condition}"] = open_segmentation(name, path, condition=condition, limit=limit)
        else:
            datasets[name] = open_segmentation(name, path, limit=limit)
    return datasets


def segmentation_suite(suite: str | os.PathLike, conditions: Sequence[str] | None,
                       skip_missing: bool) -> tuple[Suite | None, list[str]]:
    """The suite's conditions to run (None for ``none``) and those left out for missing assets; conditions that
    read images of their own (``dir``, pre-rendered styles) are refused: they hold classification crops."""
    if str(suite) == NO_SUITE:
        if conditions:
            raise UsageError("--conditions needs a --suite (table1, imagenet-c or a TOML file), not --suite none")
        return None, []
    chosen, missing = select_conditions(load_suite(suite), conditions, skip_missing)
    crops = [c.id for c in chosen.conditions if c.kind == "dir" or getattr(c, "rendered", None) is not None]
    if crops:
        raise UsageError(f"condition(s) {', '.join(crops)} read pre-made classification crops; a segmentation run "
                         "applies conditions to the whole image (leave them out with --conditions)")
    return chosen, missing


def check_segmentation_models(names: Sequence[str]) -> None:
    """Every name a registered segmentation model; a classification model is refused in one line."""
    if not names:
        raise UsageError("give at least one --model")
    for name in names:
        task = model_info(name).task
        if task != "segmentation":
            raise UsageError(f"--model {name} is a {task} model; --task segmentation needs a segmentation model "
                             "(`ibnbench models --task segmentation` lists them)")


@dataclass(frozen=True)
class SegmentationRequest:
    """What a segmentation run evaluates and where it writes; the arguments of :func:`run_segmentation`."""

    models: Sequence[str]
    data: Mapping[str, str]
    suite: str | os.PathLike = NO_SUITE
    conditions: Sequence[str] | None = None
    weights: Sequence[str] | None = None
    output: str | os.PathLike | None = None
    results_dir: str | os.PathLike = "results"
    resume: bool = False
    restart: bool = False
    skip_missing: bool = False


def run_segmentation(models: Sequence[str], data: Mapping[str, str | os.PathLike] | Sequence[str], *,
                     suite: str | os.PathLike = NO_SUITE, conditions: Sequence[str] | None = None,
                     weights: Sequence[str] | None = None, options: RunOptions | None = None,
                     inference: Inference | None = None, output: str | os.PathLike | None = None,
                     results_dir: str | os.PathLike = "results", resume: bool = False, restart: bool = False,
                     skip_missing: bool = False) -> SegmentationRecord:
    """``ibnbench run --task segmentation`` as a function: ``models`` (segmentation models of the zoo) on ``data``
    (``{"cityscapes": PATH, ...}`` or ``["cityscapes=PATH", ...]``) under ``suite`` (``none``, ``table1``,
    ``imagenet-c`` or a TOML path; ``conditions`` a subset), predictions made as ``inference`` says (default: the
    whole image, one scale, no flip). Writes the record (and its per-image statistics) and returns it."""
    options = options if options is not None else RunOptions()
    options.validate()
    if resume and restart:
        raise UsageError("--resume continues an interrupted run and --restart deletes it: give one of them")
    request = SegmentationRequest(list(models), parse_data(data), suite, conditions, weights, output, results_dir,
                                  resume, restart, skip_missing)
    return _run(request, options, inference or Inference())


def _run(r: SegmentationRequest, options: RunOptions, inference: Inference) -> SegmentationRecord:
    check_segmentation_models(r.models)
    specs = weights_per_model(r.weights, r.models, "official")
    suite, not_run = segmentation_suite(r.suite, r.conditions, r.skip_missing)
    datasets = open_datasets(r.data, options.limit)
    dist = DistContext.detect()
    suite_name = suite.name if suite is not None else NO_SUITE
    out = RecordOutput.choose(r.output, r.results_dir, f"segmentation-{suite_name}", r.models)
    checkpoint_path = out.side_file(f"rank{dist.rank}.resume.pt")
    if dist.is_main:
        out.check()
    ensure_writable(checkpoint_path, "checkpoint")
    check_checkpoint(out.stem, checkpoint_path, r.resume, r.restart, dist.world_size)
    device = dist.device(options.resolved_device())
    built = {name: create_model(name, weights=spec) for name, spec in zip(r.models, specs)}
    runners = {name: SegmentationRunner(name, module, module.ibnbench_info.preprocessing, device, options, inference)
               for name, module in built.items()}
    conditions = suite.conditions if suite is not None else [Identity("origin")]
    identity = {"suite_hash": suite.hash if suite is not None else NO_SUITE,
                "conditions": [c.id for c in conditions],
                "datasets": {k: d.fingerprint()["sha256"] for k, d in datasets.items()},
                "world_size": dist.world_size, "rank": dist.rank, "inference": inference.as_dict(),
                "models": {n: m.ibnbench_weights.as_dict().get("sha256") for n, m in built.items()},
                "precision": options.amp}
    checkpoint = Checkpoint(checkpoint_path, identity)
    with telling_how_to_go_on(checkpoint):
        result = evaluate_segmentation(runners, conditions, datasets, options, checkpoint, dist)
    record, statistics = _record(suite, not_run, conditions, datasets, built, inference, result,
                                 environment(device, options))
    if dist.is_main:
        write_segmentation_record(record, statistics, out.path)
    dist.barrier()
    checkpoint.remove()
    return record


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else round(100 * float(value), 4)


def _rows(result: SegmentationResult, datasets: Mapping[str, SegmentationDataset]) -> tuple[list[dict], dict]:
    """One result row per (model, condition, dataset), and each pair's per-image statistics of readable images."""
    state = result.state
    valid = state.valid.cpu().numpy()
    rows, statistics = [], {}
    for (model, condition, dataset), matrix in state.confusion.items():
        start = state.offsets[dataset]
        kept = valid[start:start + len(datasets[dataset])]
        per_image = state.statistics[model, condition].cpu().numpy()[start:start + len(kept)][kept]
        statistics[f"{model}|{condition}|{dataset}"] = per_image
        score = scores(matrix)
        low, high = miou_interval(per_image)
        rows.append({"model": model, "condition": condition, "dataset": dataset, "n_images": int(kept.sum()),
                     "miou": _percent(score.miou), "miou_ci": [_percent(low), _percent(high)],
                     "pixel_accuracy": _percent(score.pixel_accuracy), "pixels": score.pixels,
                     "iou": [_percent(v) for v in score.iou], "confusion": matrix.cpu().tolist()})
    return rows, statistics


def _record(suite: Suite | None, not_run: list[str], conditions: Sequence, datasets: Mapping[str, SegmentationDataset],
            built: Mapping, inference: Inference, result: SegmentationResult,
            env: dict) -> tuple[SegmentationRecord, dict]:
    rows, statistics = _rows(result, datasets)
    if not any(row["n_images"] for row in rows):
        raise UsageError("no image could be scored: every pair was unreadable and skipped; nothing was written")
    record = SegmentationRecord(
        suite=suite.name if suite is not None else NO_SUITE, suite_hash=suite.hash if suite is not None else NO_SUITE,
        conditions=[{"id": c.id, "label": c.label, **c.provenance()} for c in conditions]
        + [{"id": cid, "not_run": True} for cid in not_run],
        datasets={k: {**d.fingerprint(), "n_skipped": len(result.skipped[k]), "skipped": result.skipped[k]}
                  for k, d in datasets.items()},
        models={n: {"model": n, **m.ibnbench_weights.as_dict()} for n, m in built.items()},
        inference=inference.as_dict(), environment=env, timing=result.timing, results=rows,
        files={k: list(d.files) for k, d in datasets.items()}, generator=record_generator(conditions),
        created=created_now())
    return record, statistics

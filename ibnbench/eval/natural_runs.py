"""Runs of a dataset suite (natural shifts, :mod:`ibnbench.conditions.dataset_suites`).

:func:`run_dataset_suite` runs the single-dataset path (:func:`~ibnbench.eval.condition_runs.run_condition_suite`,
condition ``origin``) on ImageNet val and on each dataset, and writes one record: one row per dataset, its gap
measured against val on the same class subset (val restricted to the subset's images and masked alike, a row of its
own: ``origin@<id>``), and every dataset's fingerprint in ``dataset.datasets``. A dataset that is not there is
reported as missing.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ibnbench.conditions.dataset_suites import VAL_ID, DatasetSuite, load_dataset_suite
from ibnbench.data.classes import ClassSubset
from ibnbench.data.discovery import open_dataset, restrict
from ibnbench.errors import RecordError, UsageError
from ibnbench.eval.condition_runs import run_condition_suite
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.options import RunOptions, RunRequest
from ibnbench.eval.output import RecordOutput, created_now, keeping_record
from ibnbench.eval.plan import weights_per_model
from ibnbench.results.predictions import dataset_sidecar_path, sidecar_path
from ibnbench.results.record import Record, read_record, write_record
from ibnbench.zoo import model_info


@dataclass(frozen=True)
class _Part:
    """One single-dataset run of a dataset suite: a row of the combined record."""

    id: str
    label: str
    path: Path
    classes: ClassSubset | None
    restrict: bool
    baseline: str | None


def _plan(suite: DatasetSuite, val: Path, limit: int | None,
          labels: str | os.PathLike | None) -> tuple[list[_Part], dict[str, str]]:
    """The single-dataset runs (val first; per subset dataset the restricted val before it) and the missing
    datasets with why; every present dataset is opened (and its classes checked) before any work."""
    open_dataset(val, labels=labels, limit=limit)
    parts = [_Part(VAL_ID, "ImageNet val", val, None, False, None)]
    missing = {}
    for entry in suite.datasets:
        where = entry.locate()
        if isinstance(where, str):
            missing[entry.id] = where
            continue
        subset = entry.subset(open_dataset(where, limit=limit))
        if subset is None:
            parts.append(_Part(entry.id, entry.label, where, None, False, VAL_ID))
            continue
        base = f"{VAL_ID}@{entry.id}"
        parts.append(_Part(base, f"ImageNet val, {entry.label} classes ({len(subset.indices)})", val, subset, True,
                           None))
        parts.append(_Part(entry.id, entry.label, where, subset, False, base))
    return parts, missing


def _reusable(part: _Part, path: Path, labels: str | os.PathLike | None, weights: list[str],
              options: RunOptions) -> Record | None:
    """The finished part record at ``path`` if it was made on the same data, subset, weights and precision."""
    if not path.is_file():
        return None
    try:
        found = read_record(path)
    except RecordError:
        return None
    dataset = open_dataset(part.path, labels=labels, limit=options.limit)
    dataset = restrict(dataset, part.classes.indices) if part.restrict else dataset
    same = (found.dataset.get("sha256") == dataset.fingerprint()["sha256"]
            and found.dataset.get("classes") == (part.classes.as_dict() if part.classes else None)
            and [m.get("weights") for m in found.models.values()] == weights
            and (found.environment.get("dtype"), found.environment.get("refine"))
            == options.precision(options.resolved_device()))
    return found if same else None


def combined_sha256(datasets: dict[str, dict]) -> str:
    """One fingerprint over every dataset's fingerprint and class subset: equal only when all of them are."""
    items = sorted((k, v.get("sha256"), json.dumps(v.get("classes"), sort_keys=True)) for k, v in datasets.items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def run_dataset_suite(request: RunRequest, options: RunOptions) -> Record:
    """Every model on ImageNet val (the request's ``data``) and on every dataset of its dataset suite (or those
    in its ``conditions``), one record with a row per dataset and its gap to val.

    Missing datasets stop the run before any work, unless ``skip_missing`` (then they are rows marked
    missing). Each finished dataset is kept beside the output (``.<name>.<id>.json``) until the record is
    written, so ``resume`` continues with the next one (and the interrupted one from its checkpoint);
    ``restart`` runs every dataset again.
    """
    r = request
    if options.subset:
        raise UsageError(f"--subset {options.subset}: lists images of one dataset; it applies to condition suites, "
                         f"not to the dataset suite {r.suite}")
    chosen = load_dataset_suite(r.suite)
    if r.conditions:
        chosen = chosen.select(list(r.conditions))
    names = list(r.models)
    if not names:
        raise UsageError("give at least one --model")
    for name in names:
        model_info(name)
    parts, missing = _plan(chosen, Path(r.data), options.limit, r.labels)
    if missing and not r.skip_missing:
        details = "; ".join(f"{k}: {why}" for k, why in missing.items())
        raise UsageError(f"missing dataset(s) {details} (or pass --skip-missing)")
    dist = DistContext.detect()
    out = RecordOutput.choose(r.output, r.results_dir, chosen.name, names)
    if dist.is_main:
        out.check()
    part_path = {p.id: out.side_file(f"{p.id}.json") for p in parts}
    specs = weights_per_model(r.weights, names, "official")
    records: dict[str, Record] = {}
    for part in parts:
        part_labels = r.labels if part.path == Path(r.data) else None
        records[part.id] = (r.resume and _reusable(part, part_path[part.id], part_labels, specs, options)) or \
            _run_part(chosen.name, part, part_path[part.id], part_labels, r, options)
    record = _combine(chosen, parts, records, missing)
    if dist.is_main:
        with keeping_record(record, out.path):
            _write(record, records, part_path, out.path)
    dist.barrier()
    return record


def _run_part(suite: str, part: _Part, path: Path, labels: str | os.PathLike | None, request: RunRequest,
              options: RunOptions) -> Record:
    """One dataset of the suite: condition ``origin`` on it, its record written to ``path`` (the request's models,
    weights, preprocessing and resume/restart)."""
    if options.progress:
        print(f"{suite}: {part.label} ({part.path})")
    return run_condition_suite(replace(request, data=part.path, suite="table1", conditions=["origin"], output=path,
                                       labels=labels, classes=part.classes, restrict_to_classes=part.restrict,
                                       skip_missing=False), options)


def _write(record: Record, records: dict[str, Record], part_path: dict[str, Path], out_path: Path) -> None:
    """Move each dataset's prediction sidecar beside the record (``<record>.<dataset>.predictions.npz``), write the
    record naming them all, then drop the per-dataset records (their rows are in the record now)."""
    parts = {}
    for part, path in part_path.items():
        reference = records[part].predictions
        if not reference:  # a reused part record of schema 1: the record keeps no sidecar for it
            continue
        target = dataset_sidecar_path(out_path, part)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path.with_name(reference["file"]), target)
        parts[part] = {**reference, "file": target.name}
    if len(parts) == len(part_path):
        record.predictions = {"format": "ibnbench-predictions/datasets", "parts": parts}
    write_record(record, out_path)
    for path in part_path.values():
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)


def _combine(suite: DatasetSuite, parts: list[_Part], records: dict[str, Record], missing: dict[str, str]) -> Record:
    """One record from the single-dataset records: a condition (row) per dataset, ``baseline`` naming the row
    its gap is measured against, ``dataset.datasets`` every dataset's fingerprint."""
    first = records[VAL_ID]
    conditions, results, fingerprints = [], [], {}
    per_image: dict = {"files": {}, "top1": {}, "top5": {}}
    labels = {d.id: d.label for d in suite.datasets}
    for entry in [VAL_ID] + [d.id for d in suite.datasets]:
        if entry in missing:
            conditions.append({"id": entry, "label": labels[entry], "not_run": True, "missing": missing[entry]})
        for part in parts:
            if part.id not in (entry, f"{VAL_ID}@{entry}"):
                continue
            record = records[part.id]
            conditions.append({"id": part.id, "label": part.label, "kind": "dataset", "baseline": part.baseline,
                               "path": str(part.path)})
            results += [{**row, "condition": part.id} for row in record.results]
            fingerprints[part.id] = record.dataset
            per_image["files"][part.id] = record.per_image.get("files", [])
            for metric in ("top1", "top5"):
                for model, by_condition in record.per_image.get(metric, {}).items():
                    per_image[metric].setdefault(model, {})[part.id] = by_condition["origin"]
    timing = {"seconds": round(sum(r.timing.get("seconds", 0) for r in records.values()), 3),
              "images": sum(r.timing.get("images", 0) for r in records.values()),
              "datasets": len(records)}
    return Record(
        suite=suite.name, suite_hash=suite.hash, conditions=conditions,
        dataset={"layout": "datasets", "n_images": first.dataset.get("n_images"),
                 "subset": first.dataset.get("subset", True), "sha256": combined_sha256(fingerprints),
                 "datasets": fingerprints,
                 "n_skipped": sum(d.get("n_skipped", 0) for d in fingerprints.values()),
                 "skipped": [f"{k}: {f}" for k, d in fingerprints.items() for f in d.get("skipped", [])]},
        models=first.models, environment=first.environment, timing=timing, results=results, per_image=per_image,
        created=created_now())

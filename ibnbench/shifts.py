"""Dataset suites: natural distribution shifts (ImageNetV2, ImageNet-Sketch, -R, -A, Stylized-ImageNet) beside val.

A dataset suite is a TOML file, shipped in ``datasets/`` (``natural``) or given by path: an optional
``description`` and a ``[[datasets]]`` array. Each dataset has an ``id``, a display ``label``, a ``path``
(environment variables such as ``$IBNBENCH_DATA`` expanded; relative to the file), optionally ``env``, an
environment variable that, when set, is the path instead, and ``classes``: ``"folders"`` (scored on the classes of
its class folders, the protocol of the 200-class ImageNet-R and -A) or a class-list file; without it the dataset
is a 1000-way task.

:func:`run_datasets` runs the single-dataset path (:func:`ibnbench.engine.run`, condition ``origin``) on ImageNet
val and on each dataset, and writes one record: one row per dataset, its gap measured against val on the same
class subset (val restricted to the subset's images and masked alike, a row of its own: ``origin@<id>``), and
every dataset's fingerprint in ``dataset.datasets``. A dataset that is not there is reported as missing.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from . import data as data_mod
from .distributed import DistContext
from .predictions import sidecar_path
from .results import Record, RecordError, read_record, write_record
from .suites import ID_PATTERN, SuiteError, _read, shipped_suites

DATASET_FIELDS = ("id", "label", "path", "env", "classes")
VAL_ID = "origin"


@dataclass(frozen=True)
class ShiftDataset:
    """One dataset of a suite: where it lies and whether it is scored on its folders' classes."""

    id: str
    label: str
    path: str
    env: str | None = None
    classes: str | None = None
    """``"folders"``, the path of a class-list file, or None (all 1000 classes)."""
    base: Path = Path(".")

    def locate(self) -> Path | str:
        """The dataset's folder, or why it is missing (a one-line reason)."""
        if self.env and os.environ.get(self.env):
            path = Path(os.environ[self.env]).expanduser()
        else:
            expanded = os.path.expandvars(self.path)
            if "$" in expanded:
                unset = expanded[expanded.index("$"):].split("/")[0]
                return f"{unset} is not set" + (f" (or set ${self.env} to the folder)" if self.env else "")
            path = self.base / Path(expanded).expanduser()
        return path if path.is_dir() else f"no folder {path}" + (f" (or set ${self.env})" if self.env else "")

    def subset(self, dataset: data_mod.ValDataset) -> data_mod.ClassSubset | None:
        """The class subset this dataset is scored on (None: a 1000-way task)."""
        if self.classes is None:
            return None
        if self.classes == "folders":
            return data_mod.class_subset(dataset, from_folders=True)
        return data_mod.class_subset(dataset, classes=self.base / self.classes)


@dataclass(frozen=True)
class DatasetSuite:
    """An ordered list of shift datasets; ``hash`` covers their ids and class protocols (not their paths:
    the data's identity is in each record's fingerprints)."""

    name: str
    path: Path
    description: str
    datasets: tuple[ShiftDataset, ...]
    hash: str

    def select(self, ids: Sequence[str]) -> DatasetSuite:
        """The datasets named in ``ids`` (suite order); the hash stays the suite's."""
        known = [d.id for d in self.datasets]
        unknown = [i for i in ids if i not in known and i != VAL_ID]
        if unknown:
            raise SuiteError(f"dataset suite {self.name!r} has no dataset {unknown[0]!r}; available: {', '.join(known)}")
        return replace(self, datasets=tuple(d for d in self.datasets if d.id in ids))


def _locate_suite(name_or_path: str | os.PathLike) -> Path | None:
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" and path.is_file():
        return path if "datasets" in _read(path) else None
    return shipped_suites("datasets").get(str(name_or_path))


def is_dataset_suite(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names a dataset suite (shipped, or a TOML file with ``[[datasets]]``)."""
    return _locate_suite(name_or_path) is not None


def load_dataset_suite(name_or_path: str | os.PathLike) -> DatasetSuite:
    """Load a shipped dataset suite by name (``"natural"``) or a dataset-suite TOML file by path."""
    path = _locate_suite(name_or_path)
    if path is None:
        raise SuiteError(f"{name_or_path!r} is not a dataset suite; shipped: {', '.join(shipped_suites('datasets'))} "
                         "(or a .toml file with a [[datasets]] array)")
    raw = _read(path)
    unknown = [k for k in raw if k not in ("description", "datasets")]
    if unknown:
        raise SuiteError(f"{path}: field {unknown[0]!r} is not known (expected: description, datasets)")
    entries = raw["datasets"]
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: field 'datasets': expected a non-empty [[datasets]] array")
    datasets = []
    for i, entry in enumerate(entries):
        where = f"{path}: dataset #{i + 1}"
        if not isinstance(entry, dict):
            raise SuiteError(f"{where}: expected a [[datasets]] table, got {entry!r}")
        bad = [k for k in entry if k not in DATASET_FIELDS]
        if bad:
            raise SuiteError(f"{where}: field {bad[0]!r} is not known (expected: {', '.join(DATASET_FIELDS)})")
        if not isinstance(entry.get("id"), str) or not ID_PATTERN.match(entry["id"]) or entry["id"] == VAL_ID \
                or "@" in entry["id"]:
            raise SuiteError(f"{where}: field 'id': expected a name of letters, digits and _ . + * - other than "
                             f"{VAL_ID!r}, got {entry.get('id')!r}")
        if not isinstance(entry.get("path"), str):
            raise SuiteError(f"{where}: field 'path': expected a string, got {entry.get('path')!r}")
        for key in ("label", "env", "classes"):
            if key in entry and not isinstance(entry[key], str):
                raise SuiteError(f"{where}: field {key!r}: expected a string, got {entry[key]!r}")
        if entry["id"] in {d.id for d in datasets}:
            raise SuiteError(f"{where}: id {entry['id']!r} is used twice")
        datasets.append(ShiftDataset(entry["id"], entry.get("label", entry["id"]), entry["path"], entry.get("env"),
                                     entry.get("classes"), path.parent))
    spec = [{"id": d.id, "classes": _classes_spec(d)} for d in datasets]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    description = raw.get("description", "")
    return DatasetSuite(path.stem, path, description if isinstance(description, str) else "", tuple(datasets), digest)


def _classes_spec(dataset: ShiftDataset) -> str | list[int] | None:
    if dataset.classes in (None, "folders"):
        return dataset.classes
    return list(data_mod.read_class_list(dataset.base / dataset.classes))


@dataclass(frozen=True)
class _Part:
    """One single-dataset run of a dataset suite: a row of the combined record."""

    id: str
    label: str
    path: Path
    classes: data_mod.ClassSubset | None
    restrict: bool
    baseline: str | None


def _plan(suite: DatasetSuite, val: Path, limit: int | None,
          labels: str | os.PathLike | None) -> tuple[list[_Part], dict[str, str]]:
    """The single-dataset runs (val first; per subset dataset the restricted val before it) and the missing
    datasets with why; every present dataset is opened (and its classes checked) before any work."""
    data_mod.open_dataset(val, labels=labels, limit=limit)
    parts = [_Part(VAL_ID, "ImageNet val", val, None, False, None)]
    missing = {}
    for entry in suite.datasets:
        where = entry.locate()
        if isinstance(where, str):
            missing[entry.id] = where
            continue
        subset = entry.subset(data_mod.open_dataset(where, limit=limit))
        if subset is None:
            parts.append(_Part(entry.id, entry.label, where, None, False, VAL_ID))
            continue
        base = f"{VAL_ID}@{entry.id}"
        parts.append(_Part(base, f"ImageNet val, {entry.label} classes ({len(subset.indices)})", val, subset, True, None))
        parts.append(_Part(entry.id, entry.label, where, subset, False, base))
    return parts, missing


def _reusable(path: Path, dataset_sha: str, classes: dict | None, weights: list[str], dtype_key: tuple) -> Record | None:
    """The finished part record at ``path`` if it was made on the same data, subset, weights and precision."""
    try:
        part = read_record(path)
    except RecordError:
        return None
    same = (part.dataset.get("sha256") == dataset_sha and part.dataset.get("classes") == classes
            and [m.get("weights") for m in part.models.values()] == weights
            and (part.environment.get("dtype"), part.environment.get("refine")) == dtype_key)
    return part if same else None


def combined_sha256(datasets: dict[str, dict]) -> str:
    """One fingerprint over every dataset's fingerprint and class subset: equal only when all of them are."""
    items = sorted((k, v.get("sha256"), json.dumps(v.get("classes"), sort_keys=True)) for k, v in datasets.items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def run_datasets(model: Sequence[str], data: str | os.PathLike, suite: str = "natural",
                 datasets: Sequence[str] | None = None, weights: Sequence[str] | None = None,
                 output: str | os.PathLike | None = None, results_dir: str | os.PathLike = "results",
                 labels: str | os.PathLike | None = None, resume: bool = False, restart: bool = False,
                 skip_missing: bool = False, preprocessing: Sequence[str] | None = None, **options) -> Record:
    """``ibnbench run --suite natural`` as a function: every model on ImageNet val (``data``) and on every dataset
    of the suite (or those in ``datasets``), one record with a row per dataset and its gap to val.

    Missing datasets stop the run before any work, unless ``skip_missing`` (then they are rows marked
    missing). Each finished dataset is kept beside the output (``.<name>.<id>.json``) until the record is
    written, so ``resume`` continues with the next one (and the interrupted one from its checkpoint);
    ``restart`` runs every dataset again. ``preprocessing`` as for :func:`ibnbench.engine.run`.
    """
    from .engine import RunOptions, run
    from .models import model_info

    chosen = load_dataset_suite(suite)
    if datasets:
        chosen = chosen.select(list(datasets))
    names = list(model)
    if not names:
        raise ValueError("give at least one --model")
    for name in names:
        model_info(name)
    opts = RunOptions(**options)
    parts, missing = _plan(chosen, Path(data), opts.limit, labels)
    if missing and not skip_missing:
        details = "; ".join(f"{k}: {why}" for k, why in missing.items())
        raise ValueError(f"missing dataset(s) {details} (or pass --skip-missing)")

    out_path = Path(output) if output else None
    stem = out_path or Path(results_dir) / f"{chosen.name}-{'+'.join(names)}.json"
    part_path = {p.id: stem.with_name(f".{stem.name}.{p.id}.json") for p in parts}
    dtype_key = (str(opts.amp_dtype(opts.resolved_device()) or "torch.float32").removeprefix("torch."),
                 opts.refine if opts.amp_dtype(opts.resolved_device()) else None)
    records: dict[str, Record] = {}
    for part in parts:
        dataset = data_mod.open_dataset(part.path, labels=labels if part.path == Path(data) else None,
                                        limit=opts.limit)
        dataset = data_mod.restrict(dataset, part.classes.indices) if part.restrict else dataset
        found = part_path[part.id]
        reuse = None
        if resume and found.is_file():
            reuse = _reusable(found, dataset.fingerprint()["sha256"],
                              part.classes.as_dict() if part.classes else None, _specs(weights, names), dtype_key)
        if reuse is None:
            if opts.progress:
                print(f"{chosen.name}: {part.label} ({part.path})")
            reuse = run(names, part.path, suite="table1", conditions=["origin"], weights=weights, output=found,
                        labels=labels if part.path == Path(data) else None, resume=resume, restart=restart,
                        preprocessing=preprocessing, classes=part.classes, restrict_to_classes=part.restrict,
                        **options)
        records[part.id] = reuse

    record = _combine(chosen, parts, records, missing)
    dist = DistContext.detect()
    if dist.is_main:
        if out_path is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out_path = Path(results_dir) / f"{chosen.name}-{'+'.join(names)}-{stamp}.json"
        write_record(record, out_path)
        for path in part_path.values():  # the parts' rows are in the record now; their prediction sidecars go too
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
    dist.barrier()
    return record


def _specs(weights: Sequence[str] | None, names: Sequence[str]) -> list[str]:
    from .engine import weights_per_model

    return weights_per_model(weights, names, "official")


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
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))

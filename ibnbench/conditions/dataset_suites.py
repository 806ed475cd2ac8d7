"""Dataset suites: natural distribution shifts (ImageNetV2, ImageNet-Sketch, -R, -A, Stylized-ImageNet) beside val.

A dataset suite is a TOML file, shipped in ``datasets/`` (``natural``) or given by path: an optional
``description`` and a ``[[datasets]]`` array. Each dataset has an ``id``, a display ``label``, a ``path``
(environment variables such as ``$IBNBENCH_DATA`` expanded; relative to the file), optionally ``env``, an
environment variable that, when set, is the path instead, and ``classes``: ``"folders"`` (scored on the classes of
its class folders, the protocol of the 200-class ImageNet-R and -A) or a class-list file; without it the dataset
is a 1000-way task.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ibnbench.conditions.suite import ID_PATTERN, _read, shipped_suites
from ibnbench.data.classes import ClassSubset, read_class_list
from ibnbench.data.discovery import ValDataset, class_subset
from ibnbench.errors import SuiteError

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

    def subset(self, dataset: ValDataset) -> ClassSubset | None:
        """The class subset this dataset is scored on (None: a 1000-way task)."""
        if self.classes is None:
            return None
        if self.classes == "folders":
            return class_subset(dataset, from_folders=True)
        return class_subset(dataset, classes=self.base / self.classes)


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
            raise SuiteError(f"dataset suite {self.name!r} has no dataset {unknown[0]!r}; "
                             f"available: {', '.join(known)}")
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
    return list(read_class_list(dataset.base / dataset.classes))

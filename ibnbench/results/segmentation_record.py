"""Segmentation records: a self-describing JSON document per run (``"task": "segmentation"``) with a row per
(model, condition, dataset) holding its confusion matrix, mIoU (with its image-bootstrap interval), pixel accuracy
and per-class IoU; each image's sufficient statistics go to a sidecar ``<record>.statistics.npz`` (sha256 in the
record) for paired comparisons of models on the same images."""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ibnbench.data.label_maps import TRAIN_CLASSES
from ibnbench.errors import FileWriteError, RecordError, RecordWriteError
from ibnbench.io import write_atomic, write_json_atomic

TASK = "segmentation"
SCHEMA_VERSION = 1
REQUIRED = ("task", "suite", "suite_hash", "datasets", "models", "inference", "results")
ROW_FIELDS = ("model", "condition", "dataset", "n_images", "miou", "pixel_accuracy", "iou", "confusion")
STATISTICS_SUFFIX = ".statistics.npz"


@dataclass
class SegmentationRecord:
    """One segmentation run: suite, datasets (fingerprints), models, how predictions were made (``inference``), and
    per (model, condition, dataset) scores in percent. ``statistics`` references the per-image sidecar."""

    suite: str
    suite_hash: str
    conditions: list[dict]
    datasets: dict[str, dict]
    models: dict[str, dict]
    inference: dict
    environment: dict
    timing: dict
    results: list[dict]
    files: dict[str, list[str]] = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    generator: dict = field(default_factory=dict)
    """Per benchmark of its conditions (Cityscapes-C's ImageNet-C corruptions), what made the images
    (:mod:`ibnbench.conditions.benchmark_generator`); empty for other suites."""
    classes: list[str] = field(default_factory=lambda: list(TRAIN_CLASSES))
    created: str = ""
    task: str = TASK
    schema: int = SCHEMA_VERSION
    path: str | None = field(default=None, compare=False)

    def result(self, model: str, condition: str, dataset: str) -> dict:
        for row in self.results:
            if (row["model"], row["condition"], row["dataset"]) == (model, condition, dataset):
                return row
        raise KeyError(f"no result for {model} / {condition} / {dataset} in {self.path or 'record'}")

    def confusion(self, model: str, condition: str, dataset: str) -> np.ndarray:
        """The pair's confusion matrix ``[C, C]`` (rows ground truth, columns prediction)."""
        return np.asarray(self.result(model, condition, dataset)["confusion"], dtype=np.int64)

    def image_statistics(self, model: str, condition: str, dataset: str) -> np.ndarray:
        """Per-image statistics ``[n, 3, C]`` of the pair's readable images, from the sidecar (sha256-checked)."""
        if self.path is None or not self.statistics:
            raise RecordError(f"{self.path or 'record'}: no per-image statistics sidecar")
        arrays = read_statistics(Path(self.path).with_name(self.statistics["file"]), self.statistics.get("sha256"))
        key = f"{model}|{condition}|{dataset}"
        if key not in arrays:
            raise RecordError(f"{self.statistics['file']}: no statistics for {model} / {condition} / {dataset}")
        return arrays[key]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_dict(cls, data: dict, path: str | None = None) -> SegmentationRecord:
        where = path or "record"
        if not isinstance(data, dict) or data.get("task") != TASK:
            raise RecordError(f"{where}: not a segmentation record (no \"task\": \"segmentation\")")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise RecordError(f"{where}: not a segmentation record (missing {', '.join(missing)})")
        if data.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise RecordError(f"{where}: record schema {data['schema']} is newer than this ibnbench understands")
        for i, row in enumerate(data["results"]):
            lacking = [k for k in ROW_FIELDS if not isinstance(row, dict) or k not in row]
            if lacking:
                raise RecordError(f"{where}: results[{i}] lacks {', '.join(lacking)}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "path"}
        return cls(**known, path=path)


def is_segmentation_record(data: object) -> bool:
    return isinstance(data, dict) and data.get("task") == TASK


def statistics_path(record_path: str | os.PathLike) -> Path:
    path = Path(record_path)
    return path.with_name(path.stem + STATISTICS_SUFFIX)


def write_segmentation_record(record: SegmentationRecord, statistics: dict[str, np.ndarray],
                              path: str | os.PathLike) -> Path:
    """Write the statistics sidecar, then the record naming it (both atomically); a failure raises
    :class:`RecordWriteError` holding the record."""
    path = Path(path)
    sidecar = statistics_path(path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **statistics)
    content = buffer.getvalue()
    try:
        write_atomic(sidecar, content, what="statistics")
        record.statistics = {"file": sidecar.name, "sha256": hashlib.sha256(content).hexdigest(),
                             "bytes": len(content)}
        out = write_json_atomic(path, record.to_dict(), what="record")
    except FileWriteError as exc:
        raise RecordWriteError(str(exc), record) from None
    record.path = str(out)
    return out


def read_statistics(path: Path, sha256: str | None) -> dict[str, np.ndarray]:
    """The sidecar's arrays by ``model|condition|dataset``; missing or altered files raise :class:`RecordError`."""
    if not path.is_file():
        raise RecordError(f"{path}: per-image statistics are missing (keep the .statistics.npz beside its record)")
    content = path.read_bytes()
    if sha256 is not None and hashlib.sha256(content).hexdigest() != sha256:
        raise RecordError(f"{path}: per-image statistics do not match their record (sha256 differs)")
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: corrupt statistics file ({exc})") from None


def read_segmentation_record(path: str | os.PathLike) -> SegmentationRecord:
    """Read and check a segmentation record; a corrupt or foreign file raises :class:`RecordError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: cannot read a record ({exc})") from None
    return SegmentationRecord.from_dict(data, path=str(path))

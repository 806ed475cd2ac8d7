"""Stored predictions: the sidecar beside a record holding, per (model, condition) and image, the top-5 class
indices, their softmax probabilities and the label's probability (22 bytes per image and pair, plus the label
and a validity flag per image). Metrics computed later (ECE, agreement, class subsets) read it instead of
rerunning models. The record names the file and its sha256; a file that does not match is refused.

The file is a numpy ``.npz`` (format ``ibnbench-predictions/1``): ``format``, ``models`` [M] and ``conditions`` [C]
(str), ``label`` [N] and ``valid`` [N], ``top5_index`` [M, C, N, 5] uint16, ``top5_prob`` [M, C, N, 5] float16 and
``label_prob`` [M, C, N] float16 (N: the dataset's images in record order). A record with sequence conditions
(ImageNet-P's perturbations, whose ``top5_index`` is frame 0's) adds, and a reader without them ignores
(:class:`SequencePredictions`):

- ``sequence_conditions`` [P] str: the sequence conditions' ids (a subset of ``conditions``), and
  ``sequence_perturbations`` [P] str: each one's ImageNet-P perturbation (what decides how frames are compared);
- ``sequence_frames`` [P] int32: frames per image of each (31; translate 41);
- ``sequence_top5`` [M, P, N, F, 5] uint16, F the most frames of any: each frame's top-5 classes, best first; zeros
  past a condition's frames and for images not evaluated (``valid`` false);
- ``sequence_flips`` [M, P, N] int16: per image, the compared frame pairs whose top-1 class differs
  (:func:`~ibnbench.results.perturbation_metrics.flip_counts` at the difficulty);
- ``sequence_difficulty`` (a 0-d int): the run's ``--difficulty``, 1-3.

Another producer (e.g. a reader of the released ImageNet-P videos) writes the same arrays.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

from ibnbench.errors import RecordError
from ibnbench.io import sha256_of, staged

if TYPE_CHECKING:
    from ibnbench.results.record import Record

FORMAT = "ibnbench-predictions/1"
SUFFIX = ".predictions.npz"
_CACHE_ATTRIBUTE = "_loaded_predictions"  # on the Record: (folder and reference, what was read)


@dataclass
class Predictions:
    """Arrays over ``models`` x ``conditions`` x images (dataset order); ``valid`` marks decoded images."""

    models: list[str]
    conditions: list[str]
    label: np.ndarray  # [N] uint16 (uint32 for heads over 65,536 classes)
    valid: np.ndarray  # [N] bool
    top5_index: np.ndarray  # [M, C, N, 5] uint16 (as label)
    top5_prob: np.ndarray  # [M, C, N, 5] float16
    label_prob: np.ndarray  # [M, C, N] float16
    sequences: SequencePredictions | None = None  # the frames of sequence conditions (ImageNet-P)

    def _pair(self, model: str, condition: str) -> tuple[int, int]:
        try:
            return self.models.index(model), self.conditions.index(condition)
        except ValueError:
            raise KeyError(f"no stored predictions for model {model!r} under condition {condition!r}") from None

    def confidence(self, model: str, condition: str) -> np.ndarray:
        """Top-1 softmax probability of each valid image."""
        m, c = self._pair(model, condition)
        return self.top5_prob[m, c, self.valid, 0].astype(np.float64)

    def correct(self, model: str, condition: str, k: int = 1) -> np.ndarray:
        """Whether the label is among the top ``k`` (1..5) classes, for each valid image."""
        m, c = self._pair(model, condition)
        return (self.top5_index[m, c, self.valid, :k] == self.label[self.valid, None]).any(axis=1)

    def sequence(self, model: str, condition: str) -> np.ndarray:
        """Each valid image's frames' top-5 classes ``[images, frames, 5]`` under sequence condition
        ``condition``."""
        if self.sequences is None or condition not in self.sequences.conditions:
            raise KeyError(f"no stored frames for condition {condition!r} (not a sequence condition)")
        m, c = self.models.index(model), self.sequences.conditions.index(condition)
        return self.sequences.top5[m, c, self.valid, :self.sequences.frames[c]]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"format": np.array(FORMAT), "models": np.array(self.models), "conditions": np.array(self.conditions),
                "label": self.label, "valid": self.valid, "top5_index": self.top5_index,
                "top5_prob": self.top5_prob, "label_prob": self.label_prob,
                **(self.sequences.arrays() if self.sequences is not None else {})}


@dataclass
class SequencePredictions:
    """The frames of a record's sequence conditions (the arrays ``sequence_*`` of the module docstring)."""

    conditions: list[str]
    perturbations: list[str]
    frames: np.ndarray  # [P] int32
    top5: np.ndarray  # [M, P, N, F, 5] uint16
    flips: np.ndarray  # [M, P, N] int16
    difficulty: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {"sequence_conditions": np.array(self.conditions),
                "sequence_perturbations": np.array(self.perturbations),
                "sequence_frames": self.frames, "sequence_top5": self.top5, "sequence_flips": self.flips,
                "sequence_difficulty": np.array(self.difficulty)}

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> SequencePredictions | None:
        """The sequences of a loaded sidecar; None for one without (every sidecar written before them)."""
        if "sequence_conditions" not in data:
            return None
        return cls([str(c) for c in data["sequence_conditions"]], [str(p) for p in data["sequence_perturbations"]],
                   data["sequence_frames"], data["sequence_top5"], data["sequence_flips"],
                   int(data["sequence_difficulty"]))


def sidecar_path(record_path: str | os.PathLike) -> Path:
    """``results/run.json`` -> ``results/run.predictions.npz``."""
    path = Path(record_path)
    return path.with_name(path.stem + SUFFIX)


@contextlib.contextmanager
def staged_predictions(predictions: Predictions, path: str | os.PathLike) -> Iterator[dict]:
    """Write the sidecar (compressed ``.npz``) to a temporary file beside ``path`` and yield the record's
    reference to it; it replaces ``path`` when the block completes and is deleted when the block fails, so a
    record that cannot be written leaves the previous record and its sidecar as they were."""
    with staged(path) as f:
        np.savez_compressed(f, **predictions.arrays())
        f.flush()
        yield {"file": Path(path).name, "sha256": sha256_of(f.name), "bytes": os.fstat(f.fileno()).st_size,
               "format": FORMAT}


def write_predictions(predictions: Predictions, path: str | os.PathLike) -> dict:
    """Atomically write the sidecar; returns the record's reference to it."""
    with staged_predictions(predictions, path) as reference:
        return reference


def read_predictions(path: str | os.PathLike, sha256: str | None = None) -> Predictions:
    """Read a sidecar, checking its sha256 when given; a missing, altered or foreign file raises RecordError."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: stored predictions are missing (keep the .predictions.npz beside its record)")
    content = path.read_bytes()  # read once: hashed, then parsed
    if sha256 is not None and hashlib.sha256(content).hexdigest() != sha256:
        raise RecordError(f"{path}: stored predictions do not match their record (sha256 differs)")
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise RecordError(f"{path}: not an ibnbench predictions file ({data['format']})")
            return Predictions(models=[str(m) for m in data["models"]],
                               conditions=[str(c) for c in data["conditions"]], label=data["label"],
                               valid=data["valid"], top5_index=data["top5_index"], top5_prob=data["top5_prob"],
                               label_prob=data["label_prob"], sequences=SequencePredictions.from_arrays(data))
    except (OSError, ValueError, KeyError) as exc:
        raise RecordError(f"{path}: corrupt predictions file ({exc})") from None


@dataclass
class DatasetPredictions:
    """The predictions of a dataset-suite record: one sidecar per dataset (its images differ from the others'),
    each holding that dataset's ``origin`` condition; a condition of the record is a dataset."""

    parts: dict[str, Predictions]

    @property
    def models(self) -> list[str]:
        return next(iter(self.parts.values())).models if self.parts else []

    @property
    def conditions(self) -> list[str]:
        return list(self.parts)

    def _part(self, condition: str) -> Predictions:
        if condition not in self.parts:
            raise KeyError(f"no stored predictions for dataset {condition!r}")
        return self.parts[condition]

    def confidence(self, model: str, condition: str) -> np.ndarray:
        """Top-1 softmax probability of each valid image of dataset ``condition``."""
        return self._part(condition).confidence(model, "origin")

    def correct(self, model: str, condition: str, k: int = 1) -> np.ndarray:
        """Whether the label is among the top ``k`` classes, for each valid image of dataset ``condition``."""
        return self._part(condition).correct(model, "origin", k)


def for_record(record: Record) -> Predictions | DatasetPredictions:
    """The predictions stored beside ``record`` (one sidecar, or one per dataset for a dataset suite's record); a
    record without them (schema 1) raises RecordError."""
    where = record.path or "record"
    if not record.predictions:
        raise RecordError(f"{where}: holds no stored predictions (schema {record.schema} record): rerun "
                          "`ibnbench run` with this version to get confidences")
    folder = Path(record.path).parent if record.path else Path(".")
    key = (folder.resolve(), repr(record.predictions))
    cached = record.__dict__.get(_CACHE_ATTRIBUTE)
    if cached is not None and cached[0] == key:  # one report reads and verifies each sidecar once
        return cached[1]
    if "parts" in record.predictions:
        loaded = DatasetPredictions({part: read_predictions(folder / ref["file"], ref.get("sha256"))
                                     for part, ref in record.predictions["parts"].items()})
    else:
        loaded = read_predictions(folder / record.predictions["file"], record.predictions.get("sha256"))
    record.__dict__[_CACHE_ATTRIBUTE] = (key, loaded)
    return loaded


def dataset_sidecar_path(record_path: str | os.PathLike, dataset: str) -> Path:
    """``results/run.json`` and dataset ``sketch`` -> ``results/run.sketch.predictions.npz``."""
    path = Path(record_path)
    return path.with_name(f"{path.stem}.{dataset}{SUFFIX}")

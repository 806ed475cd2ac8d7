"""Result records: a self-describing JSON document per run, written atomically, read with validation."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ibnbench.errors import FileWriteError, RecordError
from ibnbench.io import write_json_atomic

SCHEMA_VERSION = 2
"""1: errors and per-image correctness; 2: adds ``predictions`` (the sidecar with top-5 indices and
probabilities, see :mod:`ibnbench.results.predictions`) and a per-result ``ece``. Version 1 records still read."""
REQUIRED = ("suite", "suite_hash", "dataset", "models", "environment", "timing", "results")
FIELD_TYPES = {"suite": str, "suite_hash": str, "conditions": list, "dataset": dict, "models": dict,
               "environment": dict, "timing": dict, "results": list, "per_image": dict, "predictions": dict,
               "generator": dict, "created": str, "schema": int}
MAX_IMAGES = 2 ** 53  # the largest count a JSON number holds exactly
JSON_NAMES = {str: "a string", int: "an integer", list: "an array", dict: "an object"}




@dataclass
class Record:
    """One run: what was evaluated (suite, dataset, models) and what came out (percent errors)."""

    suite: str
    suite_hash: str
    conditions: list[dict]
    dataset: dict
    models: dict[str, dict]
    environment: dict
    timing: dict
    results: list[dict]
    per_image: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    generator: dict = field(default_factory=dict)
    """Per benchmark of its conditions, what made the images (:mod:`ibnbench.conditions.benchmark_generator`);
    empty for other suites and for records written before the field (their generator is unknown)."""
    created: str = ""
    schema: int = SCHEMA_VERSION
    path: str | None = field(default=None, compare=False)

    # -- lookups ---------------------------------------------------------------------------------
    def result(self, model: str, condition: str) -> dict:
        for row in self.results:
            if row["model"] == model and row["condition"] == condition:
                return row
        raise KeyError(f"no result for model {model!r} under condition {condition!r} in {self.path or 'record'}")

    def top1_err(self, condition: str, model: str | None = None) -> float:
        return self.result(self._model(model), condition)["top1_err"]

    def top5_err(self, condition: str, model: str | None = None) -> float:
        return self.result(self._model(model), condition)["top5_err"]

    def drop(self, condition: str, model: str | None = None, metric: str = "top1_err",
             baseline: str | None = None) -> float:
        """Error increase of ``condition`` over ``baseline`` (percentage points; default: the condition's own
        baseline, ``origin`` unless the record names another, as dataset suites do for class subsets)."""
        model = self._model(model)
        baseline = baseline or self.baselines().get(condition) or "origin"
        return self.result(model, condition)[metric] - self.result(model, baseline)[metric]

    def baselines(self) -> dict[str, str | None]:
        """The row each condition's drop is measured against: ``origin``, or what the condition names
        (``baseline``; None: no drop, e.g. val restricted to a shift set's classes)."""
        return {c["id"]: c.get("baseline", "origin") for c in self.conditions}

    def answers(self, model: str, condition: str, metric: str = "top1") -> np.ndarray | None:
        """Per-image correctness in dataset order (1 right, 0 wrong, -1 not evaluated), from ``per_image``;
        None when the record holds no per-image answers for the pair."""
        text = self.per_image.get(metric, {}).get(model, {}).get(condition)
        if text is None:
            return None
        codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        return np.where(codes == ord("1"), 1, np.where(codes == ord("0"), 0, -1)).astype(np.int8)

    def _model(self, model: str | None) -> str:
        if model is not None:
            return model
        if len(self.models) != 1:
            raise RecordError(f"record has models {sorted(self.models)}: name one")
        return next(iter(self.models))

    def image_names(self) -> tuple:
        """The images by name and label: the per-image file list (or the count where none is kept) and the labels'
        digest."""
        files = self.per_image.get("files")
        return (files if files is not None else self.dataset.get("n_images")), self.dataset.get("labels_sha256")

    def _dataset_difference(self, other: Record) -> str:
        """Why the datasets differ: the dataset parts, or the image lists (``--subset``) that differ."""
        ours, theirs = self.dataset.get("datasets", {}), other.dataset.get("datasets", {})
        differ = sorted(k for k in set(ours) | set(theirs) if (ours.get(k) or {}).get("sha256") !=
                        (theirs.get(k) or {}).get("sha256") or (ours.get(k) or {}).get("classes") !=
                        (theirs.get(k) or {}).get("classes"))
        where = f" in {', '.join(differ)}" if differ else ""
        lists = self.dataset.get("image_list"), other.dataset.get("image_list")
        if lists[0] != lists[1]:
            where += " (--subset image lists differ (" + " vs ".join(
                f"{x.get('file')}: {x.get('n')} images, sha256 {str(x.get('sha256'))[:12]}" if x else "no list"
                for x in lists) + "))"
        return (f"datasets differ{where} (fingerprint {str(self.dataset.get('sha256'))[:12]} vs "
                f"{str(other.dataset.get('sha256'))[:12]})")

    def problems(self) -> list[str]:
        """Why the results cannot be valid numbers (NaN, infinite or out-of-range errors, no image scored); empty
        if they are."""
        return [f"{row['model']} / {row['condition']}: {problem}" for row in self.results
                if (problem := row_problem(row)) is not None]

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, condition) with errors, drops against ``origin`` (or the condition's ``baseline``) and
        run metadata."""
        frame = pd.DataFrame(self.results)
        if frame.empty:
            return frame
        baselines = self.baselines()
        base_of = [baselines.get(c, "origin") for c in frame.condition]
        for metric in ("top1_err", "top5_err"):
            values = dict(zip(zip(frame.model, frame.condition), frame[metric]))
            base = [values.get((m, b), float("nan")) for m, b in zip(frame.model, base_of)]
            frame[f"drop_{metric.split('_')[0]}"] = frame[metric] - pd.Series(base, index=frame.index, dtype=float)
        frame["suite"] = self.suite
        frame["suite_hash"] = self.suite_hash
        frame["dataset"] = self.dataset.get("sha256", "")
        frame["subset"] = self.dataset.get("subset", True)
        frame["n_dataset"] = self.dataset.get("n_images")
        frame["created"] = self.created
        frame["weights_sha256"] = frame.model.map(lambda m: (self.models.get(m, {}).get("sha256") or "random")[:12])
        return frame

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_dict(cls, data: dict, path: str | None = None) -> Record:
        where = path or "record"
        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a result record (expected a JSON object)")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise RecordError(f"{where}: not a result record (missing {', '.join(missing)})")
        wrong = [f"{k} (expected {JSON_NAMES[kind]})" for k, kind in FIELD_TYPES.items()
                 if k in data and not isinstance(data[k], kind)]
        if wrong:
            raise RecordError(f"{where}: not a result record (wrong type: {', '.join(wrong)})")
        if data.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise RecordError(f"{where}: record schema {data['schema']} is newer than this ibnbench understands")
        _check_results(where, data["results"])
        for i, condition in enumerate(data.get("conditions", [])):
            if not isinstance(condition, dict) or not isinstance(condition.get("id"), str):
                raise RecordError(f"{where}: conditions[{i}] is not an object with an 'id'")
        if not all(isinstance(m, dict) for m in data["models"].values()):
            raise RecordError(f"{where}: models must map each model name to an object")
        unknown = next((row["model"] for row in data["results"] if row["model"] not in data["models"]), None)
        if unknown is not None:
            raise RecordError(f"{where}: results name model {unknown!r}, which models does not describe")
        _check_per_image(where, data.get("per_image", {}))
        _check_predictions(where, data.get("predictions", {}))
        if not all(isinstance(v, dict) for v in data.get("generator", {}).values()):
            raise RecordError(f"{where}: generator must map each benchmark to an object describing it")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "path"}
        known.setdefault("conditions", [{"id": c,
                                         "label": c} for c in dict.fromkeys(r["condition"] for r in data["results"])])
        return cls(**known, path=path)

    def comparable_with(self, other: Record, by_name: bool = False) -> list[str]:
        """Reasons why numbers of ``self`` and ``other`` must not be compared (empty: comparable). ``by_name``: the
        suites need only share their name and the data only its images' names and labels (for records whose
        images were made otherwise on purpose, e.g. on the fly vs the released files)."""
        reasons = []
        if by_name and self.suite != other.suite:
            reasons.append(f"suites differ ({self.suite} vs {other.suite})")
        elif not by_name and self.suite_hash != other.suite_hash:
            reasons.append(f"suite definitions differ ({self.suite}@{self.suite_hash[:12]} vs "
                           f"{other.suite}@{other.suite_hash[:12]})")
        if by_name and self.image_names() != other.image_names():
            reasons.append("the records' images differ (by name and label)")
        elif not by_name and self.dataset.get("sha256") != other.dataset.get("sha256"):
            reasons.append(self._dataset_difference(other))
        if self.dataset.get("classes") != other.dataset.get("classes"):
            reasons.append("class subsets differ (" + " vs ".join(
                f"{c['n']} classes {c['mask']}" if c else "all 1000 classes"
                for c in (self.dataset.get("classes"), other.dataset.get("classes"))) + ")")
        for model in set(self.models) & set(other.models):
            if self.models[model].get("preprocessing") != other.models[model].get("preprocessing"):
                reasons.append(f"preprocessing of {model} differs")
        return reasons


def row_problem(row: dict) -> str | None:
    """Why a result row's numbers are invalid (no image scored; an error that is NaN, infinite or outside 0..100
    percent), or None when they are valid."""
    if not row["n_images"]:
        return "no valid image was scored"
    if not all(0 <= row[k] <= 100 for k in ("top1_err", "top5_err")):  # False for NaN too
        return f"error is {row['top1_err']}/{row['top5_err']}"
    return None


def _check_results(where: str, rows: list) -> None:
    """Each ``results`` row: an object with names for model and condition, numbers for the errors and a count of
    images."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RecordError(f"{where}: results[{i}] is not an object")
        bad = [k for k in ("model", "condition", "top1_err", "top5_err", "n_images") if k not in row]
        if bad:
            raise RecordError(f"{where}: results[{i}] lacks {', '.join(bad)}")
        bad = [k for k in ("model", "condition") if not isinstance(row[k], str)]
        bad += [k for k in ("top1_err", "top5_err") if not isinstance(row[k], (int, float)) or isinstance(row[k], bool)]
        bad += [] if isinstance(row["n_images"], int) and not isinstance(row["n_images"], bool) else ["n_images"]
        if bad:
            raise RecordError(f"{where}: results[{i}] has a wrong type in {', '.join(bad)} "
                              "(model and condition are names, errors numbers, n_images an integer)")
        if not 0 <= row["n_images"] <= MAX_IMAGES:
            raise RecordError(f"{where}: results[{i}] has n_images {row['n_images']} (a count, 0 to {MAX_IMAGES})")
    pairs = [(row["model"], row["condition"]) for row in rows]
    if not pairs:
        raise RecordError(f"{where}: holds no results")
    twice = next((pair for i, pair in enumerate(pairs) if pair in pairs[:i]), None)
    if twice:
        raise RecordError(f"{where}: results hold {twice[0]} / {twice[1]} twice")


def _check_per_image(where: str, per_image: dict) -> None:
    """``per_image``: per metric, model and condition a string of '1' (right), '0' (wrong) and '-' (not scored),
    one character per image of ``files`` (a list, or per dataset for a dataset suite's record)."""
    files = per_image.get("files")
    if files is not None and not isinstance(files, (list, dict)):
        raise RecordError(f"{where}: per_image.files must be an array (or an object of arrays)")
    for metric in ("top1", "top5"):
        by_model = per_image.get(metric, {})
        if not isinstance(by_model, dict) or not all(isinstance(v, dict) for v in by_model.values()):
            raise RecordError(f"{where}: per_image.{metric} must map each model to an object of conditions")
        for model, by_condition in by_model.items():
            for condition, text in by_condition.items():
                expected = files.get(condition) if isinstance(files, dict) else files
                if not isinstance(text, str) or set(text) - set("01-") or (
                        isinstance(expected, list) and len(text) != len(expected)):
                    size = f" of {len(expected)} characters" if isinstance(expected, list) else ""
                    raise RecordError(f"{where}: per_image.{metric} of {model} / {condition} must be a string{size} "
                                      "of 1 (right), 0 (wrong) and - (not scored), one per image")


def _check_predictions(where: str, predictions: dict) -> None:
    """``predictions``: a reference to a sidecar file beside the record, or ``parts`` of such references."""
    refs = predictions.get("parts", {"": predictions} if predictions else {})
    if not isinstance(refs, dict) or not all(isinstance(ref, dict) for ref in refs.values()):
        raise RecordError(f"{where}: predictions.parts must map each dataset to a file reference")
    for ref in refs.values():
        if not isinstance(ref.get("file"), str) or not isinstance(ref.get("sha256", ""), str):
            raise RecordError(f"{where}: predictions must name a sidecar 'file' (and its 'sha256' as a string)")
        file_name(ref["file"], "predictions file", where)


def file_name(name: str, what: str, where: str) -> str:
    """``name`` (a record's suite, predictions file, ...) if it can be used as one file name inside a folder;
    an empty name, ``.``, ``..`` or one holding a path separator (``../victim``, ``/etc/x``) raises
    :class:`RecordError` naming ``what`` and the record ``where`` it comes from."""
    if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise RecordError(f"{where}: {what} {name!r} cannot be a file name (no path separators, '..' or empty)")
    return name


def condition_labels(records: Sequence[Record]) -> dict[str, str]:
    """Every condition id of ``records`` in the order the records list them (the suite's), with its display label:
    the one order and naming of conditions every report, board and plot uses."""
    labels: dict[str, str] = {}
    for record in records:
        for condition in record.conditions:
            labels.setdefault(condition["id"], condition.get("label", condition["id"]))
    return labels


def write_record(record: Record, path: str | os.PathLike) -> Path:
    """Atomically write ``record`` as JSON to ``path``; a record holding invalid numbers is refused."""
    problems = record.problems()
    if problems:
        raise RecordError(f"refusing to write record {path}: {'; '.join(problems)}")
    try:
        out = write_json_atomic(path, record.to_dict(), what="record")
    except FileWriteError as exc:
        raise RecordError(str(exc)) from None
    record.path = str(out)
    return out


def read_record(path: str | os.PathLike) -> Record:
    """Read and validate a record; a corrupt or foreign file raises :class:`RecordError`."""
    return Record.from_dict(read_json(path), path=str(path))


def read_json(path: str | os.PathLike) -> object:
    """A record file's JSON document; an unreadable or corrupt file raises :class:`RecordError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path}: corrupt record (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: corrupt record (invalid JSON at line {exc.lineno}: {exc.msg})") from None
    return data


def find_records(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories into their ``*.json`` records (recursively), keep files as given."""
    found: list[Path] = []
    if any(str(p) == "" for p in paths):
        raise RecordError("an empty path is not a record or directory")
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.json") if not q.name.startswith(".")))
        elif p.exists():
            found.append(p)
        else:
            raise RecordError(f"{p}: no such record or directory")
    return found

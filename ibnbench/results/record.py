"""Result records: a self-describing JSON document per run, written atomically, read with validation."""
from __future__ import annotations

import json
import math
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
               "created": str, "schema": int}
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

    def problems(self) -> list[str]:
        """Why the results cannot be valid numbers (NaN or infinite errors, no image scored); empty if they are."""
        out = []
        for row in self.results:
            where = f"{row['model']} / {row['condition']}"
            if not row["n_images"]:
                out.append(f"{where}: no valid image was scored")
            elif any(not math.isfinite(row[k]) for k in ("top1_err", "top5_err")):
                out.append(f"{where}: error is {row['top1_err']}/{row['top5_err']}")
        return out

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
        for i, row in enumerate(data["results"]):
            if not isinstance(row, dict):
                raise RecordError(f"{where}: results[{i}] is not an object")
            bad = [k for k in ("model", "condition", "top1_err", "top5_err", "n_images") if k not in row]
            if bad:
                raise RecordError(f"{where}: results[{i}] lacks {', '.join(bad)}")
            bad = [k for k in ("model", "condition") if not isinstance(row[k], str)]
            bad += [k for k in ("top1_err", "top5_err", "n_images")
                    if not isinstance(row[k], (int, float)) or isinstance(row[k], bool)]
            if bad:
                raise RecordError(f"{where}: results[{i}] has a wrong type in {', '.join(bad)} "
                                  "(model and condition are names, errors and n_images numbers)")
        for i, condition in enumerate(data.get("conditions", [])):
            if not isinstance(condition, dict) or not isinstance(condition.get("id"), str):
                raise RecordError(f"{where}: conditions[{i}] is not an object with an 'id'")
        if not all(isinstance(m, dict) for m in data["models"].values()):
            raise RecordError(f"{where}: models must map each model name to an object")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "path"}
        known.setdefault("conditions", [{"id": c,
                                         "label": c} for c in dict.fromkeys(r["condition"] for r in data["results"])])
        return cls(**known, path=path)

    def comparable_with(self, other: Record) -> list[str]:
        """Reasons why numbers of ``self`` and ``other`` must not be compared (empty: comparable)."""
        reasons = []
        if self.suite_hash != other.suite_hash:
            reasons.append(f"suite definitions differ ({self.suite}@{self.suite_hash[:12]} vs "
                           f"{other.suite}@{other.suite_hash[:12]})")
        if self.dataset.get("sha256") != other.dataset.get("sha256"):
            ours, theirs = self.dataset.get("datasets", {}), other.dataset.get("datasets", {})
            differ = sorted(k for k in set(ours) | set(theirs) if (ours.get(k) or {}).get("sha256") !=
                            (theirs.get(k) or {}).get("sha256") or (ours.get(k) or {}).get("classes") !=
                            (theirs.get(k) or {}).get("classes"))
            where = f" in {', '.join(differ)}" if differ else ""
            reasons.append(f"datasets differ{where} (fingerprint {str(self.dataset.get('sha256'))[:12]} vs "
                           f"{str(other.dataset.get('sha256'))[:12]})")
        if self.dataset.get("classes") != other.dataset.get("classes"):
            reasons.append("class subsets differ (" + " vs ".join(
                f"{c['n']} classes {c['mask']}" if c else "all 1000 classes"
                for c in (self.dataset.get("classes"), other.dataset.get("classes"))) + ")")
        for model in set(self.models) & set(other.models):
            if self.models[model].get("preprocessing") != other.models[model].get("preprocessing"):
                reasons.append(f"preprocessing of {model} differs")
        return reasons


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
    return Record.from_dict(data, path=str(path))


def find_records(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories into their ``*.json`` records (recursively), keep files as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.json") if not q.name.startswith(".")))
        elif p.exists():
            found.append(p)
        else:
            raise RecordError(f"{p}: no such record or directory")
    return found

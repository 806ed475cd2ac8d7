"""Regression checks: compare a new record with a recorded one, per (model, condition)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .results import Record, RecordError, read_record

METRICS = ("top1", "top5", "drop")
EXIT_OK, EXIT_REGRESSION, EXIT_INCOMPARABLE = 0, 1, 2


@dataclass
class CheckResult:
    """Outcome of :func:`check`: the exit code, the differences table and the reasons behind the code."""

    exit_code: int
    table: pd.DataFrame
    reasons: list[str]

    def render(self) -> str:
        head = "\n".join(self.reasons)
        if self.table.empty:
            return head
        body = tabulate(self.table, headers="keys", tablefmt="github", showindex=False, floatfmt="+.2f")
        return f"{body}\n\n{head}" if head else body


def _value(record: Record, model: str, condition: str, metric: str) -> float:
    if metric == "drop":
        return record.drop(condition, model)
    return record.result(model, condition)[f"{metric}_err"]


FAILING = ("REGRESSION", "IMPROVED", "MISSING", "INVALID")
"""Row statuses that fail a check; ``IMPROVED`` only arises with ``either_way`` (any move beyond the tolerance)."""


def _status(before: float, after: float, tolerance: float, either_way: bool) -> str:
    if not (math.isfinite(before) and math.isfinite(after)):
        return "INVALID"
    diff = after - before
    if diff > tolerance:
        return "REGRESSION"
    return "IMPROVED" if either_way and -diff > tolerance else "ok"


def _require_origin(record: Record, models: set[str]) -> None:
    """``--metric drop`` measures against ``origin``: name the record and model that lack it."""
    have = {r["model"] for r in record.results if r["condition"] == "origin"}
    lacking = sorted(models - have)
    if lacking:
        raise RecordError(f"{record.path or 'record'}: --metric drop needs the origin result of {lacking[0]} "
                          "(drops are measured against origin); compare top1 or top5 instead")


def exit_code(table: pd.DataFrame) -> int:
    """The one mapping from a check table to the exit code: 1 if any row fails, else 0."""
    return EXIT_REGRESSION if not table.empty and table.status.isin(FAILING).any() else EXIT_OK


def check(results: str | Path | Record, against: str | Path | Record, tolerance: float = 0.5,
          metric: str = "top1", either_way: bool = False) -> CheckResult:
    """Compare ``results`` (new) with ``against`` (recorded).

    Exit code 0: every (model, condition) of the recorded record is in the new one, with valid numbers within
    ``tolerance`` points; 1: a failure: a regression (the new error is higher by more than the tolerance; with
    ``either_way`` a fall counts too, marked IMPROVED), a pair of the recorded record missing from the new one,
    or a NaN/infinite number; 2: the records are incomparable (suite definitions, dataset or preprocessing
    differ, or nothing is shared).
    """
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    new = results if isinstance(results, Record) else read_record(results)
    old = against if isinstance(against, Record) else read_record(against)
    reasons = new.comparable_with(old)
    new_pairs = {(r["model"], r["condition"]) for r in new.results}
    old_pairs = list(dict.fromkeys((r["model"], r["condition"]) for r in old.results))
    if metric == "drop":
        old_pairs = [(m, c) for m, c in old_pairs if c != "origin"]
    shared = [p for p in old_pairs if p in new_pairs]
    if not shared:
        reasons.append("the records share no (model, condition) pair")
    if reasons:
        return CheckResult(EXIT_INCOMPARABLE, pd.DataFrame(), ["incomparable: " + r for r in reasons])
    if metric == "drop":
        for record in (old, new):
            _require_origin(record, {m for m, _ in shared})
    rows = []
    for model, condition in old_pairs:
        before = _value(old, model, condition, metric)
        after = _value(new, model, condition, metric) if (model, condition) in new_pairs else math.nan
        status = _status(before, after, tolerance, either_way) if (model, condition) in new_pairs else "MISSING"
        rows.append({"model": model, "condition": condition, f"recorded {metric}": before, f"new {metric}": after,
                     "diff": after - before, "status": status})
    table = pd.DataFrame(rows)
    code = exit_code(table)
    if code == EXIT_OK:
        return CheckResult(code, table, [f"ok: {len(table)} result(s) within {tolerance} points ({metric})"])
    reasons = []
    moved = table[table.status.isin(["REGRESSION", "IMPROVED"])]
    if not moved.empty:
        worst = moved.loc[moved["diff"].abs().idxmax()]
        kind = "regression" if (moved.status == "REGRESSION").any() else "change (--either-way)"
        reasons.append(f"{kind}: {len(moved)} of {len(table)} result(s) beyond {tolerance} points ({metric}); "
                       f"worst {worst.model} / {worst.condition}: {worst['diff']:+.2f}")
    missing = table[table.status == "MISSING"]
    if not missing.empty:
        reasons.append(f"missing: {len(missing)} result(s) of the recorded record are not in the new one (e.g. "
                       f"{missing.iloc[0].model} / {missing.iloc[0].condition})")
    invalid = table[table.status == "INVALID"]
    if not invalid.empty:
        reasons.append(f"invalid: {len(invalid)} result(s) are NaN or infinite (e.g. {invalid.iloc[0].model} / "
                       f"{invalid.iloc[0].condition}); a run with no valid image cannot pass")
    return CheckResult(code, table, reasons)

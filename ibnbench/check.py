"""Regression checks: compare a new record with a recorded one, per (model, condition)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .results import Record, read_record

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


def check(results: str | Path | Record, against: str | Path | Record, tolerance: float = 0.5,
          metric: str = "top1", either_way: bool = False) -> CheckResult:
    """Compare ``results`` (new) with ``against`` (recorded).

    Exit code 0: every shared (model, condition) is within ``tolerance`` points; 1: a regression (the
    new error is higher by more than the tolerance; with ``either_way`` any move counts); 2: the
    records are incomparable (suite definitions, dataset or preprocessing differ, or nothing is shared).
    """
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    new = results if isinstance(results, Record) else read_record(results)
    old = against if isinstance(against, Record) else read_record(against)
    reasons = new.comparable_with(old)
    shared = [(r["model"], r["condition"]) for r in new.results
              if any(o["model"] == r["model"] and o["condition"] == r["condition"] for o in old.results)]
    if metric == "drop":
        shared = [(m, c) for m, c in shared if c != "origin"]
    if not shared:
        reasons.append("the records share no (model, condition) pair")
    if reasons:
        return CheckResult(EXIT_INCOMPARABLE, pd.DataFrame(), ["incomparable: " + r for r in reasons])
    rows = []
    for model, condition in shared:
        before, after = _value(old, model, condition, metric), _value(new, model, condition, metric)
        diff = after - before
        moved = abs(diff) > tolerance if either_way else diff > tolerance
        rows.append({"model": model, "condition": condition, f"recorded {metric}": before, f"new {metric}": after,
                     "diff": diff, "status": "REGRESSION" if moved else "ok"})
    table = pd.DataFrame(rows)
    failed = table[table.status == "REGRESSION"]
    if failed.empty:
        return CheckResult(EXIT_OK, table, [f"ok: {len(table)} result(s) within {tolerance} points ({metric})"])
    worst = failed.loc[failed["diff"].abs().idxmax()]
    return CheckResult(EXIT_REGRESSION, table, [
        f"regression: {len(failed)} of {len(table)} result(s) beyond {tolerance} points ({metric}); worst "
        f"{worst.model} / {worst.condition}: {worst['diff']:+.2f}"])

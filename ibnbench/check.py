"""Regression checks: compare a new record with a recorded one, per (model, condition)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import stats
from .results import Record, read_record

METRICS = ("top1", "top5", "drop")
TESTS = ("tolerance", "mcnemar")
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
        text = [i for i, column in enumerate(self.table.columns) if str(column).startswith("p")]  # p-values as written
        body = tabulate(self.table, headers="keys", tablefmt="github", showindex=False, floatfmt="+.2f",
                        disable_numparse=text or False)
        return f"{body}\n\n{head}" if head else body


def _value(record: Record, model: str, condition: str, metric: str) -> float:
    if metric == "drop":
        return record.drop(condition, model)
    return record.result(model, condition)[f"{metric}_err"]


def check(results: str | Path | Record, against: str | Path | Record, tolerance: float = 0.5,
          metric: str = "top1", either_way: bool = False, test: str = "tolerance", alpha: float = 0.01) -> CheckResult:
    """Compare ``results`` (new) with ``against`` (recorded).

    Exit code 0: every shared (model, condition) is within ``tolerance`` points; 1: a regression (the
    new error is higher by more than the tolerance; with ``either_way`` any move counts); 2: the
    records are incomparable (suite definitions, dataset or preprocessing differ, or nothing is shared).
    With ``test="mcnemar"`` a cell regresses only when its per-image answers changed significantly: McNemar's
    exact test on the same images, Holm-adjusted over the shared cells, below ``alpha``.
    """
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if test not in TESTS:
        raise ValueError(f"--test must be one of {', '.join(TESTS)}, not {test!r}")
    if test == "mcnemar" and metric == "drop":
        raise ValueError("--test mcnemar compares per-image answers: use --metric top1 or top5")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must lie between 0 and 1, not {alpha}")
    new = results if isinstance(results, Record) else read_record(results)
    old = against if isinstance(against, Record) else read_record(against)
    reasons = new.comparable_with(old)
    shared = [(r["model"], r["condition"]) for r in new.results
              if any(o["model"] == r["model"] and o["condition"] == r["condition"] for o in old.results)]
    if metric == "drop":
        shared = [(m, c) for m, c in shared if c != "origin"]
    if not shared:
        reasons.append("the records share no (model, condition) pair")
    if test == "mcnemar" and not reasons:
        reasons += [f"{r.path or 'record'} holds no per-image answers for {m} / {c}"
                    for m, c in shared for r in (new, old) if r.answers(m, c, metric) is None][:1]
        if new.per_image.get("files") != old.per_image.get("files"):
            reasons.append("the records list different image files")
    if reasons:
        return CheckResult(EXIT_INCOMPARABLE, pd.DataFrame(), ["incomparable: " + r for r in reasons])
    if test == "mcnemar":
        return _mcnemar(new, old, shared, metric, either_way, alpha)
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


def _mcnemar(new: Record, old: Record, shared: list[tuple[str, str]], metric: str, either_way: bool,
             alpha: float) -> CheckResult:
    """Per shared cell: images the recorded run got right and the new one wrong (and the reverse), McNemar's
    exact p and its Holm adjustment; a regression is a significant change towards more errors (either way
    with ``either_way``)."""
    rows = []
    for model, condition in shared:
        counts = stats.paired(old.answers(model, condition, metric), new.answers(model, condition, metric))
        rows.append({"model": model, "condition": condition, f"recorded {metric}": _value(old, model, condition, metric),
                     f"new {metric}": _value(new, model, condition, metric), "diff": 100 * counts.diff,
                     "newly wrong": counts.b, "newly right": counts.c, "p": counts.pvalue})
    table = pd.DataFrame(rows)
    adjusted = stats.holm(table.p.to_numpy())
    failed = (adjusted < alpha) & ((table["newly wrong"] > table["newly right"]) | either_way)
    table["p"] = table.p.map(stats.format_p)
    table["p Holm"] = [stats.format_p(p) for p in adjusted]
    table["status"] = ["REGRESSION" if f else "ok" for f in failed]
    test = f"McNemar exact, Holm-adjusted over {len(table)} cell(s), alpha {alpha:g}"
    if not failed.any():
        return CheckResult(EXIT_OK, table, [f"ok: no significant change of the per-image {metric} answers ({test})"])
    worst = table.iloc[int(np.where(failed, adjusted, np.inf).argmin())]
    return CheckResult(EXIT_REGRESSION, table, [
        f"regression: {int(failed.sum())} of {len(table)} result(s) changed significantly ({test}); strongest "
        f"{worst.model} / {worst.condition}: {worst['diff']:+.2f} points, {worst['newly wrong']} newly wrong, "
        f"{worst['newly right']} newly right, p Holm {worst['p Holm']}"])

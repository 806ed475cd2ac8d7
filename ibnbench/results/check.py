"""Regression checks: compare a new record with a recorded one, per (model, condition)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from ibnbench.errors import RecordError, UsageError
from ibnbench.results import stats
from ibnbench.results.comparability import comparability
from ibnbench.results.record import Record, read_record, row_problem

METRICS = ("top1", "top5", "drop")
TESTS = ("tolerance", "mcnemar")
EXIT_OK, EXIT_REGRESSION, EXIT_INCOMPARABLE = 0, 1, 2


@dataclass
class CheckResult:
    """Outcome of :func:`check`: the exit code, the differences table, the reasons behind the code and the warnings
    to show with it (records compared although their generators differ)."""

    exit_code: int
    table: pd.DataFrame
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = "\n".join(self.warnings + self.reasons)
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


FAILING = ("REGRESSION", "IMPROVED", "MISSING", "INVALID")
"""Row statuses that fail a check; ``IMPROVED`` only arises with ``either_way`` (any move beyond the tolerance)."""


def _valid(record: Record, model: str, condition: str, metric: str) -> bool:
    """Whether the rows behind a compared number (with ``drop``: its baseline's too) hold valid numbers."""
    rows = [record.result(model, condition)]
    if metric == "drop":
        rows.append(record.result(model, record.baselines().get(condition) or "origin"))
    return all(row_problem(row) is None for row in rows)


def _status(before: float, after: float, tolerance: float, either_way: bool, valid: bool = True) -> str:
    if not (valid and math.isfinite(before) and math.isfinite(after)):
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
          metric: str = "top1", either_way: bool = False, test: str = "tolerance", alpha: float = 0.01,
          allow_generator_mismatch: bool = False) -> CheckResult:
    """Compare ``results`` (new) with ``against`` (recorded).

    Exit code 0: every (model, condition) of the recorded record is in the new one, with valid numbers within
    ``tolerance`` points; 1: a failure: a regression (the new error is higher by more than the tolerance; with
    ``either_way`` a fall counts too, marked IMPROVED), a pair of the recorded record missing from the new one,
    or a NaN/infinite number; 2: the records are incomparable (their generators, suite definitions, dataset or
    preprocessing differ, or nothing is shared; ``allow_generator_mismatch`` compares records whose generators differ,
    with a warning: :mod:`ibnbench.results.comparability`).
    With ``test="mcnemar"`` a cell regresses only when its per-image answers changed significantly: McNemar's
    exact test on the same images, Holm-adjusted over the shared cells, below ``alpha``; a missing pair fails too.
    """
    _check_arguments(metric, test, alpha, tolerance)
    new = results if isinstance(results, Record) else read_record(results)
    old = against if isinstance(against, Record) else read_record(against)
    comparable = comparability(new, old, allow_generator_mismatch)
    reasons = list(comparable.reasons)
    new_pairs = {(r["model"], r["condition"]) for r in new.results}
    old_pairs = list(dict.fromkeys((r["model"], r["condition"]) for r in old.results))
    if metric == "drop":
        old_pairs = [(m, c) for m, c in old_pairs if c != "origin"]
    shared = [p for p in old_pairs if p in new_pairs]
    if not shared:
        reasons.append("the records share no (model, condition) pair")
    if test == "mcnemar" and not reasons:
        reasons += _unpaired(new, old, shared, metric)
    if reasons:
        return CheckResult(EXIT_INCOMPARABLE, pd.DataFrame(), ["incomparable: " + r for r in reasons],
                           comparable.warnings)
    if metric == "drop":
        for record in (old, new):
            _require_origin(record, {m for m, _ in shared})
    if test == "mcnemar":
        result = _mcnemar(new, old, shared, old_pairs, metric, either_way, alpha)
    else:
        result = _tolerance(new, old, old_pairs, new_pairs, metric, tolerance, either_way)
    return replace(result, warnings=comparable.warnings)

def _check_arguments(metric: str, test: str, alpha: float, tolerance: float) -> None:
    if metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if test not in TESTS:
        raise UsageError(f"--test must be one of {', '.join(TESTS)}, not {test!r}")
    if test == "mcnemar" and metric == "drop":
        raise UsageError("--test mcnemar compares per-image answers: use --metric top1 or top5")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must lie between 0 and 1, not {alpha}")
    if not 0 <= tolerance < math.inf:
        raise UsageError(f"--tolerance must be a finite number of points, 0 or more, not {tolerance}")


def _unpaired(new: Record, old: Record, shared: list[tuple[str, str]], metric: str) -> list[str]:
    """Why the records' per-image answers cannot be paired (none kept, or different images); empty if they can."""
    reasons = [f"{r.path or 'record'} holds no per-image answers for {m} / {c}"
               for m, c in shared for r in (new, old) if r.answers(m, c, metric) is None][:1]
    if new.per_image.get("files") != old.per_image.get("files"):
        reasons.append("the records list different image files")
    return reasons


def _tolerance(new: Record, old: Record, old_pairs: list[tuple[str, str]], new_pairs: set[tuple[str, str]],
               metric: str, tolerance: float, either_way: bool) -> CheckResult:
    """Per recorded (model, condition): the new error against the recorded one, within ``tolerance`` points."""
    rows = []
    for model, condition in old_pairs:
        before = _value(old, model, condition, metric)
        after = _value(new, model, condition, metric) if (model, condition) in new_pairs else math.nan
        status = "MISSING" if (model, condition) not in new_pairs else _status(
            before, after, tolerance, either_way,
            _valid(old, model, condition, metric) and _valid(new, model, condition, metric))
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
        reasons.append(f"invalid: {len(invalid)} result(s) are NaN or infinite, or outside 0..100 % (e.g. "
                       f"{invalid.iloc[0].model} / {invalid.iloc[0].condition}); a run with no valid image cannot pass")
    return CheckResult(code, table, reasons)



def _mcnemar(new: Record, old: Record, shared: list[tuple[str, str]], old_pairs: list[tuple[str, str]],
             metric: str, either_way: bool, alpha: float) -> CheckResult:
    """Per shared cell: images the recorded run got right and the new one wrong (and the reverse), McNemar's
    exact p and its Holm adjustment; a regression is a significant change towards more errors (either way
    with ``either_way``). A pair of the recorded record missing from the new one fails, as in tolerance mode."""
    rows = []
    for model, condition in shared:
        counts = stats.paired(old.answers(model, condition, metric), new.answers(model, condition, metric))
        rows.append({"model": model, "condition": condition, f"recorded {metric}": _value(old, model, condition,
                                                                                          metric),
                     f"new {metric}": _value(new, model, condition, metric), "diff": 100 * counts.diff,
                     "paired 95% CI": stats.format_interval(*counts.interval()), "newly wrong": counts.b,
                     "newly right": counts.c, "p": counts.pvalue})
    table = pd.DataFrame(rows)
    adjusted = stats.holm(table.p.to_numpy())
    failed = (adjusted < alpha) & ((table["newly wrong"] > table["newly right"]) | either_way)
    table["p"] = table.p.map(stats.format_p)
    table["p Holm"] = [stats.format_p(p) for p in adjusted]
    valid = [_valid(old, m, c, metric) and _valid(new, m, c, metric) for m, c in shared]
    table["status"] = ["INVALID" if not v else "REGRESSION" if f else "ok" for f, v in zip(failed, valid)]
    missing = [pair for pair in old_pairs if pair not in shared]
    if missing:
        table = pd.concat([table, pd.DataFrame([{"model": m, "condition": c, "status": "MISSING"} for m,
                                                c in missing])],
                          ignore_index=True)
    test = f"McNemar exact, Holm-adjusted over {len(shared)} cell(s), alpha {alpha:g}"
    code = exit_code(table)
    if code == EXIT_OK:
        return CheckResult(code, table, [f"ok: no significant change of the per-image {metric} answers ({test})"])
    reasons = []
    if failed.any():
        worst = table.iloc[int(np.where(failed, adjusted, np.inf).argmin())]
        reasons.append(f"regression: {int(failed.sum())} of {len(shared)} result(s) changed significantly ({test}); "
                       f"strongest {worst.model} / {worst.condition}: {worst['diff']:+.2f} points "
                       f"{worst['paired 95% CI']} (Tango), "
                       f"{worst['newly wrong']} newly wrong, {worst['newly right']} newly right, "
                       f"p Holm {worst['p Holm']}")
    if missing:
        reasons.append(f"missing: {len(missing)} result(s) of the recorded record are not in the new one (e.g. "
                       f"{missing[0][0]} / {missing[0][1]})")
    if not all(valid):
        reasons.append(f"invalid: {valid.count(False)} result(s) are NaN or infinite, or outside 0..100 %")
    return CheckResult(code, table, reasons)

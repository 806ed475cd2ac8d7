"""ImageNet-C scores: mCE and relative mCE normalised by AlexNet's errors, tables per model; ImageNet-C-bar's table
of errors per corruption and severity, with CE-bar and mCE-bar normalised by a baseline model of the records or by
constants from a file (no published baseline constants ship with ibnbench)."""
from __future__ import annotations

import importlib.resources
import sys
from collections.abc import Mapping, Sequence

import pandas as pd

from ibnbench.conditions.c_bar import C_BAR_LABELS, C_BAR_NAMES
from ibnbench.conditions.corruptions import COMMON, EXTRA, LABELS, SEVERITIES
from ibnbench.conditions.imagenet_c_release import parse
from ibnbench.results.baselines import BaselineConstants, read_baseline_constants
from ibnbench.results.record import Record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


_ALEXNET = tomllib.loads(importlib.resources.files("ibnbench.reference").joinpath("imagenet_c_alexnet.toml")
                         .read_text(encoding="utf-8"))
ALEXNET_ERRORS: dict[str, float] = _ALEXNET["errors"]
"""AlexNet's top-1 error (%) on each of the 15 corruptions, mean over the 5 severities: google-research/augmix
``imagenet.py`` ``ALEXNET_ERR`` x100, shipped as ``reference/imagenet_c_alexnet.toml``."""

ALEXNET_CLEAN_ERROR: float = _ALEXNET["clean_error"]
"""AlexNet's clean top-1 error (%) as the ImageNet-C paper prints it (for relative CE)."""


MCE = "mCE (AlexNet-normalised, %)"
RELATIVE_MCE = "relative mCE (AlexNet-normalised, %)"
MEAN_ERROR = "mean top-1 error over the 15 corruptions (unnormalised, %)"
MEAN_ERROR_EXTRA = "mean top-1 error over the 4 extra corruptions (unnormalised, %)"
CLEAN_ERROR = "clean top-1 error (%)"
MEAN_ERROR_BAR = "mean top-1 error over the C-bar corruptions run (unnormalised, %)"
MCE_BAR = "mCE-bar (normalised by the baseline, %)"
C_BAR_SUITE = "imagenet-c-bar"
C_BAR_CONSTANT_TABLES = {"errors": C_BAR_NAMES}
"""What a ``--baseline-constants`` file for ImageNet-C-bar holds: ``[errors]``, the baseline's top-1 error (%) per
C-bar corruption (the mean over severities 1-5, or one per severity)."""


def _all_graded(records: Sequence[Record], names: Sequence[str]) -> bool:
    """True when every condition of every record is one of ``names`` at a severity (or the clean ``origin``), and
    one is."""
    ids = [c["id"] for r in records for c in r.conditions]
    return any(parse(i, names) for i in ids) and all(i == "origin" or parse(i, names) for i in ids)


def is_imagenet_c(records: Sequence[Record]) -> bool:
    """True when every condition of every record is an ImageNet-C corruption at a severity (or ``origin``)."""
    return _all_graded(records, COMMON + EXTRA)


def is_imagenet_c_bar(records: Sequence[Record]) -> bool:
    """True when every condition of every record is an ImageNet-C-bar corruption at a severity (or ``origin``)."""
    return _all_graded(records, C_BAR_NAMES)


def errors_by_severity(errors: dict[str, float], names: Sequence[str] = COMMON + EXTRA) -> pd.DataFrame:
    """``{condition id: top-1 error}`` -> a corruptions x severities frame of the corruptions ``names`` that were
    run, in that order (NaN where a severity was not run)."""
    rows: dict[str, dict[int, float]] = {}
    for condition_id, error in errors.items():
        parsed = parse(condition_id, names)
        if parsed:
            rows.setdefault(parsed[0], {})[parsed[1]] = error
    order = [n for n in names if n in rows]
    return pd.DataFrame.from_dict({n: rows[n] for n in order}, orient="index").reindex(columns=list(SEVERITIES))


def corruption_errors(table: pd.DataFrame, normaliser: Mapping[str, float]) -> dict[str, float]:
    """CE per corruption of a corruptions x severities ``table``: 100 x its error summed over the 5 severities / (5 x
    ``normaliser``'s mean error over them), for the corruptions run at all 5 whose normaliser is above 0."""
    return {name: 100.0 * row.sum() / (len(SEVERITIES) * normaliser[name]) for name, row in table.iterrows()
            if normaliser.get(name, 0) > 0 and not row.isna().any()}


def scores(errors: dict[str, float]) -> dict:
    """CE, relative CE per corruption and mCE, relative mCE, mean error from ``{condition id: top-1 error}``
    (``origin`` is the clean error). A corruption's CE needs all 5 severities; mCE needs all 15 corruptions.
    ``mean_error`` averages the 15 standard corruptions' cells, ``mean_error_extra`` the 4 extra ones'
    (None where none was run)."""
    table = errors_by_severity(errors)
    clean = errors.get("origin")
    ce, relative = corruption_errors(table, ALEXNET_ERRORS), {}
    for name in ce if clean is not None else ():
        alexnet_gap = ALEXNET_ERRORS[name] - ALEXNET_CLEAN_ERROR
        relative[name] = 100.0 * (table.loc[name] - clean).sum() / (len(SEVERITIES) * alexnet_gap)
    complete = set(ce) == set(ALEXNET_ERRORS)
    return {"ce": ce, "relative_ce": relative,
            "mce": sum(ce.values()) / len(ce) if complete else None,
            "relative_mce": sum(relative.values()) / len(relative) if complete and len(relative) == len(ce) else None,
            "mean_error": _mean(table, COMMON), "mean_error_extra": _mean(table, EXTRA), "clean_error": clean}


def _mean(table: pd.DataFrame, corruptions: Sequence[str]) -> float | None:
    """The mean of the cells of ``corruptions`` that were run (None where none was)."""
    cells = table.loc[[n for n in corruptions if n in table.index]].stack()
    return float(cells.mean()) if len(cells) else None


def _number(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.2f}"


def _severity_table(table: pd.DataFrame, labels: dict[str, str], columns: dict[str, list[str]],
                    summary: dict[str, float | None]) -> pd.DataFrame:
    """The layout of a corruptions x severities ``table``: columns severities 1-5 and their mean, then ``columns``;
    rows the corruptions' ``labels``, then one row per ``summary`` number (in the "mean" column)."""
    out = pd.DataFrame({str(s): table[s].map(_number) for s in SEVERITIES}, index=table.index)
    out["mean"] = table.mean(axis=1).map(_number)
    for name, values in columns.items():
        out[name] = values
    out.index = [labels[n] for n in table.index]
    for label, value in summary.items():
        out.loc[label] = [""] * len(out.columns)
        out.loc[label, "mean"] = _number(value)
    out.index.name = "corruption (top-1 error %)"
    return out


def model_table(errors: dict[str, float]) -> pd.DataFrame:
    """One model's ImageNet-C layout: rows corruptions, columns severities 1-5, mean, CE and relative CE, then
    summary rows (clean error, mCE, relative mCE, unnormalised mean error over the 15 corruptions and, when they
    were run, over the 4 extra ones)."""
    table = errors_by_severity(errors)
    result = scores(errors)
    columns = {"CE": [_number(result["ce"].get(n)) for n in table.index],
               "relative CE": [_number(result["relative_ce"].get(n)) for n in table.index]}
    summary = {CLEAN_ERROR: result["clean_error"], MCE: result["mce"], RELATIVE_MCE: result["relative_mce"],
               MEAN_ERROR: result["mean_error"]}
    if result["mean_error_extra"] is not None:
        summary[MEAN_ERROR_EXTRA] = result["mean_error_extra"]
    return _severity_table(table, LABELS, columns, summary)


def c_bar_scores(errors: dict[str, float], normaliser: Mapping[str, float] | None = None) -> dict:
    """ImageNet-C-bar's numbers from ``{condition id: top-1 error}``: ``table`` (corruptions x severities),
    ``mean_error`` per corruption (over the severities run), ``mean_error_bar`` (every cell run), ``clean_error``
    and, with a ``normaliser`` (the baseline's mean error per corruption), ``ce`` per corruption
    (:func:`corruption_errors`) and ``mce_bar``, their mean when all 10 have one (else None)."""
    table = errors_by_severity(errors, C_BAR_NAMES)
    ce = corruption_errors(table, normaliser) if normaliser is not None else {}
    return {"table": table, "mean_error": table.mean(axis=1).to_dict(), "mean_error_bar": _mean(table, C_BAR_NAMES),
            "clean_error": errors.get("origin"), "ce": ce,
            "mce_bar": sum(ce.values()) / len(ce) if set(ce) == set(C_BAR_NAMES) else None}


def c_bar_table(errors: dict[str, float], normaliser: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One model's ImageNet-C-bar layout: rows the corruptions run, columns severities 1-5 and their mean (the
    mean error per corruption), then the clean error and the unnormalised mean over every cell run. With a
    ``normaliser`` (the baseline's mean error per corruption: :func:`c_bar_normaliser`, or constants from a file): a
    CE-bar column and mCE-bar (:func:`c_bar_scores`)."""
    result = c_bar_scores(errors, normaliser)
    table = result["table"]
    summary = {CLEAN_ERROR: result["clean_error"], MEAN_ERROR_BAR: result["mean_error_bar"]}
    columns = {}
    if normaliser is not None:
        columns["CE-bar"] = [_number(result["ce"].get(n)) for n in table.index]
        summary[MCE_BAR] = result["mce_bar"]
    return _severity_table(table, C_BAR_LABELS, columns, summary)


def c_bar_normaliser(baseline: dict[str, float]) -> dict[str, float]:
    """A baseline model's mean error per C-bar corruption from its ``{condition id: top-1 error}``, for the
    corruptions it ran at all 5 severities."""
    return errors_by_severity(baseline, C_BAR_NAMES).mean(axis=1, skipna=False).dropna().to_dict()


def c_bar_constants(path: str) -> BaselineConstants:
    """ImageNet-C-bar baseline constants from a ``--baseline-constants`` file (:data:`C_BAR_CONSTANT_TABLES`)."""
    return read_baseline_constants(path, (C_BAR_SUITE,), C_BAR_CONSTANT_TABLES)


def record_errors(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """``{model: {condition id: top-1 error}}`` over the records (later records override earlier ones)."""
    out: dict[str, dict[str, float]] = {}
    for record in records:
        for row in record.results:
            out.setdefault(row["model"], {})[row["condition"]] = row["top1_err"]
    return out

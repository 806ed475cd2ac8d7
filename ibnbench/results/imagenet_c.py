"""ImageNet-C scores: mCE and relative mCE normalised by AlexNet's errors, tables per model."""
from __future__ import annotations

import importlib.resources
import sys
from collections.abc import Sequence

import pandas as pd

from ibnbench.conditions.corruptions import COMMON, EXTRA, LABELS, SEVERITIES
from ibnbench.conditions.imagenet_c_release import parse
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


def is_imagenet_c(records: Sequence[Record]) -> bool:
    """True when every condition of every record is a corruption at a severity (or the clean ``origin``)."""
    ids = [c["id"] for r in records for c in r.conditions]
    return any(parse(i) for i in ids) and all(i == "origin" or parse(i) for i in ids)


def errors_by_severity(errors: dict[str, float]) -> pd.DataFrame:
    """``{condition id: top-1 error}`` -> a corruptions x severities frame (NaN where not run)."""
    rows: dict[str, dict[int, float]] = {}
    for condition_id, error in errors.items():
        parsed = parse(condition_id)
        if parsed:
            rows.setdefault(parsed[0], {})[parsed[1]] = error
    order = [n for n in COMMON + EXTRA if n in rows]
    return pd.DataFrame.from_dict({n: rows[n] for n in order}, orient="index").reindex(columns=list(SEVERITIES))


def scores(errors: dict[str, float]) -> dict:
    """CE, relative CE per corruption and mCE, relative mCE, mean error from ``{condition id: top-1 error}``
    (``origin`` is the clean error). A corruption's CE needs all 5 severities; mCE needs all 15 corruptions.
    ``mean_error`` averages the 15 standard corruptions' cells, ``mean_error_extra`` the 4 extra ones'
    (None where none was run)."""
    table = errors_by_severity(errors)
    clean = errors.get("origin")
    ce, relative = {}, {}
    for name, row in table.iterrows():
        if name not in ALEXNET_ERRORS or row.isna().any():
            continue
        ce[name] = 100.0 * row.sum() / (len(SEVERITIES) * ALEXNET_ERRORS[name])
        if clean is not None:
            alexnet_gap = ALEXNET_ERRORS[name] - ALEXNET_CLEAN_ERROR
            relative[name] = 100.0 * (row - clean).sum() / (len(SEVERITIES) * alexnet_gap)
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


def model_table(errors: dict[str, float]) -> pd.DataFrame:
    """One model's ImageNet-C layout: rows corruptions, columns severities 1-5, mean, CE and relative CE, then
    summary rows (clean error, mCE, relative mCE, unnormalised mean error over the 15 corruptions and, when they
    were run, over the 4 extra ones)."""
    table = errors_by_severity(errors)
    result = scores(errors)
    out = pd.DataFrame({str(s): table[s].map(_number) for s in SEVERITIES}, index=table.index)
    out["mean"] = table.mean(axis=1).map(_number)
    out["CE"] = [_number(result["ce"].get(n)) for n in table.index]
    out["relative CE"] = [_number(result["relative_ce"].get(n)) for n in table.index]
    out.index = [LABELS[n] for n in table.index]
    summary = {CLEAN_ERROR: result["clean_error"], MCE: result["mce"], RELATIVE_MCE: result["relative_mce"],
               MEAN_ERROR: result["mean_error"]}
    if result["mean_error_extra"] is not None:
        summary[MEAN_ERROR_EXTRA] = result["mean_error_extra"]
    for label, value in summary.items():  # the summary numbers sit in the "mean" column
        out.loc[label] = [""] * len(out.columns)
        out.loc[label, "mean"] = _number(value)
    out.index.name = "corruption (top-1 error %)"
    return out


def record_errors(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """``{model: {condition id: top-1 error}}`` over the records (later records override earlier ones)."""
    out: dict[str, dict[str, float]] = {}
    for record in records:
        for row in record.results:
            out.setdefault(row["model"], {})[row["condition"]] = row["top1_err"]
    return out

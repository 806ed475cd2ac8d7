"""ImageNet-C scores: mCE and relative mCE normalised by AlexNet's errors, tables per model."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ibnbench.conditions.corruptions import COMMON, EXTRA, LABELS, SEVERITIES
from ibnbench.conditions.imagenet_c import parse
from ibnbench.results.record import Record

ALEXNET_ERRORS = {"gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640,
                  "defocus_blur": 81.9880, "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360,
                  "snow": 86.6816, "frost": 82.6572, "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204,
                  "elastic_transform": 64.6056, "pixelate": 71.7840, "jpeg_compression": 60.6500}
"""AlexNet's top-1 error (%) on ImageNet-C, mean over the 5 severities (Hendrycks & Dietterich 2019)."""


ALEXNET_CLEAN_ERROR = 43.5
"""AlexNet's clean top-1 error (%) as the paper prints it (for relative CE)."""


MCE = "mCE (AlexNet-normalised, %)"
RELATIVE_MCE = "relative mCE (AlexNet-normalised, %)"
MEAN_ERROR = "mean top-1 error over corruptions (unnormalised, %)"
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
    (``origin`` is the clean error). A corruption's CE needs all 5 severities; mCE needs all 15 corruptions."""
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
            "mean_error": float(table.stack().mean()) if table.size else None, "clean_error": clean}


def _number(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.2f}"


def model_table(errors: dict[str, float]) -> pd.DataFrame:
    """One model's ImageNet-C layout: rows corruptions, columns severities 1-5, mean, CE and relative CE, then
    summary rows (clean error, mCE, relative mCE, unnormalised mean error)."""
    table = errors_by_severity(errors)
    result = scores(errors)
    out = pd.DataFrame({str(s): table[s].map(_number) for s in SEVERITIES}, index=table.index)
    out["mean"] = table.mean(axis=1).map(_number)
    out["CE"] = [_number(result["ce"].get(n)) for n in table.index]
    out["relative CE"] = [_number(result["relative_ce"].get(n)) for n in table.index]
    out.index = [LABELS[n] for n in table.index]
    summary = {CLEAN_ERROR: result["clean_error"], MCE: result["mce"], RELATIVE_MCE: result["relative_mce"],
               MEAN_ERROR: result["mean_error"]}
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

"""Tables of segmentation records: the run's summary (conditions x datasets per model, mIoU with its bootstrap
interval, pixel accuracy, the drop against ``origin``), IBN-Net's cross-domain segmentation table (train domain,
test domain, model), RobustNet's shape (models x target datasets with the mean over targets), ACDC per condition
and the Cityscapes-C table (mIoU per corruption and severity, relative to clean)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
from tabulate import tabulate

from ibnbench.conditions.corruptions import LABELS
from ibnbench.results.segmentation_record import SegmentationRecord

ORIGIN = "origin"


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_frame(records: Sequence[SegmentationRecord]) -> pd.DataFrame:
    """One row per (model, condition, dataset) of ``records`` with mIoU, its interval, pixel accuracy (percent) and
    the mIoU drop against the same model and dataset under ``origin``."""
    rows = [{"model": r["model"], "condition": r["condition"], "dataset": r["dataset"], "n_images": r["n_images"],
             "miou": r["miou"], "miou_low": r["miou_ci"][0], "miou_high": r["miou_ci"][1],
             "pixel_accuracy": r["pixel_accuracy"]} for record in records for r in record.results]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    clean = frame[frame.condition == ORIGIN].set_index(["model", "dataset"]).miou
    frame["drop"] = [clean.get((m, d), float("nan")) - v if v is not None else float("nan")
                     for m, d, v in zip(frame.model, frame.dataset, frame.miou)]
    return frame


def summary(records: Sequence[SegmentationRecord]) -> pd.DataFrame:
    """Rows (condition, dataset), a column per model: ``mIoU [low, high] / pixel acc (drop)``."""
    frame = results_frame(records)
    table: dict[str, dict[tuple[str, str], str]] = {}
    for row in frame.itertuples():
        cell = (f"{_number(row.miou)} [{_number(row.miou_low)}, {_number(row.miou_high)}] / "
                f"{_number(row.pixel_accuracy)}")
        if row.condition != ORIGIN and not math.isnan(row.drop):
            cell += f" ({row.drop:.1f})"
        table.setdefault(row.model, {})[row.condition, row.dataset] = cell
    out = pd.DataFrame(table)
    out.index = [f"{c} / {d}" for c, d in out.index]
    return out


def summary_tables(record: SegmentationRecord, fmt: str = "github") -> dict[str, str]:
    """The run's tables as text: the summary, and the Cityscapes-C table of each model when corruptions ran."""
    tables = {"mIoU % [95% interval] / pixel accuracy % (mIoU drop against origin)":
              tabulate(summary([record]), headers="keys", tablefmt=fmt)}
    for (model, dataset), table in corruption_tables([record]).items():
        tables[f"{model} on {dataset}: mIoU % per corruption and severity (relative: mean / clean)"] = tabulate(
            table, headers="keys", tablefmt=fmt)
    return tables


def table6(records: Sequence[SegmentationRecord], train_domains: Mapping[str, str]) -> pd.DataFrame:
    """The shape of IBN-Net's cross-domain segmentation table: per (train domain, test domain, model) the mIoU and
    pixel accuracy under ``origin`` and the mIoU drop from the model's own domain to the test domain."""
    frame = results_frame(records)
    frame = frame[frame.condition == ORIGIN]
    rows = []
    for row in frame.itertuples():
        train = train_domains.get(row.model, "?")
        own = frame[(frame.model == row.model) & (frame.dataset == train)].miou
        drop = float(own.iloc[0]) - row.miou if len(own) and row.miou is not None else float("nan")
        rows.append({"train": train, "test": row.dataset, "model": row.model, "mIoU": row.miou,
                     "pixel acc": row.pixel_accuracy, "drop": drop})
    return pd.DataFrame(rows).sort_values(["train", "test", "model"], kind="stable").reset_index(drop=True)


def targets_table(records: Sequence[SegmentationRecord], value: str = "miou") -> pd.DataFrame:
    """RobustNet's shape: models x target datasets (mIoU under ``origin``, or ``value="pixel_accuracy"``), with
    the mean over the targets."""
    frame = results_frame(records)
    frame = frame[frame.condition == ORIGIN]
    table = frame.pivot_table(index="model", columns="dataset", values=value, sort=False)
    table["mean"] = table.mean(axis=1)
    return table


def acdc_table(records: Sequence[SegmentationRecord]) -> pd.DataFrame:
    """ACDC per condition: models x fog, night, rain, snow (mIoU under ``origin``), with their mean."""
    frame = results_frame(records)
    frame = frame[(frame.condition == ORIGIN) & frame.dataset.str.startswith("acdc/")]
    table = frame.pivot_table(index="model", columns="dataset", values="miou", sort=False)
    table.columns = [c.split("/", 1)[1] for c in table.columns]
    table["mean"] = table.mean(axis=1)
    return table


def corruption_tables(records: Sequence[SegmentationRecord]) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (model, dataset) with corruptions (``name-severity`` conditions): rows corruptions, columns severities
    and their mean, and ``relative`` = mean / clean mIoU (the Cityscapes-C table of Kamann & Rother)."""
    frame = results_frame(records)
    parts = frame.condition.str.rpartition("-")
    clean = frame[frame.condition == ORIGIN].set_index(["model", "dataset"]).miou
    frame = frame.assign(corruption=parts[0].map(LABELS), severity=parts[2])[parts[0].isin(LABELS)]
    tables = {}
    for (model, dataset), part in frame.groupby(["model", "dataset"], sort=False):
        table = part.assign(severity=part.severity.astype(int)).pivot_table(
            index="corruption", columns="severity", values="miou", sort=False)
        table = table.reindex(sorted(table.columns), axis=1)
        table["mean"] = table.mean(axis=1)
        table["relative"] = table["mean"] / clean.get((model, dataset), float("nan"))
        tables[model, dataset] = table
    return tables

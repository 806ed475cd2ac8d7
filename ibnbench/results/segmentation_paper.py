"""Published cross-domain segmentation numbers as data (``reference/segmentation_paper.toml``) and segmentation
records beside them (``report --vs paper``).

Every cell names its source (a URL with the commit or page it was read from), the ibnbench model that is the
network it was measured with (mapped by hand) and the dataset id it was measured on, so a record's (model,
dataset) row under ``origin`` finds its published cell. Tables that no source could be found for are listed in the
data file's header and in docs/segmentation.md, not guessed.
"""
from __future__ import annotations

import functools
import importlib.resources
import math
import sys
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ibnbench.results.segmentation_record import SegmentationRecord
from ibnbench.results.segmentation_report import ORIGIN, results_frame

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = "segmentation_paper.toml"


@dataclass(frozen=True)
class SegmentationPaperCell:
    """One published cell: mIoU % (and pixel accuracy % where the source prints it) of ``model`` on ``dataset``,
    trained on ``train``, from table ``table`` of ``source``."""

    table: str
    source: str
    row: str
    model: str
    dataset: str
    train: str
    miou: float
    pixel_accuracy: float | None


@functools.cache
def _data() -> dict:
    return tomllib.loads(importlib.resources.files("ibnbench.reference").joinpath(DATA).read_text())


def titles() -> dict[str, tuple[str, str]]:
    """Each table's (title, source) by its key."""
    return {key: (spec["title"], spec["source"]) for key, spec in _data()["tables"].items()}


def cells(table: str | None = None) -> list[SegmentationPaperCell]:
    """All transcribed cells in file order (or those of one table)."""
    return [SegmentationPaperCell(key, spec["source"], c["row"], c["model"], c["dataset"], spec["train"], c["miou"],
                                  c.get("pixel_accuracy"))
            for key, spec in _data()["tables"].items() if table in (None, key) for c in spec["cells"]]


def cells_of(model: str) -> dict[str, SegmentationPaperCell]:
    """The published cells of one ibnbench model by dataset id; the first table wins where tables repeat."""
    found: dict[str, SegmentationPaperCell] = {}
    for cell in cells():
        if cell.model == model:
            found.setdefault(cell.dataset, cell)
    return found


def table(key: str) -> pd.DataFrame:
    """A table as its source prints it: rows the source's model names (with the ibnbench model), columns the test
    datasets, cells mIoU (``mIoU / pixel acc`` where the source gives both)."""
    grid: dict[str, dict[str, str]] = {}
    for c in cells(key):
        text = f"{c.miou:.2f}" + (f" / {c.pixel_accuracy:.2f}" if c.pixel_accuracy is not None else "")
        grid.setdefault(c.dataset, {})[f"{c.row} ({c.model})"] = text
    return pd.DataFrame(grid).fillna("-")


def _difference(ours: object, published: float | None) -> float:
    if published is None or ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return math.nan
    return float(ours) - published


def versus_paper(records: Sequence[SegmentationRecord]) -> tuple[pd.DataFrame, list[str]]:
    """Per (model, dataset) of ``records`` under ``origin``: our mIoU and pixel accuracy, the published ones and
    ours minus theirs (NaN where the source has none); and the ``model / dataset`` rows without a published
    number."""
    frame = results_frame(records)
    frame = frame[frame.condition == ORIGIN].drop_duplicates(["model", "dataset"], keep="last")
    rows, missing = [], []
    for row in frame.itertuples():
        cell = cells_of(row.model).get(row.dataset)
        if cell is None:
            missing.append(f"{row.model} / {row.dataset}")
        published = (cell.miou, cell.pixel_accuracy) if cell else (None, None)
        rows.append({"model": row.model, "dataset": row.dataset, "mIoU": row.miou, "paper mIoU": published[0],
                     "mIoU - paper": _difference(row.miou, published[0]), "pixel acc": row.pixel_accuracy,
                     "paper pixel acc": published[1],
                     "pixel acc - paper": _difference(row.pixel_accuracy, published[1]),
                     "paper": f"{cell.table}: {cell.row}" if cell else "-"})
    out = pd.DataFrame(rows, columns=["model", "dataset", "mIoU", "paper mIoU", "mIoU - paper", "pixel acc",
                                      "paper pixel acc", "pixel acc - paper", "paper"])
    for column in ("paper mIoU", "paper pixel acc"):
        out[column] = out[column].astype(float)
    return out, missing

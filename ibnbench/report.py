"""Table-1-shaped reports from result records, optionally next to the paper's published numbers.

Rows are conditions, columns are models, cells ``top1/top5 (drop1/drop5)`` with the drop measured
against the ``origin`` row. Reports only read records; they never run models.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from . import imagenet_c
from .results import Record, RecordError, find_records, read_record

FORMATS = ("markdown", "csv", "json", "latex", "html")

# Pan et al., ECCV 2018, Table 1: top-1/top-5 error (%) on ImageNet val under appearance transforms.
# Only the cells quoted in ibnbench's design brief are transcribed; the others are left blank (None)
# rather than guessed. Drops are derived from these absolute errors.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float] | None]] = {
    "resnet50": {"origin": (24.27, 7.08), "rgb+50": None, "r+50": None,
                 "std*1.5": (24.27 + 15.74, 7.08 + 12.00), "monet": (24.27 + 30.24, 7.08 + 22.24)},
    "resnet50_ibn_a": {"origin": (22.54, 6.32), "rgb+50": None, "r+50": None, "std*1.5": None, "monet": None},
    "resnet50_ibn_b": {"origin": (23.64, 6.86), "rgb+50": None, "r+50": None,
                       "std*1.5": (23.64, 6.86), "monet": (23.64 + 26.81, 6.86 + 18.36)},
}
PAPER_LABELS = {"resnet50": "ResNet50", "resnet50_ibn_a": "IBN-Net50-a", "resnet50_ibn_b": "IBN-Net50-b"}


def load_records(paths: Sequence[str | Path]) -> list[Record]:
    """Records from files and directories (``*.json`` below them)."""
    records = [read_record(p) for p in find_records(list(paths))]
    if not records:
        raise RecordError(f"no result records found in {', '.join(map(str, paths))}")
    return records


def results_frame(records: Sequence[Record]) -> pd.DataFrame:
    """All rows of all records, later records overriding earlier ones for the same (model, condition)."""
    frames = [r.to_frame() for r in records]
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates(["model", "condition"], keep="last")


def _cell(top1: float, top5: float, drop1: float | None = None, drop5: float | None = None) -> str:
    text = f"{top1:.2f}/{top5:.2f}"
    if drop1 is not None and not math.isnan(drop1):
        text += f" ({drop1:.2f}/{drop5:.2f})"
    return text


def table1(records: Sequence[Record], vs: str | None = None) -> pd.DataFrame:
    """The Table-1 layout as a DataFrame of strings (rows: condition labels, columns: models)."""
    frame = results_frame(records)
    order = list(dict.fromkeys(c["id"] for r in records for c in r.conditions))
    labels = {c["id"]: c.get("label", c["id"]) for r in records for c in r.conditions}
    models = list(dict.fromkeys(frame.model))
    table: dict[str, dict[str, str]] = {}
    for model in models:
        rows = frame[frame.model == model].set_index("condition")
        column: dict[str, str] = {}
        for cond in order:
            if cond not in rows.index:
                column[cond] = "not run"
                continue
            row = rows.loc[cond]
            drop = (row.drop_top1, row.drop_top5) if cond != "origin" else (None, None)
            column[cond] = _cell(row.top1_err, row.top5_err, *drop)
        table[model] = column
        if vs == "paper" and model in PAPER_TABLE1:
            paper = PAPER_TABLE1[model]
            base = paper["origin"]
            table[f"{PAPER_LABELS[model]} (paper)"] = {
                c: "-" if paper.get(c) is None else _cell(*paper[c], *((paper[c][0] - base[0], paper[c][1] - base[1])
                                                                        if c != "origin" else (None, None)))
                for c in order}
            table[f"{model} - paper (top1/top5)"] = {
                c: "-" if paper.get(c) is None or c not in rows.index
                else f"{rows.loc[c].top1_err - paper[c][0]:+.2f}/{rows.loc[c].top5_err - paper[c][1]:+.2f}"
                for c in order}
    out = pd.DataFrame(table, index=order)
    out.index = [labels.get(c, c) for c in order]
    out.index.name = "condition"
    return out


def imagenet_c_tables(records: Sequence[Record]) -> dict[str, pd.DataFrame]:
    """The ImageNet-C layout per model (corruptions x severities, CE, mCE; see :mod:`ibnbench.imagenet_c`)."""
    return {model: imagenet_c.model_table(errors) for model, errors in imagenet_c.record_errors(records).items()}


def layout(records: Sequence[Record]) -> dict[str, pd.DataFrame]:
    """The report's tables: one ImageNet-C table per model for ImageNet-C records, else the one Table-1 table."""
    return imagenet_c_tables(records) if imagenet_c.is_imagenet_c(records) else {"": table1(records)}


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Format a report table as markdown (tabulate), csv, json, latex or html."""
    if fmt == "markdown":
        return tabulate(table, headers="keys", tablefmt="github", floatfmt=".2f")
    if fmt == "csv":
        return table.to_csv()
    if fmt == "json":
        return table.to_json(orient="index", indent=1)
    if fmt == "latex":
        return tabulate(table, headers="keys", tablefmt="latex_booktabs", floatfmt=".2f")
    if fmt == "html":
        return tabulate(table, headers="keys", tablefmt="html")
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def report(results: Sequence[str | Path], format: str = "markdown", vs: str | None = None,
           output: str | Path | None = None) -> str:
    """Render the Table-1 report of the given records (files or directories); write it to ``output`` if given."""
    if vs not in (None, "paper"):
        raise ValueError(f"--vs accepts only 'paper', not {vs!r}")
    records = load_records(results)
    footer = "\n".join(_provenance(r) for r in records)
    if imagenet_c.is_imagenet_c(records):
        if vs is not None:
            raise ValueError("--vs paper compares with IBN-Net's Table 1; these are ImageNet-C records")
        tables = imagenet_c_tables(records)
        text = "\n\n".join((f"{model}\n\n" if format == "markdown" else "") + render(t, format)
                           for model, t in tables.items())
        if format == "markdown":
            text += ("\n\nCells: top-1 error %. CE: error summed over severities / AlexNet's (x100); mCE: mean CE over "
                     "the 15 corruptions; relative: over the increase against the clean error; the unnormalised mean "
                     f"error is not an mCE.\n{footer}")
    else:
        text = render(table1(records, vs=vs), format)
        if format == "markdown":
            text = f"{text}\n\nCells: top-1/top-5 error % (drop against origin).\n{footer}"
    if output:
        Path(output).write_text(text + "\n")
    return text


def _provenance(record: Record) -> str:
    ds = record.dataset
    subset = " (subset)" if ds.get("subset") else ""
    return (f"- {Path(record.path).name if record.path else 'record'}: suite {record.suite}@{record.suite_hash[:8]}, "
            f"{ds.get('n_images')} images{subset}, dataset {str(ds.get('sha256', ''))[:8]}, "
            f"{record.environment.get('device', '?')} {record.environment.get('dtype', '')}, {record.created[:10]}")

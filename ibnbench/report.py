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

from . import paper
from .files import write_atomic
from .results import Record, RecordError, find_records, read_record

FORMATS = ("markdown", "csv", "json", "latex", "html")


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
    if vs == "paper":
        table.update(_paper_columns(frame, models, order))
    out = pd.DataFrame(table, index=order)
    out.index = [labels.get(c, c) for c in order]
    out.index.name = "condition"
    return out


def _paper_column_name(cell: paper.PaperCell) -> str:
    return f"{cell.label} (paper Table {cell.table}: {cell.model})"


def _paper_columns(frame: pd.DataFrame, models: Sequence[str], order: Sequence[str]) -> dict[str, dict[str, str]]:
    """The paper's cells beside ours: all of Table 1 when the record holds any of its conditions, the cells of
    each model's paper implementation otherwise, and per model the difference ``ours - paper``, labelled with
    the implementation the paper's number comes from when that is not the model itself."""
    columns: dict[str, dict[str, str]] = {}

    def add(cells: dict[str, paper.PaperCell]) -> None:
        any_cell = next(iter(cells.values()))
        columns[_paper_column_name(any_cell)] = {
            c: "-" if c not in cells else cells[c].text(with_delta=c != "origin") for c in order}

    table1 = paper.cells(1)
    if any(c.condition in order for c in table1):
        for model in dict.fromkeys(c.model for c in table1):
            add(paper.cells_of(model))
    for model in models:
        source = paper.implementation(model)
        cells = {c: cell for c, cell in paper.cells_of(source).items() if c in order}
        if not cells:
            continue
        add(cells)
        rows = frame[frame.model == model].set_index("condition")
        other = "" if source == model else f", other implementation: {source}"
        columns[f"{model} - paper{other} (top1/top5)"] = {
            c: "-" if c not in cells or c not in rows.index
            else f"{rows.loc[c].top1_err - cells[c].top1:+.2f}/{rows.loc[c].top5_err - cells[c].top5:+.2f}"
            for c in order}
    return columns


def numbers(records: Sequence[Record], vs: str | None = None) -> pd.DataFrame:
    """The report as numbers, one row per (model, condition) in Table-1 order: errors, drops against origin
    and, with ``vs="paper"``, the paper's errors and our difference from them (NaN where it has none)."""
    frame = results_frame(records)
    order = list(dict.fromkeys(c["id"] for r in records for c in r.conditions))
    labels = {c["id"]: c.get("label", c["id"]) for r in records for c in r.conditions}
    models = {m: i for i, m in enumerate(dict.fromkeys(frame.model))}
    frame = frame.assign(label=frame.condition.map(lambda c: labels.get(c, c)),
                         model_rank=frame.model.map(models),
                         rank=frame.condition.map({c: i for i, c in enumerate(order)}))
    frame = frame.sort_values(["model_rank", "rank"], kind="stable")
    columns = ["model", "condition", "label", "n_images", "top1_err", "top5_err", "drop_top1", "drop_top5"]
    frame = frame[columns].reset_index(drop=True)
    if vs == "paper":
        cells = [paper.cells_of(paper.implementation(m)).get(c) for m, c in zip(frame.model, frame.condition)]
        frame["paper_model"] = [cell.model if cell else None for cell in cells]
        for metric in ("top1", "top5"):
            frame[f"paper_{metric}_err"] = [getattr(cell, metric) if cell else math.nan for cell in cells]
            frame[f"diff_{metric}"] = frame[f"{metric}_err"] - frame[f"paper_{metric}_err"]
    return frame


def paper_warnings(records: Sequence[Record]) -> list[str]:
    """Why numbers of ``records`` placed beside the paper's are not like for like: random weights, a subset."""
    warnings = []
    for record in records:
        name = Path(record.path).name if record.path else "record"
        in_paper = [m for m in record.models if paper.cells_of(paper.implementation(m))]
        for model in in_paper:
            if record.models[model].get("weights") in (None, "random"):
                warnings.append(f"warning: {name}: {model} has random weights; the paper's numbers are for "
                                "trained models")
        n = record.dataset.get("n_images")
        if record.dataset.get("subset", True) and in_paper:
            warnings.append(f"warning: {name} was run on {n} images, the paper on the full 50,000 ImageNet val "
                            "images: differences include sampling noise")
    return warnings


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Format a report table as markdown (tabulate), csv, json, latex or html."""
    if fmt == "markdown":
        return tabulate(table, headers="keys", tablefmt="github")
    if fmt == "csv":
        return table.to_csv()
    if fmt == "json":
        return table.to_json(orient="index", indent=1)
    if fmt == "latex":
        return tabulate(table, headers="keys", tablefmt="latex_booktabs")
    if fmt == "html":
        return tabulate(table, headers="keys", tablefmt="html")
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def report(results: Sequence[str | Path], format: str = "markdown", vs: str | None = None,
           output: str | Path | None = None) -> str:
    """Render the Table-1 report of the given records (files or directories); write it to ``output`` if given."""
    if vs not in (None, "paper"):
        raise ValueError(f"--vs accepts only 'paper', not {vs!r}")
    records = load_records(results)
    if format in ("csv", "json"):  # machine-readable: numbers, one row per (model, condition)
        frame = numbers(records, vs=vs)
        text = frame.to_csv(index=False) if format == "csv" else frame.to_json(orient="records", indent=1)
    else:
        text = render(table1(records, vs=vs), format)
    footer = "\n".join(_provenance(r) for r in records)
    if format == "markdown":
        warnings = "".join(f"\n{w}" for w in paper_warnings(records)) if vs == "paper" else ""
        text = f"{text}\n\nCells: top-1/top-5 error % (drop against origin).\n{footer}{warnings}"
    if output:
        write_atomic(output, text + "\n", what="report")
    return text


def _provenance(record: Record) -> str:
    ds = record.dataset
    subset = " (subset)" if ds.get("subset") else ""
    return (f"- {Path(record.path).name if record.path else 'record'}: suite {record.suite}@{record.suite_hash[:8]}, "
            f"{ds.get('n_images')} images{subset}, dataset {str(ds.get('sha256', ''))[:8]}, "
            f"{record.environment.get('device', '?')} {record.environment.get('dtype', '')}, {record.created[:10]}")

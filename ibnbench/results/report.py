"""Reports of result records: a :class:`Report` of sections (a table and the note that explains it), built once
from records already read and rendered as text, markdown, csv, JSON, LaTeX or HTML.

The main table has the Table-1 layout, optionally next to the paper's published numbers: rows are conditions,
columns are models, cells ``top1/top5 (drop1/drop5)`` with the drop measured against the ``origin`` row;
ImageNet-C records get a corruptions x severities table per model instead. ``--ci`` and ``--pairs`` add the
statistics tables of :mod:`ibnbench.results.pairs`. Reports only read records; they never run models.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from ibnbench.errors import UsageError
from ibnbench.io import write_atomic
from ibnbench.results.loading import load_records, require_mergeable, results_frame
from ibnbench.results.pairs import CI_NOTE, CONSISTENCY_NOTE, PAIRS_NOTE, consistency, pair_tests, statistics
from ibnbench.results.record import Record, condition_labels

from . import imagenet_c, imagenet_p, paper

FORMATS = ("text", "markdown", "csv", "json", "latex", "html")
"""What a report renders as: text and markdown tables with titles and notes, csv (numbers), one JSON document,
LaTeX tables, an HTML fragment with titles and notes."""
TABLE_FORMATS = {"text": "simple", "markdown": "github", "latex": "latex_booktabs", "html": "html"}
"""The tabulate format of each format that tabulate draws."""
TABLE1_NOTE = "Cells: top-1/top-5 error % (drop against origin)."
IMAGENET_C_NOTE = ("Cells: top-1 error %. CE: error summed over severities / AlexNet's (x100); mCE: mean CE over "
                   "the 15 corruptions; relative: over the increase against the clean error; the unnormalised mean "
                   "error is not an mCE.")
IMAGENET_C_BAR_NOTE = ("Cells: top-1 error %; mean: the mean error per corruption over the severities run. CE-bar "
                       "and mCE-bar only with --baseline MODEL or --baseline-constants FILE: error summed over "
                       "severities / the baseline's (x100), and its mean over the 10 corruptions.")


def _cell(top1: float, top5: float, drop1: float | None = None, drop5: float | None = None) -> str:
    text = f"{top1:.2f}/{top5:.2f}"
    if drop1 is not None and not math.isnan(drop1):
        text += f" ({drop1:.2f}/{drop5:.2f})"
    return text


def table1(records: Sequence[Record], vs: str | None = None) -> pd.DataFrame:
    """The Table-1 layout as a DataFrame of strings (rows: condition labels, columns: models)."""
    frame = results_frame(records)
    order = list(condition_labels(records))
    labels = condition_labels(records)
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
    order = list(condition_labels(records))
    labels = condition_labels(records)
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


def keyed(table: pd.DataFrame, keys: Sequence[str], fmt: str = "markdown") -> pd.DataFrame:
    """Index a long table for :func:`render`: by its first key column in text and markdown (the others stay
    columns), by all keys joined with " / " otherwise, so that each csv, LaTeX or HTML row is named once."""
    keys = list(keys)
    if fmt in ("text", "markdown"):
        return table.set_index(keys[0])
    out = table.drop(columns=keys)
    out.index = pd.Index([" / ".join(map(str, k)) for k in table[keys].itertuples(index=False)], name=" / ".join(keys))
    return out


def imagenet_c_tables(records: Sequence[Record], baseline: str | None = None,
                      baseline_constants: str | None = None) -> dict[str, pd.DataFrame]:
    """The ImageNet-C layout per model (corruptions x severities, CE, mCE; see :mod:`ibnbench.results.imagenet_c`),
    or the ImageNet-C-bar one (corruptions x severities, mean per corruption; CE-bar and mCE-bar normalised by the
    ``baseline`` model of the records, or by the constants of the file ``baseline_constants``) for C-bar records."""
    return _corruption_tables(records, _normaliser(records, baseline, baseline_constants)[0])


def _normaliser(records: Sequence[Record], baseline: str | None,
                baseline_constants: str | None) -> tuple[dict[str, float] | None, str]:
    """:func:`c_bar_normaliser` when a baseline is given; else no normaliser."""
    if baseline is None and baseline_constants is None:
        return None, ""
    return c_bar_normaliser(records, imagenet_c.record_errors(records), baseline, baseline_constants)


def _corruption_tables(records: Sequence[Record], normaliser: dict[str, float] | None) -> dict[str, pd.DataFrame]:
    """Each model's corruption table; C-bar's normalised by ``normaliser`` when given."""
    errors = imagenet_c.record_errors(records)
    if normaliser is not None:
        return {model: imagenet_c.c_bar_table(model_errors, normaliser) for model, model_errors in errors.items()}
    table = imagenet_c.c_bar_table if imagenet_c.is_imagenet_c_bar(records) else imagenet_c.model_table
    return {model: table(model_errors) for model, model_errors in errors.items()}


def c_bar_normaliser(records: Sequence[Record], errors: dict[str, dict[str, float]], baseline: str | None,
                     baseline_constants: str | None) -> tuple[dict[str, float], str]:
    """The baseline's mean error per C-bar corruption: the ``baseline`` model's in the records, or the constants of
    the file ``baseline_constants`` (one of the two), and a line naming it; refused for records that are not
    C-bar's."""
    option = "--baseline" if baseline is not None else "--baseline-constants"
    if baseline is not None and baseline_constants is not None:
        raise UsageError("give --baseline MODEL or --baseline-constants FILE, not both")
    if not imagenet_c.is_imagenet_c_bar(records):
        raise UsageError(f"{option} normalises ImageNet-C-bar records (ImageNet-C's CE is normalised by AlexNet's "
                         "published errors)")
    if baseline_constants is not None:
        constants = imagenet_c.c_bar_constants(baseline_constants)
        named = f" ({constants.model})" if constants.model else ""
        return constants.tables.get("errors", {}), f"CE-bar normalised by the constants of {constants.path}{named}."
    if baseline not in errors:
        raise UsageError(f"--baseline {baseline}: no such model in the records (models: {', '.join(errors)})")
    return imagenet_c.c_bar_normaliser(errors[baseline]), f"CE-bar normalised by model {baseline} of the records."


def _corruption_note(records: Sequence[Record]) -> str | None:
    """The note under corruption tables: ImageNet-C's or C-bar's; None for other records (the Table-1 layout)."""
    if imagenet_c.is_imagenet_c(records):
        return IMAGENET_C_NOTE
    return IMAGENET_C_BAR_NOTE if imagenet_c.is_imagenet_c_bar(records) else None


def layout(records: Sequence[Record]) -> dict[str, pd.DataFrame]:
    """The report's tables: one corruption table per model for ImageNet-C or C-bar records, else the one Table-1
    table."""
    return imagenet_c_tables(records) if _corruption_note(records) else {"": table1(records)}


def _as_text(value: object) -> object:
    """Numbers as they are printed: two decimals, "-" for a missing one; strings stay as written."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return value


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Format one table as text or markdown (tabulate), csv, json, latex or html."""
    if fmt == "csv":
        return table.to_csv()
    if fmt == "json":
        return table.to_json(orient="index", indent=1)
    tablefmt = TABLE_FORMATS.get(fmt)
    if tablefmt is None:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    # cells are formatted strings ("28.00" stays as written); numbers get two decimals
    return tabulate(table.map(_as_text), headers="keys", tablefmt=tablefmt, disable_numparse=True)


def provenance(record: Record) -> str:
    """The report's line naming where ``record``'s numbers come from (file, suite, images, data, device, date)."""
    ds = record.dataset
    subset = " (subset)" if ds.get("subset") else ""
    return (f"- {Path(record.path).name if record.path else 'record'}: suite {record.suite}@{record.suite_hash[:8]}, "
            f"{ds.get('n_images')} images{subset}, dataset {str(ds.get('sha256', ''))[:8]}, "
            f"{record.environment.get('device', '?')} {record.environment.get('dtype', '')}, {record.created[:10]}")


@dataclass(frozen=True)
class Section:
    """One part of a report: a titled table and the note that explains it. ``table`` is what text, markdown,
    LaTeX and HTML show; ``numbers``, where given, the same rows as numbers for csv and JSON; ``keys``, the columns
    that name a row of a long table (see :func:`keyed`)."""

    title: str
    table: pd.DataFrame
    note: str = ""
    numbers: pd.DataFrame | None = None
    keys: tuple[str, ...] = ()

    def shown(self, fmt: str) -> pd.DataFrame:
        """The table as ``fmt`` shows it: a long table indexed by its keys."""
        return keyed(self.table, self.keys, fmt) if self.keys else self.table

    def rows(self) -> list[dict]:
        """The rows for JSON: numbers where the section has them, the index as a column, NaN as null."""
        frame = self.numbers if self.numbers is not None else self.table
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        return json.loads(frame.to_json(orient="records"))


@dataclass(frozen=True)
class Report:
    """A report built once from records: its sections in order, and the warnings to print beside it (the paper's
    numbers are not like for like with these records)."""

    sections: tuple[Section, ...]
    warnings: tuple[str, ...] = ()

    def render(self, fmt: str = "markdown") -> str:
        """The report as one string in ``fmt`` (one of :data:`FORMATS`)."""
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if fmt == "json":
            return json.dumps({"sections": [{"title": s.title, "note": s.note, "rows": s.rows()}
                                            for s in self.sections], "warnings": list(self.warnings)}, indent=1)
        if fmt == "csv":
            return "\n\n".join(s.numbers.to_csv(index=False) if s.numbers is not None else render(s.shown(fmt), fmt)
                               for s in self.sections)
        if fmt == "html":
            return "\n".join(_html_section(s) for s in self.sections)
        if fmt == "latex":
            return "\n\n".join(render(s.shown(fmt), fmt) for s in self.sections)
        return "\n\n".join(_text_section(s, fmt) for s in self.sections)


def _text_section(section: Section, fmt: str) -> str:
    """A section in text or markdown: the title (a markdown heading, or underlined), the table, the note."""
    title = section.title
    head = "" if not title else f"### {title}\n\n" if fmt == "markdown" else f"{title}\n{'=' * len(title)}\n\n"
    note = f"\n\n{section.note}" if section.note else ""
    return f"{head}{render(section.shown(fmt), fmt)}{note}"


def _html_section(section: Section) -> str:
    """A section in HTML: the title as a heading, the table, the note as a paragraph (its lines kept)."""
    head = f"<h3>{html.escape(section.title)}</h3>\n" if section.title else ""
    note = "<br>\n".join(map(html.escape, section.note.splitlines()))
    return f"{head}{render(section.shown('html'), 'html')}\n" + (f"<p>{note}</p>\n" if note else "")


def build_report(records: Sequence[Record], vs: str | None = None, ci: bool = False, pairs: bool = False,
                 baseline: str | None = None, baseline_constants: str | Path | None = None,
                 allow_generator_mismatch: bool = False) -> Report:
    """The report of ``records`` (read once, by :func:`~ibnbench.results.loading.load_records`): the Table-1 table
    (with ``vs="paper"``, the paper's cells and our differences beside it) or, for ImageNet-C and C-bar records, a
    table per model (C-bar's normalised by the ``baseline`` model, or the constants of the file
    ``baseline_constants``, when given); for ImageNet-P records, FP and T5D per model and perturbation (FR, mFR
    and mT5D normalised by the ``baseline`` model or the ``baseline_constants`` file,
    :mod:`ibnbench.results.imagenet_p`); ``ci`` adds, per metric, the
    intervals, paired drop intervals and McNemar tests; ``pairs`` adds model-vs-model tests per condition and the
    error-consistency matrices. Records whose benchmark generators differ are refused unless
    ``allow_generator_mismatch`` (then the notes and warnings say so)."""
    if vs not in (None, "paper"):
        raise UsageError(f"--vs accepts only 'paper', not {vs!r}")
    mismatch = require_mergeable(records, allow_generator_mismatch)
    footer = "\n".join([*(provenance(r) for r in records), *mismatch])
    against_paper = tuple(paper_warnings(records)) if vs == "paper" else ()
    corruption_note = _corruption_note(records)
    if imagenet_p.is_imagenet_p(records):
        if vs is not None:
            raise UsageError("--vs paper compares with IBN-Net's Table 1; these are ImageNet-P records")
        sections = imagenet_p_sections(records, baseline, baseline_constants, footer)
    elif corruption_note:
        if vs is not None:
            benchmark = "ImageNet-C" if corruption_note == IMAGENET_C_NOTE else "ImageNet-C-bar"
            raise UsageError(f"--vs paper compares with IBN-Net's Table 1; these are {benchmark} records")
        normaliser, normalised_by = _normaliser(records, baseline, baseline_constants)
        tables = list(_corruption_tables(records, normaliser).items())
        note = "\n".join(filter(None, [corruption_note, normalised_by, footer]))
        sections = [Section(model, table, note if i == len(tables) - 1 else "")
                    for i, (model, table) in enumerate(tables)]
    elif baseline is not None or baseline_constants is not None:
        option = "--baseline" if baseline is not None else "--baseline-constants"
        raise UsageError(f"{option} normalises ImageNet-C-bar and ImageNet-P records; these are not")
    else:
        note = "\n".join([f"{TABLE1_NOTE}\n{footer}", *against_paper])
        sections = [Section("", table1(records, vs=vs), note, numbers=numbers(records, vs=vs))]
    if ci:
        sections += _ci_sections(records)
    if pairs:
        sections += _pairs_sections(records)
    return Report(tuple(sections), (*mismatch, *against_paper))


def imagenet_p_sections(records: Sequence[Record], baseline: str | None, constants: str | Path | None,
                        footer: str) -> list[Section]:
    """ImageNet-P's sections: the models' means (mFR, mT5D with a baseline), then per model FP and T5D per
    perturbation; normalised by the ``baseline`` model of the records or the ``constants`` file."""
    if baseline is not None and constants is not None:
        raise UsageError("give --baseline MODEL or --baseline-constants FILE, not both")
    found, difficulty = imagenet_p.scores(records)
    base = (imagenet_p.model_baseline(records, found, baseline) if baseline is not None
            else imagenet_p.read_baseline_constants(constants, difficulty) if constants is not None else None)
    title = f"ImageNet-P at difficulty {difficulty}" + (f", normalised by {base.source}" if base else "")
    tables = [(model, imagenet_p.model_table(by_name, base)) for model, by_name in found.items()]
    return [Section(title, imagenet_p.summary_table(found, base)),
            *(Section(model, table, f"{imagenet_p.NOTE}\n{footer}" if i == len(tables) - 1 else "")
              for i, (model, table) in enumerate(tables))]


def _ci_sections(records: Sequence[Record]) -> list[Section]:
    """Per metric, each error's interval and each drop's paired test against origin; the note under the last."""
    return [Section(f"{metric} error with 95% intervals and paired tests against origin",
                    statistics(records, metric), CI_NOTE if metric == "top5" else "",
                    keys=("model", "condition"))
            for metric in ("top1", "top5")]


def _pairs_sections(records: Sequence[Record]) -> list[Section]:
    """Model vs model under each condition, then the error-consistency matrix of each condition."""
    labels = condition_labels(records)
    done = list(dict.fromkeys(row["condition"] for r in records for row in r.results))
    return [Section("top1 model vs model under each condition", pair_tests(records), PAIRS_NOTE,
                    keys=("condition", "model A", "model B")),
            *(Section(f"error consistency (kappa, top1) under {labels.get(c, c)}", consistency(records, c),
                      CONSISTENCY_NOTE if c == done[-1] else "") for c in done)]


def report(results: Sequence[str | Path | Record], format: str = "markdown", vs: str | None = None,
           output: str | Path | None = None, ci: bool = False, pairs: bool = False, baseline: str | None = None,
           baseline_constants: str | Path | None = None, allow_generator_mismatch: bool = False) -> str:
    """The rendered report of the given records (files, directories or records already read; see
    :func:`build_report`), written to ``output`` too if given."""
    text = build_report(load_records(results), vs=vs, ci=ci, pairs=pairs, baseline=baseline,
                        baseline_constants=baseline_constants,
                        allow_generator_mismatch=allow_generator_mismatch).render(format)
    if output:
        write_atomic(output, text + "\n", what="report")
    return text

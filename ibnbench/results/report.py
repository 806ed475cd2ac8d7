"""Table-1-shaped reports from result records, optionally next to the paper's published numbers.

Rows are conditions, columns are models, cells ``top1/top5 (drop1/drop5)`` with the drop measured
against the ``origin`` row. Reports only read records; they never run models.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from ibnbench.errors import RecordError, UsageError
from ibnbench.io import write_atomic
from ibnbench.results.record import Record, condition_labels, find_records, read_record

from . import imagenet_c, paper, predictions, stats

FORMATS = ("markdown", "csv", "json", "latex", "html")


def load_records(paths: Sequence[str | Path]) -> list[Record]:
    """Records from files and directories (``*.json`` below them); a record holding invalid numbers (NaN, out of
    range, no image scored) is refused, naming it: reports, boards and plots show valid numbers only."""
    records = [read_record(p) for p in find_records(list(paths))]
    if not records:
        raise RecordError(f"no result records found in {', '.join(map(str, paths))}")
    for record in records:
        require_valid(record)
    return records


def require_valid(record: Record) -> Record:
    """``record`` if its numbers are valid; else a :class:`RecordError` naming it and each invalid result."""
    if problems := record.problems():
        raise RecordError(f"{record.path or 'record'}: invalid result(s): {'; '.join(problems)} (`ibnbench check` "
                          "marks them INVALID)")
    return record


def require_mergeable(records: Sequence[Record]) -> None:
    """Refuse to merge records that hold the same model but are incomparable (other data, suite definition or
    preprocessing): one model's column would mix their numbers. Names both files and the reasons."""
    for a, b in itertools.combinations(records, 2):
        shared = sorted(set(a.models) & set(b.models))
        reasons = a.comparable_with(b) if shared else []
        if reasons:
            raise RecordError(f"{a.path or 'record'} and {b.path or 'record'} both hold {shared[0]} but cannot be "
                              f"merged: {'; '.join(reasons)}; report them apart")


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


def cell_interval(row: pd.Series | dict, metric: str = "top1") -> tuple[float, float]:
    """Clopper-Pearson 95% interval (fractions) of a result row's error from its count of wrong images."""
    n = int(row["n_images"])
    return stats.clopper_pearson(round(row[f"{metric}_err"] * n / 100), n)


def _sources(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    """The record each (model, condition) result comes from (later records win, as in :func:`results_frame`)."""
    return {(row["model"], row["condition"]): record for record in records for row in record.results}


def _pair(first: tuple[Record, str, str], second: tuple[Record, str, str], metric: str) -> stats.Paired | None:
    """Paired counts of two (record, model, condition) answer sets; None without per-image answers on the
    same images."""
    (ra, ma, ca), (rb, mb, cb) = first, second
    a, b = ra.answers(ma, ca, metric), rb.answers(mb, cb, metric)
    if a is None or b is None or ra.per_image.get("files") != rb.per_image.get("files"):
        return None
    return stats.paired(a, b)


def paired_drop(records: Sequence[Record], model: str, condition: str, metric: str = "top1") -> stats.Paired | None:
    """Paired counts of ``model`` at the origin vs under ``condition`` (None without per-image answers)."""
    sources = _sources(records)
    if (model, "origin") not in sources or (model, condition) not in sources:
        return None
    return _pair((sources[model, "origin"], model, "origin"), (sources[model, condition], model, condition), metric)


def ece_cells(stored: predictions.Predictions | predictions.DatasetPredictions | None, model: str,
              condition: str) -> dict[str, str]:
    """The ECE of a (model, condition) from its stored predictions, its bootstrap interval and the ECE a
    calibrated model with the same confidences shows (mean [95% range]), in percent; "-" without predictions."""
    if stored is None:
        return {"ECE %": "-", "ECE 95% CI": "-", "ECE if calibrated": "-"}
    found = stats.ece_uncertainty(stored.confidence(model, condition), stored.correct(model, condition))
    return {"ECE %": f"{100 * found.ece:.2f}", "ECE 95% CI": stats.format_interval(*found.interval),
            "ECE if calibrated": f"{100 * found.calibrated_mean:.2f} {stats.format_interval(*found.calibrated_range)}"}


def statistics(records: Sequence[Record], metric: str = "top1") -> pd.DataFrame:
    """One row per (model, condition): the error with its Clopper-Pearson 95% interval, the drop against the
    origin with its paired (Tango) interval, the discordant counts, McNemar's p (condition vs origin, also
    Holm-adjusted over the table) and, for top-1, the ECE with its intervals where the record stores
    predictions (:func:`ece_cells`)."""
    frame = results_frame(records)
    sources = _sources(records)
    labels = condition_labels(records)
    stored = {id(r): predictions.for_record(r) if r.predictions else None for r in records} if metric == "top1" else {}
    rows = []
    for _, row in frame.iterrows():
        model, cond = row.model, row.condition
        lo, hi = cell_interval(row, metric)
        out = {"model": model, "condition": labels.get(cond, cond), f"{metric} err %": f"{row[f'{metric}_err']:.2f}",
               "95% CI (CP)": stats.format_interval(lo, hi), "drop": "", "paired 95% CI": "", "new err / fixed": "",
               "p": float("nan")}
        if cond != "origin" and (model, "origin") in sources:
            out["drop"] = f"{row[f'drop_{metric}']:+.2f}"
            counts = paired_drop(records, model, cond, metric)
            if counts is not None:
                out.update({"paired 95% CI": stats.format_interval(*counts.interval()),
                            "new err / fixed": f"{counts.b}/{counts.c}", "p": counts.pvalue})
        if metric == "top1":
            out.update(ece_cells(stored[id(sources[model, cond])], model, cond))
        rows.append(out)
    table = pd.DataFrame(rows)
    return _with_holm(table)


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """Replace the float ``p`` column, in place, by the McNemar p-value and its Holm adjustment over the table."""
    p = table.pop("p").astype(float)
    tested = p.notna()
    adjusted = pd.Series(float("nan"), index=table.index)
    adjusted[tested] = stats.holm(p[tested].to_numpy())
    position = table.columns.get_loc("new err / fixed") + 1 if "new err / fixed" in table else len(table.columns)
    table.insert(position, "p McNemar", p.map(stats.format_p))
    table.insert(position + 1, "p Holm", adjusted.map(stats.format_p))
    return table


def _pair_row(first: tuple[Record, str, str], second: tuple[Record, str, str], metric: str) -> dict:
    counts = _pair(first, second, metric)
    if counts is None:
        raise RecordError(f"{second[0].path or 'record'}: no per-image answers on the same images as "
                          f"{first[0].path or 'record'} for {first[1]} / {first[2]}: cannot pair them")
    return {"n": counts.n, "diff": f"{100 * counts.diff:+.2f}",
            "paired 95% CI": stats.format_interval(*counts.interval()), "A right, B wrong": counts.b,
            "A wrong, B right": counts.c, "p": counts.pvalue}


def pair_tests(records: Sequence[Record], metric: str = "top1") -> pd.DataFrame:
    """Every two models under each condition on the same images: B's error minus A's (points) with its paired
    (Tango) interval, the discordant counts and McNemar's p (Holm-adjusted over the table)."""
    sources = _sources(records)
    labels = condition_labels(records)
    models = list(dict.fromkeys(m for m, _ in sources))
    order = list(condition_labels(records))
    rows = [{"condition": labels.get(cond, cond), "model A": a, "model B": b,
             **_pair_row((sources[a, cond], a, cond), (sources[b, cond], b, cond), metric)}
            for cond in order for a, b in itertools.combinations(models, 2)
            if (a, cond) in sources and (b, cond) in sources]
    if not rows:
        raise RecordError("--pairs needs at least two models evaluated under the same condition")
    return _with_holm(pd.DataFrame(rows))


def consistency(records: Sequence[Record], condition: str, metric: str = "top1") -> pd.DataFrame:
    """Error consistency (Geirhos et al., 2020: kappa over per-image correctness) between every two models
    under ``condition``, as a models x models matrix."""
    sources = _sources(records)
    models = [m for m in dict.fromkeys(m for m, _ in sources) if (m, condition) in sources]
    matrix = pd.DataFrame(index=models, columns=models, dtype=float)
    for a in models:
        for b in models:
            ra, rb = sources[a, condition], sources[b, condition]
            answers = ra.answers(a, condition, metric), rb.answers(b, condition, metric)
            if any(x is None for x in answers) or ra.per_image.get("files") != rb.per_image.get("files"):
                continue
            both = (answers[0] >= 0) & (answers[1] >= 0)
            matrix.loc[a, b] = stats.error_consistency(answers[0][both] == 1, answers[1][both] == 1)
    return matrix.round(3)


def compare(first: str | Path | Record, second: str | Path | Record, metric: str = "top1") -> pd.DataFrame:
    """``ibnbench compare A.json B.json``: every model of A against every model of B under each shared
    condition, paired on the same images (McNemar, Holm-adjusted over the table)."""
    a = require_valid(first if isinstance(first, Record) else read_record(first))
    b = require_valid(second if isinstance(second, Record) else read_record(second))
    reasons = a.comparable_with(b)
    if reasons:
        raise RecordError(f"cannot compare {a.path or 'A'} with {b.path or 'B'}: {'; '.join(reasons)}")
    labels = condition_labels([a])
    done_b = {(r["model"], r["condition"]) for r in b.results}
    rows = [{"condition": labels.get(ra["condition"], ra["condition"]), "model A": ra["model"], "model B": mb,
             f"A {metric} err %": ra[f"{metric}_err"],
             f"B {metric} err %": b.result(mb, ra["condition"])[f"{metric}_err"],
             **_pair_row((a, ra["model"], ra["condition"]), (b, mb, ra["condition"]), metric)}
            for ra in a.results for mb in b.models if (mb, ra["condition"]) in done_b]
    if not rows:
        raise RecordError(f"{a.path or 'A'} and {b.path or 'B'} share no condition")
    return _with_holm(pd.DataFrame(rows))


def keyed(table: pd.DataFrame, keys: list[str], fmt: str = "markdown") -> pd.DataFrame:
    """Index a long table for :func:`render`: by its first key column in markdown (the others stay columns), by
    all keys joined with " / " otherwise, so that csv and json rows stay unique."""
    if fmt == "markdown":
        return table.set_index(keys[0])
    out = table.drop(columns=keys)
    out.index = pd.Index([" / ".join(map(str, k)) for k in table[keys].itertuples(index=False)], name=" / ".join(keys))
    return out


def imagenet_c_tables(records: Sequence[Record]) -> dict[str, pd.DataFrame]:
    """The ImageNet-C layout per model (corruptions x severities, CE, mCE; see :mod:`ibnbench.results.imagenet_c`)."""
    return {model: imagenet_c.model_table(errors) for model, errors in imagenet_c.record_errors(records).items()}


def layout(records: Sequence[Record]) -> dict[str, pd.DataFrame]:
    """The report's tables: one ImageNet-C table per model for ImageNet-C records, else the one Table-1 table."""
    return imagenet_c_tables(records) if imagenet_c.is_imagenet_c(records) else {"": table1(records)}


def _as_text(value: object) -> object:
    """Numbers as they are printed: two decimals, "-" for a missing one; strings stay as written."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return value


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Format a report table as markdown (tabulate), csv, json, latex or html."""
    if fmt == "csv":
        return table.to_csv()
    if fmt == "json":
        return table.to_json(orient="index", indent=1)
    tablefmt = {"markdown": "github", "latex": "latex_booktabs", "html": "html"}.get(fmt)
    if tablefmt is None:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    # cells are formatted strings ("28.00" stays as written); numbers get two decimals
    return tabulate(table.map(_as_text), headers="keys", tablefmt=tablefmt, disable_numparse=True)


CI_NOTE = ("95% CI (CP): Clopper-Pearson interval of the error. Paired 95% CI: Tango's score interval of the drop "
           "(paired difference of proportions; Tango 1998). New err / fixed: images right at the origin and "
           "wrong under the condition / the reverse. p McNemar: exact test on those two counts; p Holm: adjusted over "
           "the table. ECE: 15 equal-width confidence bins (schema-2 records)."
           f" ECE 95% CI: percentile bootstrap over the images ({stats.ECE_DRAWS} resamples, seed {stats.ECE_SEED});"
           " ECE if calibrated: the mean [95% range] of the ECE a perfectly calibrated model with the same confidences"
           " shows, so an ECE inside that range cannot be told apart from calibration at this number of images.")
PAIRS_NOTE = ("diff: B's error minus A's (points) on the same images, with Tango's paired score interval; p McNemar: "
              "exact test on the discordant images, p Holm adjusted over the table. Error consistency: Cohen's kappa "
              "over per-image correctness (1: the same images wrong; 0: no more overlap than the accuracies imply).")


def report(results: Sequence[str | Path], format: str = "markdown", vs: str | None = None,
           output: str | Path | None = None, ci: bool = False, pairs: bool = False) -> str:
    """Render the Table-1 report of the given records (files or directories); write it to ``output`` if given.

    ``ci`` adds, per metric, a table of intervals, paired drop intervals and McNemar tests; ``pairs`` adds
    model-vs-model tests per condition and the error-consistency matrices."""
    if vs not in (None, "paper"):
        raise UsageError(f"--vs accepts only 'paper', not {vs!r}")
    records = load_records(results)
    require_mergeable(records)
    footer = "\n".join(_provenance(r) for r in records)
    if imagenet_c.is_imagenet_c(records):
        if vs is not None:
            raise UsageError("--vs paper compares with IBN-Net's Table 1; these are ImageNet-C records")
        tables = imagenet_c_tables(records)
        text = "\n\n".join((f"{model}\n\n" if format == "markdown" else "") + render(t, format)
                           for model, t in tables.items())
        if format == "markdown":
            text += ("\n\nCells: top-1 error %. CE: error summed over severities / AlexNet's (x100); mCE: mean CE over "
                     "the 15 corruptions; relative: over the increase against the clean error; the unnormalised mean "
                     f"error is not an mCE.\n{footer}")
    else:
        if format in ("csv", "json"):  # machine-readable: numbers, one row per (model, condition)
            frame = numbers(records, vs=vs)
            text = frame.to_csv(index=False) if format == "csv" else frame.to_json(orient="records", indent=1)
        else:
            text = render(table1(records, vs=vs), format)
        markdown = format == "markdown"
        sections = []
        if ci:
            sections += [(f"{metric} error with 95% intervals and paired tests against origin",
                          render(keyed(statistics(records, metric), ["model", "condition"], format), format))
                         for metric in ("top1", "top5")]
            if markdown:
                sections.append(("", CI_NOTE))
        if pairs:
            sections.append(("top1 model vs model under each condition",
                             render(keyed(pair_tests(records), ["condition", "model A", "model B"], format), format)))
            labels = condition_labels(records)
            done = dict.fromkeys(row["condition"] for r in records for row in r.results)
            sections += [(f"error consistency (kappa, top1) under {labels.get(c, c)}",
                          render(consistency(records, c), format)) for c in done]
            if markdown:
                sections.append(("", PAIRS_NOTE))
        if markdown:
            warnings = "".join(f"\n{w}" for w in paper_warnings(records)) if vs == "paper" else ""
            text = f"{text}\n\nCells: top-1/top-5 error % (drop against origin).\n{footer}{warnings}"
            text += "".join(f"\n\n{'### ' + title + chr(10) * 2 if title else ''}{body}" for title, body in sections)
        else:
            text += "".join(f"\n\n{body}" for _, body in sections)
    if output:
        write_atomic(output, text + "\n", what="report")
    return text


def _provenance(record: Record) -> str:
    ds = record.dataset
    subset = " (subset)" if ds.get("subset") else ""
    return (f"- {Path(record.path).name if record.path else 'record'}: suite {record.suite}@{record.suite_hash[:8]}, "
            f"{ds.get('n_images')} images{subset}, dataset {str(ds.get('sha256', ''))[:8]}, "
            f"{record.environment.get('device', '?')} {record.environment.get('dtype', '')}, {record.created[:10]}")

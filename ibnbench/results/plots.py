"""Result plots: Table-1 drops as grouped bars, robustness curves for records of the ``sweep`` suite, and
ImageNet-P's flip probability per perturbation as grouped bars.

Plots read records, never run models, and draw with matplotlib's headless Agg backend. A curve's x
value (the severity) comes from the suite definition of each condition (its ``op`` and ``params()``),
never from parsing ids: records name conditions only, so ids are mapped back through the shipped suite,
whose hash must match the record's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ibnbench.conditions.perturbations import LABELS, PERTURBATIONS
from ibnbench.conditions.suite import Suite, read_suite
from ibnbench.errors import RecordError, UsageError
from ibnbench.io import write_atomic
from ibnbench.results import imagenet_p, stats
from ibnbench.results.loading import load_records, require_mergeable, results_frame
from ibnbench.results.pairs import paired_drop
from ibnbench.results.record import Record, condition_labels

SWEEP_SUITES = ("sweep",)
FAMILIES = {  # family: (panel title, x-axis label, the origin's x value)
    "brightness": ("Brightness: same offset on R, G, B", "offset (0..255 scale)", 0.0),
    "shift": ("Colour cast: one channel shifted", "offset of that channel (0..255 scale)", 0.0),
    "contrast": ("Contrast: std scaled about the mean", "std factor", 1.0),
    "style": ("Painting style", "", None),
}
CHANNEL_STYLES = {"R": ("-", "o"), "G": ("--", "s"), "B": (":", "^")}


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write atomically (format from the suffix, PNG by default) and close ``fig``; returns the path. A
    suffix matplotlib cannot write raises :class:`UsageError`, a path that cannot be written
    :class:`FileWriteError`, each naming the path."""
    plt = pyplot()
    path = Path(path)
    try:
        kind = path.suffix[1:].lower() or "png"
        formats = fig.canvas.get_supported_filetypes()
        if kind not in formats:
            raise UsageError(f"{path}: matplotlib cannot write .{kind} figures (use one of "
                             f"{', '.join('.' + k for k in sorted(formats))})")
        fig.tight_layout()
        write_atomic(path, lambda f: fig.savefig(f, format=kind, dpi=dpi, bbox_inches="tight"), what="figure")
    finally:
        plt.close(fig)
    return path


@dataclass(frozen=True)
class Severity:
    """Where a condition sits on a robustness curve: its ``family``, the curve within the family
    (``series``: "R"/"G"/"B" for a colour cast, the label for a style) and the x ``value``."""

    family: str
    series: str
    value: float | None


def severity(condition) -> Severity | None:
    """The curve position of a suite condition; None for the origin and for conditions outside the families
    (e.g. a shift of two channels)."""
    params = condition.params()
    if condition.op == "brightness":
        return Severity("brightness", "RGB", float(params["delta"]))
    if condition.op == "shift":
        offsets = params["offsets"]
        moved = [i for i, v in enumerate(offsets) if v != 0]
        if len(set(offsets)) == 1 and offsets[0] != 0:
            return Severity("brightness", "RGB", float(offsets[0]))
        if len(moved) == 1:
            return Severity("shift", "RGB"[moved[0]], float(offsets[moved[0]]))
        return None
    if condition.op == "contrast":
        return Severity("contrast", "", float(params["factor"]))
    if condition.op in ("style", "dir"):
        return Severity("style", condition.label, None)
    return None


def _suite_of(record: Record) -> Suite:
    suite = read_suite(record.suite)
    if suite.hash != record.suite_hash:
        raise RecordError(f"{record.path or 'record'}: made with suite {record.suite}@{record.suite_hash[:8]}, "
                          f"but the shipped {record.suite} is @{suite.hash[:8]}: its severities cannot be read")
    return suite


def sweep_frame(records: Sequence[Record]) -> pd.DataFrame:
    """One row per (model, curve point): ``model, condition, family, series, value, top1_err, top5_err``.

    The origin appears once in every family (x = 0 for offsets, 1 for contrast, category "origin" for
    styles); later records override earlier ones for the same (model, condition).
    """
    rows = []
    for record in records:
        suite = _suite_of(record)
        conditions = {c.id: c for c in suite}
        for result in record.results:
            condition = conditions.get(result["condition"])
            if condition is None:
                raise RecordError(f"{record.path or 'record'}: condition {result['condition']!r} is not in "
                                  f"suite {suite.name}")
            errors = {"model": result["model"], "condition": condition.id,
                      "top1_err": result["top1_err"], "top5_err": result["top5_err"]}
            if condition.op == "identity":
                points = [Severity(f, s, FAMILIES[f][2]) for f, series in
                          (("brightness", ["RGB"]), ("shift", list(CHANNEL_STYLES)), ("contrast", [""]),
                           ("style", ["origin"])) for s in series]
            else:
                points = [p for p in [severity(condition)] if p is not None]
            rows += [{**errors, "family": p.family, "series": p.series, "value": p.value} for p in points]
    frame = pd.DataFrame(rows, columns=["model", "condition", "family", "series", "value", "top1_err", "top5_err"])
    frame = frame.drop_duplicates(["model", "condition", "family", "series"], keep="last")
    measured = frame[frame.condition != "origin"]  # families with at least one condition beside the origin
    keep = set(zip(measured.model, measured.family))
    return frame[[(m, f) in keep for m, f in zip(frame.model, frame.family)]].reset_index(drop=True)


def drops_frame(records: Sequence[Record], metric: str = "top1") -> pd.DataFrame:
    """Error increase over ``origin`` in points: rows are condition labels (origin and conditions without
    results left out), columns models."""
    frame = results_frame(records)
    order = [c for c in condition_labels(records)
             if c != "origin" and c in set(frame.condition)]
    labels = condition_labels(records)
    table = frame.pivot(index="condition", columns="model", values=f"drop_{metric}")
    table = table.reindex(index=order, columns=list(dict.fromkeys(frame.model)))
    table.index = [labels.get(c, c) for c in order]
    return table


def drop_errors(records: Sequence[Record], table: pd.DataFrame, metric: str = "top1") -> dict[str, list]:
    """Per model, matplotlib ``yerr`` pairs (below, above) of the paired (Tango) 95% interval around each drop
    in ``table`` (a :func:`drops_frame`); NaN where the records hold no per-image answers."""
    ids = {c.get("label", c["id"]): c["id"] for r in records for c in r.conditions}
    errors = {}
    for model in table.columns:
        below, above = [], []
        for label, drop in table[model].items():
            counts = paired_drop(records, model, ids.get(label, label), metric)
            lo, hi = counts.interval() if counts is not None else (math.nan, math.nan)
            below.append(max(0.0, drop - 100 * lo))
            above.append(max(0.0, 100 * hi - drop))
        errors[model] = [below, above]
    return errors


def _model_colors(models: Sequence[str]) -> dict[str, object]:
    cmap = pyplot().get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _n_images(records: Sequence[Record]) -> str:
    counts = sorted({r.dataset.get("n_images") for r in records}, key=str)
    return "/".join(map(str, counts))


def plot_drops(records: Sequence[Record], path: str | Path, top5: bool = True) -> Path:
    """Grouped bars of the Table-1 drops: x the conditions (not the origin), one bar per model, y the
    top-1 (and, with ``top5``, in a second panel the top-5) error increase over the origin in points."""
    plt = pyplot()
    panels = [("top1", "top-1")] + ([("top5", "top-5")] if top5 else [])
    tables = {metric: drops_frame(records, metric) for metric, _ in panels}
    conditions, models = list(tables["top1"].index), list(tables["top1"].columns)
    if not conditions:
        raise RecordError("nothing to plot: the records hold no condition besides origin")
    colors = _model_colors(models)
    side_by_side = len(conditions) <= 8
    shape = (1, len(panels)) if side_by_side else (len(panels), 1)
    width_in = (5.0 + 0.5 * len(conditions) * len(models)) * (len(panels) if side_by_side else 1)
    fig, axes = plt.subplots(*shape, figsize=(min(22.0, max(7.0, width_in)), 4.6 if side_by_side else 8.0),
                             squeeze=False)
    width = 0.8 / len(models)
    for ax, (metric, name) in zip(axes.flat, panels):
        table = tables[metric]
        yerr = drop_errors(records, table, metric)
        for i, model in enumerate(models):
            x = [k + (i - (len(models) - 1) / 2) * width for k in range(len(conditions))]
            bars = ax.bar(x, table[model].to_numpy(dtype=float), width, label=model, color=colors[model],
                          yerr=yerr[model], capsize=3, error_kw={"elinewidth": 0.8, "ecolor": "black"})
            if len(conditions) * len(models) <= 40:
                ax.bar_label(bars, fmt="%+.1f", fontsize=8, padding=2)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(conditions)))
        ax.set_xticklabels(conditions, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_xlabel("condition")
        ax.set_ylabel(f"{name} error increase over origin (points)")
        ax.set_title(f"{name} error drop")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
        ax.legend(fontsize=8)
    suites = ", ".join(dict.fromkeys(r.suite for r in records))
    fig.suptitle(f"Error increase under appearance conditions (suite {suites}, {_n_images(records)} images; "
                 "bars: paired 95% Tango intervals)")
    not_run = [c.get("label", c["id"]) for r in records for c in r.conditions if c.get("not_run")]
    if not_run:
        fig.text(0.01, 0.0, f"not run: {', '.join(dict.fromkeys(not_run))}", fontsize=8, color="dimgray")
    return save_figure(fig, path)


def fp_figure(records: Sequence[Record]):
    """ImageNet-P's flip probability as grouped bars (a matplotlib figure): x the perturbations run, one bar per
    model, y FP (%) with its Clopper-Pearson 95% interval as error bars, from the records' stored frames."""
    plt = pyplot()
    found, difficulty = imagenet_p.scores(records)
    frame = imagenet_p.fp_frame(found)
    if frame.empty:
        raise RecordError("nothing to plot: the records hold no ImageNet-P perturbation")
    names = [p for p in PERTURBATIONS if p in set(frame.perturbation)]
    models = list(found)
    colors = _model_colors(models)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(min(22.0, max(7.0, 3.0 + 0.45 * len(names) * len(models))), 4.6))
    for i, model in enumerate(models):
        part = frame[frame.model == model].set_index("perturbation").reindex(names)
        fp = part.fp.to_numpy(dtype=float)
        below = np.clip(fp - part.fp_low.to_numpy(dtype=float), 0, None)
        above = np.clip(part.fp_high.to_numpy(dtype=float) - fp, 0, None)
        ax.bar([k + (i - (len(models) - 1) / 2) * width for k in range(len(names))], fp, width, label=model,
               color=colors[model], yerr=[below, above], capsize=3, error_kw={"elinewidth": 0.8, "ecolor": "black"})
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([LABELS[p] for p in names], rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlabel("perturbation")
    ax.set_ylabel("flip probability FP (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"ImageNet-P flip probability per perturbation (difficulty {difficulty}, {_n_images(records)} "
                 "images; bars: Clopper-Pearson 95% intervals)")
    return fig


def plot_fp(records: Sequence[Record], path: str | Path) -> Path:
    """:func:`fp_figure` of the ImageNet-P ``records`` written to ``path``."""
    return save_figure(fp_figure(records), path)


def plot_reliability(records: Sequence[Record], path: str | Path, bins: int = stats.ECE_BINS) -> Path:
    """Reliability diagrams from the stored predictions: one panel per model, top-1 accuracy against mean
    confidence in ``bins`` equal-width bins for each condition, the diagonal for perfect calibration, the
    ECE in the legend with its bootstrap 95% interval and the 95% range of a calibrated model's ECE."""
    from ibnbench.results.predictions import for_record

    plt = pyplot()
    curves: dict[str, list[tuple[str, stats.Reliability, stats.EceUncertainty]]] = {}
    for record in records:
        stored = for_record(record)
        labels = condition_labels([record])
        for row in record.results:
            model, cond = row["model"], row["condition"]
            confidence, correct = stored.confidence(model, cond), stored.correct(model, cond)
            curves.setdefault(model, []).append((labels.get(cond, cond), stats.reliability(confidence, correct, bins),
                                                 stats.ece_uncertainty(confidence, correct, bins)))
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 4.6), squeeze=False)
    for ax, (model, lines) in zip(axes.flat, curves.items()):
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="perfect calibration")
        for label, curve, found in lines:
            used = curve.count > 0
            (low, high), (calibrated_low, calibrated_high) = found.interval, found.calibrated_range
            ax.plot(curve.confidence[used], curve.accuracy[used], marker="o", markersize=3,
                    label=f"{label} (ECE {100 * curve.ece:.2f}% [{100 * low:.2f}, {100 * high:.2f}]; "
                          f"if calibrated {100 * calibrated_low:.2f}-{100 * calibrated_high:.2f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean top-1 confidence in bin")
        ax.set_ylabel("top-1 accuracy in bin")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability ({bins} equal-width bins, {_n_images(records)} images; ECE with bootstrap 95% CI)")
    return save_figure(fig, path)


def plot_sweep(records: Sequence[Record], path: str | Path, metric: str = "top1") -> Path:
    """Robustness curves: error vs severity per model, one panel per family (brightness, colour cast,
    contrast, style), from records of a severity-grid suite such as ``sweep``."""
    plt = pyplot()
    frame = sweep_frame(records)
    families = [f for f in FAMILIES if f in set(frame.family)]
    if not families:
        raise RecordError("nothing to plot: the records hold no condition of a curve family besides origin")
    models = list(dict.fromkeys(frame.model))
    colors = _model_colors(models)
    column, name = f"{metric}_err", metric.replace("top", "top-")
    ncols = min(2, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, family in zip(axes.flat, families):
        title, xlabel, _ = FAMILIES[family]
        part = frame[frame.family == family]
        if family == "style":
            styles = list(dict.fromkeys(part.series))
            styles = ["origin"] + [s for s in styles if s != "origin"]
            width = 0.8 / len(models)
            for i, model in enumerate(models):
                values = part[part.model == model].set_index("series")[column].reindex(styles)
                ax.bar([k + (i - (len(models) - 1) / 2) * width for k in range(len(styles))],
                       values.to_numpy(dtype=float), width, color=colors[model])
            ax.set_xticks(range(len(styles)))
            ax.set_xticklabels(styles, rotation=30, ha="right", rotation_mode="anchor")
        else:
            for model in models:
                for series, points in part[part.model == model].groupby("series", sort=False):
                    points = points.sort_values("value")
                    line, marker = CHANNEL_STYLES.get(series, ("-", "o"))
                    ax.plot(points.value, points[column], linestyle=line, marker=marker, markersize=4,
                            color=colors[model])
            if family == "shift":
                ax.legend(handles=[plt.Line2D([], [], color="gray", linestyle=line, marker=marker, label=f"{c} shifted")
                                   for c, (line, marker) in CHANNEL_STYLES.items()], fontsize=8, loc="best")
            if family == "contrast":
                ax.set_xscale("log", base=2)
                values = sorted(set(part.value))
                ax.set_xticks(values)
                ax.set_xticklabels([f"x{v:g}" for v in values], rotation=30)
                ax.minorticks_off()
            ax.axvline(FAMILIES[family][2], color="gray", linewidth=0.6, linestyle=":")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name} error (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[m], linewidth=3, label=m) for m in models]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(models), 5),
               title="model")
    suites = ", ".join(dict.fromkeys(r.suite for r in records))
    fig.suptitle(f"Robustness curves: {name} error vs severity (suite {suites}, {_n_images(records)} images)")
    return save_figure(fig, path)


def plot_report(results: Sequence[str | Path | Record], path: str | Path) -> list[Path]:
    """``ibnbench report RECORDS --plot PATH`` as a function: the drop chart of the records (files,
    directories or records already read) at ``path``;
    records of a severity-grid suite (``sweep``) give robustness curves instead, at ``path`` when they are
    all there is, else at ``<stem>-sweep<suffix>`` beside it; ImageNet-P records give their flip probability per
    perturbation (:func:`plot_fp`). Returns the files written."""
    records = load_records(results)
    require_mergeable(records)
    if imagenet_p.is_imagenet_p(records):
        return [plot_fp(records, path)]
    sweeps = [r for r in records if r.suite in SWEEP_SUITES]
    others = [r for r in records if r.suite not in SWEEP_SUITES]
    path = Path(path)
    written = [plot_drops(others, path)] if others else []
    if sweeps:
        written.append(plot_sweep(sweeps, path.with_name(f"{path.stem}-sweep{path.suffix}") if others else path))
    return written

"""Effective robustness (Taori et al., NeurIPS 2020): accuracy under a natural shift beyond what a model's val
accuracy predicts.

Over a baseline set of models the user names, ``logit(shift accuracy)`` is fitted against ``logit(val
accuracy)`` by least squares (``scipy.stats.linregress``); val accuracy is measured on the shift's own class
subset where the record says so (its ``baseline`` row, e.g. val on ImageNet-R's 200 classes). A model's
effective robustness is its shift accuracy minus the accuracy the line predicts for its val accuracy (points);
``logit_residual`` is the same distance on the logit scale, vertically from the line.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from ibnbench.errors import RecordError, UsageError
from ibnbench.results.record import Record
from ibnbench.results.report import results_frame


def logit(accuracy: float) -> float:
    """``log(p / (1 - p))`` of an accuracy in percent."""
    p = accuracy / 100.0
    return math.log(p / (1.0 - p))


def expit(value: float) -> float:
    """The inverse of :func:`logit`, in percent."""
    return 100.0 / (1.0 + math.exp(-value))


@dataclass(frozen=True)
class LogitFit:
    """``logit(shift acc) = slope * logit(val acc) + intercept`` over the baseline models."""

    slope: float
    intercept: float
    r: float
    models: tuple[str, ...]

    def predict(self, val_accuracy: float) -> float:
        """The shift accuracy (percent) the line predicts for a val accuracy (percent)."""
        return expit(self.slope * logit(val_accuracy) + self.intercept)


def accuracies(records: Sequence[Record], shift: str, metric: str = "top1") -> pd.DataFrame:
    """Per model: ``val_acc`` (on the shift's baseline row: ``origin`` or val on its class subset) and
    ``shift_acc``, in percent. The two rows' datasets must be the same in every record."""
    baselines = {c: b for r in records for c, b in r.baselines().items() if c == shift}
    if shift not in baselines:
        known = sorted({c["id"] for r in records for c in r.conditions})
        raise RecordError(f"no record holds the shift {shift!r}; conditions found: {', '.join(known)}")
    base = baselines[shift] or "origin"
    for condition in (base, shift):
        prints = {r.dataset.get("datasets", {}).get(condition, {}).get("sha256") for r in records
                  if any(row["condition"] == condition for row in r.results)}
        if len(prints) > 1:
            raise RecordError(f"the records ran {condition!r} on different data (fingerprints "
                              f"{', '.join(sorted(str(p)[:12] for p in prints))}): effective robustness needs "
                              "one dataset")
    frame = results_frame(records)
    column = f"{metric}_err"
    table = frame.pivot(index="model", columns="condition", values=column)
    if base not in table.columns:
        raise RecordError(f"no record holds the baseline row {base!r} of {shift!r}")
    table = table[[base, shift]].dropna()
    return pd.DataFrame({"val_acc": 100.0 - table[base], "shift_acc": 100.0 - table[shift]})


def fit_baseline(acc: pd.DataFrame, baseline: Sequence[str]) -> LogitFit:
    """The least-squares line through the baseline models in logit space."""
    absent = [m for m in baseline if m not in acc.index]
    if absent:
        raise RecordError(f"baseline model(s) {', '.join(absent)} have no val and shift result in the records "
                          f"(models found: {', '.join(acc.index)})")
    points = acc.loc[list(dict.fromkeys(baseline))]
    if len(points) < 2 or points.val_acc.nunique() < 2:
        raise UsageError("--baseline: name at least two models with different val accuracies to fit a line")
    extreme = [m for m, row in points.iterrows() if not (0 < row.val_acc < 100 and 0 < row.shift_acc < 100)]
    if extreme:
        raise UsageError(f"baseline model {extreme[0]} has an accuracy of 0 or 100 %: its logit is infinite")
    line = stats.linregress([logit(v) for v in points.val_acc], [logit(v) for v in points.shift_acc])
    return LogitFit(float(line.slope), float(line.intercept), float(line.rvalue), tuple(points.index))


def effective_robustness(records: Sequence[Record], shift: str, baseline: Sequence[str],
                         metric: str = "top1") -> tuple[pd.DataFrame, LogitFit]:
    """Every model's distance from the baseline line: ``val_acc``, ``shift_acc``, ``predicted_acc``,
    ``effective_robustness`` (``shift_acc - predicted_acc``, points), ``logit_residual`` and ``baseline``."""
    acc = accuracies(records, shift, metric)
    fit = fit_baseline(acc, baseline)
    table = acc.copy()
    table["predicted_acc"] = [fit.predict(v) if 0 < v < 100 else float("nan") for v in acc.val_acc]
    table["effective_robustness"] = table.shift_acc - table.predicted_acc
    table["logit_residual"] = [logit(s) - (fit.slope * logit(v) + fit.intercept) if 0 < v < 100 and 0 < s < 100
                               else float("nan") for v, s in zip(acc.val_acc, acc.shift_acc)]
    table["baseline"] = [m in fit.models for m in table.index]
    return table.sort_values("effective_robustness", ascending=False), fit


def is_ibn(model: str) -> bool:
    """Whether a model name is an IBN-Net (highlighted in plots)."""
    return "ibn" in model.lower()


def plot_effective_robustness(table: pd.DataFrame, fit: LogitFit, path: str | Path, shift: str = "shift",
                              metric: str = "top1") -> Path:
    """Shift accuracy against val accuracy on logit axes: the baseline fit line, y = x, the baseline models in
    grey, other models in blue, IBN models highlighted in red, each named."""
    import numpy as np

    from ibnbench.results.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    values = pd.concat([table.val_acc, table.shift_acc])
    low, high = max(0.5, float(values.min()) - 5), min(99.5, float(values.max()) + 5)
    xs = np.linspace(low, high, 200)
    ax.plot(xs / 100, [fit.predict(x) / 100 for x in xs], color="black", linewidth=1.2,
            label=f"baseline fit ({len(fit.models)} models, r = {fit.r:.3f})")
    ax.plot([low / 100, high / 100], [low / 100, high / 100], color="gray", linestyle=":", linewidth=1, label="y = x")
    groups = [("baseline", table.baseline & ~table.index.map(is_ibn), "gray", "o"),
              ("other models", ~table.baseline & ~table.index.map(is_ibn), "tab:blue", "o"),
              ("IBN-Net", table.index.map(is_ibn).to_numpy(dtype=bool), "tab:red", "*")]
    for label, chosen, color, marker in groups:
        part = table[chosen]
        if part.empty:
            continue
        ax.scatter(part.val_acc / 100, part.shift_acc / 100, color=color, marker=marker,
                   s=140 if marker == "*" else 40, label=label, zorder=3)
        for model, row in part.iterrows():
            ax.annotate(f"{model} ({row.effective_robustness:+.1f})", (row.val_acc / 100, row.shift_acc / 100),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("logit")
    ax.set_yscale("logit")
    ticks = [t / 100 for t in (1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99)]
    limits = ax.get_xlim(), ax.get_ylim()
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks)
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel(f"ImageNet val {metric} accuracy, on the shift's classes (logit axis)")
    ax.set_ylabel(f"{shift} {metric} accuracy (logit axis)")
    ax.set_title(f"Effective robustness on {shift} (points above the fit)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)

"""Effective robustness (Taori et al., NeurIPS 2020): accuracy under a natural shift beyond what a model's val
accuracy predicts.

Over a baseline set of models the user names, ``logit(shift accuracy)`` is fitted against ``logit(val
accuracy)`` by least squares (``scipy.stats.linregress``); val accuracy is measured on the shift's own class
subset where the record says so (its ``baseline`` row, e.g. val on ImageNet-R's 200 classes). A model's
effective robustness is its shift accuracy minus the accuracy the line predicts for its val accuracy (points);
``logit_residual`` is the same distance on the logit scale, vertically from the line.

Uncertainty: a two-level percentile bootstrap (``DRAWS`` replicates, numpy's generator seeded with ``SEED``, 95%).
Each replicate resamples the baseline models with replacement and, where every model's per-image answers are in
the records, the images of the val row and of the shift row with replacement (the same resampled images for every
model, so their shared hard images stay shared); it refits the line and recomputes every model's effective
robustness. Without per-image answers only the baseline models are resampled, and :class:`LineBootstrap` says so.
Replicates whose fit is undefined (one distinct val accuracy, an accuracy of 0 or 100 %) are left out and counted.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from ibnbench.errors import RecordError, UsageError
from ibnbench.results.loading import results_frame
from ibnbench.results.record import Record


def logit(accuracy: float) -> float:
    """``log(p / (1 - p))`` of an accuracy in percent."""
    p = accuracy / 100.0
    return math.log(p / (1.0 - p))


def expit(value: float) -> float:
    """The inverse of :func:`logit`, in percent."""
    return 100.0 / (1.0 + math.exp(-value))


DRAWS = 2000
"""Bootstrap replicates behind the intervals of the line and of each model's effective robustness."""
SEED = 0
"""Seed of the bootstrap (``numpy.random.default_rng``): the same records give the same intervals."""
LEVEL = 0.95
_CHUNK = 1 << 22
"""Images x replicates resampled at once (bounds the memory of a 50,000-image bootstrap)."""


@dataclass(frozen=True)
class LineBootstrap:
    """The bootstrap replicates of the line (``slope``, ``intercept``: one per replicate whose fit is defined) and
    what was resampled: images too unless ``models_only`` gives the reason why not."""

    slope: np.ndarray
    intercept: np.ndarray
    draws: int
    seed: int
    models_only: str = ""

    def interval(self, values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
        """The percentile interval of replicate ``values`` (NaNs left out)."""
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(values, [tail, 100 - tail]) if np.isfinite(values).any() else (np.nan,) * 2
        return float(low), float(high)

    def describe(self) -> str:
        """One line for the output: what was resampled, how often, and the line's intervals."""
        what = f"baseline models only ({self.models_only})" if self.models_only else "baseline models and images"
        left_out = self.draws - len(self.slope)
        note = f", {left_out} with an undefined fit left out" if left_out else ""
        slope, intercept = self.interval(self.slope), self.interval(self.intercept)
        return (f"percentile bootstrap over {what}, {self.draws} replicates (seed {self.seed}{note}); "
                f"slope [{slope[0]:.4f}, {slope[1]:.4f}], intercept [{intercept[0]:+.4f}, {intercept[1]:+.4f}]")


@dataclass(frozen=True)
class LogitFit:
    """``logit(shift acc) = slope * logit(val acc) + intercept`` over the baseline models, with its bootstrap."""

    slope: float
    intercept: float
    r: float
    models: tuple[str, ...]
    bootstrap: LineBootstrap | None = None

    def predict(self, val_accuracy: float) -> float:
        """The shift accuracy (percent) the line predicts for a val accuracy (percent)."""
        return expit(self.slope * logit(val_accuracy) + self.intercept)


def _answers(records: Sequence[Record], model: str, condition: str, metric: str) -> np.ndarray | None:
    """Per-image answers (1 right, 0 wrong, -1 not evaluated) of the record that holds the pair's result (the
    last one, as in :func:`results_frame`); None without them."""
    holders = [r for r in records if any(row["model"] == model and row["condition"] == condition for row in r.results)]
    return holders[-1].answers(model, condition, metric) if holders else None


def _image_replicates(answers: list[np.ndarray], draws: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracies (percent) ``[draws, models]`` on images resampled with replacement, the same resample for every
    model: each replicate counts how often each image was drawn and weighs every model's answers with it."""
    codes = np.stack(answers)
    right, valid = (codes == 1).T.astype(np.float64), (codes >= 0).T.astype(np.float64)
    n = codes.shape[1]
    parts = []
    for start in range(0, draws, max(1, _CHUNK // n)):
        size = min(max(1, _CHUNK // n), draws - start)
        drawn = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(100.0 * (counts @ right) / (counts @ valid))
    return np.concatenate(parts)


def _logit(accuracy: np.ndarray) -> np.ndarray:
    """:func:`logit` of an array of accuracies in percent (infinite at 0 and 100)."""
    with np.errstate(divide="ignore"):
        return special.logit(accuracy / 100.0)


def bootstrap_fit(records: Sequence[Record], shift: str, acc: pd.DataFrame, fit: LogitFit, metric: str = "top1",
              draws: int = DRAWS, seed: int = SEED) -> tuple[LineBootstrap, np.ndarray]:
    """The two-level bootstrap (module docstring): the line's replicates and every model's effective robustness
    replicates ``[replicates, models]`` (models in ``acc`` order)."""
    rng = np.random.default_rng(seed)
    base = baseline_row(records, shift)
    baseline = np.array([acc.index.get_loc(m) for m in fit.models])
    picked = baseline[rng.integers(0, len(baseline), (draws, len(baseline)))]
    rows = {c: [_answers(records, m, c, metric) for m in acc.index] for c in (base, shift)}
    lacking = [m for i, m in enumerate(acc.index) if any(rows[c][i] is None for c in rows)]
    models_only = (f"no per-image answers for {', '.join(lacking)}" if lacking else
                   "; ".join(f"the answers under {c} are on image lists of different lengths" for c, answers
                             in rows.items() if len({len(a) for a in answers}) > 1))
    if models_only:
        val = np.broadcast_to(acc.val_acc.to_numpy(), (draws, len(acc)))
        shifted = np.broadcast_to(acc.shift_acc.to_numpy(), (draws, len(acc)))
    else:
        val, shifted = (_image_replicates(rows[c], draws, rng) for c in (base, shift))
    x, y = _logit(np.take_along_axis(val, picked, 1)), _logit(np.take_along_axis(shifted, picked, 1))
    dx = x - x.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (dx * (y - y.mean(axis=1, keepdims=True))).sum(axis=1) / (dx**2).sum(axis=1)
    intercept = y.mean(axis=1) - slope * x.mean(axis=1)
    defined = np.isfinite(slope) & np.isfinite(intercept) & (np.ptp(x, axis=1) > 0)  # two distinct val accuracies
    slope, intercept = slope[defined], intercept[defined]
    with np.errstate(invalid="ignore"):
        effective = shifted[defined] - 100.0 * special.expit(slope[:, None] * _logit(val[defined]) + intercept[:, None])
    return LineBootstrap(slope, intercept, draws, seed, models_only), effective


def baseline_row(records: Sequence[Record], shift: str) -> str:
    """The row the shift's val accuracy is read from: ``origin`` or what the records name (val on its classes)."""
    baselines = {c: b for r in records for c, b in r.baselines().items() if c == shift}
    if shift not in baselines:
        known = sorted({c["id"] for r in records for c in r.conditions})
        raise RecordError(f"no record holds the shift {shift!r}; conditions found: {', '.join(known)}")
    return baselines[shift] or "origin"


def accuracies(records: Sequence[Record], shift: str, metric: str = "top1") -> pd.DataFrame:
    """Per model: ``val_acc`` (on the shift's baseline row: ``origin`` or val on its class subset) and
    ``shift_acc``, in percent. The two rows' datasets must be the same in every record."""
    base = baseline_row(records, shift)
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


def effective_robustness(records: Sequence[Record], shift: str, baseline: Sequence[str], metric: str = "top1",
                         draws: int = DRAWS, seed: int = SEED) -> tuple[pd.DataFrame, LogitFit]:
    """Every model's distance from the baseline line: ``val_acc``, ``shift_acc``, ``predicted_acc``,
    ``effective_robustness`` (``shift_acc - predicted_acc``, points) with its bootstrap 95% interval
    (``er_low``, ``er_high``; see the module docstring), ``logit_residual`` and ``baseline``. The fit carries the
    line's bootstrap (none with ``draws=0``)."""
    acc = accuracies(records, shift, metric)
    fit = fit_baseline(acc, baseline)
    table = acc.copy()
    table["predicted_acc"] = [fit.predict(v) if 0 < v < 100 else float("nan") for v in acc.val_acc]
    table["effective_robustness"] = table.shift_acc - table.predicted_acc
    if draws:
        line, effective = bootstrap_fit(records, shift, acc, fit, metric, draws, seed)
        fit = dataclasses.replace(fit, bootstrap=line)
        table["er_low"], table["er_high"] = zip(*(line.interval(column) for column in effective.T))
    table["logit_residual"] = [logit(s) - (fit.slope * logit(v) + fit.intercept) if 0 < v < 100 and 0 < s < 100
                               else float("nan") for v, s in zip(acc.val_acc, acc.shift_acc)]
    table["baseline"] = [m in fit.models for m in table.index]
    return table.sort_values("effective_robustness", ascending=False), fit


def is_ibn(model: str) -> bool:
    """Whether a model name is an IBN-Net (highlighted in plots)."""
    return "ibn" in model.lower()


def plot_effective_robustness(table: pd.DataFrame, fit: LogitFit, path: str | Path, shift: str = "shift",
                              metric: str = "top1") -> Path:
    """Shift accuracy against val accuracy on logit axes: the baseline fit line with its bootstrap 95% band, y = x,
    the baseline models in grey, other models in blue, IBN models highlighted in red, each named, with its
    effective robustness interval as an error bar around its shift accuracy."""
    from ibnbench.results.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    values = pd.concat([table.val_acc, table.shift_acc])
    low, high = max(0.5, float(values.min()) - 5), min(99.5, float(values.max()) + 5)
    xs = np.linspace(low, high, 200)
    ax.plot(xs / 100, [fit.predict(x) / 100 for x in xs], color="black", linewidth=1.2,
            label=f"baseline fit ({len(fit.models)} models, r = {fit.r:.3f})")
    if fit.bootstrap is not None and len(fit.bootstrap.slope):
        lines = special.expit(fit.bootstrap.slope[:, None] * _logit(xs) + fit.bootstrap.intercept[:, None])
        ax.fill_between(xs / 100, *np.percentile(lines, [2.5, 97.5], axis=0), color="black", alpha=0.12,
                        linewidth=0, label="95% bootstrap band of the fit")
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
        if "er_low" in part:
            ax.errorbar(part.val_acc / 100, part.shift_acc / 100, yerr=_error_bars(part), fmt="none", ecolor=color,
                        elinewidth=1, capsize=2, zorder=2)
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
    ax.set_title(f"Effective robustness on {shift} (points above the fit; bars: 95% intervals)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


def _error_bars(part: pd.DataFrame) -> np.ndarray:
    """Each model's effective robustness interval as an error bar around its shift accuracy (fractions, kept
    inside the logit axis)."""
    y = part.shift_acc.to_numpy() / 100
    low = np.clip(y - (part.effective_robustness - part.er_low).to_numpy() / 100, 1e-3, 1 - 1e-3)
    high = np.clip(y + (part.er_high - part.effective_robustness).to_numpy() / 100, 1e-3, 1 - 1e-3)
    return np.nan_to_num(np.stack([y - low, high - y]).clip(min=0))

"""Statistics tables of records, paired on the same images: each error's interval with the drop against origin
(Tango's paired interval, McNemar's test, Holm over the table) and the ECE, model vs model under each condition,
record vs record (``ibnbench compare``), and error consistency. The tables hold display strings; rendering them
is :mod:`ibnbench.results.report`'s work, the arithmetic :mod:`ibnbench.results.stats`'s.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import pandas as pd

from ibnbench.errors import RecordError
from ibnbench.results.comparability import comparability
from ibnbench.results.loading import require_valid, results_frame
from ibnbench.results.record import Record, condition_labels, read_record

from . import predictions, stats

CI_NOTE = ("95% CI (CP): Clopper-Pearson interval of the error. Paired 95% CI: Tango's score interval of the drop "
           "(paired difference of proportions; Tango 1998). New err / fixed: images right at the origin and "
           "wrong under the condition / the reverse. p McNemar: exact test on those two counts; p Holm: adjusted over "
           "the table. ECE: 15 equal-width confidence bins (schema-2 records)."
           f" ECE 95% CI: percentile bootstrap over the images ({stats.ECE_DRAWS} resamples, seed {stats.ECE_SEED});"
           " ECE if calibrated: the mean [95% range] of the ECE a perfectly calibrated model with the same confidences"
           " shows, so an ECE inside that range cannot be told apart from calibration at this number of images.")
PAIRS_NOTE = ("diff: B's error minus A's (points) on the same images, with Tango's paired score interval; p McNemar: "
              "exact test on the discordant images, p Holm adjusted over the table.")
"""The note under a model-vs-model table (``report --pairs``, ``compare``)."""
CONSISTENCY_NOTE = ("Error consistency: Cohen's kappa over per-image correctness (1: the same images wrong; 0: no more "
                    "overlap than the accuracies imply).")
"""The note under the error-consistency matrices (``report --pairs``)."""


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
    matrix = pd.DataFrame(index=pd.Index(models, name="model"), columns=models, dtype=float)
    for a in models:
        for b in models:
            ra, rb = sources[a, condition], sources[b, condition]
            answers = ra.answers(a, condition, metric), rb.answers(b, condition, metric)
            if any(x is None for x in answers) or ra.per_image.get("files") != rb.per_image.get("files"):
                continue
            both = (answers[0] >= 0) & (answers[1] >= 0)
            matrix.loc[a, b] = stats.error_consistency(answers[0][both] == 1, answers[1][both] == 1)
    return matrix.round(3)


def compare(first: str | Path | Record, second: str | Path | Record, metric: str = "top1",
            allow_generator_mismatch: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """``ibnbench compare A.json B.json``: every model of A against every model of B under each shared
    condition, paired on the same images (McNemar, Holm-adjusted over the table), and the warnings to show with it
    (records whose generators differ are refused unless ``allow_generator_mismatch``:
    :mod:`ibnbench.results.comparability`)."""
    a = require_valid(first if isinstance(first, Record) else read_record(first))
    b = require_valid(second if isinstance(second, Record) else read_record(second))
    comparable = comparability(a, b, allow_generator_mismatch)
    if comparable.reasons:
        raise RecordError(f"cannot compare {a.path or 'A'} with {b.path or 'B'}: {'; '.join(comparable.reasons)}")
    labels = condition_labels([a])
    done_b = {(r["model"], r["condition"]) for r in b.results}
    rows = [{"condition": labels.get(ra["condition"], ra["condition"]), "model A": ra["model"], "model B": mb,
             f"A {metric} err %": ra[f"{metric}_err"],
             f"B {metric} err %": b.result(mb, ra["condition"])[f"{metric}_err"],
             **_pair_row((a, ra["model"], ra["condition"]), (b, mb, ra["condition"]), metric)}
            for ra in a.results for mb in b.models if (mb, ra["condition"]) in done_b]
    if not rows:
        raise RecordError(f"{a.path or 'A'} and {b.path or 'B'} share no condition")
    return _with_holm(pd.DataFrame(rows)), comparable.warnings

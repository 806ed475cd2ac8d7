"""ImageNet-P scores of records: flip probability (FP) and top-5 distance (T5D) per perturbation from the frames'
top-5 classes the predictions sidecar keeps (:mod:`ibnbench.results.predictions`), with FP's Clopper-Pearson
interval; unnormalised means always; FR and T5D ratios per perturbation and mFR / mT5D (their means over the 10 test
perturbations) when a baseline is given: a model of the records (``--baseline MODEL``, on the same images at the same
difficulty) or the user's constants (``--baseline-constants FILE``). The formulas are
:mod:`ibnbench.results.perturbation_metrics`' (those of hendrycks/robustness ``ImageNet-P/test.py``).

A baseline constants file (TOML, :mod:`ibnbench.results.baselines`) gives the baseline's FP (a fraction, 0-1) and
T5D per perturbation, and optionally the difficulty they were measured at (checked against the records)::

    suite = "imagenet-p"
    model = "alexnet"      # optional: how the report names the baseline
    difficulty = 1
    [fp]
    gaussian_noise = 0.0606
    shot_noise = 0.0768
    # ... one per perturbation to normalise (mFR and mT5D need the 10 test ones)
    [t5d]
    gaussian_noise = 0.3948
    shot_noise = 0.4541
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ibnbench.conditions.perturbations import LABELS, PERTURBATIONS, TEST_PERTURBATIONS
from ibnbench.errors import UsageError
from ibnbench.results import baselines
from ibnbench.results.perturbation_metrics import Stability, mean_over_test, normalised, stability
from ibnbench.results.predictions import for_record
from ibnbench.results.record import Record

MEAN_FP = "mean FP over the test perturbations run (unnormalised, %)"
MEAN_T5D = "mean T5D over the test perturbations run (unnormalised)"
MFR = "mFR (normalised by the baseline, %)"
MT5D = "mT5D (normalised by the baseline, %)"
NOTE = ("FP: flip probability (%), the share of compared frame pairs whose top-1 class differs (noise: every frame "
        "against the clean frame 0; others: frames `difficulty` apart), with its Clopper-Pearson 95% interval over all "
        "compared pairs (frames of a sequence are correlated: it is narrower than one over images). T5D: top-5 "
        "distance (ImageNet-P test.py's ranking distance). FR and T5D ratio: the model's over the baseline's (x100); "
        "mFR and mT5D: their means over the 10 test perturbations, only with --baseline MODEL or --baseline-constants "
        "FILE; '-' where the baseline's value is 0 (on few images a baseline may never flip).")

Scores = dict[str, dict[str, Stability]]
"""``{model: {perturbation: Stability}}``."""


def is_imagenet_p(records: Sequence[Record]) -> bool:
    """True when every condition run of every record is an ImageNet-P perturbation (or the clean ``origin``), and one
    is."""
    run = [c for r in records for c in r.conditions if not c.get("not_run")]
    return any("perturbation" in c for c in run) and all("perturbation" in c or c["id"] == "origin" for c in run)


@dataclass(frozen=True)
class Baseline:
    """What FP and T5D are normalised by: ``fp`` and ``t5d`` per perturbation, and where they come from."""

    source: str
    fp: Mapping[str, float]
    t5d: Mapping[str, float]


def difficulty_of(records: Sequence[Record]) -> int:
    """The one difficulty of the records' perturbations; records at different ones are refused."""
    found = {(c.get("difficulty", 1)): r.path or "record" for r in records for c in r.conditions
             if "perturbation" in c and not c.get("not_run")}
    if len(found) > 1:
        listed = ", ".join(f"{d} in {path}" for d, path in sorted(found.items()))
        raise UsageError(f"ImageNet-P records at different difficulties ({listed}): report them apart")
    return next(iter(found))


def scores(records: Sequence[Record]) -> tuple[Scores, int]:
    """FP and T5D of every model on every perturbation of the records (later records override earlier ones for a
    model), and the difficulty; from the stored frames of each record's sidecar."""
    difficulty = difficulty_of(records)
    out: Scores = {}
    for record in records:
        sequences = for_record(record)
        stored = sequences.sequences
        if stored is None:
            raise UsageError(f"{record.path or 'record'}: its predictions hold no ImageNet-P frames")
        for model in sequences.models:
            for condition, name in zip(stored.conditions, stored.perturbations):
                out.setdefault(model, {})[name] = stability(sequences.sequence(model, condition), name, difficulty)
    return out, difficulty


def model_baseline(records: Sequence[Record], found: Scores, model: str) -> Baseline:
    """The baseline of model ``model`` of the records, which must all hold the same images."""
    if model not in found:
        raise UsageError(f"--baseline {model}: no such model in the records (models: {', '.join(found)})")
    datasets = {str(r.dataset.get("sha256")): r.path or "record" for r in records}
    if len(datasets) > 1:
        raise UsageError(f"--baseline {model}: the records hold different images ({', '.join(datasets.values())}); "
                         "normalise records of the same images only")
    return Baseline(f"model {model}", {p: s.fp for p, s in found[model].items()},
                    {p: s.t5d for p, s in found[model].items()})


P_SUITES = ("imagenet-p", "imagenet-p-extra")
"""What a constants file's ``suite`` may name for ImageNet-P."""


def read_baseline_constants(path: str | Path, difficulty: int) -> Baseline:
    """The baseline of a constants file (see the module docstring), checked by
    :func:`~ibnbench.results.baselines.read_baseline_constants` (numbers above 0 for known perturbations), and
    against the records' ``difficulty`` when the file names one."""
    constants = _constants(path)
    made_at = constants.settings.get("difficulty", difficulty)
    if made_at != difficulty:
        raise UsageError(f"--baseline-constants {path}: made at difficulty {made_at}, the records at {difficulty}")
    return _from_constants(constants)


def board_baseline(path: str | Path, difficulty: int) -> Baseline | None:
    """The baseline of a leaderboard's constants file for its board at ``difficulty``: None when the file names
    another difficulty (that board stays unnormalised), the constants when it names this one or none."""
    constants = _constants(path)
    return _from_constants(constants) if constants.settings.get("difficulty", difficulty) == difficulty else None


def _constants(path: str | Path) -> baselines.BaselineConstants:
    return baselines.read_baseline_constants(path, P_SUITES, {"fp": PERTURBATIONS, "t5d": PERTURBATIONS},
                                             settings=("difficulty",), per_severity=False)


def _from_constants(constants: baselines.BaselineConstants) -> Baseline:
    return Baseline(f"constants {constants.label}", constants.tables.get("fp", {}), constants.tables.get("t5d", {}))


def _ratios(values: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """Each value over the baseline's (x100), for the perturbations where the baseline's is above 0 (a baseline
    that never flips gives no ratio: no FR, and no mFR without all 10)."""
    usable = {p: v for p, v in values.items() if baseline.get(p, 0) > 0}
    return {p: 100 * r for p, r in normalised(usable, baseline).items()}


def _test_mean(values: Mapping[str, float]) -> float | None:
    """The mean over the 10 test perturbations, None unless all are there."""
    return mean_over_test(values) if all(p in values for p in TEST_PERTURBATIONS) else None


def _run_mean(values: Mapping[str, float]) -> float | None:
    """The mean over the test perturbations that were run (None when none was)."""
    run = [values[p] for p in TEST_PERTURBATIONS if p in values]
    return sum(run) / len(run) if run else None


def _text(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def model_table(found: Mapping[str, Stability], baseline: Baseline | None) -> pd.DataFrame:
    """One model's ImageNet-P layout: rows the perturbations run (test ones first), columns FP (%), its interval,
    T5D and, with a ``baseline``, FR and the T5D ratio; then the summary rows (means, mFR, mT5D)."""
    order = [p for p in PERTURBATIONS if p in found]
    fp = {p: found[p].fp for p in order}
    t5d = {p: found[p].t5d for p in order}
    table = pd.DataFrame({"FP %": [_text(100 * fp[p]) for p in order],
                          "FP 95% interval": [f"{100 * found[p].fp_low:.2f}-{100 * found[p].fp_high:.2f}"
                                              for p in order],
                          "T5D": [_text(t5d[p], 3) for p in order]}, index=[LABELS[p] for p in order])
    summary = {MEAN_FP: ("FP %", _text(_run_mean({p: 100 * v for p, v in fp.items()}))),
               MEAN_T5D: ("T5D", _text(_run_mean(t5d), 3))}
    if baseline is not None:
        fr, t5d_ratio = _ratios(fp, baseline.fp), _ratios(t5d, baseline.t5d)
        table["FR %"] = [_text(fr.get(p)) for p in order]
        table["T5D ratio %"] = [_text(t5d_ratio.get(p)) for p in order]
        summary[MFR] = ("FR %", _text(_test_mean(fr)))
        summary[MT5D] = ("T5D ratio %", _text(_test_mean(t5d_ratio)))
    for label, (column, value) in summary.items():
        table.loc[label] = [""] * len(table.columns)
        table.loc[label, column] = value
    table.index.name = "perturbation"
    return table


def summary_table(found: Scores, baseline: Baseline | None) -> pd.DataFrame:
    """Rows models; columns the unnormalised mean FP (%) and T5D over the test perturbations run and, with a
    ``baseline``, mFR and mT5D (numbers; NaN unless all 10 test perturbations have a ratio)."""
    rows = {}
    for model, by_name in found.items():
        fp, t5d = {p: s.fp for p, s in by_name.items()}, {p: s.t5d for p, s in by_name.items()}
        row = {"mean FP %": _run_mean({p: 100 * v for p, v in fp.items()}), "mean T5D": _run_mean(t5d)}
        if baseline is not None:
            row["mFR %"] = _test_mean(_ratios(fp, baseline.fp))
            row["mT5D %"] = _test_mean(_ratios(t5d, baseline.t5d))
        rows[model] = row
    table = pd.DataFrame.from_dict(rows, orient="index").astype(float)  # None (not defined) as NaN, shown "-"
    table.index.name = "model"
    return table


def perturbation_columns(by_name: Mapping[str, Stability], baseline: Baseline | None) -> dict[str, float | None]:
    """A board row's values per perturbation run (test ones first): ``FP <label>`` (%) and, with a ``baseline``,
    ``FR <label>`` (%, None where the baseline's FP is 0)."""
    order = [p for p in PERTURBATIONS if p in by_name]
    columns: dict[str, float | None] = {f"FP {LABELS[p]}": 100 * by_name[p].fp for p in order}
    if baseline is not None:
        fr = _ratios({p: by_name[p].fp for p in order}, baseline.fp)
        columns.update({f"FR {LABELS[p]}": fr.get(p) for p in order})
    return columns


def fp_frame(found: Scores) -> pd.DataFrame:
    """One row per (model, perturbation): FP and its interval (%), T5D, for plots and boards."""
    return pd.DataFrame([{"model": model, "perturbation": p, "fp": 100 * s.fp, "fp_low": 100 * s.fp_low,
                          "fp_high": 100 * s.fp_high, "t5d": s.t5d}
                         for model, by_name in found.items() for p in PERTURBATIONS if (s := by_name.get(p))])

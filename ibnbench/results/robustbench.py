"""ImageNet-C and C-bar records in RobustBench's per-cell shape (``ibnbench export``): its
``model_info/<dataset>/corruptions/unaggregated_results.csv``, as ``robustbench.eval.corruptions_evaluation`` writes
it with pandas: one row per model (the model name as the unnamed index), two header rows (the corruption, then the
severity 1-5) and in each cell the top-1 accuracy as a fraction (0..1). RobustBench reads it back with
``pd.read_csv(path, header=[0, 1], index_col=0)``; the clean images are not part of it.

A cell's accuracy is the record's right answers over its scored images (from the error and the count), so it is
exact; a cell a model did not run is left empty.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ibnbench.conditions.c_bar import C_BAR_NAMES
from ibnbench.conditions.corruptions import COMMON, EXTRA, SEVERITIES
from ibnbench.conditions.imagenet_c_release import parse
from ibnbench.errors import UsageError
from ibnbench.results import imagenet_c
from ibnbench.results.loading import load_records, require_mergeable, results_frame
from ibnbench.results.record import Record


def _accuracy(top1_err: float, n_images: int) -> float:
    """The share of right answers behind a top-1 error (%) on ``n_images``."""
    return (n_images - round(top1_err * n_images / 100)) / n_images


def unaggregated_results(sources: Sequence[str | Path | Record],
                         allow_generator_mismatch: bool = False) -> pd.DataFrame:
    """The corruption cells of the records (files, directories or records already read) as RobustBench's table:
    rows models, columns (corruption, severity), accuracies as fractions. ImageNet-C records or C-bar records, not a
    mix; records that cannot be merged (other data, generators) are refused as by ``report``."""
    records = load_records(sources)
    if imagenet_c.is_imagenet_c(records):
        names = COMMON + EXTRA
    elif imagenet_c.is_imagenet_c_bar(records):
        names = C_BAR_NAMES
    else:
        raise UsageError("export --format robustbench takes ImageNet-C records or ImageNet-C-bar records (all of one "
                         "benchmark: RobustBench keeps one file per benchmark)")
    require_mergeable(records, allow_generator_mismatch)
    cells: dict[str, dict[tuple[str, int], float]] = {}
    for row in results_frame(records).itertuples():
        if (parsed := parse(row.condition, names)) is not None:
            cells.setdefault(row.model, {})[parsed] = _accuracy(row.top1_err, row.n_images)
    run = {name for by_model in cells.values() for name, _ in by_model}
    columns = pd.MultiIndex.from_tuples([(n, s) for n in names if n in run for s in SEVERITIES])
    return pd.DataFrame.from_dict(cells, orient="index").reindex(columns=columns)


def robustbench_csv(records: Sequence[str | Path | Record], allow_generator_mismatch: bool = False) -> str:
    """:func:`unaggregated_results` as the CSV text RobustBench writes (pandas' ``to_csv``)."""
    return unaggregated_results(records, allow_generator_mismatch).to_csv()

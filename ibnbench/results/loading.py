"""Records read once for a command: found, read, validated, checked mergeable, and their results as one frame.

A command reads its record files here once and hands the :class:`~ibnbench.results.record.Record` objects to the
reports, statistics and plots, which take records already read as well as paths.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import pandas as pd

from ibnbench.errors import RecordError
from ibnbench.results.comparability import comparability, generator_differences
from ibnbench.results.record import Record, find_records, read_record


def load_records(sources: Sequence[str | Path | Record]) -> list[Record]:
    """Records from files and directories (``*.json`` below them), records already read passed through; a
    record holding invalid numbers (NaN, out of range, no image scored) is refused, naming it: reports, boards
    and plots show valid numbers only."""
    records: list[Record] = []
    for source in sources:
        records.extend([source] if isinstance(source, Record) else map(read_record, find_records([source])))
    if not records:
        raise RecordError(f"no result records found in {', '.join(map(str, sources))}")
    for record in records:
        require_valid(record)
    return records


def require_valid(record: Record) -> Record:
    """``record`` if its numbers are valid; else a :class:`RecordError` naming it and each invalid result."""
    if problems := record.problems():
        raise RecordError(f"{record.path or 'record'}: invalid result(s): {'; '.join(problems)} (`ibnbench check` "
                          "marks them INVALID)")
    return record


def require_mergeable(records: Sequence[Record], allow_generator_mismatch: bool = False) -> list[str]:
    """Refuse to put side by side records whose benchmark generators differ (unless ``allow_generator_mismatch``:
    :mod:`ibnbench.results.comparability`), or that hold the same model but are incomparable (other data, suite
    definition or preprocessing): one model's column would mix their numbers. Names both files and the reasons;
    returns the warnings to show (generators that differ, allowed)."""
    warnings = []
    for a, b in itertools.combinations(records, 2):
        shared = sorted(set(a.models) & set(b.models))
        comparable = comparability(a, b, allow_generator_mismatch)
        generators_refused = bool(generator_differences(a, b)) and not allow_generator_mismatch
        reasons = comparable.reasons if shared or generators_refused else []
        if reasons:
            held = f"both hold {shared[0]} but " if shared else ""
            raise RecordError(f"{a.path or 'record'} and {b.path or 'record'} {held}cannot be merged: "
                              f"{'; '.join(reasons)}; report them apart")
        warnings += [w for w in comparable.warnings if w.startswith("warning")]
    return warnings


def results_frame(records: Sequence[Record]) -> pd.DataFrame:
    """All rows of all records, later records overriding earlier ones for the same (model, condition)."""
    frame = pd.concat([r.to_frame() for r in records], ignore_index=True)
    return frame.drop_duplicates(["model", "condition"], keep="last")

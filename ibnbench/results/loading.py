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
from ibnbench.results.record import Record, find_records, read_json
from ibnbench.results.segmentation_record import SegmentationRecord, is_segmentation_record


def load_records(sources: Sequence[str | Path | Record]) -> list[Record]:
    """Classification records from files and directories (``*.json`` below them), records already read passed
    through; a record holding invalid numbers (NaN, out of range, no image scored) is refused, naming it: reports,
    boards and plots show valid numbers only. A segmentation record among them is refused, naming it."""
    records, segmentation = load_by_task(sources)
    if segmentation:
        raise RecordError(f"{segmentation[0].path or 'record'}: a segmentation record; this command reads "
                          "classification records (report and leaderboard read both)")
    return records


def load_by_task(sources: Sequence[str | Path | Record | SegmentationRecord]
                 ) -> tuple[list[Record], list[SegmentationRecord]]:
    """Classification and segmentation records (each file's ``"task"`` says which) from files and directories,
    records already read passed through; classification records are checked as :func:`load_records` checks them."""
    records: list[Record] = []
    segmentation: list[SegmentationRecord] = []
    for source in sources:
        if isinstance(source, (Record, SegmentationRecord)):
            (records if isinstance(source, Record) else segmentation).append(source)
            continue
        for path in find_records([source]):
            data = read_json(path)
            if is_segmentation_record(data):
                segmentation.append(SegmentationRecord.from_dict(data, path=str(path)))
            else:
                records.append(Record.from_dict(data, path=str(path)))
    if not records and not segmentation:
        raise RecordError(f"no result records found in {', '.join(map(str, sources))}")
    for record in records:
        require_valid(record)
    return records, segmentation


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

"""Where a run's record goes and how it is written, for condition suites and dataset suites alike: the record path
(given, or timestamped under the results folder), the stem its side files (resume checkpoints, finished dataset
parts) are named after, and the write that keeps a record it could not write in a :class:`RecordWriteError`."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ibnbench.errors import RecordError, RecordWriteError, UsageError
from ibnbench.io import ensure_writable
from ibnbench.results.predictions import Predictions, sidecar_path, staged_predictions
from ibnbench.results.record import Record, write_record

RECORD_START = re.compile(rb'\A\{\s*"suite"\s*:')
"""How every record :func:`ibnbench.results.record.write_record` writes begins."""


def check_replaceable_record(path: str | os.PathLike) -> None:
    """An existing output file is replaced only when it is an ibnbench record (a rerun) or empty: any other
    file is refused, so that ``--output notes.txt`` does not overwrite notes (nor ``--output /dev/null``, run as
    root, replace the device)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # the rename would replace the device itself
        raise UsageError(f"--output {path}: not a regular file (a device, pipe or socket); give a file path")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            start = f.read(256)
    except OSError as exc:
        raise UsageError(f"--output {path}: an existing file that cannot be read ({exc.strerror or exc}), so it "
                         "cannot be told to be a record; give another path") from None
    if not RECORD_START.match(start):
        raise UsageError(f"--output {path}: an existing file that is not an ibnbench record; give another path "
                         "(a record is replaced, any other file is kept)")


def created_now() -> str:
    """The record's ``created`` time: now, in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_label(suite: str, names: Sequence[str]) -> str:
    """``<suite>-<model>+<model>``: what a record is named after by default."""
    return f"{suite}-{'+'.join(names)}"


@dataclass(frozen=True)
class RecordOutput:
    """Where a run writes: ``path`` the record; ``stem`` what its side files are named after (``path`` when
    given, else ``<results_dir>/<label>.json`` without the time, so that a rerun finds an interrupted run's
    files)."""

    path: Path
    stem: Path

    @classmethod
    def choose(cls, output: str | os.PathLike | None, results_dir: str | os.PathLike, suite: str,
               names: Sequence[str]) -> RecordOutput:
        """``output`` if given, else ``<results_dir>/<suite>-<models>-<time>.json``."""
        if output:
            return cls(Path(output), Path(output))
        stem = Path(results_dir) / f"{run_label(suite, names)}.json"
        return cls(stem.with_name(f"{stem.stem}-{datetime.now():%Y%m%d-%H%M%S}.json"), stem)

    def side_file(self, tag: str) -> Path:
        """A hidden file beside the record: ``.<stem name>.<tag>``."""
        return self.stem.with_name(f".{self.stem.name}.{tag}")

    def check(self) -> None:
        """Fail now if the record could not be written later, or would replace a file that is not a record."""
        ensure_writable(self.path, "record")
        check_replaceable_record(self.path)


@contextmanager
def keeping_record(record: Record, path: Path, detail: str = "") -> Iterator[None]:
    """Turn a failure to write ``record`` to ``path`` into a :class:`RecordWriteError` that holds it."""
    try:
        yield
    except (OSError, RecordError) as exc:
        message = str(exc) if isinstance(exc, RecordError) else (f"cannot write record {path}: "
                                                                 f"{exc.strerror or exc}{detail}")
        raise RecordWriteError(message, record) from None


def write_with_predictions(record: Record, predictions: Predictions, path: Path) -> None:
    """Write ``record`` and its predictions sidecar: the sidecar is staged, the record written, then the sidecar
    moved into place (a failure leaves a previous pair as it was)."""
    sidecar = sidecar_path(path)
    with keeping_record(record, path, f" (its predictions, {sidecar.name})"):
        with staged_predictions(predictions, sidecar) as reference:
            record.predictions = reference
            write_record(record, path)

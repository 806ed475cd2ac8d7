"""ibnbench's own error types. The CLI prints exactly these as one line naming the file or option (exit 2);
anything else is a bug and keeps its traceback.

Each kind also derives from the built-in error it refines (a :class:`UsageError` is a ``ValueError``), so that
code catching the built-in keeps working."""
from __future__ import annotations

import os


class IbnbenchError(Exception):
    """An error in what the user gave: an option, a file, a dataset, a checkpoint, a record."""

    def __str__(self) -> str:  # one clean line, also for the KeyError kinds (which quote their message)
        return str(self.args[0]) if self.args else ""


class UsageError(IbnbenchError, ValueError):
    """An option or argument that cannot work (bad value, conflicting flags, missing assets)."""


class MissingFileError(IbnbenchError, FileNotFoundError):
    """A file or folder the command needs does not exist."""


class FileWriteError(IbnbenchError, OSError):
    """A file (record, checkpoint, report) cannot be written; the message names it and the reason."""


class RecordWriteError(FileWriteError):
    """A finished run's record could not be written; :attr:`record` holds it, so the caller can still show the
    numbers (the CLI prints its table before the error)."""

    def __init__(self, message: str, record: object) -> None:
        super().__init__(message)
        self.record = record

    def __reduce__(self):  # picklable with its two arguments
        return type(self), (self.args[0], self.record)


class DatasetError(IbnbenchError, ValueError):
    """The folder or its labels file cannot be read as the ImageNet validation set."""


class BadImageError(IbnbenchError, ValueError):
    """An image file that cannot be decoded (empty, unreadable, truncated, corrupt, not an image)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable with its two arguments
        return type(self), (self.path, self.reason)


class BadLabelError(BadImageError):
    """A segmentation label map that cannot be scored: undecodable, of another size than its image (the message
    names both files), or holding values its dataset's label table does not define. The ``--on-bad-image``
    policy treats it as a bad image."""


class SuiteError(IbnbenchError, ValueError):
    """A suite file is malformed, or a suite or condition name is unknown."""


class RecordError(IbnbenchError, ValueError):
    """A result record is unreadable, malformed or incomparable."""


class CheckpointError(IbnbenchError, ValueError):
    """A resume checkpoint is unreadable, foreign or left by an interrupted run that was not resumed."""


class ModelOutputError(IbnbenchError, ValueError):
    """A model's output cannot be scored: logits of the wrong shape, or non-finite (NaN, inf) logits or inputs."""


class WeightsError(IbnbenchError, RuntimeError):
    """A checkpoint could not be found, downloaded, verified or loaded."""


class UnknownModelError(IbnbenchError, KeyError):
    """A model name that is neither registered nor an external spec."""


class MissingExtraError(IbnbenchError, ImportError):
    """An optional dependency of a model is not installed."""

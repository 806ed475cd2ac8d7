"""Files: their sha256, and writing them safely: every file ibnbench writes goes through :func:`write_atomic`,
so a reader sees the old or the complete new content, never half a file, created with the mode the umask gives
(as ``open`` would)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import IO


class FileWriteError(OSError):
    """A file (record, checkpoint, report) cannot be written; the message names it and the reason."""

    def __str__(self) -> str:
        return str(self.args[0])


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def umask_mode(base: int = 0o666) -> int:
    """``base`` filtered by the process umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _make_parent(path: Path) -> None:
    """Create ``path``'s folder; an ancestor that is a file is named (mkdir would only say "File exists")."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(20, f"{blocker} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[IO[bytes]], object],
                 what: str = "file", fsync: bool = True) -> Path:
    """Write ``content`` (bytes, text, or a function writing to a binary file) to ``path`` through a temporary
    file in the same folder and a rename. ``fsync`` makes the content durable before the rename (records and
    checkpoints); a failure leaves the old ``path`` and no temporary file, and raises :class:`FileWriteError`."""
    path = Path(path)
    tmp: str | None = None
    try:
        _make_parent(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise FileWriteError(f"cannot write {what} {path}: {_reason(exc)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def ensure_writable(path: str | os.PathLike, what: str = "file") -> Path:
    """Fail now, before any work, if ``path`` could not be written later: its folder is created and a temporary
    file is made and removed there. Raises :class:`FileWriteError` naming ``path`` and the reason."""
    path = Path(path)
    if path.is_dir():
        raise FileWriteError(f"cannot write {what} {path}: it is a folder (give a file name)")
    try:
        _make_parent(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise FileWriteError(f"cannot write {what} {path}: {_reason(exc)}") from None
    return path

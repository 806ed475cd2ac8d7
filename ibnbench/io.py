"""Files in and out, for every part of ibnbench: atomic writes (records, checkpoints, sidecars, reports), a write
check before any work, sha256 of a file, and checkpoint files (models and style generators alike) resolved from a
path or a URL, downloaded into torch hub's cache and checked against the sha256 prefix of their name."""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from ibnbench.errors import FileWriteError, WeightsError


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


def make_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create the folder ``path`` (and its parents) unless it exists; a file in the way (``path`` itself or an
    ancestor) or a folder that cannot be made raises :class:`FileWriteError` naming ``what`` and the reason."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, f"{path} is a file, not a folder")
        _make_parent(path / "probe")
    except OSError as exc:
        raise FileWriteError(f"cannot write {what} {path}: {_reason(exc)}") from None
    return path


@contextlib.contextmanager
def staged(path: str | os.PathLike, fsync: bool = True) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path``, opened for binary writing; it replaces ``path`` when the block completes
    (durably with ``fsync``, with the mode a new file gets) and is deleted when the block fails, so ``path`` holds
    the old or the complete new content, never a half file. A caller may do more work inside the block (the
    predictions sidecar is moved into place only after its record is written)."""
    path = Path(path)
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # f.name: the temporary file's path
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[IO[bytes]], object],
                 what: str = "file", fsync: bool = True) -> Path:
    """Write ``content`` (bytes, text, or a function writing to a binary file) to ``path`` through :func:`staged`;
    a failure leaves the old ``path`` and raises :class:`FileWriteError` naming ``what`` and the reason."""
    path = Path(path)
    try:
        with staged(path, fsync) as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
    except OSError as exc:
        raise FileWriteError(f"cannot write {what} {path}: {_reason(exc)}") from None
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, what: str = "file") -> Path:
    """Write JSON (indent 1, UTF-8, final newline) through :func:`write_atomic`."""
    def dump(f: IO[bytes]) -> None:
        text = codecs.getwriter("utf-8")(f)
        json.dump(data, text, indent=1)
        text.write("\n")

    return write_atomic(path, dump, what=what)


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


def cache_dir() -> Path:
    """Where downloaded checkpoints live: torch hub's ``checkpoints`` folder (``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_url(spec: str) -> bool:
    return re.match(r"^(https?|ftp)://", spec) is not None


def hash_prefix_from_name(filename: str) -> str | None:
    """The sha256 prefix in a file name (or URL) of the torch hub convention ``name-<sha256 prefix>.pth``."""
    match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", filename)
    return match.group(1) if match else None


def fetch(url: str, sha256_prefix: str | None, model_name: str, progress: bool = True,
          folder: str | None = None, otherwise: str = "pass --weights PATH") -> Path:
    """The cached file for ``url`` (in ``folder`` of the cache when given), downloading it if absent; the sha256
    prefix is checked either way. ``otherwise``: what else the user can do when the download fails."""
    filename = url.rsplit("/", 1)[-1]
    target = cache_dir() / (folder or "") / filename
    expected = sha256_prefix or hash_prefix_from_name(filename)
    if target.exists():
        return verified(target, expected, model_name, f"delete it and download {url} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=None, progress=progress)
    except Exception as exc:  # network down, 404, disk full: one message that says what to do
        raise WeightsError(
            f"{model_name}: cannot download {url} ({type(exc).__name__}: {exc}). "
            f"Download it elsewhere and place it at {target}, or {otherwise}."
        ) from None
    try:
        return verified(target, expected, model_name, "the download was removed: the URL does not serve that file")
    except WeightsError:
        target.unlink(missing_ok=True)  # a wrong download must not stand in the cache as if it were the file
        raise


def verified(path: Path, sha256_prefix: str | None, model_name: str, remedy: str) -> Path:
    """``path`` if its sha256 starts with ``sha256_prefix`` (or no prefix is known)."""
    if sha256_prefix and not sha256_of(path).startswith(sha256_prefix):
        raise WeightsError(f"{model_name}: {path} does not match sha256 prefix {sha256_prefix}; {remedy}.")
    return path


def checkpoint_file(spec: str, what: str, progress: bool = True) -> Path:
    """The checkpoint file a URL (downloaded into torch hub's cache, checked against the sha256 prefix of its name)
    or a path names, for ``what`` (a model or a style generator, named in the errors)."""
    if is_url(spec):
        return fetch(spec, None, what, progress)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"{what}: weights file {spec} does not exist.")
    return path

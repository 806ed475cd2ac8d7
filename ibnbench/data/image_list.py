"""``--subset FILE``: evaluate only the images a file lists, one per line: a path relative to the dataset root
(RobustBench's ``imagenet_test_image_ids.txt``: ``n01440764/ILSVRC2012_val_00000293.JPEG``) or a plain file name
(``ILSVRC2012_val_00000293.JPEG``, matched against the images' file names). Blank lines and ``#`` comments are
skipped. The record names the list (file name, sha256 of its bytes, count), so records on other subsets differ."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path, PurePosixPath

from ibnbench.data.discovery import ValDataset
from ibnbench.errors import DatasetError, MissingFileError

SHOWN_MISSING = 3
"""How many entries the file lists but the dataset lacks an error names."""


def read_image_list(path: str | os.PathLike) -> tuple[list[str], dict]:
    """The entries of ``path`` in file order (duplicates dropped) and its description for the record."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"--subset {path}: no such file") from None
    except OSError as exc:
        raise DatasetError(f"--subset {path}: cannot read ({exc.strerror or exc})") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"--subset {path}: not a text file of image names") from None
    entries = list(dict.fromkeys(s for line in lines if (s := line.split("#", 1)[0].strip())))
    if not entries:
        raise DatasetError(f"--subset {path}: lists no image")
    return entries, {"file": path.name, "sha256": hashlib.sha256(raw).hexdigest(), "n": len(entries)}


def select_images(dataset: ValDataset, path: str | os.PathLike) -> ValDataset:
    """``dataset`` narrowed to the images ``path`` lists (in the dataset's sorted order), its fingerprint naming the
    list; an entry that matches no image (or a file name that matches several) raises :class:`DatasetError` naming
    the file and the first such entries."""
    entries, description = read_image_list(path)
    by_path = {name: i for i, name in enumerate(dataset.files)}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(dataset.files):
        by_name.setdefault(PurePosixPath(name).name, []).append(i)
    keep, missing, ambiguous = set(), [], []
    for entry in entries:
        if entry in by_path:
            keep.add(by_path[entry])
        elif "/" not in entry and len(by_name.get(entry, ())) == 1:
            keep.add(by_name[entry][0])
        else:
            (ambiguous if "/" not in entry and entry in by_name else missing).append(entry)
    if missing or ambiguous:
        problem = (f"{len(missing)} listed image(s) are not in {dataset.root} (first: "
                   f"{', '.join(missing[:SHOWN_MISSING])})" if missing else
                   f"file name(s) match several images of {dataset.root} (first: "
                   f"{', '.join(ambiguous[:SHOWN_MISSING])}); give them as <folder>/<file>")
        raise DatasetError(f"--subset {Path(path).expanduser()}: {problem}")
    rows = sorted(keep)
    return dataclasses.replace(dataset, files=tuple(dataset.files[i] for i in rows), labels=dataset.labels[rows],
                               sizes=tuple(dataset.sizes[i] for i in rows), image_list=description)

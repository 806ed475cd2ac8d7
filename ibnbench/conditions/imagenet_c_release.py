"""ImageNet-C as released: its condition ids (``gaussian_noise-3``) and the released files' folder tree (read as a
suite of pre-made conditions). The ops are :mod:`ibnbench.conditions.corruptions`', the scores
:mod:`ibnbench.results.imagenet_c`'s."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Sequence

from ibnbench.conditions.benchmark_generator import RELEASED, RELEASED_JPEG, BenchmarkGenerator
from ibnbench.conditions.corruptions import COMMON, EXTRA, LABELS, SEVERITIES
from ibnbench.conditions.style import Dir
from ibnbench.conditions.suite import Suite, canonical_json
from ibnbench.errors import UsageError


def parse(condition_id: str, names: Sequence[str] = COMMON + EXTRA) -> tuple[str, int] | None:
    """``"gaussian_noise-3"`` -> ``("gaussian_noise", 3)``; None for other ids (``names``: the corruptions, by
    default ImageNet-C's 19)."""
    name, _, severity = condition_id.rpartition("-")
    return (name, int(severity)) if name in names and severity in {str(s) for s in SEVERITIES} else None


RELEASED_LAYOUT = "imagenet-c-released"


class ReleasedCorruption(Dir):
    """An ImageNet-C corruption at a severity read from its folder of the released files (saved as JPEG at 85)."""

    def benchmark_generator(self) -> BenchmarkGenerator:
        return BenchmarkGenerator("imagenet-c", RELEASED, RELEASED_JPEG)


def is_released_tree(root: str | os.PathLike) -> bool:
    """True for the downloaded ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG`` (every subfolder of
    ``root`` a corruption name, at least one with severity folders)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return False
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(folders) and all(p.name in LABELS for p in folders) and any(
        (p / str(s)).is_dir() for p in folders for s in SEVERITIES)


def released_suite(suite: Suite, root: str | os.PathLike) -> tuple[Suite, list[str]]:
    """The suite's corruptions read from the released files under ``root`` (``dir`` conditions on
    ``<root>/<corruption>/<severity>``), and the ids the tree cannot serve (``origin``: no clean images in it)."""
    root = Path(root).expanduser()
    conditions, absent = [], []
    for condition in suite.conditions:
        parsed = parse(condition.id)
        folder = root / parsed[0] / str(parsed[1]) if parsed else None
        if folder is not None and folder.is_dir():
            conditions.append(ReleasedCorruption(condition.id, condition.label, root=folder))
        else:
            absent.append(condition.id)
    if not conditions:
        raise UsageError(f"{root}: the released ImageNet-C tree holds none of suite {suite.name!r}'s corruptions")
    digest = hashlib.sha256(canonical_json([c.spec for c in conditions]).encode()).hexdigest()
    return dataclasses.replace(suite, conditions=tuple(conditions), hash=digest), absent

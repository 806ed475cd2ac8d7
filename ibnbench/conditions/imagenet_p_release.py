"""ImageNet-P as released: a suite's perturbations read from the downloaded videos
(:mod:`ibnbench.data.imagenet_p_release`) instead of generated on the fly.

A :class:`ReleasedSequence` is a sequence condition like an on-the-fly perturbation: :meth:`ReleasedSequence.stream`
yields a batch's frames one at a time, :meth:`ReleasedSequence.frames` returns them as ``(frames, N, C, S, S)``.
Its batch is not a crop to perturb but the decoded videos ``[N, frames, 3, S, S]`` (each frame centre-cropped to
the model's crop, not resized: the released frames are already the 224 centre crops), read by the loader from the
perturbation's folder at the run's difficulty. Its record names the released videos as its ``generator``."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from ibnbench.conditions.base import Condition
from ibnbench.conditions.benchmark_generator import RELEASED, BenchmarkGenerator
from ibnbench.conditions.perturbations import PERTURBATIONS, frame_count, is_noise
from ibnbench.conditions.suite import Suite, canonical_json
from ibnbench.data.imagenet_p_release import folder_names, is_released_p_tree, open_videos, released_folder
from ibnbench.errors import MissingFileError, UsageError

if TYPE_CHECKING:
    from ibnbench.data.discovery import ValDataset

RELEASED_FOLDERS = folder_names(PERTURBATIONS, [is_noise(name) for name in PERTURBATIONS])
"""Every folder name the released tree may hold (the 14 perturbations, the noise ones with ``_2`` and ``_3``)."""


def is_released_p(root: str | os.PathLike) -> bool:
    """True when ``root`` is the downloaded ImageNet-P (``<perturbation>[_2|_3]/<wnid>/*.mp4``)."""
    return is_released_p_tree(root, RELEASED_FOLDERS)


class ReleasedSequence(Condition):
    """Perturbation ``perturbation`` read from ``<root>/<folder>`` (the folder of ``difficulty``)."""

    op, kind = "released-perturbation", "dir"

    def __init__(self, id: str, label: str | None = None, *, perturbation: str, root: str | os.PathLike,
                 difficulty: int = 1):
        super().__init__(id, label)
        self.perturbation, self.difficulty = perturbation, difficulty
        self.folder = released_folder(perturbation, difficulty, is_noise(perturbation))
        self.root = Path(root).expanduser()

    @property
    def frame_count(self) -> int:
        """Frames in a sequence: 41 for translate, 31 for the others."""
        return frame_count(self.perturbation)

    def params(self) -> dict:
        return {"perturbation": self.perturbation, "folder": self.folder, "difficulty": self.difficulty}

    def provenance(self) -> dict:
        return {"perturbation": self.perturbation, "frames": self.frame_count, "released": str(self.root / self.folder)}

    def benchmark_generator(self) -> BenchmarkGenerator:
        """The released videos, read as they are."""
        return BenchmarkGenerator("imagenet-p", RELEASED)

    def source(self, dataset: ValDataset) -> ValDataset | None:
        """The videos of ``dataset``'s files in this condition's folder (every one must be there: fails before any
        work, naming one that is not); None when ``dataset`` is that folder."""
        root = self.root / self.folder
        if dataset.root == root:
            return None
        absent = next((f for f in dataset.files if not (root / f).is_file()), None)
        if absent is not None:
            raise MissingFileError(f"condition {self.id!r}: {root} lacks {absent}, which {dataset.root} has")
        return dataclasses.replace(dataset, root=root, frames=self.frame_count)

    def stream(self, videos: torch.Tensor, index: torch.Tensor | None = None, difficulty: int = 1,
               start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        """Frames ``[start, stop)`` (default: all) of the decoded videos ``[N, frames, 3, S, S]``, one float
        ``[N, 3, S, S]`` at a time; ``difficulty`` must be the one whose folder was read."""
        if difficulty != self.difficulty:
            raise UsageError(f"condition {self.id!r} reads {self.folder} (difficulty {self.difficulty}), not "
                             f"difficulty {difficulty}")
        if videos.dim() != 5 or videos.shape[1] != self.frame_count:
            raise UsageError(f"condition {self.id!r} needs videos [N, {self.frame_count}, 3, S, S], got "
                             f"{list(videos.shape)}")
        return (videos[:, t].float() for t in range(start, self.frame_count if stop is None else stop))

    def frames(self, videos: torch.Tensor, index: torch.Tensor | None = None, difficulty: int = 1, start: int = 0,
               stop: int | None = None) -> torch.Tensor:
        """:meth:`stream`'s frames as one tensor ``(frames, N, C, S, S)``."""
        return torch.stack(list(self.stream(videos, index, difficulty, start, stop)))

    def apply(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Frame 0 of the videos ``x``."""
        return x[:, 0].float() if x.dim() == 5 else x


def released_p_suite(suite: Suite, root: str | os.PathLike, difficulty: int = 1) -> tuple[Suite, list[str]]:
    """The suite's perturbations read from the released files under ``root`` at ``difficulty``, and the ids the
    tree cannot serve (``origin``: no clean images in it; a perturbation whose folder is absent)."""
    root = Path(root).expanduser()
    conditions, absent = [], []
    for condition in suite.conditions:
        name = getattr(condition, "perturbation", None)
        if name in PERTURBATIONS and (root / released_folder(name, difficulty, is_noise(name))).is_dir():
            conditions.append(ReleasedSequence(condition.id, condition.label, perturbation=name, root=root,
                                               difficulty=difficulty))
        else:
            absent.append(condition.id)
    if not conditions:
        raise UsageError(f"{root}: the released ImageNet-P tree holds none of suite {suite.name!r}'s perturbations "
                         f"at difficulty {difficulty}")
    digest = hashlib.sha256(canonical_json([c.spec for c in conditions]).encode()).hexdigest()
    return dataclasses.replace(suite, conditions=tuple(conditions), hash=digest), absent


def released_p_dataset(suite: Suite, limit: int | None = None) -> ValDataset:
    """The videos of the released suite's first condition (the others read theirs via
    :meth:`ReleasedSequence.source`): the run's images, labelled by their wnid folders."""
    first = suite.conditions[0]
    return open_videos(first.root, first.folder, first.frame_count, limit)

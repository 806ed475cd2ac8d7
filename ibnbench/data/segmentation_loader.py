"""Batches of decoded (image, train ids) pairs of a :class:`~ibnbench.data.segmentation.SegmentationDataset`, decoded
in DataLoader workers, with the bad-image policy of classification (``fail`` or ``skip``) applied in the main
process: a pair whose image or label map cannot be read, or whose sizes differ, stops the run with one line naming
the file(s), or is counted and listed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ibnbench.data.loader import BAD_IMAGE_POLICIES
from ibnbench.data.segmentation import SegmentationDataset, load_pair
from ibnbench.errors import BadImageError, BadLabelError, UsageError


@dataclass
class PairSample:
    """One pair: its image and train ids, or why it could not be read (``path``: the file the reason is about)."""

    index: int
    image: torch.Tensor | None
    label: torch.Tensor | None
    error: str = ""
    path: str = ""
    label_problem: bool = False


class SegmentationPairs(Dataset):
    """``dataset``'s pairs decoded by :func:`load_pair`; a bad pair comes back with ``error`` set."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> PairSample:
        try:
            image, label = load_pair(self.dataset, index)
        except BadImageError as exc:
            return PairSample(index, None, None, exc.reason, exc.path, isinstance(exc, BadLabelError))
        return PairSample(index, image, label)

    @staticmethod
    def collate(samples: list[PairSample]) -> list[PairSample]:
        return samples


class SegmentationLoader:
    """Iterates batches ``{"index": [N] long, "ok": [N] bool, "images": [uint8 [3,H,W] or None], "labels": [uint8
    [H,W] or None], "bad": [(image's relative path, reason)]}``; images of one batch may differ in size."""

    def __init__(self, loader: DataLoader, dataset: SegmentationDataset, on_bad_image: str) -> None:
        self.loader = loader
        self.dataset = dataset
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for samples in self.loader:
            bad = [s for s in samples if s.error]
            if bad and self.on_bad_image == "fail":
                kind = BadLabelError if bad[0].label_problem else BadImageError
                raise kind(bad[0].path, bad[0].error)
            yield {"index": torch.tensor([s.index for s in samples], dtype=torch.long),
                   "ok": torch.tensor([not s.error for s in samples], dtype=torch.bool),
                   "images": [s.image for s in samples], "labels": [s.label for s in samples],
                   "bad": [(self.dataset.images[s.index], f"{s.path}: {s.error}") for s in bad]}


def make_segmentation_loader(dataset: SegmentationDataset, batch_size: int = 1, workers: int = 2,
                             on_bad_image: str = "fail", indices: Sequence[int] | None = None) -> SegmentationLoader:
    """Batches of ``batch_size`` decoded pairs of ``dataset`` in the order of ``indices`` (default: all), decoded in
    ``workers`` processes. ``on_bad_image``: "fail" raises the pair's error; "skip" marks it not ok and lists it."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UsageError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if batch_size < 1 or workers < 0:
        raise UsageError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    order = list(range(len(dataset)) if indices is None else indices)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    pairs = SegmentationPairs(dataset)
    loader = DataLoader(pairs, batch_sampler=batches, num_workers=workers, collate_fn=pairs.collate)
    return SegmentationLoader(loader, dataset, on_bad_image)

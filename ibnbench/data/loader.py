"""Batches of crops: a :class:`CropDataset` decodes each image once and cuts one uint8 crop per geometry from it.

Resizing runs on the uint8 tensor: on CPUs with
AVX2 torchvision uses its native uint8 antialiased bilinear kernel, which matches PIL's
``Image.BILINEAR`` resize (the reference pipeline) on 99.7 % of pixels and within 1 grey level on all
of them on the 100 real val images; resizing in float32 and rounding also stays within 1 level but
differs from PIL on about 16 % of pixels. Without AVX2 (and on CUDA) torchvision itself falls back to
float32 + rounding.

On CUDA, ``make_loader(..., decoder="nvjpeg")`` decodes baseline/progressive 3-component JPEGs in
batches with nvJPEG (``torchvision.io.decode_jpeg(list, device="cuda")``) and resizes/crops on the
GPU. Everything nvJPEG should not see (greyscale, CMYK, PNG data in a ``.JPEG`` file, arithmetic
coding, files not ending in the JPEG end marker, e.g. truncated ones) is decoded by
:func:`decode_file` in the loader's CPU workers, so both paths apply the same bad-image policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ibnbench.data.cache import CropCache, open_caches
from ibnbench.data.decode import decode_file, nvjpeg_can_decode, nvjpeg_decode, nvjpeg_device, read_bytes
from ibnbench.data.discovery import ValDataset
from ibnbench.data.geometry import HasGeometry, unique_geometries
from ibnbench.errors import BadImageError, UsageError

BAD_IMAGE_POLICIES = ("fail", "skip")
DECODERS = ("cpu", "nvjpeg")


@dataclass
class Sample:
    """One image: its crops, or why it could not be decoded, or its bytes left to nvJPEG."""

    index: int
    label: int
    crops: dict[str, torch.Tensor]
    error: str = ""
    encoded: torch.Tensor | None = None


class CropDataset(Dataset):
    """Decode each image of ``val`` once and cut one uint8 crop per geometry from it.

    A bad image comes back as a :class:`Sample` with ``error`` set and no crops: the policy is applied
    by :class:`CropLoader` in the main process, because an exception raised in a DataLoader worker
    reaches the caller as a multi-line RuntimeError. ``nvjpeg=True``: JPEGs that nvJPEG can decode
    come back undecoded (``encoded`` bytes, no crops).
    """

    def __init__(self, val: ValDataset, geometries: Iterable[HasGeometry], nvjpeg: bool = False) -> None:
        self.val = val
        self.geometries = unique_geometries(geometries)
        self.nvjpeg = nvjpeg

    def __len__(self) -> int:
        return len(self.val)

    def __getitem__(self, index: int) -> Sample:
        label = int(self.val.labels[index])
        path = self.val.path(index)
        try:
            if self.nvjpeg:
                data = read_bytes(path)
                if nvjpeg_can_decode(data):
                    return Sample(index, label, {}, encoded=data)
            image = decode_file(path)
        except BadImageError as exc:
            return Sample(index, label, {}, error=exc.reason)
        return Sample(index, label, {g.key: g.apply(image, not self.val.cropped) for g in self.geometries})

    def collate(self, samples: list[Sample]) -> dict:
        """Stack samples into a batch (zero crops where there is none yet). ``bad``: ``(index, reason)``
        of images that failed; ``encoded``: ``(rows, lengths, bytes)`` of images to decode on the device."""
        crops = {}
        for g in self.geometries:
            stacked = torch.zeros(len(samples), 3, g.crop, g.crop, dtype=torch.uint8)
            for row, sample in enumerate(samples):
                if g.key in sample.crops:
                    stacked[row] = sample.crops[g.key]
            crops[g.key] = stacked
        pending = [(row, s.encoded) for row, s in enumerate(samples) if s.encoded is not None]
        return {"index": torch.tensor([s.index for s in samples], dtype=torch.long),
                "label": torch.tensor([s.label for s in samples], dtype=torch.long),
                "ok": torch.tensor([not s.error for s in samples], dtype=torch.bool),
                "crops": crops,
                "bad": [(s.index, s.error) for s in samples if s.error],
                # one flat tensor, not one per image: each tensor a worker sends costs a shared-memory handle
                "encoded": ([row for row, _ in pending], [len(d) for _, d in pending],
                            torch.cat([d for _, d in pending]) if pending else torch.empty(0, dtype=torch.uint8))}


class GpuDecoder:
    """Decode a batch's pending JPEGs with nvJPEG in one call and resize/crop them on ``device``.

    If the batched call fails, images are retried one by one; one that nvJPEG still rejects is decoded
    by :func:`decode_file` on the CPU, so a corrupt file gets the same error as on the CPU path.
    ``decoded_on_device`` and ``fallbacks`` count what happened.
    """

    def __init__(self, dataset: CropDataset, device: torch.device | str = "cuda") -> None:
        self.dataset = dataset
        self.device = nvjpeg_device(device)
        self.decoded_on_device = 0
        self.fallbacks = 0

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        try:
            return nvjpeg_decode(data, self.device)
        except RuntimeError:
            if len(data) == 1:
                return [None]
            return [self._decode([d])[0] for d in data]

    def __call__(self, batch: dict) -> dict:
        """Move the batch's crops to ``device`` and fill in the rows listed in ``batch["encoded"]``."""
        batch["crops"] = {k: v.to(self.device, non_blocking=True) for k, v in batch["crops"].items()}
        rows, lengths, packed = batch.pop("encoded")
        images = self._decode(list(packed.split(lengths))) if rows else []
        for row, image in zip(rows, images):
            if image is None:
                self.fallbacks += 1
                index = int(batch["index"][row])
                try:
                    image = decode_file(self.dataset.val.path(index)).to(self.device)
                except BadImageError as exc:
                    batch["ok"][row] = False
                    batch["bad"].append((index, exc.reason))
                    continue
            else:
                self.decoded_on_device += 1
            for g in self.dataset.geometries:
                batch["crops"][g.key][row] = g.apply(image, not self.dataset.val.cropped)
        return batch


class CropLoader:
    """Iterates batches ``{"index": [N], "label": [N], "ok": [N] bool, "crops": {geometry key: uint8
    [N,3,c,c]}, "bad": [(relative path, reason)]}``; skipped images have ``ok`` False and zero crops.

    ``batches`` fixes which images go in each batch; with ``caches``, images found there are read from
    them, the others (``loader`` yields exactly those, batch by batch) are decoded and stored."""

    def __init__(self, loader: DataLoader, dataset: CropDataset, on_bad_image: str, gpu: GpuDecoder | None,
                 batches: list[list[int]], missing: list[list[int]] | None = None,
                 caches: dict[str, CropCache] | None = None) -> None:
        self.loader = loader
        self.dataset = dataset
        self.on_bad_image = on_bad_image
        self.gpu = gpu
        self.batches = batches
        self.missing = batches if missing is None else missing
        self.caches = caches or {}
        self.from_cache = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        decoded = iter(self.loader)
        for chunk, missing in zip(self.batches, self.missing):
            batch = None
            if missing:
                batch = next(decoded)
                batch = self.gpu(batch) if self.gpu is not None else batch
                batch.pop("encoded", None)
                self._store(batch)
            if len(missing) < len(chunk):
                batch = self._with_cached(chunk, missing, batch)
            if batch["bad"] and self.on_bad_image == "fail":
                index, reason = batch["bad"][0]
                raise BadImageError(self.dataset.val.path(index), reason)
            batch["bad"] = [(self.dataset.val.files[i], reason) for i, reason in batch["bad"]]
            yield batch

    def _store(self, batch: dict) -> None:
        for key, cache in self.caches.items():
            cache.put(batch["index"], batch["crops"][key], batch["ok"])

    def _with_cached(self, chunk: list[int], missing: list[int], decoded: dict | None) -> dict:
        """The batch of ``chunk`` read from the caches (its ``missing`` rows were decoded and stored first),
        with the ok flags and problems of the decoded rows."""
        index = torch.tensor(chunk, dtype=torch.long)
        batch = {"index": index, "label": self.dataset.val.labels[index], "ok": torch.ones(len(chunk),
                                                                                           dtype=torch.bool),
                 "crops": {key: cache.get(index) for key, cache in self.caches.items()}, "bad": []}
        self.from_cache += len(chunk) - len(missing)
        if decoded is not None:
            row_of = {i: row for row, i in enumerate(chunk)}
            batch["ok"][[row_of[i] for i in missing]] = decoded["ok"]
            batch["bad"] = decoded["bad"]
        return batch


def make_loader(dataset: ValDataset, geometries: Iterable[HasGeometry], batch_size: int = 64, workers: int = 4,
                pin_memory: bool = False, on_bad_image: str = "fail", decoder: str = "cpu",
                device: torch.device | str = "cuda", indices: Sequence[int] | None = None,
                cache: str | None = None) -> CropLoader:
    """Batches of crops for every distinct geometry in ``geometries``, each image decoded once.

    ``decoder="cpu"``: decode + resize + crop in ``workers`` processes (crops on the CPU, pinned with
    ``pin_memory``). ``decoder="nvjpeg"``: workers read the files, JPEGs are decoded and cropped on
    ``device`` (the rest decoded in the workers), crops on ``device``. ``on_bad_image``: "fail" raises
    :class:`BadImageError`; "skip" marks the image not ok and lists it in the batch's ``bad``.
    ``indices``: visit only these images, in this order (a rank's shard, or what a resumed run has left).
    ``cache``: a folder, or "gpu", for the uint8 crop cache (:mod:`ibnbench.data.cache`).
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UsageError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if decoder not in DECODERS:
        raise UsageError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if batch_size < 1 or workers < 0:
        raise UsageError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    gpu = decoder == "nvjpeg"
    if gpu and not (torch.device(device).type == "cuda" and torch.cuda.is_available()):
        raise UsageError(f"decoder 'nvjpeg' needs a CUDA device, got {device!r} (CUDA available: "
                         f"{torch.cuda.is_available()}); use decoder='cpu'")
    crops = CropDataset(dataset, geometries, nvjpeg=gpu)
    order = list(range(len(dataset)) if indices is None else indices)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    caches = open_caches(cache, dataset, crops.geometries, decoder, torch.device(device)) if cache else {}
    missing = batches
    if caches:
        cached = torch.stack([c.filled.cpu().bool() for c in caches.values()]).all(dim=0).tolist()
        missing = [[i for i in chunk if not cached[i]] for chunk in batches]
    loader = DataLoader(crops, batch_sampler=[m for m in missing if m], num_workers=workers,
                        collate_fn=crops.collate, pin_memory=pin_memory)
    return CropLoader(loader, crops, on_bad_image, GpuDecoder(crops, device) if gpu else None, batches, missing,
                      caches)

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
:func:`decode_file` in the loader's CPU workers, so both paths apply the same bad-image policy. The workers then
send the encoded bytes and the crops of the rows they decoded only (no zero-filled crop per image), and the
device-decoded images are resized and cropped in one call per distinct image size (:func:`crop_grouped`).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ibnbench.data.cache import CropCache, open_caches
from ibnbench.data.decode import decode_file, nvjpeg_can_decode, nvjpeg_decode, nvjpeg_device, read_bytes
from ibnbench.data.discovery import ValDataset
from ibnbench.data.geometry import Geometry, HasGeometry, unique_geometries
from ibnbench.data.imagenet_p_release import read_video
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
    come back undecoded (``encoded`` bytes, no crops). Videos (``val.frames``: the released ImageNet-P) are read
    with :func:`read_video`, and each frame cut: crops ``[frames, 3, c, c]``.
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
            if self.nvjpeg and not self.val.frames:
                data = read_bytes(path)
                if nvjpeg_can_decode(data):
                    return Sample(index, label, {}, encoded=data)
            image = read_video(path, self.val.frames) if self.val.frames else decode_file(path)
        except BadImageError as exc:
            return Sample(index, label, {}, error=exc.reason)
        return Sample(index, label, {g.key: g.apply(image, not self.val.cropped) for g in self.geometries})

    def crop_shape(self, geometry: Geometry) -> tuple[int, ...]:
        """One sample's crop: ``[3, c, c]``, or ``[frames, 3, c, c]`` for videos."""
        side = (3, geometry.crop, geometry.crop)
        return (self.val.frames, *side) if self.val.frames else side

    def collate(self, samples: list[Sample]) -> dict:
        """Stack samples into a batch. ``bad``: ``(index, reason)`` of images that failed. CPU decoding: one crop
        per row (zeros for a failed image). nvJPEG: crops of the rows decoded here only (``crop_rows``), and
        ``encoded``: ``(rows, lengths, bytes)`` of the images to decode on the device; no zero-filled crops of
        those travel through shared memory and to the device."""
        rows = [row for row, s in enumerate(samples) if s.crops] if self.nvjpeg else list(range(len(samples)))
        crops = {g.key: _stacked([samples[row].crops.get(g.key) for row in rows], self.crop_shape(g))
                 for g in self.geometries}
        pending = [(row, s.encoded) for row, s in enumerate(samples) if s.encoded is not None]
        batch = {"index": torch.tensor([s.index for s in samples], dtype=torch.long),
                 "label": torch.tensor([s.label for s in samples], dtype=torch.long),
                 "ok": torch.tensor([not s.error for s in samples], dtype=torch.bool),
                 "crops": crops,
                 "bad": [(s.index, s.error) for s in samples if s.error]}
        if self.nvjpeg:
            # one flat tensor, not one per image: each tensor a worker sends costs a shared-memory handle
            batch["crop_rows"] = rows
            batch["encoded"] = ([row for row, _ in pending], [len(d) for _, d in pending],
                                torch.cat([d for _, d in pending]) if pending else torch.empty(0, dtype=torch.uint8))
        return batch


def _stacked(crops: list[torch.Tensor | None], shape: tuple[int, ...]) -> torch.Tensor:
    """``crops`` as one uint8 ``[N, *shape]`` tensor, zeros where a crop is None."""
    stacked = torch.zeros(len(crops), *shape, dtype=torch.uint8)
    for row, crop in enumerate(crops):
        if crop is not None:
            stacked[row] = crop
    return stacked


def crop_grouped(images: Sequence[torch.Tensor], geometry: Geometry, resize: bool = True) -> list[torch.Tensor]:
    """``geometry.apply`` on each of ``images`` (uint8 ``[3,H,W]``), with one resize and crop call per distinct
    image size rather than one per image; the crops come back in the order of ``images``."""
    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for position, image in enumerate(images):
        by_size[tuple(image.shape)].append(position)
    crops: list[torch.Tensor] = [None] * len(images)  # type: ignore[list-item]
    for positions in by_size.values():
        cut = geometry.apply(torch.stack([images[p] for p in positions]), resize)
        for p, crop in zip(positions, cut):
            crops[p] = crop
    return crops


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
        """The batch with its crops on ``device``: the rows decoded by the workers (``crop_rows``) copied there,
        those listed in ``batch["encoded"]`` decoded and cut there (zeros for failed images)."""
        count = len(batch["index"])
        crops = {g.key: torch.zeros(count, 3, g.crop, g.crop, dtype=torch.uint8, device=self.device)
                 for g in self.dataset.geometries}
        rows = batch.pop("crop_rows")
        for key, decoded in batch["crops"].items():
            decoded = decoded.to(self.device, non_blocking=True)
            if len(rows) == count:  # every row decoded by the workers (PNGs: a pre-rendered style folder)
                crops[key] = decoded
                continue
            for position, row in enumerate(rows):
                crops[key][row] = decoded[position]
        batch["crops"] = crops
        rows, lengths, packed = batch.pop("encoded")
        images = self._decode(list(packed.split(lengths))) if rows else []
        done = []
        for row, image in zip(rows, images):
            if image is None:
                image = self._fallback(batch, row)
            else:
                self.decoded_on_device += 1
            if image is not None:
                done.append((row, image))
        for g in self.dataset.geometries:
            cut = crop_grouped([image for _, image in done], g, not self.dataset.val.cropped)
            for (row, _), crop in zip(done, cut):
                crops[g.key][row] = crop
        return batch

    def _fallback(self, batch: dict, row: int) -> torch.Tensor | None:
        """Row ``row`` decoded on the CPU after nvJPEG refused it, on ``device``; None (and the row marked bad)
        if it cannot be decoded."""
        self.fallbacks += 1
        index = int(batch["index"][row])
        try:
            return decode_file(self.dataset.val.path(index)).to(self.device)
        except BadImageError as exc:
            batch["ok"][row] = False
            batch["bad"].append((index, exc.reason))
            return None


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
    if dataset.frames and cache:
        raise UsageError(f"--cache keeps image crops; {dataset.root} holds videos: run without --cache")
    gpu = decoder == "nvjpeg" and not dataset.frames  # videos are decoded by PyAV in the workers
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

"""The uint8 crop cache (``--cache DIR|gpu``): decoded, cropped images kept so that later passes over the
same data skip decoding.

``DIR``: one memory-mapped file of crops per (dataset, folder, geometry, decoder) plus a file of "filled" flags, so a
later process (another run, another model) reads crops instead of decoding; ranks on one machine share it.
``gpu``: the crops stay in the run's device memory (host memory on CPU) for the rest of the process, for
repeated :func:`ibnbench.run` calls and ``--no-fanout`` passes. Images that fail to decode are never
cached, so they fail (or are skipped) the same way every time.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from ibnbench.errors import FileWriteError, UsageError

if TYPE_CHECKING:
    from ibnbench.data.discovery import ValDataset
    from ibnbench.data.geometry import Geometry

FORMAT = "v1"
_IN_MEMORY: dict[tuple, CropCache] = {}


@dataclass
class CropCache:
    """Crops ``[N, 3, c, c]`` uint8 of one dataset at one geometry; ``filled[i]`` is 1 once image i is in."""

    crops: torch.Tensor
    filled: torch.Tensor

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        return self.crops[_to_cache(indices, self.crops.device)]

    def put(self, indices: torch.Tensor, crops: torch.Tensor, ok: torch.Tensor) -> None:
        """Store a batch's crops, then mark the ``ok`` ones filled (a process killed in between leaves them
        unfilled). No boolean indexing and no blocking copy, so no host sync for a cache on the GPU."""
        indices = _to_cache(indices, self.crops.device)
        self.crops[indices] = _to_cache(crops, self.crops.device)
        self.filled[indices] = _to_cache(ok, self.filled.device).to(torch.uint8)


def _to_cache(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on the cache's ``device``. Host to GPU: an asynchronous copy from pinned memory (a pinned copy is
    made first when the tensor is not; torch keeps the pinned block until the copy is done), not a blocking copy from
    pageable memory, which waits for the device."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)
    return tensor.to(device)


def cache_name(fingerprint: dict, geometry: Geometry, decoder: str) -> str:
    """File stem naming what a cache holds: the dataset (its fingerprint and its folder: a `dir` condition's
    pre-stylised copy lists the same files as the originals), the crop geometry and the decoder (nvJPEG and
    libjpeg differ in the last bit, so their crops are kept apart)."""
    identity = hashlib.sha256(f"{fingerprint['sha256']}\t{fingerprint['root']}".encode()).hexdigest()
    return f"crops-{FORMAT}-{identity[:16]}-{geometry.key}-{decoder}"


def _mapped(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor backed by ``path``, created zero-filled when absent (atomically: ranks may race)."""
    size = int(np.prod(shape))
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.truncate(size)
        try:
            os.link(tmp, path)  # fails if another process got there first; its file is as good
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_size != size:
        raise UsageError(f"{path}: crop cache file has {path.stat().st_size} bytes, expected {size}; delete it")
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="r+", shape=shape))


def _on_disk(folder: Path, name: str, n: int, crop: int) -> CropCache:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return CropCache(_mapped(folder / f"{name}.u8", (n, 3, crop, crop)), _mapped(folder / f"{name}.filled", (n,)))
    except OSError as exc:  # a folder that cannot be made or written (permissions, a read-only or virtual file system)
        raise FileWriteError(f"--cache {folder}: cannot keep the crop cache there ({exc.strerror or exc})") from None


def _in_memory(name: str, n: int, crop: int, device: torch.device) -> CropCache:
    key = (name, str(device))
    if key not in _IN_MEMORY:
        need = n * 3 * crop * crop
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            if need > free // 2:
                raise UsageError(f"--cache gpu: {need / 2**30:.1f} GiB of crops would take over half the "
                                 f"{free / 2**30:.1f} GiB free on {device}; use --cache DIR")
        _IN_MEMORY[key] = CropCache(torch.zeros((n, 3, crop, crop), dtype=torch.uint8, device=device),
                                    torch.zeros(n, dtype=torch.uint8, device=device))
    return _IN_MEMORY[key]


def open_caches(spec: str, dataset: ValDataset, geometries: Iterable[Geometry], decoder: str,
                device: torch.device) -> dict[str, CropCache]:
    """One cache per geometry key: on disk under folder ``spec``, or in ``device`` memory for ``"gpu"``."""
    caches = {}
    fingerprint = dataset.fingerprint()
    for geometry in geometries:
        name = cache_name(fingerprint, geometry, decoder)
        if spec == "gpu":
            caches[geometry.key] = _in_memory(name, len(dataset), geometry.crop, device)
        else:
            caches[geometry.key] = _on_disk(Path(os.path.expanduser(spec)), name, len(dataset), geometry.crop)
    return caches


def clear_memory() -> None:
    """Drop every in-memory cache of this process."""
    _IN_MEMORY.clear()

"""A fake ImageNet validation folder of random JPEGs with val's size mix, for speed measurements."""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ibnbench.errors import UsageError
from ibnbench.io import make_folder, write_atomic

# ImageNet val: most images are 500x375 / 375x500 / 500x333 / 500x500; mean JPEG size ~ 130 kB.
MAX_IMAGES = 10_000_000  # ~1.3 TB of JPEGs; more is a typo, and its job list alone would not fit in memory
_SHAPES = ((375, 500), (500, 375), (333, 500), (500, 500), (500, 333), (400, 500), (281, 500), (500, 400))


def fake_image(seed: int) -> torch.Tensor:
    """A natural-looking uint8 RGB image: 1/f-like colour noise, a lit gradient, a few soft shapes and grain."""
    g = torch.Generator().manual_seed(seed)
    h, w = _SHAPES[int(torch.randint(len(_SHAPES), (1,), generator=g))]
    image = torch.zeros(3, h, w)
    for scale in (2, 4, 8, 16, 32, 64):  # octaves of smooth noise: large blobs dominate, detail decays like 1/f
        coarse = torch.randn(1, 3, max(2, h // scale), max(2, w // scale), generator=g)
        image += torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                                 align_corners=False)[0] * scale ** 0.8
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    image += 25 * (math.cos(angle) * xx + math.sin(angle) * yy)
    for _ in range(int(torch.randint(2, 6, (1,), generator=g))):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([h, w, min(h, w) / 3])).tolist()
        mask = (((yy + 1) * h / 2 - cy) ** 2 + ((xx + 1) * w / 2 - cx) ** 2 < (r + 10) ** 2).float()
        image += mask * (torch.rand(3, 1, 1, generator=g) * 120 - 60)
    image = (image - image.mean()) / (image.std() + 1e-6) * 55 + 115 + torch.randn(3, h, w, generator=g) * 9
    return image.clamp(0, 255).to(torch.uint8)


def _write_fake(job: tuple[int, str, str, int]) -> None:
    from torchvision.io import encode_jpeg

    index, wnid, out, seed = job
    folder = Path(out) / wnid
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ILSVRC2012_val_{index + 1:08d}.JPEG"
    if not path.exists():
        write_atomic(path, encode_jpeg(fake_image(seed + index), quality=90).numpy().tobytes(), fsync=False)


def make_fake_val(n: int, out: str | os.PathLike, seed: int = 0, workers: int | None = None,
                  progress: bool = True) -> Path:
    """Write ``n`` synthetic JPEGs in ImageFolder layout (``out/<wnid>/ILSVRC2012_val_*.JPEG``), 50 per class
    for the full 50,000, with valid ImageNet wnids; resumable (existing files are kept)."""
    from timm.data import ImageNetInfo

    if not 1 <= n <= MAX_IMAGES:
        raise UsageError(f"--n must be 1 to {MAX_IMAGES:,} images, not {n}")
    make_folder(out, "fake val folder")
    wnids = ImageNetInfo().label_names()
    jobs = [(i, wnids[i % len(wnids)], str(out), seed) for i in range(n)]
    with ProcessPoolExecutor(workers or os.cpu_count(), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for _ in tqdm(pool.map(_write_fake, jobs, chunksize=64), total=n, desc="make-fake-val", unit="img",
                      disable=not progress):
            pass
    return Path(out)

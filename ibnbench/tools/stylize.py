"""``ibnbench stylize``: a stylised copy of a dataset, the paper's own set-up for its style conditions.

:func:`stylize` writes a stylised copy of a dataset (``ibnbench stylize``): every image is decoded as RGB,
resized (``resize="shorter"``, the default: shorter side to 256, bilinear, antialiased, aspect kept, the size the
classifiers' own resize gives before their 224 centre crop; ``resize="square"``: 256x256 bicubic, as the CycleGAN
authors' test script loads photos), passed through the generator at that size and saved under the same relative
path, as JPEG quality 95 for ``.jpg``/``.jpeg`` names and PNG for ``.png`` names. ``resize="crop"`` stylises
the classifier's own input instead, exactly as the data loader cuts it on the CPU (shorter side to 256, bilinear,
antialiased, centre crop 224), and saves it losslessly as PNG (``a.JPEG`` -> ``a.png``): the output of a style
condition computed ahead, which ``run --style-dir STYLE=OUT`` reads instead of running the generator per batch.
``stylize.json`` in the output folder records the style, the generator's hash and the resize (and crop), and a
resumed run must use the same ones.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import resize

from ibnbench.conditions.style import (
    CROP_INPUT,
    MANIFEST,
    check_style,
    read_manifest,
    rendered_name,
    stylize_batch,
)
from ibnbench.data.decode import decode_file
from ibnbench.data.geometry import Geometry
from ibnbench.errors import BadImageError, MissingFileError, UsageError
from ibnbench.eval.distributed import resolve_device
from ibnbench.io import write_atomic
from ibnbench.progress import Progress
from ibnbench.zoo.generators import load_generator
from ibnbench.zoo.meta import MAX_SIDE

STYLIZE_SHORTER_SIDE = 256
RESIZE_MODES = {"shorter": ("shorter side", InterpolationMode.BILINEAR),
                "square": ("square", InterpolationMode.BICUBIC),
                CROP_INPUT: ("the classifier's centre crop", InterpolationMode.BILINEAR)}
CLASSIFIER_CROP = 224
CROP_BATCH = 16
"""Crops stylised per generator call with ``--resize crop`` (all of one size)."""



JPEG_QUALITY = 95
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively), as sorted paths relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class _Decoded(torch.utils.data.Dataset):
    """``(relative path, uint8 RGB [3,H,W] or None, why not)`` for each file, decoded by
    :func:`ibnbench.data.decode.decode_file`. A bad image comes back as a reason, not raised: an exception raised
    in a DataLoader worker reaches the caller as a multi-line RuntimeError."""

    def __init__(self, root: Path, files: list[Path], geometry: Geometry | None = None):
        self.root, self.files, self.geometry = root, files, geometry

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str]:
        relative = self.files[index]
        try:
            image = decode_file(self.root / relative)
        except BadImageError as exc:
            return str(relative), None, exc.reason
        return str(relative), image if self.geometry is None else self.geometry.apply(image), ""


def _encode(image: torch.Tensor, suffix: str) -> bytes:
    encoded = encode_png(image) if suffix.lower() == ".png" else encode_jpeg(image, quality=JPEG_QUALITY)
    return encoded.numpy().tobytes()


def _check_manifest(out: Path, manifest: dict) -> None:
    """Refuse to add images made another way to a stylised folder; write the manifest of a new one."""
    found = read_manifest(out)
    if found is None:
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n", what="stylize manifest")
        return
    differ = [k for k in manifest if found.get(k) != manifest[k]]
    if differ:
        settings = ", ".join(f"{k} {found.get(k)!r}, now {manifest[k]!r}" for k in differ)
        raise UsageError(f"--out {out} was stylised with other settings ({settings}); "
                         "use another --out or the same settings")


def stylize(style: str, data: str | os.PathLike, out: str | os.PathLike, weights: str | None = None,
            device: str | None = None, limit: int | None = None, size: int = STYLIZE_SHORTER_SIDE,
            workers: int = 4, progress: bool = True, resize_mode: str = "shorter", crop: int = CLASSIFIER_CROP) -> dict:
    """Write a ``style`` copy of every image under ``data`` into ``out`` (same relative paths).

    Each image is resized before the generator runs: ``resize_mode="shorter"`` sets its shorter side to ``size``
    (bilinear), ``"square"`` makes it ``size`` x ``size`` (bicubic), ``"crop"`` cuts the classifier's input (shorter
    side ``size``, centre crop ``crop``) and writes PNGs. Resumable: files already in ``out`` are skipped.
    ``limit`` takes the first N files in sorted relative-path order.
    Returns ``{"total", "written", "skipped", "out"}``.
    """
    if resize_mode not in RESIZE_MODES:
        raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, not {resize_mode!r}")
    check_style(style, weights or "official")
    data, out = Path(data).expanduser(), Path(out).expanduser()
    _check_arguments(data, out, limit, size, crop if resize_mode == CROP_INPUT else None, workers)
    files = image_files(data)[:limit]
    if not files:
        raise MissingFileError(f"--data {data} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    written_as = rendered_name if resize_mode == CROP_INPUT else str
    todo = [f for f in files if not (out / written_as(f)).exists()]
    summary = {"total": len(files), "written": 0, "skipped": len(files) - len(todo), "out": str(out)}
    if not todo:
        return summary
    device = resolve_device(device)
    generator = load_generator(style, weights or "official", progress).to(device)
    interpolation = RESIZE_MODES[resize_mode][1]
    _check_manifest(out, {"style": style, "weights": generator.ibnbench_weights.source,
                          "sha256": generator.ibnbench_weights.sha256, "resize": resize_mode, "size": size,
                          "interpolation": interpolation.value,
                          **({"crop": crop} if resize_mode == CROP_INPUT else {})})
    cut = Geometry(size, crop, interpolation.value) if resize_mode == CROP_INPUT else None  # as the CPU loader cuts
    loader = torch.utils.data.DataLoader(_Decoded(data, todo, cut), num_workers=workers, collate_fn=list,
                                         batch_size=CROP_BATCH if cut else 1)
    with Progress(len(todo), f"stylize {style}", enabled=progress, initial=summary["skipped"]) as bar:
        for items in loader:
            bad = next(((relative, reason) for relative, image, reason in items if image is None), None)
            if bad is not None:
                raise BadImageError(data / bad[0], bad[1])
            if cut is not None:  # crops of one size: a batch at a time
                x = torch.stack([image for _, image, _ in items]).to(device).float()
            else:
                x = resize(items[0][1].to(device).float(), [size] if resize_mode == "shorter" else [size, size],
                           interpolation=interpolation, antialias=True)[None]
            styled = stylize_batch(generator, x).round_().to("cpu", torch.uint8)
            for (relative, _, _), image in zip(items, styled):
                target = written_as(relative)
                write_atomic(out / target, _encode(image, Path(target).suffix), what="stylised image", fsync=False)
            summary["written"] += len(items)
            bar.update(len(items))
    return summary


def _check_arguments(data: Path, out: Path, limit: int | None, size: int, crop: int | None, workers: int) -> None:
    if not data.is_dir():
        raise MissingFileError(f"--data {data} is not a folder")
    if out.resolve().is_relative_to(data.resolve()):
        raise UsageError(f"--out {out} must lie outside --data {data}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be positive, got {limit}")
    if not 8 <= size <= MAX_SIDE:
        raise UsageError(f"--size must be 8 to {MAX_SIDE} pixels, got {size}")
    if crop is not None and not 8 <= crop <= size:
        raise UsageError(f"--crop must be 8 to --size ({size}) pixels, got {crop}")
    if workers < 0:
        raise UsageError(f"--workers must not be negative, got {workers}")

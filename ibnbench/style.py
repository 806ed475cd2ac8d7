"""Photo-to-painting style transfer with the CycleGAN authors' released generators.

Weights resolve like model weights (:mod:`ibnbench.weights`): ``"official"`` is the authors' file
``style_<name>.pth``, looked up in ``$IBNBENCH_STYLE_WEIGHTS_DIR`` (when set) and then in torch hub's
checkpoint cache, downloaded into that cache when absent; a path or URL names another file; ``"random"``
builds a seeded random generator (for tests). :func:`missing_style_weights` answers without network.

:func:`stylize` writes a stylised copy of a dataset (``ibnbench stylize``): every image is decoded as RGB,
resized (``resize="shorter"``, the default: shorter side to 256, bilinear, antialiased, aspect kept, the size the
classifiers' own resize gives before their 224 centre crop; ``resize="square"``: 256x256 bicubic, as the CycleGAN
authors' test script loads photos), passed through the generator at that size and saved under the same relative
path, as JPEG quality 95 for ``.jpg``/``.jpeg`` names and PNG for ``.png`` names. ``stylize.json`` in the output
folder records the style, the generator's hash and the resize, and a resumed run must use the same ones.

The on-the-fly ``style`` condition runs the generator on the classifier's 224x224 centre crop as it is (no
resize); its record entry says so.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import resize

from .data import BadImageError, decode_file
from .distributed import resolve_device
from .files import write_atomic
from .progress import Progress
from .models import create_model
from .precision import full_fp32
from .weights import WeightsError, cache_dir, fetch, load_state_dict_strict, read_state_dict, sha256_of

STYLES = ("monet", "cezanne", "ukiyoe", "vangogh")
STYLE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/style_{style}.pth"
WEIGHTS_DIR_ENV = "IBNBENCH_STYLE_WEIGHTS_DIR"
GENERATOR = "cyclegan_resnet_9blocks"
STYLIZE_SHORTER_SIDE = 256
RESIZE_MODES = {"shorter": ("shorter side", InterpolationMode.BILINEAR),
                "square": ("square", InterpolationMode.BICUBIC)}
MANIFEST = "stylize.json"
ON_THE_FLY_INPUT = "the classifier's 224x224 centre crop as it is (no resize)"
JPEG_QUALITY = 95
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RANDOM_GENERATOR_SEED = 0


def _is_url(spec: str) -> bool:
    return re.match(r"^(https?|ftp)://", spec) is not None


def check_style(style: str, weights: str = "official") -> None:
    """Raise ValueError unless ``style`` has released weights or ``weights`` names others."""
    if weights == "official" and style not in STYLES:
        raise ValueError(f"unknown style {style!r}: released styles are {', '.join(STYLES)} "
                         "(give weights=PATH for another generator)")


def official_candidates(style: str) -> list[Path]:
    """Where the released ``style_<name>.pth`` may lie: ``$IBNBENCH_STYLE_WEIGHTS_DIR``, then the hub cache."""
    filename = STYLE_URL.format(style=style).rsplit("/", 1)[-1]
    folders = [Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return [folder / filename for folder in folders + [cache_dir()]]


def missing_style_weights(style: str, weights: str = "official") -> str | None:
    """A description of the absent weights file for ``style`` (None when present or random); no network."""
    if weights == "random":
        return None
    if weights == "official" or _is_url(weights):
        url = STYLE_URL.format(style=style) if weights == "official" else weights
        candidates = official_candidates(style) if weights == "official" else [cache_dir() / url.rsplit("/", 1)[-1]]
        if any(path.is_file() for path in candidates):
            return None
        where = " or ".join(str(p) for p in candidates)
        return (f"CycleGAN generator weights for style {style!r}: download {url} and place it at {where} "
                f"(or set ${WEIGHTS_DIR_ENV} to a folder holding it)")
    if not Path(weights).expanduser().is_file():
        return f"CycleGAN generator weights for style {style!r}: {weights} does not exist"
    return None


def weights_identity(weights: str) -> str:
    """What a weights spec means for a result: "official", "random", or the file's name (not its folder)."""
    return weights if weights in ("official", "random") else weights.rstrip("/").rsplit("/", 1)[-1]


def _resolve(style: str, weights: str, progress: bool) -> Path:
    if weights == "official":
        present = next((p for p in official_candidates(style) if p.is_file()), None)
        return present or fetch(STYLE_URL.format(style=style), None, f"style {style!r}", progress)
    if _is_url(weights):
        return fetch(weights, None, f"style {style!r}", progress)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"style {style!r}: weights file {weights} does not exist.")
    return path


def load_generator(style: str, weights: str = "official", progress: bool = True) -> nn.Module:
    """The CycleGAN generator for ``style`` in eval mode, with ``ibnbench_weights`` (source, path, sha256)."""
    check_style(style, weights)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_GENERATOR_SEED)
            generator = create_model(GENERATOR)
        generator.ibnbench_weights = {"source": "random", "path": None, "sha256": None}
        return generator
    path = _resolve(style, weights, progress)
    generator = create_model(GENERATOR)
    load_state_dict_strict(generator, read_state_dict(path), f"{GENERATOR} (style {style!r})", origin=str(path))
    generator.ibnbench_weights = {"source": weights, "path": str(path), "sha256": sha256_of(path)}
    return generator.eval()


def stylize_batch(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``generator`` on a 0..255 RGB batch ``[N,3,H,W]``: scale to [-1, 1], generate, scale back to 0..255.

    Sides that are not multiples of 4 are reflect-padded for the generator and cropped back. Float32
    convolutions run in IEEE precision, not TF32 (:func:`ibnbench.precision.full_fp32`).
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % 4, -width % 4
    with torch.no_grad(), full_fp32():
        inputs = x / 127.5 - 1.0
        if pad_h or pad_w:
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h), mode="reflect")
        out = generator(inputs)[..., :height, :width]
    return out.add_(1.0).mul_(127.5).clamp_(0.0, 255.0)


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively), as sorted paths relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class _Decoded(torch.utils.data.Dataset):
    """``(relative path, uint8 RGB [3,H,W] or None, why not)`` for each file, decoded by
    :func:`ibnbench.data.decode_file`. A bad image comes back as a reason, not raised: an exception raised
    in a DataLoader worker reaches the caller as a multi-line RuntimeError."""

    def __init__(self, root: Path, files: list[Path]):
        self.root, self.files = root, files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str]:
        relative = self.files[index]
        try:
            return str(relative), decode_file(self.root / relative), ""
        except BadImageError as exc:
            return str(relative), None, exc.reason


def _encode(image: torch.Tensor, suffix: str) -> bytes:
    encoded = encode_png(image) if suffix.lower() == ".png" else encode_jpeg(image, quality=JPEG_QUALITY)
    return encoded.numpy().tobytes()


def read_manifest(out: str | os.PathLike) -> dict | None:
    """What ``ibnbench stylize`` recorded about a stylised folder (None for a folder made otherwise)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable stylize manifest ({exc})") from None


def _check_manifest(out: Path, manifest: dict) -> None:
    """Refuse to add images made another way to a stylised folder; write the manifest of a new one."""
    found = read_manifest(out)
    if found is None:
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n", what="stylize manifest")
        return
    differ = [k for k in manifest if found.get(k) != manifest[k]]
    if differ:
        settings = ", ".join(f"{k} {found.get(k)!r}, now {manifest[k]!r}" for k in differ)
        raise ValueError(f"--out {out} was stylised with other settings ({settings}); "
                         "use another --out or the same settings")


def stylize(style: str, data: str | os.PathLike, out: str | os.PathLike, weights: str | None = None,
            device: str | None = None, limit: int | None = None, size: int = STYLIZE_SHORTER_SIDE,
            workers: int = 4, progress: bool = True, resize_mode: str = "shorter") -> dict:
    """Write a ``style`` copy of every image under ``data`` into ``out`` (same relative paths).

    Each image is resized before the generator runs: ``resize_mode="shorter"`` sets its shorter side to ``size``
    (bilinear), ``"square"`` makes it ``size`` x ``size`` (bicubic). Resumable: files already in ``out`` are
    skipped. ``limit`` takes the first N files in sorted relative-path order.
    Returns ``{"total", "written", "skipped", "out"}``.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"--resize must be one of {', '.join(RESIZE_MODES)}, not {resize_mode!r}")
    check_style(style, weights or "official")
    data, out = Path(data).expanduser(), Path(out).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    if out.resolve().is_relative_to(data.resolve()):
        raise ValueError(f"--out {out} must lie outside --data {data}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be positive, got {limit}")
    if size < 8:
        raise ValueError(f"--size must be at least 8 pixels, got {size}")
    files = image_files(data)[:limit]
    if not files:
        raise FileNotFoundError(f"--data {data} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    todo = [f for f in files if not (out / f).exists()]
    summary = {"total": len(files), "written": 0, "skipped": len(files) - len(todo), "out": str(out)}
    if not todo:
        return summary
    device = resolve_device(device)
    generator = load_generator(style, weights or "official", progress).to(device)
    interpolation = RESIZE_MODES[resize_mode][1]
    _check_manifest(out, {"style": style, "weights": generator.ibnbench_weights["source"],
                          "sha256": generator.ibnbench_weights["sha256"], "resize": resize_mode, "size": size,
                          "interpolation": interpolation.value})
    loader = torch.utils.data.DataLoader(_Decoded(data, todo), batch_size=None, num_workers=workers)
    with Progress(len(todo), f"stylize {style}", enabled=progress, initial=summary["skipped"]) as bar:
        for relative, image, reason in loader:
            if image is None:
                raise BadImageError(data / relative, reason)
            x = resize(image.to(device).float(), [size] if resize_mode == "shorter" else [size, size],
                       interpolation=interpolation, antialias=True)
            styled = stylize_batch(generator, x[None])[0].round_().to("cpu", torch.uint8)
            write_atomic(out / relative, _encode(styled, Path(relative).suffix), what="stylised image", fsync=False)
            summary["written"] += 1
            bar.update(1)
    return summary

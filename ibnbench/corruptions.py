"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) as batched tensor ops on the device.

Each op maps a batch ``x: Tensor[N,3,H,W]`` (RGB, float, 0..255: the 224x224 centre crop) and each image's
dataset ``index: Tensor[N]`` to the corrupted batch on the 0..255 scale, with the constants of the
``imagecorruptions`` package (hendrycks' ``make_imagenet_c.py``). :func:`corrupt` ends as ImageNet-C's
files were made (``np.uint8`` of the result: values truncated to integers).

Randomness is counter-based: every draw is a hash of (key, image index, element), the key being derived
from the suite seed and the condition, so an image gets the same corruption whatever the batch it is in,
the device, the worker count, the resume point or the number of ranks. Motion blur, snow and frost read their
per-image offsets on the host (one synchronisation per batch); the JPEG ops pass through host memory.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import kornia
import torch
import torch.nn.functional as F

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
LABELS = {"gaussian_noise": "Gaussian Noise", "shot_noise": "Shot Noise", "impulse_noise": "Impulse Noise",
          "defocus_blur": "Defocus Blur", "glass_blur": "Glass Blur", "motion_blur": "Motion Blur",
          "zoom_blur": "Zoom Blur", "snow": "Snow", "frost": "Frost", "fog": "Fog", "brightness": "Brightness",
          "contrast": "Contrast", "elastic_transform": "Elastic", "pixelate": "Pixelate", "jpeg_compression": "JPEG",
          "speckle_noise": "Speckle Noise", "gaussian_blur": "Gaussian Blur", "spatter": "Spatter",
          "saturate": "Saturate"}
SEVERITIES = (1, 2, 3, 4, 5)
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_DIR_ENV = "IBNBENCH_FROST_DIR"

_MASK = 0xFFFFFFFF

# ---------------------------------------------------------------- counter-based randomness


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32) on int64 tensors holding values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _MASK
    return h ^ (h >> 16)


def condition_key(seed: int, name: str) -> int:
    """The 32-bit key of a condition's random stream: a hash of the suite seed and the condition's name."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "little")


@lru_cache(maxsize=None)
def _element_hashes(n: int, stream: int, device: torch.device) -> torch.Tensor:
    return _mix((torch.arange(n, device=device, dtype=torch.int64) + (stream << 24)) & _MASK)


@lru_cache(maxsize=None)
def _inverse_normal_table(device: torch.device) -> torch.Tensor:
    """The standard normal quantile at the 2**16 uniform levels ``(k + 0.5) / 2**16``."""
    u = (torch.arange(1 << 16, dtype=torch.float64) + 0.5) / (1 << 16)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)).float().to(device)


class Draws:
    """Random numbers of one condition for a batch: each a function of (key, image index, stream, element).

    Uniforms come at 16-bit resolution (two per 32-bit hash), normals by inversion of a 2**16-level quantile table."""

    def __init__(self, key: int, index: torch.Tensor):
        self.image = _mix((index.to(torch.int64) & _MASK) ^ key)

    def levels(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform integers in [0, 2**16) ``[N, *shape]`` (int64) for draw ``stream``."""
        n = math.prod(shape)
        h = _mix(self.image[:, None] ^ _element_hashes((n + 1) // 2, stream, self.image.device)[None])
        return torch.cat([h & 0xFFFF, h >> 16], dim=1)[:, :n].reshape(-1, *shape)

    def uniform(self, stream: int, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform floats in the open interval (low, high)."""
        u = (self.levels(stream, shape).float() + 0.5) * (1.0 / (1 << 16))
        return low + (high - low) * u if (low, high) != (0.0, 1.0) else u

    def normal(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal floats."""
        return _inverse_normal_table(self.image.device)[self.levels(stream, shape)]

    def integers(self, stream: int, low: int, high: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Integers in [low, high) (int64), ``[N, *shape]``."""
        return low + (self.levels(stream, shape) * (high - low)) // (1 << 16)


# ---------------------------------------------------------------- filtering helpers


def _gaussian_taps(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(device=device, dtype=dtype)


def _pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    period = 2 * n  # "reflect" as scipy spells it: half-sample symmetric (d c b a | a b c d | d c b a)
    i = i % period
    return torch.where(i < n, i, period - 1 - i)


def _pad(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two dims the way scipy.ndimage does (``nearest`` or ``reflect``)."""
    x = x.index_select(-2, _pad_index(x.shape[-2], pad_h, mode, x.device))
    return x.index_select(-1, _pad_index(x.shape[-1], pad_w, mode, x.device))


@lru_cache(maxsize=None)
def _filter_matrix(n: int, sigma: float, mode: str, truncate: float, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """The 1-D Gaussian filter of length-``n`` signals as an ``[n, n]`` matrix, the border mode folded in."""
    taps = _gaussian_taps(sigma, truncate, torch.float64)
    r = (len(taps) - 1) // 2
    source = _pad_index(n, r, mode, None)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for out in range(n):
        matrix[out].index_add_(0, source[out:out + 2 * r + 1], taps)
    return matrix.to(device=device, dtype=dtype)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over H and W of ``x[..., H, W]`` (skimage.filters.gaussian), as two
    matrix products."""
    h, w = x.shape[-2:]
    rows = _filter_matrix(h, sigma, mode, truncate, x.device, x.dtype)
    cols = _filter_matrix(w, sigma, mode, truncate, x.device, x.dtype)
    return rows @ (x @ cols.T)


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlation of ``x[N,C,H,W]`` with an odd square ``kernel`` (cv2.filter2D, border reflect-101), by FFT."""
    r = kernel.shape[-1] // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    size = (h + 2 * r, w + 2 * r)
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel.flip(-1, -2), s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * r:, 2 * r:]


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """imagecorruptions' ``clipped_zoom``: the centre ``ceil(n / factor)`` pixels zoomed by ``factor`` (scipy's
    order-1 zoom: bilinear, corners aligned), the first ``n`` rows and columns kept."""
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    size = (int(round(ch * factor)), int(round(cw * factor)))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]


def _motion_offsets(radius: int, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer (dy, dx) of each of the ``2 radius + 1`` taps of imagecorruptions' motion blur, per image."""
    i = torch.arange(2 * radius + 1, device=angle.device, dtype=torch.float64)[None]
    a = torch.deg2rad(angle.double())[:, None]
    return -torch.ceil(i * torch.sin(a) - 0.5).long(), -torch.ceil(i * torch.cos(a) - 0.5).long()


def motion_blur_op(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' ``_motion_blur``: a Gaussian-weighted sum of edge-replicated shifts along ``angle``
    (degrees, one per image)."""
    h, w = x.shape[-2:]
    width = 2 * radius + 1
    weights = torch.exp(-torch.arange(width, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).tolist()
    dy, dx = (d.tolist() for d in _motion_offsets(radius, angle))
    padded = F.pad(x, (width, width, width, width), mode="replicate")  # the reference's shifts repeat the edge
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for weight, oy, ox in zip(weights, dy[n], dx[n]):
            out[n].add_(padded[n, :, width - oy:width - oy + h, width - ox:width - ox + w], alpha=weight)
    return out


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """imagecorruptions' ``disk``: an aliased disk, normalised, then blurred by cv2.GaussianBlur (3x3 or 5x5)."""
    half = 8 if radius <= 8 else int(radius)
    size = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[None] ** 2 + grid[:, None] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    taps = torch.exp(-(torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2 / (2 * alias_blur ** 2))
    taps /= taps.sum()
    return kornia.filters.filter2d_separable(disk[None, None], taps[None], taps[None], border_type="reflect")[0, 0]


def _gray(x: torch.Tensor) -> torch.Tensor:
    """cv2's RGB2GRAY (0.299 R + 0.587 G + 0.114 B), ``[N,1,H,W]``."""
    return kornia.color.rgb_to_grayscale(x)


def _rgb_to_hsv_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value ``max(r, g, b)`` and saturation ``(max - min) / max`` (0 where max is 0), as skimage defines them."""
    v = x.amax(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - x.amin(dim=1, keepdim=True)) / v.clamp_min(1e-12), torch.zeros_like(v))
    return v, s


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as JPEG at ``quality`` and decode it (torchvision; batched, on CUDA when ``x`` is)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    images = list(x.round().clamp(0, 255).to(torch.uint8))
    encoded = [data.cpu() for data in encode_jpeg(images, quality=quality)]  # the decoder reads host memory
    decoded = decode_jpeg(encoded, device=x.device)
    return torch.stack(decoded).to(x.dtype)


@lru_cache(maxsize=None)
def _pil_box_weights(n_in: int, n_out: int) -> torch.Tensor:
    """PIL's BOX resampling matrix ``[n_out, n_in]`` (ImagingResample's coefficients for the box filter)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for out in range(n_out):
        center = (out + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / max(scale, 1.0)
            weights[out, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        weights[out] /= weights[out].sum()
    return weights


def pixelate_op(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL resize to ``int(n * factor)`` with BOX (horizontal then vertical pass, uint8 between), then NEAREST back."""
    h, w = x.shape[-2:]
    sh, sw = int(h * factor), int(w * factor)
    box_w = _pil_box_weights(w, sw).to(x.device, x.dtype)
    box_h = _pil_box_weights(h, sh).to(x.device, x.dtype)
    small = torch.floor(x @ box_w.T + 0.5).clamp(0, 255)
    small = torch.floor(box_h @ small + 0.5).clamp(0, 255)
    rows = ((torch.arange(h, device=x.device) + 0.5) * (sh / h)).long().clamp(max=sh - 1)
    cols = ((torch.arange(w, device=x.device) + 0.5) * (sw / w)).long().clamp(max=sw - 1)
    return small.index_select(-2, rows).index_select(-1, cols)


# ---------------------------------------------------------------- frost textures


def frost_dir() -> Path | None:
    """Where the frost textures are: ``$IBNBENCH_FROST_DIR``, else the installed ``imagecorruptions`` package."""
    if os.environ.get(FROST_DIR_ENV):
        return Path(os.environ[FROST_DIR_ENV]).expanduser()
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "frost"


def missing_frost() -> str | None:
    """A line naming the missing frost textures, or None when all are there."""
    folder = frost_dir()
    if folder is not None and all((folder / name).is_file() for name in FROST_FILES[:5]):
        return None
    return (f"frost textures {', '.join(FROST_FILES[:5])} (install the `imagecorruptions` package, or set "
            f"${FROST_DIR_ENV} to a folder holding them){'' if folder is None else f'; looked in {folder}'}")


@lru_cache(maxsize=None)
def _frost_textures(folder: str) -> tuple[torch.Tensor, ...]:
    """The first five frost images (ImageNet-C draws among them), RGB float 0..255, resized by 1.1 (bicubic)."""
    from PIL import Image

    textures = []
    for name in FROST_FILES[:5]:
        with Image.open(Path(folder) / name) as image:
            rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            rgb = rgb.view(image.height, image.width, 3).permute(2, 0, 1)[None].float()
        size = (int(math.ceil(rgb.shape[-2] * 1.1)), int(math.ceil(rgb.shape[-1] * 1.1)))
        textures.append(F.interpolate(rgb, size=size, mode="bicubic", align_corners=False)[0])
    return tuple(textures)


# ---------------------------------------------------------------- the corruptions (0..1 inside, as the reference)

Op = Callable[[torch.Tensor, Draws, int], torch.Tensor]


def gaussian_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]
    return x + c * draws.normal(0, x.shape[1:])


def shot_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [60, 25, 12, 5, 3][severity - 1]
    return poisson(x * 255, c, draws.levels(0, x.shape[1:])) / c


POISSON_BITS = 12


@lru_cache(maxsize=None)
def _poisson_table(scale: float, device: torch.device) -> torch.Tensor:
    """Poisson quantiles ``[256 * 2**12]`` for the rates ``scale * v / 255`` (v = 0..255, the uint8 values) at the
    2**12 uniform levels ``(k + 0.5) / 2**12``: inversion of the exact CDF."""
    rates = torch.arange(256, dtype=torch.float64) * (scale / 255)
    k = torch.arange(int(scale + 12 * math.sqrt(scale) + 20), dtype=torch.float64)
    cdf = torch.special.gammaincc(k[None] + 1, rates[:, None].clamp_min(1e-300))  # P(X <= k)
    cdf[0] = 1.0
    u = ((torch.arange(1 << POISSON_BITS, dtype=torch.float64) + 0.5) / (1 << POISSON_BITS))
    return torch.searchsorted(cdf, u.expand(256, -1).contiguous()).to(torch.int16).flatten().to(device)


def poisson(x: torch.Tensor, scale: float, levels: torch.Tensor) -> torch.Tensor:
    """Poisson samples of rate ``x * scale / 255`` for uint8-valued ``x`` (0..255), by table inversion of 16-bit
    ``levels`` (their top 12 bits)."""
    table = _poisson_table(float(scale), x.device)
    index = (x.round().clamp(0, 255).long() << POISSON_BITS) + (levels >> (16 - POISSON_BITS))
    return table[index].to(x.dtype)


def impulse_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    levels = draws.levels(0, (2, *x.shape[1:]))
    flipped = levels[:, 0] < c * (1 << 16)
    salted = levels[:, 1] < (1 << 15)
    return torch.where(flipped, salted.to(x.dtype), x)


def speckle_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [.15, .2, 0.35, 0.45, 0.6][severity - 1]
    return x + x * c * draws.normal(0, x.shape[1:])


def gaussian_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return gaussian_filter(x, [1, 2, 3, 4, 6][severity - 1])


def glass_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """Blur, uint8, local pixel shuffling (each pixel from a random neighbour within ``max_delta``, repeated
    ``iterations`` times: a parallel stand-in for the reference's sequential swaps), blur."""
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    n, c, h, w = x.shape
    y = torch.floor(gaussian_filter(x, sigma) * 255) / 255
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)[None, :]
    inner = (rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)
    for it in range(2 * iterations):  # two displacements per reference sweep: its swaps carry pixels along
        dy = draws.integers(2 * it, -delta, delta + 1, (h, w))
        dx = draws.integers(2 * it + 1, -delta, delta + 1, (h, w))
        src_y = torch.where(inner, (rows + dy).clamp(0, h - 1), rows)
        src_x = torch.where(inner, (cols + dx).clamp(0, w - 1), cols)
        index = (src_y * w + src_x).view(n, 1, h * w).expand(n, c, h * w)
        y = y.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return gaussian_filter(y, sigma)


def defocus_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    radius, alias_blur = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    return fft_filter2d(x, _disk(radius, alias_blur).to(x.device, x.dtype))


def motion_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    return motion_blur_op(x, radius, sigma, draws.uniform(0, (), -45.0, 45.0))


def zoom_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    start, stop, step = [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02),
                         (1, 1.31, 0.03)][severity - 1]
    factors = [start + i * step for i in range(int(math.ceil((stop - start) / step)))]  # np.arange
    out = x.clone()
    for factor in factors:
        out += clipped_zoom(x, factor)
    return out / (len(factors) + 1)


def snow(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][severity - 1]
    h, w = x.shape[-2:]
    layer = loc + scale * draws.normal(0, (1, h, w))
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = motion_blur_op(layer, radius, sigma, draws.uniform(2, (), -135.0, -45.0))
    layer = torch.round(layer * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def frost(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    weight, frost_weight = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    folder = frost_dir()
    textures = [t.to(x.device, x.dtype) for t in _frost_textures(str(folder))]
    h, w = x.shape[-2:]
    choice = draws.integers(0, 0, len(textures)).tolist()
    u_top, u_left = draws.uniform(1, ()).tolist(), draws.uniform(2, ()).tolist()
    crops = []
    for k, ut, ul in zip(choice, u_top, u_left):
        texture = textures[k]
        top, left = int(ut * (texture.shape[-2] - h)), int(ul * (texture.shape[-1] - w))
        crops.append(texture[:, top:top + h, left:left + w])
    return weight * x + frost_weight * torch.stack(crops) / 255


def plasma_fractal(draws: Draws, size: int, decay: float, stream: int = 0) -> torch.Tensor:
    """The diamond-square height map of imagecorruptions' fog, ``[N, size, size]`` in 0..1, batched."""
    n = draws.image.shape[0]
    device = draws.image.device
    grid = torch.zeros(n, size, size, device=device, dtype=torch.float64)
    step, wibble, level = size, 100.0, 0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        nonlocal level
        noise = draws.uniform(stream + level, total.shape[1:]).double() * (2 * wibble) - wibble
        level += 1
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        grid[:, half::step, half::step] = wibbled(square)
        centres = grid[:, half::step, half::step]
        corners = grid[:, 0::step, 0::step]
        top = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        grid[:, 0::step, half::step] = wibbled(top)
        left = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        grid[:, half::step, 0::step] = wibbled(left)
        step //= 2
        wibble /= decay
    grid -= grid.amin(dim=(1, 2), keepdim=True)
    return grid / grid.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    strength, decay = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
    h, w = x.shape[-2:]
    size = 1 << (max(h, w) - 1).bit_length()
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(draws, size, decay)[:, None, :h, :w].to(x.dtype)
    return (x + strength * plasma) * max_val / (max_val + strength)


def brightness(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """HSV value ``+ c`` (clipped): the RGB values scale with the value at fixed hue and saturation."""
    c = [.1, .2, .3, .4, .5][severity - 1]
    v, _ = _rgb_to_hsv_parts(x)
    v_new = (v + c).clamp(max=1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def contrast(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [0.4, .3, .2, .1, .05][severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def saturate(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """HSV saturation ``* a + b`` (clipped): each channel's distance below the value scales with the saturation;
    grey pixels (hue 0, as skimage sets it) become ``[v, v (1 - s'), v (1 - s')]``."""
    a, b = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    v, s = _rgb_to_hsv_parts(x)
    s_new = (s * a + b).clamp(0, 1)
    coloured = v - (v - x) * s_new / s.clamp_min(1e-12)
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)
    return torch.where(s > 0, coloured, grey)


def elastic_transform(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """imagecorruptions' elastic transform: a smoothed uniform displacement field (scaled by ``alpha``), sampled
    bilinearly with symmetric reflection at the borders."""
    h, w = x.shape[-2:]
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    max_d = h * 0.005
    sigma = h * 0.01, w * 0.01
    fields = gaussian_filter(draws.uniform(0, (2, h, w), -max_d, max_d), sigma[0], "reflect", truncate=3.0) * alpha
    # grid_sample, corners not aligned: pixel p sits at (2 p + 1) / n - 1, reflection about -0.5 and n - 0.5
    gx = (torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :] + fields[:, 0]) * (2 / w) + (1 / w - 1)
    gy = (torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None] + fields[:, 1]) * (2 / h) + (1 / h - 1)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _truncated_distance(edges: torch.Tensor, limit: int) -> torch.Tensor:
    """Euclidean distance of every pixel to the nearest ``edges`` pixel, capped at ``limit`` (two separable
    minimum passes over the offsets within ``limit``)."""
    far = float(limit * limit)
    h, w = edges.shape[-2:]
    padded = F.pad(torch.where(edges, 0.0, far), (0, 0, limit, limit), value=far)
    column = padded[..., limit:limit + h, :].clone()
    for k in range(1, limit + 1):  # nearest edge in the same column, within ``limit`` rows
        torch.minimum(column, padded[..., limit + k:limit + k + h, :] + k * k, out=column)
        torch.minimum(column, padded[..., limit - k:limit - k + h, :] + k * k, out=column)
    padded = F.pad(column, (limit, limit), value=far)
    square = column.clone()
    for k in range(1, limit + 1):  # then along the row
        torch.minimum(square, padded[..., limit + k:limit + k + w] + k * k, out=square)
        torch.minimum(square, padded[..., limit - k:limit - k + w] + k * k, out=square)
    return square.clamp(max=far).sqrt()


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist of uint8-valued ``x[N,1,H,W]``, per image."""
    n = x.shape[0]
    values = x.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=x.device, dtype=torch.float64).scatter_add_(
        1, values, torch.ones_like(values, dtype=torch.float64))
    cdf = hist.cumsum(1)
    first = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    lut = ((cdf - first) * 255 / (values.shape[1] - first).clamp_min(1)).round().clamp(0, 255)
    return lut.gather(1, values).view_as(x).to(x.dtype)


def spatter(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """Liquid (severities 1-3) or mud (4-5) splashes from a thresholded smoothed Gaussian field. The mud is the
    reference's; the liquid's sheen takes the blobs' inner boundaries for OpenCV's Canny edges, otherwise the
    reference's steps (distance to the edges capped at 20, 3x3 blur, histogram equalisation, emboss, blur)."""
    loc, scale, sigma, threshold, intensity, mud = [
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)][severity - 1]
    h, w = x.shape[-2:]
    liquid = gaussian_filter(loc + scale * draws.normal(0, (1, h, w)), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_filter((liquid > threshold).to(x.dtype), intensity)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = torch.tensor([63, 42, 20], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
        return x * (1 - m) + colour * m
    layer = torch.floor(liquid * 255)
    inside = layer > 0
    eroded = -F.max_pool2d(-inside.to(x.dtype), 3, stride=1, padding=1) > 0
    dist = _truncated_distance(inside & ~eroded, 20)
    dist = kornia.filters.box_blur(dist, (3, 3), border_type="reflect").floor()
    dist = _equalize(dist)
    kernel = torch.tensor([[-2., -1., 0.], [-1., 1., 1.], [0., 1., 2.]], device=x.device, dtype=x.dtype)
    dist = kornia.filters.filter2d(dist, kernel[None], border_type="reflect").round().clamp(0, 255)
    dist = kornia.filters.box_blur(dist, (3, 3), border_type="reflect")
    m = layer * dist
    m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) * intensity
    colour = torch.tensor([175, 238, 238], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
    return x + m * colour


def pixelate(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return pixelate_op(x, [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1])


def jpeg_compression(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return jpeg_round_trip(x, [25, 18, 15, 10, 7][severity - 1])


OPS: dict[str, Op] = {name: globals()[name] for name in COMMON + EXTRA}
ON_255 = ("motion_blur", "pixelate", "jpeg_compression")
"""The ops that work on the 0..255 scale as the reference does (the others on 0..1)."""


def corrupt(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int) -> torch.Tensor:
    """The corruption ``name`` at ``severity`` (1-5) of a 0..255 batch, ending as ImageNet-C's files did:
    clipped and truncated to integers (``np.uint8``), float dtype. ``key`` is :func:`condition_key`'s."""
    draws = Draws(key, index)
    if name in ON_255:
        y = OPS[name](x, draws, severity)
    else:
        y = OPS[name](x / 255, draws, severity).clamp_(0, 1).mul_(255)
    return y.clamp_(0, 255).floor_()

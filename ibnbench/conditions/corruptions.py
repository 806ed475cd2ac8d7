"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) as batched tensor ops on the device.

Each op maps a batch ``x: Tensor[N,3,H,W]`` (RGB, float, 0..255: the 224x224 centre crop) and each image's
dataset ``index: Tensor[N]`` to the corrupted batch on the 0..255 scale, with the constants of the
``imagecorruptions`` package (hendrycks' ``make_imagenet_c.py``). :func:`corrupt` ends as ImageNet-C's
files were made (``np.uint8`` of the result: values truncated to integers).

Randomness is counter-based: every draw is a hash of (key, image index, element), the key being derived
from the suite seed and the condition, so an image gets the same corruption whatever the batch it is in,
the device, the worker count, the resume point or the number of ranks. Per-image offsets (motion blur, snow,
frost) stay on the device, and constants are made there once per device and dtype; the JPEG ops pass through host
memory.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ibnbench.conditions.frost import frost_dir, frost_stack
from ibnbench.conditions.imaging import (
    BOX3,
    Draws,
    clipped_zoom,
    device_constant,
    disk_filter,
    equalize,
    filter3x3,
    gaussian_filter,
    gray,
    jpeg_round_trip,
    motion_blur_op,
    pixelate_op,
    poisson,
    rgb_to_hsv_parts,
    truncated_distance,
)

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












Op = Callable[[torch.Tensor, Draws, int], torch.Tensor]


def gaussian_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]
    return draws.normal(0, x.shape[1:]).mul_(c).add_(x)


def shot_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [60, 25, 12, 5, 3][severity - 1]
    return poisson(x * 255, c, draws.levels(0, x.shape[1:])) / c


def impulse_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """Each value flipped with probability ``c`` (level ``j`` of draw 0 below ``c``), to 1 or 0 (level ``P + j``
    below one half: the sign bit of hash ``j``); ``P`` values per image."""
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    hashes = draws.hashes(0, math.prod(x.shape[1:])).view_as(x)
    salted = (hashes >= 0).to(x.dtype)
    flipped = hashes.bitwise_and_(0xFFFF) < c * (1 << 16)
    return torch.where(flipped, salted, x)


def speckle_noise(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    c = [.15, .2, 0.35, 0.45, 0.6][severity - 1]
    return draws.normal(0, x.shape[1:]).mul_(x * c).add_(x)


def gaussian_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return gaussian_filter(x, [1, 2, 3, 4, 6][severity - 1])


def glass_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    """Blur, uint8, local pixel shuffling, blur. The shuffle is the reference's own: ``iterations`` sweeps from the
    bottom-right corner in which each pixel inside a ``max_delta`` border takes the value its neighbour at
    ``(dy, dx)`` in ``[-max_delta, max_delta)`` holds at that moment (numpy's tuple "swap" of two pixel views
    copies one way), computed in parallel by :func:`sweep_copies`."""
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    n, c, h, w = x.shape
    y = torch.floor(gaussian_filter(x, sigma) * 255) / 255
    for sweep in range(iterations):
        dx = draws.integers(2 * sweep, -delta, delta, (h, w))
        dy = draws.integers(2 * sweep + 1, -delta, delta, (h, w))
        source = sweep_copies(dy, dx, delta)
        y = y.reshape(n, c, h * w).gather(2, source[:, None, :].expand(n, c, h * w)).view(n, c, h, w)
    return gaussian_filter(y, sigma)


def sweep_copies(dy: torch.Tensor, dx: torch.Tensor, delta: int) -> torch.Tensor:
    """Where each pixel's value comes from after one sweep of ``x[h, w] = x[h + dy, w + dx]`` over
    ``h = H - delta .. delta + 1`` (outer, descending) and ``w = W - delta .. delta + 1`` (inner, descending):
    flat source indices ``[N, H*W]`` into the image before the sweep. A neighbour visited earlier in the sweep (below,
    or to the right on the same row) already holds its new value, so copies chain; the chains are followed by pointer
    doubling (about log2(H*W) gathers) instead of 50,000 sequential steps."""
    n, h, w = dy.shape
    rows = torch.arange(h, device=dy.device)[:, None]
    cols = torch.arange(w, device=dy.device)[None, :]
    inside = (rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)
    src_y, src_x = rows + dy, cols + dx
    src_inside = (src_y > delta) & (src_y <= h - delta) & (src_x > delta) & (src_x <= w - delta)
    visited_before = (src_y > rows) | ((src_y == rows) & (src_x > cols))
    flat = (rows * w + cols).expand(n, h, w)
    source = torch.where(inside, src_y * w + src_x, flat).view(n, h * w)
    chain = torch.where(inside & src_inside & visited_before, source.view(n, h, w), flat).reshape(n, h * w)
    for _ in range(math.ceil(math.log2(h * w))):
        chain = chain.gather(1, chain)
    return source.gather(1, chain)


def defocus_blur(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    radius, alias_blur = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    return disk_filter(x, radius, alias_blur)


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
    x = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def frost(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    weight, frost_weight = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    textures, sizes = frost_stack(str(frost_dir()), x.device, x.dtype)
    h, w = x.shape[-2:]
    choice = draws.integers(0, 0, len(textures))
    top = (draws.uniform(1, ()).double() * (sizes[choice, 0] - h)).long()  # as int(u * (height - h)) on the host
    left = (draws.uniform(2, ()).double() * (sizes[choice, 1] - w)).long()
    crops = textures.unfold(2, h, 1).unfold(3, w, 1)[choice, :, top, left]  # [N, 3, h, w]
    return weight * x + frost_weight * crops / 255


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
    v, _ = rgb_to_hsv_parts(x)
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
    v, s = rgb_to_hsv_parts(x)
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
        colour = device_constant((63, 42, 20), x.device, x.dtype).view(1, 3, 1, 1) / 255
        return x * (1 - m) + colour * m
    layer = torch.floor(liquid * 255)
    inside = layer > 0
    eroded = -F.max_pool2d(-inside.to(x.dtype), 3, stride=1, padding=1) > 0
    dist = truncated_distance(inside & ~eroded, 20)
    dist = filter3x3(dist, BOX3).floor()
    dist = equalize(dist)
    dist = filter3x3(dist, ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))).round().clamp(0, 255)  # emboss
    dist = filter3x3(dist, BOX3)
    m = layer * dist
    m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) * intensity
    colour = device_constant((175, 238, 238), x.device, x.dtype).view(1, 3, 1, 1) / 255
    return x + m * colour


def pixelate(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return pixelate_op(x, [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1])


def jpeg_compression(x: torch.Tensor, draws: Draws, severity: int) -> torch.Tensor:
    return jpeg_round_trip(x, [25, 18, 15, 10, 7][severity - 1])


OPS: dict[str, Op] = {name: globals()[name] for name in COMMON + EXTRA}
ON_255 = ("motion_blur", "pixelate", "jpeg_compression")
"""The ops that work on the 0..255 scale as the reference does (the others on 0..1)."""


CPU_SLICE = 4
"""Images corrupted at a time on the CPU: an op's temporaries then stay in the caches (a 224x224 image is 0.6 MB
in float32) instead of each pass streaming the whole batch through memory, and stay below glibc's mmap threshold
(32 MB at most: a batch of 64 is 38.5 MB), which would otherwise map and fault in fresh pages for every
temporary."""


def corrupt(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int) -> torch.Tensor:
    """The corruption ``name`` at ``severity`` (1-5) of a 0..255 batch, ending as ImageNet-C's files did:
    clipped and truncated to integers (``np.uint8``), float dtype. ``key`` is :func:`condition_key`'s. Every image's
    result depends on that image and its index alone, so the CPU takes the batch in slices of :data:`CPU_SLICE`."""
    if x.device.type != "cpu" or len(x) <= CPU_SLICE or name == "jpeg_compression":  # JPEG: image by image anyway
        return _corrupt(x, index, name, severity, key)
    out = torch.empty_like(x)
    for start in range(0, len(x), CPU_SLICE):
        part = slice(start, start + CPU_SLICE)
        out[part] = _corrupt(x[part], index[part], name, severity, key)
    return out


def _corrupt(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int) -> torch.Tensor:
    draws = Draws(key, index)
    if name in ON_255:
        y = OPS[name](x, draws, severity)
    else:
        y = OPS[name](x / 255, draws, severity).clamp_(0, 1).mul_(255)
    return y.clamp_(0, 255).floor_()

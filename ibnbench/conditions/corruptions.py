"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) as public batched tensor functions, the five
severities as a data table beside them, and :func:`corrupt` that applies one at a severity as ImageNet-C did.

Each op is a pure function of a batch ``x: Tensor[N,3,H,W]`` (RGB, float) and explicit parameters, in the units
of the ``imagecorruptions`` package (hendrycks' ``make_imagenet_c.py``): ``x`` on the 0..1 scale as there, except
:func:`pixelate` and :func:`jpeg_compression`, which work on uint8 levels (0..255); :func:`motion_blur` is linear
and takes either. The result is not clipped. :data:`SEVERITY_PARAMETERS` holds the parameters of ImageNet-C's
severities 1-5 per op, :data:`CORRUPTIONS` maps each name to its op, and :func:`corrupt` ends as ImageNet-C's files
were made (``np.uint8`` of the result: values clipped and truncated to integers, 0..255).

Randomness is counter-based (:class:`~ibnbench.conditions.imaging.Draws`): every draw is a hash of (key, image
index, element), so an image gets the same corruption whatever the batch it is in, the device, the worker count,
the resume point or the number of ranks. An op given no ``draws`` numbers the batch's images 0..N-1 under key 0.
Per-image offsets (motion blur, snow, frost) stay on the device, and constants are made there once per device and
dtype; the JPEG ops pass through host memory.

Example: ``motion_blur(x, radius=12, sigma=4, angle=30.0)`` blurs every image of ``x`` along 30 degrees.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ibnbench.conditions.frost import FrostTextures, frost_textures_on
from ibnbench.conditions.imaging import (
    BOX3,
    Draws,
    clipped_zoom,
    device_constant,
    disk_filter,
    equalize,
    erode3x3,
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
from ibnbench.conditions.ops import contrast
from ibnbench.errors import UsageError

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
"""The 15 corruptions of ImageNet-C, in its order."""
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out corruptions."""
LABELS = {"gaussian_noise": "Gaussian Noise", "shot_noise": "Shot Noise", "impulse_noise": "Impulse Noise",
          "defocus_blur": "Defocus Blur", "glass_blur": "Glass Blur", "motion_blur": "Motion Blur",
          "zoom_blur": "Zoom Blur", "snow": "Snow", "frost": "Frost", "fog": "Fog", "brightness": "Brightness",
          "contrast": "Contrast", "elastic_transform": "Elastic", "pixelate": "Pixelate", "jpeg_compression": "JPEG",
          "speckle_noise": "Speckle Noise", "gaussian_blur": "Gaussian Blur", "spatter": "Spatter",
          "saturate": "Saturate"}
SEVERITIES = (1, 2, 3, 4, 5)

def _draws(draws: Draws | None, x: torch.Tensor) -> Draws:
    """``draws``, or the batch's images numbered 0..N-1 under key 0."""
    return Draws(0, torch.arange(len(x), device=x.device)) if draws is None else draws


def gaussian_noise(x: torch.Tensor, sigma: float, draws: Draws | None = None) -> torch.Tensor:
    """``x + sigma * z``, ``z`` standard normal per value; ``sigma`` on the scale of ``x`` (0..1)."""
    return _draws(draws, x).normal(0, x.shape[1:]).mul_(sigma).add_(x)


def shot_noise(x: torch.Tensor, photons: float, draws: Draws | None = None) -> torch.Tensor:
    """Poisson noise: each value ``v`` (0..1, a uint8 level / 255) becomes ``Poisson(v * photons) / photons``
    (``photons``: the expected count at full scale; fewer is noisier)."""
    return poisson(x * 255, photons, _draws(draws, x).levels(0, x.shape[1:])) / photons


def impulse_noise(x: torch.Tensor, amount: float, draws: Draws | None = None) -> torch.Tensor:
    """Salt and pepper: each value set to 1 or 0 (even odds) with probability ``amount`` (0..1). Draws: level ``j``
    of draw 0 below ``amount`` flips value ``j``, to 1 where the sign bit of hash ``j`` is clear."""
    hashes = _draws(draws, x).hashes(0, math.prod(x.shape[1:])).view_as(x)
    salted = (hashes >= 0).to(x.dtype)
    flipped = hashes.bitwise_and_(0xFFFF) < amount * (1 << 16)
    return torch.where(flipped, salted, x)


def speckle_noise(x: torch.Tensor, sigma: float, draws: Draws | None = None) -> torch.Tensor:
    """``x + x * sigma * z``, ``z`` standard normal per value (noise proportional to the value)."""
    return _draws(draws, x).normal(0, x.shape[1:]).mul_(x * sigma).add_(x)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (scipy's, border "nearest", truncated at 4 sigma)."""
    return gaussian_filter(x, sigma)


def glass_blur(x: torch.Tensor, sigma: float, max_delta: int, iterations: int,
               draws: Draws | None = None) -> torch.Tensor:
    """Blur (``sigma`` pixels), uint8 levels, local pixel shuffling, blur. The shuffle is the reference's own:
    ``iterations`` sweeps from the bottom-right corner in which each pixel inside a ``max_delta`` border takes the
    value its neighbour at ``(dy, dx)`` in ``[-max_delta, max_delta)`` holds at that moment (numpy's tuple "swap"
    of two pixel views copies one way), computed in parallel by :func:`sweep_copies`."""
    draws = _draws(draws, x)
    n, c, h, w = x.shape
    y = torch.floor(gaussian_filter(x, sigma) * 255) / 255
    for sweep in range(iterations):
        dx = draws.integers(2 * sweep, -max_delta, max_delta, (h, w))
        dy = draws.integers(2 * sweep + 1, -max_delta, max_delta, (h, w))
        source = sweep_copies(dy, dx, max_delta)
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


def defocus_blur(x: torch.Tensor, radius: float, alias_blur: float) -> torch.Tensor:
    """Correlation with a disk of ``radius`` pixels, its edge smoothed by a Gaussian of ``alias_blur`` pixels."""
    return disk_filter(x, radius, alias_blur)


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor | float | None = None,
                draws: Draws | None = None) -> torch.Tensor:
    """Blur along a line: a Gaussian-weighted (``sigma`` pixels) sum of the image shifted by 0..2 ``radius`` pixels
    along ``angle`` (degrees: a number, or one per image ``[N]``), edges replicated. Without ``angle``, each image's
    is drawn uniformly in (-45, 45) degrees, as ImageNet-C's. Linear: ``x`` on any scale."""
    if angle is None:
        angle = _draws(draws, x).uniform(0, (), -45.0, 45.0)
    elif not isinstance(angle, torch.Tensor):
        angle = torch.full((len(x),), float(angle), device=x.device)
    return motion_blur_op(x, radius, sigma, angle)


def zoom_blur(x: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """The mean of ``x`` and its centre zoomed by each of ``factors`` (each above 1)."""
    out = x.clone()
    for factor in factors:
        out += clipped_zoom(x, factor)
    return out / (len(factors) + 1)


def snow(x: torch.Tensor, flake_mean: float, flake_std: float, zoom: float, threshold: float, blur_radius: int,
         blur_sigma: float, blend: float, draws: Draws | None = None) -> torch.Tensor:
    """Snow: a normal field (``flake_mean``, ``flake_std``) zoomed by ``zoom``, kept above ``threshold``, motion
    blurred (``blur_radius``, ``blur_sigma``, angle drawn in (-135, -45) degrees), added twice (and flipped) to the
    image whitened towards 1.5 x its grey level (``blend``: the share of the original image)."""
    draws = _draws(draws, x)
    h, w = x.shape[-2:]
    layer = flake_mean + flake_std * draws.normal(0, (1, h, w))
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = motion_blur_op(layer, blur_radius, blur_sigma, draws.uniform(2, (), -135.0, -45.0))
    layer = torch.round(layer * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def frost(x: torch.Tensor, image_weight: float, frost_weight: float, textures: FrostTextures,
          draws: Draws | None = None) -> torch.Tensor:
    """``image_weight * x + frost_weight * crop``: each image's crop of one of the frost ``textures``
    (:func:`~ibnbench.conditions.frost.frost_textures_on`, 0..255, resized to cover the image as imagecorruptions
    does), the texture and the crop's corner drawn."""
    draws = _draws(draws, x)
    h, w = x.shape[-2:]
    stack, sizes = textures.fitted(h, w)
    choice = draws.integers(0, 0, len(stack))
    top = (draws.uniform(1, ()).double() * (sizes[choice, 0] - h)).long()  # as int(u * (height - h)) on the host
    left = (draws.uniform(2, ()).double() * (sizes[choice, 1] - w)).long()
    crops = stack.unfold(2, h, 1).unfold(3, w, 1)[choice, :, top, left].to(x.dtype)  # [N, 3, h, w]
    return image_weight * x + frost_weight * crops / 255


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


def fog(x: torch.Tensor, thickness: float, decay: float, draws: Draws | None = None,
        mapsize: int | None = None) -> torch.Tensor:
    """Fog: ``x`` plus ``thickness`` times a diamond-square fractal (roughness ``decay``: larger is smoother) of
    ``mapsize`` pixels a side (a power of two at least the image's side; by default the smallest), rescaled to keep
    each image's maximum."""
    h, w = x.shape[-2:]
    size = mapsize or 1 << (max(h, w) - 1).bit_length()
    if size < max(h, w) or size & (size - 1):
        raise UsageError(f"fog: mapsize must be a power of two of at least {max(h, w)}, got {mapsize}")
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(_draws(draws, x), size, decay)[:, None, :h, :w].to(x.dtype)
    return (x + thickness * plasma) * max_val / (max_val + thickness)


def brightness(x: torch.Tensor, delta: float) -> torch.Tensor:
    """HSV value ``max(r, g, b) + delta`` (clipped to 0..1, ``x`` on 0..1; ``delta`` below 0 darkens, as
    ImageNet-P's brightness frames do): the RGB values scale with the value at fixed hue and saturation (black
    turns grey)."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + delta).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def saturate(x: torch.Tensor, scale: float, offset: float) -> torch.Tensor:
    """HSV saturation ``* scale + offset`` (clipped to 0..1): each channel's distance below the value scales with
    the saturation; grey pixels (hue 0, as skimage sets it) become ``[v, v (1 - s'), v (1 - s')]``."""
    v, s = rgb_to_hsv_parts(x)
    s_new = (s * scale + offset).clamp(0, 1)
    coloured = v - (v - x) * s_new / s.clamp_min(1e-12)
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)
    return torch.where(s > 0, coloured, grey)


def elastic_transform(x: torch.Tensor, alpha: float, draws: Draws | None = None, max_shift: float = 0.005,
                      smoothing: float = 0.01) -> torch.Tensor:
    """imagecorruptions' elastic transform: a uniform displacement field (up to ``max_shift`` x the height in
    pixels) smoothed by a Gaussian of ``smoothing`` x the height down the rows and x the width along them, scaled
    by ``alpha``, sampled bilinearly with symmetric reflection at the borders."""
    h, w = x.shape[-2:]
    max_d = h * max_shift
    field = _draws(draws, x).uniform(0, (2, h, w), -max_d, max_d)
    fields = gaussian_filter(field, (h * smoothing, w * smoothing), "reflect", truncate=3.0) * alpha
    # grid_sample, corners not aligned: pixel p sits at (2 p + 1) / n - 1, reflection about -0.5 and n - 0.5
    gx = (torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :] + fields[:, 0]) * (2 / w) + (1 / w - 1)
    gy = (torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None] + fields[:, 1]) * (2 / h) + (1 / h - 1)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def spatter(x: torch.Tensor, mean: float, std: float, sigma: float, threshold: float, intensity: float, mud: bool,
            draws: Draws | None = None) -> torch.Tensor:
    """Liquid or (``mud``) mud splashes from a normal field (``mean``, ``std``) smoothed by ``sigma`` pixels and
    kept above ``threshold``; ``intensity`` sets the liquid's sheen or the mud's spread. The mud is the reference's;
    the liquid's sheen takes the blobs' inner boundaries for OpenCV's Canny edges, otherwise the reference's steps
    (distance to the edges capped at 20, 3x3 blur, histogram equalisation, emboss, blur)."""
    h, w = x.shape[-2:]
    liquid = gaussian_filter(mean + std * _draws(draws, x).normal(0, (1, h, w)), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_filter((liquid > threshold).to(x.dtype), intensity)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = device_constant((63, 42, 20), x.device, x.dtype).view(1, 3, 1, 1) / 255
        return x * (1 - m) + colour * m
    layer = torch.floor(liquid * 255)
    m = liquid_sheen(layer) * intensity
    colour = device_constant((175, 238, 238), x.device, x.dtype).view(1, 3, 1, 1) / 255
    return x + m * colour


EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))


def liquid_sheen(layer: torch.Tensor) -> torch.Tensor:
    """The water's sheen ``[N,1,H,W]`` in [0, 1] (1 at each image's maximum) of a uint8-valued liquid layer
    ``[N,1,H,W]`` (0..255), with the steps of the reference spatter (ImageNet-C's and ImageNet-P's): distance to the
    edges capped at 20, 3x3 blur, histogram equalisation, emboss, blur, times the layer. The blobs' inner boundaries
    stand for OpenCV's Canny edges."""
    inside = layer > 0
    eroded = erode3x3(inside)
    dist = filter3x3(truncated_distance(inside & ~eroded, 20), BOX3).floor()
    dist = filter3x3(equalize(dist), EMBOSS).round().clamp(0, 255)
    sheen = layer * filter3x3(dist, BOX3)
    return sheen / sheen.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def pixelate(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Down to ``factor`` of the size with PIL's BOX filter, back up with NEAREST; ``x`` on 0..255 (uint8 levels,
    as PIL rounds between passes)."""
    return pixelate_op(x, factor)


def jpeg_compression(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip at ``quality`` (1-100, PIL's encoder, 4:2:0 chroma); ``x`` on 0..255, rounded to uint8."""
    return jpeg_round_trip(x, quality)


def _levels(names: str | tuple[str, ...], *rows: object) -> tuple[dict[str, object], ...]:
    """One parameter dict per severity: ``rows`` are values (one name) or tuples of values (several names)."""
    if isinstance(names, str):
        return tuple({names: value} for value in rows)
    return tuple(dict(zip(names, row)) for row in rows)


def _arange(start: float, stop: float, step: float) -> tuple[float, ...]:
    """``np.arange(start, stop, step)`` as Python floats (the reference's zoom factors)."""
    return tuple(start + i * step for i in range(int(math.ceil((stop - start) / step))))


SEVERITY_PARAMETERS: dict[str, tuple[dict[str, object], ...]] = {
    "gaussian_noise": _levels("sigma", .08, .12, 0.18, 0.26, 0.38),
    "shot_noise": _levels("photons", 60, 25, 12, 5, 3),
    "impulse_noise": _levels("amount", .03, .06, .09, 0.17, 0.27),
    "defocus_blur": _levels(("radius", "alias_blur"), (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": _levels(("sigma", "max_delta", "iterations"),
                          (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": _levels(("radius", "sigma"), (10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": _levels("factors", _arange(1, 1.11, 0.01), _arange(1, 1.16, 0.01), _arange(1, 1.21, 0.02),
                         _arange(1, 1.26, 0.02), _arange(1, 1.31, 0.03)),
    "snow": _levels(("flake_mean", "flake_std", "zoom", "threshold", "blur_radius", "blur_sigma", "blend"),
                    (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "frost": _levels(("image_weight", "frost_weight"), (1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": _levels(("thickness", "decay"), (1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)),
    "brightness": _levels("delta", .1, .2, .3, .4, .5),
    "contrast": _levels("factor", 0.4, .3, .2, .1, .05),
    "elastic_transform": _levels("alpha", 250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
    "pixelate": _levels("factor", 0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": _levels("quality", 25, 18, 15, 10, 7),
    "speckle_noise": _levels("sigma", .15, .2, 0.35, 0.45, 0.6),
    "gaussian_blur": _levels("sigma", 1, 2, 3, 4, 6),
    "spatter": _levels(("mean", "std", "sigma", "threshold", "intensity", "mud"),
                       (0.65, 0.3, 4, 0.69, 0.6, False), (0.65, 0.3, 3, 0.68, 0.6, False),
                       (0.65, 0.3, 2, 0.68, 0.5, False), (0.65, 0.3, 1, 0.65, 1.5, True),
                       (0.67, 0.4, 1, 0.65, 1.5, True)),
    "saturate": _levels(("scale", "offset"), (0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}
"""ImageNet-C's parameters of each op at severities 1-5 (``imagecorruptions`` 1.1.2's constants), keyword
arguments of the op."""

CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "spatter": spatter, "saturate": saturate,
}
"""Each ImageNet-C corruption's op by name (the names of ``imagecorruptions.get_corruption_names("all")``)."""
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "spatter")
"""The ops that take ``draws``."""
ON_255 = ("motion_blur", "pixelate", "jpeg_compression")
"""The ops that work on the 0..255 scale as the reference does (the others on 0..1)."""


def corruption_assets(name: str, device: torch.device) -> dict[str, object]:
    """The files corruption ``name`` needs, read onto ``device`` (frost: its ``textures``; others: none)."""
    return {"textures": frost_textures_on(device)} if name == "frost" else {}


CPU_SLICE = 4
"""Images corrupted at a time on the CPU: an op's temporaries then stay in the caches (a 224x224 image is 0.6 MB
in float32) instead of each pass streaming the whole batch through memory, and stay below glibc's mmap threshold
(32 MB at most: a batch of 64 is 38.5 MB), which would otherwise map and fault in fresh pages for every
temporary."""


def corrupt(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int,
            assets: Mapping[str, object] | None = None) -> torch.Tensor:
    """The corruption ``name`` at ``severity`` (1-5) of a 0..255 batch with :data:`SEVERITY_PARAMETERS`, ending as
    ImageNet-C's files did: clipped and truncated to integers (``np.uint8``), float dtype. ``key``:
    :func:`~ibnbench.conditions.imaging.condition_key`'s; ``index``: each image's dataset index; ``assets``:
    :func:`corruption_assets` (read here when not given). Every image's result depends on that image and its index
    alone, so the CPU takes the batch in slices (:func:`in_cpu_slices`)."""
    assets = corruption_assets(name, x.device) if assets is None else assets
    if name == "jpeg_compression":  # image by image anyway
        return _corrupt(x, index, name, severity, key, assets)
    return in_cpu_slices(lambda xs, ids: _corrupt(xs, ids, name, severity, key, assets), x, index)


def in_cpu_slices(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """``op(x, index)`` for an op whose every image depends on that image and its index alone: on the CPU, taken
    :data:`CPU_SLICE` images at a time; elsewhere on the whole batch."""
    if x.device.type != "cpu" or len(x) <= CPU_SLICE:
        return op(x, index)
    out = torch.empty_like(x)
    for start in range(0, len(x), CPU_SLICE):
        part = slice(start, start + CPU_SLICE)
        out[part] = op(x[part], index[part])
    return out


def _corrupt(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int,
             assets: Mapping[str, object]) -> torch.Tensor:
    arguments = {**SEVERITY_PARAMETERS[name][severity - 1], **assets}
    if name in RANDOM:
        arguments["draws"] = Draws(key, index)
    if name in ON_255:
        y = CORRUPTIONS[name](x, **arguments)
    else:
        y = CORRUPTIONS[name](x / 255, **arguments).clamp_(0, 1).mul_(255)
    return y if name == "jpeg_compression" else y.clamp_(0, 255).floor_()  # the decoder's levels are uint8 already

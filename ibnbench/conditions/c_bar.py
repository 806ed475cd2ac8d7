"""ImageNet-C-bar's ten corruptions (Mintun et al., NeurIPS 2021) as batched tensor ops on any device.

Each op maps a batch ``x: Tensor[N,3,H,W]`` (RGB, float, 0..255) and its parameters to the corrupted batch on the
0..255 scale, unclipped; it computes the formulas of facebookresearch/augmentation-corruption's
``imagenet_c_bar/corrupt.py`` (MIT), written anew for whole batches. A parameter is either fixed by the severity
(:data:`C_BAR_SEVERITIES`, lengths in pixels) or drawn per image (a ``Tensor[N, ...]``: the keyword arguments that
:data:`C_BAR_SAMPLERS` return, with the reference's distributions). :func:`corrupt_bar` draws them and ends as the
reference's files were made (clipped, ``np.uint8``: truncated to integers).

Randomness is :class:`~ibnbench.conditions.imaging.Draws`' (as ImageNet-C's): every draw is a hash of (key, image
index, stream, element), the key :func:`~ibnbench.conditions.imaging.condition_key` of the suite seed and the
condition, so an image gets the same corruption in any batch, on any device. Nothing here reads a device value on
the host.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from ibnbench.conditions.imaging import Draws, gaussian_filter
from ibnbench.errors import UsageError

C_BAR_SIZE = 224
"""The crop size ImageNet-C-bar was made at (Resize 256, CenterCrop 224): the size of :data:`C_BAR_SEVERITIES`."""

C_BAR_LEVELS: dict[str, tuple[float, ...]] = {
    "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
    "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
}
"""``imagenet_c_bar.csv``: each corruption's reference level (0-10) at severities 1-5."""

C_BAR_NAMES = tuple(C_BAR_LEVELS)
C_BAR_LABELS = {name: name.replace("_", " ").title() for name in C_BAR_NAMES}
"""Each corruption's display name (``"blue_noise_sample"``: "Blue Noise Sample")."""
TWO_PI = 2 * math.pi
WHITE = 255.0
"""The sparkles' colour (the reference's ``[255, 255, 255]``)."""
GREY = 128.0
"""The checkerboard's cut-out colour."""
MAX_RAYS = 199
"""Rays per sparkle are drawn in [50, 200): the draws of ray lengths are padded to this many."""
MAX_PLASMA_ITERATIONS = 6
"""Plasma iterations are drawn in [4, 7)."""


def _level(level: float, maxval: float) -> float:
    """The reference's ``float_parameter``: ``level`` (0-10) as a fraction ``level / 10`` of ``maxval``."""
    return float(level) * maxval / 10.0


_FROM_LEVEL: dict[str, Callable[[float, int], tuple[float, ...]]] = {
    "blue_noise_sample": lambda level, size: (_level(level, 3.0) - 2.5,),
    "brownish_noise": lambda level, size: (_level(level, 64),),
    "caustic_refraction": lambda level, size: (_level(level, 0.5 * size), _level(level, 2.0)),
    "checkerboard_cutout": lambda level, size: (_level(level, 1.0),),
    "cocentric_sine_waves": lambda level, size: (_level(level, 128),),
    "inverse_sparkles": lambda level, size: (0.25 * size, 100 - _level(level, 65)),
    "perlin_noise": lambda level, size: (_level(level, 0.50), 32 * size / 224),
    "plasma_noise": lambda level, size: (_level(level, 64),),
    "single_frequency_greyscale": lambda level, size: (_level(level, 196),),
    "sparkles": lambda level, size: (_level(level, 0.1) * size,),
}


def c_bar_parameters(name: str, severity: int, size: int = C_BAR_SIZE) -> tuple[float, ...]:
    """The severity-fixed parameters of corruption ``name`` at ``severity`` (1-5) for ``size`` x ``size`` images,
    derived from its level as the reference's ``sample_parameters`` do (the op's positional parameters after ``x``)."""
    return _FROM_LEVEL[name](C_BAR_LEVELS[name][severity - 1], size)


C_BAR_SEVERITIES: dict[str, tuple[tuple[float, ...], ...]] = {
    name: tuple(c_bar_parameters(name, severity) for severity in range(1, 6)) for name in C_BAR_NAMES}
"""Each corruption's severity-fixed parameters at severities 1-5, for 224 x 224 images:
blue_noise_sample (threshold, in noise standard deviations), brownish_noise (intensity, grey levels per standard
deviation), caustic_refraction (lens_scale in pixels, lighting: 0..1 per unit of caustic slope), checkerboard_cutout
(fraction of cells cut), cocentric_sine_waves (intensity, grey levels), inverse_sparkles (radius in pixels, amount
0-100), perlin_noise (alpha, blend weight; cell in pixels), plasma_noise (intensity, grey levels),
single_frequency_greyscale (intensity, grey levels), sparkles (radius in pixels)."""


def _per_image(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image value ``[N]`` as ``[N, 1, 1, 1]`` in ``like``'s dtype."""
    return t.to(like.dtype).view(-1, 1, 1, 1)


def _coordinates(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows ``[H, 1]`` and columns ``[1, W]`` of ``x[..., H, W]`` in its dtype."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    return rows, torch.arange(w, device=x.device, dtype=x.dtype)[None, :]


def single_frequency_greyscale(x: torch.Tensor, intensity: float, freq: torch.Tensor,
                               phase: torch.Tensor) -> torch.Tensor:
    """``x + intensity sin(freq_0 col + freq_1 row + phase)``, the same on the three channels; ``intensity`` in grey
    levels, ``freq [N, 2]`` in radians per pixel, ``phase [N]`` in radians."""
    rows, cols = _coordinates(x)
    wave = torch.sin(cols * _per_image(freq[:, 0], x) + rows * _per_image(freq[:, 1], x) + _per_image(phase, x))
    return x + intensity * wave


def cocentric_sine_waves(x: torch.Tensor, intensity: float, offset: torch.Tensor, freq: torch.Tensor,
                         amplitude: torch.Tensor, ring_width: torch.Tensor) -> torch.Tensor:
    """Rings around ``offset [N, 2]`` (column, row, in pixels), their radius wobbling by ``amplitude`` pixels
    ``freq`` times a turn: ``x + intensity ((r + amplitude sin(freq angle)) mod ring_width / ring_width - 1/2)``,
    the angle ``atan2(col - offset_0, row - offset_1)``; ``intensity`` in grey levels, ``ring_width`` in pixels."""
    rows, cols = _coordinates(x)
    dx, dy = cols - _per_image(offset[:, 0], x), rows - _per_image(offset[:, 1], x)
    radius = torch.hypot(dx, dy) + torch.sin(torch.atan2(dx, dy) * _per_image(freq, x)) * _per_image(amplitude, x)
    width = _per_image(ring_width, x)
    return x + intensity * (torch.remainder(radius, width) / width - 0.5)


def plasma_noise(x: torch.Tensor, intensity: float, time: torch.Tensor, iterations: torch.Tensor,
                 sharpness: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(1 - intensity / 255) x + intensity plasma`` (``intensity`` in grey levels): the reference's plasma kernel.
    A point ``(col', row') = (col, row) / scale`` (``scale`` in pixels) moves ``iterations`` (at most 6) times by
    ``r + 0.3 (-r_1, r_0)``, ``r = (cos(row' 1.93^s + time / 1.15^s), sin(col' 1.93^s + time / 1.15^s)) /
    (2.25 - sharpness)^s`` at step ``s`` (the reference's fourth factor starts at 0 and stays 0); then red is
    ``sin(col' - time)``, green ``sin((col' + row' + sin(time)) / 2)``, blue ``sin(row' + time)``."""
    rows, cols = _coordinates(x)
    time, scale, steps = _per_image(time, x), _per_image(scale, x), iterations.view(-1, 1, 1, 1)
    px, py = cols / scale, rows / scale
    damping = 2.25 - _per_image(sharpness, x)
    for s in range(MAX_PLASMA_ITERATIONS):
        phase = time / 1.15 ** s
        r0 = torch.cos(py * 1.93 ** s + phase) / damping ** s
        r1 = torch.sin(px * 1.93 ** s + phase) / damping ** s
        active = steps > s
        px = torch.where(active, px + r0 - 0.3 * r1, px)
        py = torch.where(active, py + r1 + 0.3 * r0, py)
    plasma = torch.cat([torch.sin(px - time), torch.sin((px + py + torch.sin(time)) * 0.5), torch.sin(py + time)], 1)
    return (1 - intensity / 255) * x + intensity * plasma


def caustic_pattern(x: torch.Tensor, time: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """The reference's caustic noise ``[N, 1, H, W]`` in 0..1 on ``x``'s grid: five iterations of its water-caustic
    kernel at the point ``((row, col) / size mod 1) 2 pi - 250``, ``size`` (pixels) the tile, ``time`` the phase."""
    rows, cols = _coordinates(x)
    size = _per_image(size, x)
    p0 = torch.remainder(rows / size, 1.0) * 6.28318530718 - 250
    p1 = torch.remainder(cols / size, 1.0) * 6.28318530718 - 250
    p0, p1 = torch.broadcast_tensors(p0, p1)
    i0, i1, c = p0, p1, 1.0
    for n in range(5):
        t = _per_image(time, x) * (1.0 - 3.5 / (n + 1))
        i0, i1 = p0 + torch.cos(t - i0) + torch.sin(t + i1), p1 + torch.sin(t - i1) + torch.cos(t + i0)
        c = c + 1.0 / torch.hypot(p0 * 0.005 / torch.sin(i0 + t), p1 * 0.005 / torch.cos(i1 + t))
    return (1.17 - (c / 5.0) ** 1.4).abs().pow(8.0).clamp(0, 1)


def caustic_refraction(x: torch.Tensor, lens_scale: float, lighting: float, time: torch.Tensor, size: torch.Tensor,
                       eta: float = 4.0, softening: float = 1.0) -> torch.Tensor:
    """The image seen through a water surface whose height is :func:`caustic_pattern` (blurred by a Gaussian of
    ``softening`` pixels): each pixel samples bilinearly (zeros outside) at its position moved by the vertical ray
    refracted (index ``eta``) by the surface normal ``(d/drow, d/dcol, 1)`` (central differences, zeros outside),
    times ``lens_scale`` pixels and rounded to 1e-3 (no move where the normal is within 1e-3 of vertical), plus
    ``255 lighting`` times the summed differences (left minus right, below minus above)."""
    h, w = x.shape[-2:]
    height = gaussian_filter(caustic_pattern(x, time, size), softening, "reflect")
    padded = F.pad(height, (1, 1, 1, 1))
    left, right = padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]
    above, below = padded[..., :-2, 1:-1], padded[..., 2:, 1:-1]
    slope_row, slope_col = below - above, right - left
    norm = torch.sqrt(slope_row ** 2 + slope_col ** 2 + 1)
    cosine = 1 / norm  # of the angle between the normal and the vertical ray
    sine = torch.sqrt(1 - cosine ** 2)
    along = (torch.sqrt(1 - (sine / eta) ** 2) - cosine / eta) / norm * lens_scale
    along = torch.where(cosine >= 1.0 - 1e-3, torch.zeros_like(along), along)
    rows, cols = _coordinates(x)
    source_row = rows + torch.round(slope_row * along, decimals=3)
    source_col = cols + torch.round(slope_col * along, decimals=3)
    grid = torch.stack([source_col[:, 0] * (2 / (w - 1)) - 1, source_row[:, 0] * (2 / (h - 1)) - 1], dim=-1)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled + (255 * lighting) * ((left - right) + (below - above))


def checkerboard_cutout(x: torch.Tensor, fraction: float, angle: torch.Tensor, cell: torch.Tensor,
                        cells: torch.Tensor) -> torch.Tensor:
    """A checkerboard of ``cell``-pixel squares turned by ``angle`` (radians), the squares of one colour painted grey
    (128) where their cell's uniform draw is below ``fraction``. ``cells [N, K, K]`` are the draws of the reference's
    ``G x G`` grid, ``G = floor(4 H / cell)`` (at most ``K``), indexed as it does (truncated coordinates, negative
    ones from the end)."""
    rows, cols = _coordinates(x)
    cos, sin, cell = _per_image(torch.cos(angle), x), _per_image(torch.sin(angle), x), _per_image(cell, x)
    u = (cos * rows + sin * cols) / cell
    v = (cos * cols - sin * rows) / cell
    same_colour = torch.floor(torch.remainder(u, 2)) == torch.floor(torch.remainder(v, 2))
    k = cells.shape[-1]
    grid_size = torch.floor(4 * x.shape[-2] / cell.double()).long().clamp(max=k)
    flat = torch.remainder(torch.trunc(u).long(), grid_size) * k + torch.remainder(torch.trunc(v).long(), grid_size)
    drawn = cells.reshape(len(x), 1, k * k).gather(2, flat.flatten(1)[:, None]).view_as(u)
    return torch.where(same_colour & (drawn < fraction), GREY, x)


def _spectral_noise(power: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """The reference's coloured noise: the spectrum ``power * exp(i phases)`` (centred: rolled by half the size on
    both axes), the real part of its inverse FFT, divided by its standard deviation; ``phases [N, C, H, W]``. (The
    spectrum from ``cos`` and ``sin`` and the deviation from the centred squares: on the CPU ``torch.polar`` and
    ``torch.std`` run unvectorised, 4-7x slower, for the same values within float32 rounding.)"""
    h, w = phases.shape[-2:]
    power, phases = power.roll((h // 2, w // 2), (-2, -1)), phases.roll((h // 2, w // 2), (-2, -1))
    spectrum = torch.complex(power * torch.cos(phases), power * torch.sin(phases))
    noise = torch.fft.ifft2(spectrum).real
    centred = noise - noise.mean(dim=(-2, -1), keepdim=True)
    return noise / centred.square_().mean(dim=(-2, -1), keepdim=True).sqrt_()


def _distance_from_centre(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance ``[H, W]`` from ``(H / 2, W / 2)``."""
    rows, cols = _coordinates(x)
    h, w = x.shape[-2:]
    return torch.hypot(cols - w / 2, rows - h / 2)


def blue_noise_sample(x: torch.Tensor, threshold: float, phases: torch.Tensor) -> torch.Tensor:
    """``x`` kept where a blue noise (power rising with the distance from the spectrum's centre; ``phases
    [N, 1, H, W]``, :func:`mirrored_phases`) exceeds ``threshold`` standard deviations, black elsewhere."""
    noise = _spectral_noise(_distance_from_centre(x), phases.to(x.dtype))
    return x * (noise > threshold)


def brownish_noise(x: torch.Tensor, intensity: float, phases: torch.Tensor) -> torch.Tensor:
    """``x + intensity noise``, a brownish noise per channel (power ``1 / (1 + distance^2)`` from the spectrum's
    centre; ``phases [N, 3, H, W]``, :func:`mirrored_phases`) of unit standard deviation; ``intensity`` in grey
    levels."""
    distance = _distance_from_centre(x)
    return x + intensity * _spectral_noise(1 / (distance ** 2 + 1), phases.to(x.dtype))


def _sparkle(x: torch.Tensor, center: torch.Tensor, ray_lengths: torch.Tensor, rays: torch.Tensor,
             exponent: float) -> torch.Tensor:
    """A star's weight ``[N, 1, H, W]`` in 0..1 around ``center [N, 2]`` (row, column): ``rays [N]`` rays whose
    lengths ``ray_lengths [N, R]`` (pixels, the first ``rays`` used) are interpolated between neighbours; the weight
    ``(1 - (f - 1/2)^2) (length^2 / (distance^2 + 1e-4))^exponent``, ``f`` the position between two rays."""
    rows, cols = _coordinates(x)
    dy, dx = rows - _per_image(center[:, 0], x), cols - _per_image(center[:, 1], x)
    rays = rays.view(-1, 1, 1, 1)
    turn = (torch.atan2(dx, dy) + math.pi) / TWO_PI * rays.to(x.dtype)
    ray = torch.floor(turn)
    between = turn - ray
    ray = ray.long().flatten(1)  # in [0, rays]
    wrapped = torch.cat([ray_lengths, ray_lengths[:, :2]], dim=1).to(x.dtype).scatter_(
        1, rays.view(-1, 1) + torch.arange(2, device=x.device), ray_lengths[:, :2].to(x.dtype))
    first = wrapped.gather(1, ray).view_as(turn)  # lengths at ray and ray + 1 modulo rays, without a division
    second = wrapped.gather(1, ray + 1).view_as(turn)
    length = first + between * (second - first)
    glow = (length ** 2 / (dx ** 2 + dy ** 2 + 1e-4)) ** exponent
    return ((1 - (between - 0.5) ** 2) * glow).clamp(0, 1)


def sparkles(x: torch.Tensor, radius: float, centers: torch.Tensor, rays: torch.Tensor, ray_noise: torch.Tensor,
             amount: float = 50.0, randomness: float = 25.0) -> torch.Tensor:
    """White stars, one after the other, at ``centers [N, S, 2]`` (row, column, pixels), with ``rays [N, S]`` rays
    of length ``max(1, radius (1 + randomness / 100 ray_noise))`` pixels (``ray_noise [N, S, R]``, standard normal):
    ``x + w (255 - x)``, ``w`` :func:`_sparkle`'s weight with exponent ``(100 - amount) / 50``."""
    lengths = (radius + randomness / 100.0 * radius * ray_noise).clamp_min(1)
    for star in range(centers.shape[1]):
        weight = _sparkle(x, centers[:, star], lengths[:, star], rays[:, star], (100 - amount) / 50.0)
        x = x + weight * (WHITE - x)
    return x


def inverse_sparkles(x: torch.Tensor, radius: float, amount: float, center: torch.Tensor, rays: torch.Tensor,
                     ray_noise: torch.Tensor, randomness: float = 25.0) -> torch.Tensor:
    """The image seen through a star at ``center [N, 2]`` (row, column, pixels) on white: ``255 + w (x - 255)``,
    ``w`` :func:`_sparkle`'s weight with exponent ``(100 - amount) / 50`` for ``rays [N]`` rays of length
    ``radius (1 + randomness / 100 ray_noise)`` pixels (``ray_noise [N, R]``, standard normal)."""
    lengths = radius + randomness / 100.0 * radius * ray_noise
    weight = _sparkle(x, center, lengths, rays, (100 - amount) / 50.0)
    return WHITE + weight * (x - WHITE)


@lru_cache(maxsize=64)
def _perlin_lattice(h: int, w: int, cell: float, f: float, device: torch.device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Where :func:`_perlin` samples an ``h x w`` image at ``f (row, column) / cell``: the rows' and columns'
    fractions within their lattice cells ``[h, 1]`` and ``[1, w]``, the lattice rows and columns they touch, and each
    pixel's cell (flat index into those). Made once per geometry and device (``torch.unique`` waits for the
    device)."""
    u = f * (torch.arange(h, device=device, dtype=dtype) / cell)
    v = f * (torch.arange(w, device=device, dtype=dtype) / cell)
    u0, v0 = torch.floor(u), torch.floor(v)
    rows, row_of = torch.unique(u0.long(), return_inverse=True)
    cols, col_of = torch.unique(v0.long(), return_inverse=True)
    return (u - u0)[:, None], (v - v0)[None, :], rows, cols, (row_of[:, None] * len(cols) + col_of).flatten()


def _perlin(lattice: tuple[torch.Tensor, ...], permutation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """The reference's 2-D Perlin noise ``[N, H, W]`` at the points of :func:`_perlin_lattice` for each image's
    ``permutation [N, 256]`` of 0..255 and unit ``gradients [N, 256, 2]``: the lattice corners hashed through the
    permutation (wrapping at 256), the gradients' dot products blended by ``3 t^2 - 2 t^3``, times 1.5 (the
    reference adds 4096 = 16 x 256 to the coordinates first: the same cells and fractions for points >= 0). Hashes
    and gradients are looked up once per lattice corner, then spread to the pixels."""
    fu, fv, rows, cols, spread = lattice
    n, shape = len(permutation), (len(permutation), fu.shape[0], fv.shape[1])

    def lookup(table: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return table.gather(1, (at & 255).expand(n, -1))  # at mod 256, negative numbers included

    hashes = (lookup(permutation, rows), lookup(permutation, rows + 1))

    def corner(du: int, dv: int) -> torch.Tensor:
        gradient = permutation.gather(1, ((hashes[du][:, :, None] + cols + dv) & 255).flatten(1))
        gu, gv = (gradients[..., k].gather(1, gradient).index_select(1, spread).view(shape) for k in (0, 1))
        return (fu - du) * gu + (fv - dv) * gv

    su, sv = fu * fu * (3.0 - 2.0 * fu), fv * fv * (3.0 - 2.0 * fv)
    near = torch.lerp(corner(0, 0), corner(1, 0), su)
    far = torch.lerp(corner(0, 1), corner(1, 1), su)
    return 1.5 * torch.lerp(near, far, sv)


def perlin_noise(x: torch.Tensor, alpha: float, cell: float, permutation: torch.Tensor, gradients: torch.Tensor,
                 octaves: float = 16.0, gain: float = 0.5, bias: float = 0.5) -> torch.Tensor:
    """``(1 - alpha) x + 255 alpha clip(gain turbulence + bias, 0, 1)``, the same on the three channels: the
    turbulence ``sum |noise(f row / cell, f col / cell)| / f`` over ``f = 1, 2, 4, ... <= octaves`` of
    :func:`_perlin` noise (``permutation [N, 256]``, ``gradients [N, 256, 2]``), ``cell`` in pixels."""
    h, w = x.shape[-2:]
    gradients = gradients.to(x.dtype)
    turbulence, f = 0.0, 1.0
    while f <= octaves:
        lattice = _perlin_lattice(h, w, cell, f, x.device, x.dtype)
        turbulence = turbulence + _perlin(lattice, permutation, gradients).abs() / f
        f *= 2
    value = (gain * turbulence + bias).clamp(0, 1).view(len(x), 1, h, w)
    return (1 - alpha) * x + (255 * alpha) * value


def mirrored_phases(draws: Draws, stream: int, channels: int, size: int) -> torch.Tensor:
    """The reference's spectrum phases ``[N, channels, size, size]``: uniform in [0, 2 pi) on the left half, the
    right half the left turned by 180 degrees (odd sizes: a middle column of draws mirrored about a 0 centre)."""
    left = draws.uniform(stream, (channels, size, size // 2), 0.0, TWO_PI)
    if size % 2 == 0:
        return torch.cat([left, left.flip(-1, -2)], dim=-1)
    middle = draws.uniform(stream + 1, (channels, size // 2, 1), 0.0, TWO_PI)
    middle = torch.cat([middle, torch.zeros_like(middle[..., :1, :]), middle.flip(-2)], dim=-2)
    return torch.cat([left, middle, left.flip(-1, -2)], dim=-1)


def _ray_draws(draws: Draws, stream: int, stars: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Rays per star in [50, 200) and their lengths' standard normal noise (:data:`MAX_RAYS` per star)."""
    return {"rays": draws.integers(stream, 50, 200, stars), "ray_noise": draws.normal(stream + 1, (*stars, MAX_RAYS))}


def _draw_single_frequency(draws: Draws, size: int) -> dict[str, torch.Tensor]:
    magnitude = draws.uniform(0, (), -math.pi, math.pi)
    other = magnitude.abs() * draws.uniform(1, (), -1.0, 1.0)
    swap = draws.integers(2, 0, 2) == 1
    freq = torch.stack([torch.where(swap, other, magnitude), torch.where(swap, magnitude, other)], dim=1)
    return {"freq": freq, "phase": draws.uniform(3, (), 0.0, TWO_PI)}


def _draw_cocentric(draws: Draws, size: int) -> dict[str, torch.Tensor]:
    return {"offset": draws.uniform(0, (2,), 0.0, size), "freq": draws.uniform(1, (), 0.0, 10.0),
            "amplitude": draws.uniform(2, (), 0.0, size / 10), "ring_width": draws.uniform(3, (), 0.0, size / 10)}


def _draw_plasma(draws: Draws, size: int) -> dict[str, torch.Tensor]:
    return {"time": draws.uniform(0, (), 0.0, 6 * math.pi), "iterations": draws.integers(1, 4, 7),
            "sharpness": draws.uniform(2, (), 0.5, 1.0), "scale": draws.uniform(3, (), 0.075, 0.2) * size}


def _draw_checkerboard(draws: Draws, size: int) -> dict[str, torch.Tensor]:
    """The cell ``max(U(0.1, 0.25) size, 1)`` pixels gives the reference's grid ``floor(4 size / cell)`` cells
    across: at most ``4 min(size, 10)``, the size of the draws ``cells``."""
    cell = (draws.uniform(1, (), 0.1, 0.25) * size).clamp_min(1)
    largest = 4 * min(size, 10)
    return {"angle": draws.uniform(0, (), 0.0, TWO_PI), "cell": cell, "cells": draws.uniform(2, (largest, largest))}


def _draw_perlin(draws: Draws, size: int) -> dict[str, torch.Tensor]:
    """A random permutation of 0..255 (the order of 256 hashes) and 256 unit gradients, their components drawn in
    ``{-256, ..., 255} / 256`` as the reference's (a zero draw stays a zero gradient)."""
    gradients = draws.integers(1, -256, 256, (256, 2)).float() / 256
    gradients = gradients / gradients.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return {"permutation": draws.hashes(0, 256).argsort(dim=1, stable=True), "gradients": gradients}


C_BAR_SAMPLERS: dict[str, Callable[[Draws, int], dict[str, torch.Tensor]]] = {
    "blue_noise_sample": lambda draws, size: {"phases": mirrored_phases(draws, 0, 1, size)},
    "brownish_noise": lambda draws, size: {"phases": mirrored_phases(draws, 0, 3, size)},
    "caustic_refraction": lambda draws, size: {"time": draws.uniform(0, (), 0.5, 2.0),
                                               "size": draws.uniform(1, (), 0.75, 1.25) * size},
    "checkerboard_cutout": _draw_checkerboard,
    "cocentric_sine_waves": _draw_cocentric,
    "inverse_sparkles": lambda draws, size: {"center": draws.uniform(0, (2,), 0.25, 0.75) * size,
                                             **_ray_draws(draws, 1, ())},
    "perlin_noise": _draw_perlin,
    "plasma_noise": _draw_plasma,
    "single_frequency_greyscale": _draw_single_frequency,
    "sparkles": lambda draws, size: {"centers": draws.uniform(0, (5, 2), 0.0, size), **_ray_draws(draws, 1, (5,))},
}
"""Each corruption's per-image random parameters for ``size`` x ``size`` images, with the reference's
distributions: the op's keyword arguments, ``Tensor[N, ...]`` on the draws' device."""

C_BAR_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "blue_noise_sample": blue_noise_sample, "brownish_noise": brownish_noise,
    "caustic_refraction": caustic_refraction, "checkerboard_cutout": checkerboard_cutout,
    "cocentric_sine_waves": cocentric_sine_waves, "inverse_sparkles": inverse_sparkles,
    "perlin_noise": perlin_noise, "plasma_noise": plasma_noise,
    "single_frequency_greyscale": single_frequency_greyscale, "sparkles": sparkles}
"""Each corruption's op: ``op(x, *c_bar_parameters(name, severity, size), **C_BAR_SAMPLERS[name](draws, size))``."""


def corrupt_bar(x: torch.Tensor, index: torch.Tensor, name: str, severity: int, key: int) -> torch.Tensor:
    """ImageNet-C-bar's corruption ``name`` at ``severity`` (1-5) of a square 0..255 batch ``x [N, 3, S, S]``
    (C-bar: S = 224), ``index [N]`` the images' dataset indices and ``key`` :func:`condition_key`'s; ends as the
    reference's files did: clipped and truncated to integers (float dtype)."""
    size = x.shape[-1]
    if x.shape[-2] != size:
        raise UsageError(f"ImageNet-C-bar corrupts square images (the reference's im_size); got {tuple(x.shape[-2:])}")
    random = C_BAR_SAMPLERS[name](Draws(key, index), size)
    return C_BAR_OPS[name](x, *c_bar_parameters(name, severity, size), **random).clamp_(0, 255).floor_()

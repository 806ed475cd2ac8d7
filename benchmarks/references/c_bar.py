"""facebookresearch/augmentation-corruption ``imagenet_c_bar/corrupt.py`` transcribed in numpy: its per-pixel
kernels vectorised over the image (much faster than its Python loops over pixels), its own steps kept: scipy's
``ifft2`` and ``gaussian_filter``, the refraction's rotation matrix and its inverse, the Perlin generator's 514-entry
tables. Each ``ref_<name>(image, level, **draws)`` takes the per-image draws as keywords (what ibnbench's samplers
return, so ``tests/test_c_bar.py`` feeds both the same); :func:`corrupt` draws them with numpy from the
reference's distributions (its ``sample_parameters``): what ``ibnbench bench --c-bar --reference
benchmarks/references/c_bar.py:corrupt`` times.
"""
from __future__ import annotations

import numpy as np
from scipy.fftpack import ifft2
from scipy.ndimage import gaussian_filter

CSV = """caustic_refraction,2.35,3.2,4.9,6.6,9.15
inverse_sparkles,1.0,2.0,4.0,9.0,10.0
sparkles,1.0,2.0,3.0,5.0,6.0
perlin_noise,4.6,5.2,5.8,7.6,8.8
blue_noise_sample,0.8,1.6,2.4,4.0,5.6
plasma_noise,4.75,7.0,8.5,9.25,10.0
checkerboard_cutout,2.0,3.0,4.0,5.0,6.0
cocentric_sine_waves,3.0,5.0,8.0,9.0,10.0
single_frequency_greyscale,1.0,1.5,2.0,4.5,5.0
brownish_noise,1.0,2.0,3.0,4.0,5.0"""
LEVELS = {line.split(",")[0]: [float(v) for v in line.split(",")[1:]] for line in CSV.splitlines()}
SIZE = 224  # ImageNet-C-bar was made from 224 crops; the reference's constants assume it


def float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row (y) and column (x) of every pixel, as the reference's ``for x ... for y`` loops visit them."""
    return np.mgrid[:size, :size].astype(np.float64)


def finish(out: np.ndarray) -> np.ndarray:
    return np.clip(out, 0, 255).astype(np.uint8)


def ref_single_frequency_greyscale(image, level, freq, phase):
    y, x = grid(len(image))
    noise = np.sin(x * freq[0] + y * freq[1] + phase)
    return finish(image + float_parameter(level, 196) * np.stack((noise, noise, noise), axis=2))


def ref_cocentric_sine_waves(image, level, offset, freq, amplitude, ring_width):
    y, x = grid(len(image))
    angle = np.arctan2(x - offset[0], y - offset[1]) * freq
    distance = ((np.sqrt((x - offset[0]) ** 2 + (y - offset[1]) ** 2) + np.sin(angle) * amplitude)
                % ring_width) / ring_width
    distance -= 1 / 2
    intensity = [float_parameter(level, 128) for _ in range(3)]
    return finish(image + np.stack([i * distance for i in intensity], axis=2))


def ref_plasma_noise(image, level, time, iterations, sharpness, scale):
    y, x = grid(len(image))
    x, y = x / scale, y / scale
    i = np.array([1.0, 1.0, 1.0, 0.0])
    for _ in range(iterations):
        r = np.array([np.cos(y * i[0] - i[3] + time / i[1]), np.sin(x * i[0] - i[3] + time / i[1])]) / i[2]
        r += np.array([-r[1], r[0]]) * 0.3
        x, y = x + r[0], y + r[1]
        i *= np.array([1.93, 1.15, (2.25 - sharpness), time * i[1]])
    noise = np.stack([np.sin(x - time), np.sin((x + y + np.sin(time)) * 0.5), np.sin(y + time)], axis=2)
    intensity = float_parameter(level, 64)
    return finish((1 - intensity / 255) * image + intensity * noise)


def caustic_noise(size_px: int, time: float, size: float) -> np.ndarray:
    point = np.stack(grid(size_px)) / size
    p = (point % 1) * 6.28318530718 - 250
    i, c, inten = p.copy(), 1.0, 0.005
    for n in range(5):
        t = time * (1.0 - (3.5 / (n + 1)))
        i = p + np.array([np.cos(t - i[0]) + np.sin(t + i[1]), np.sin(t - i[1]) + np.cos(t + i[0])])
        length = np.sqrt((p[0] / (np.sin(i[0] + t) / inten)) ** 2 + (p[1] / (np.cos(i[1] + t) / inten)) ** 2)
        c += 1.0 / length
    c /= 5.0
    c = 1.17 - c ** 1.4
    color = np.clip(np.abs(c) ** 8.0, 0, 1)
    return np.stack([color, color, color], axis=2)


def at_offset(a: np.ndarray, d0: int, d1: int) -> np.ndarray:
    """``a[y + d0, x + d1]`` for every pixel, zeros outside (the reference's ``luma_at_offset``/bilinear corners)."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(0, -d0):min(h, h - d0), max(0, -d1):min(w, w - d1)] = a[max(0, d0):min(h, h + d0),
                                                                    max(0, d1):min(w, w + d1)]
    return out


def refract(normal: np.ndarray, eta: float) -> np.ndarray:
    """The reference's ``refract`` of the ray (0, 0, 1) at every pixel's ``normal [H, W, 3]``."""
    incident = np.array([0.0, 0.0, 1.0])
    straight = np.abs(normal @ incident) >= 1.0 - 1e-3
    normal = np.where(straight[..., None], np.array([1.0, 0.0, 0.0]), normal)  # keeps inv() away from 0 / 0
    angle = np.arccos(normal @ incident)
    out_angle = np.arcsin(np.sin(angle) / eta)
    out_unrotated = np.stack([np.cos(out_angle), np.sin(out_angle), np.zeros_like(angle)], axis=-1)
    spectator = np.cross(incident, normal)
    spectator /= np.linalg.norm(spectator, axis=-1, keepdims=True)
    orthogonal = np.cross(normal, spectator)
    rotation = np.stack((normal, orthogonal, spectator), axis=-2)
    out = (np.linalg.inv(rotation) @ out_unrotated[..., None])[..., 0]
    return np.where(straight[..., None], incident, out)


def bilinear(image: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """The reference's ``bilinear_interpolation`` at every pixel's point (zeros outside)."""
    h, w = image.shape[:2]
    row0, col0 = np.floor(p0).astype(int), np.floor(p1).astype(int)  # the reference's l, u
    row1, col1 = row0 + 1, col0 + 1  # r, d

    def at(a, b):
        inside = (a >= 0) & (a < h) & (b >= 0) & (b < w)
        return np.where(inside[..., None], image[a.clip(0, h - 1), b.clip(0, w - 1)], 0.0)

    al = at(row0, col0) * (1.0 - p1 + col0)[..., None] + at(row0, col1) * (1.0 - col1 + p1)[..., None]
    ar = at(row1, col0) * (1.0 - p1 + col0)[..., None] + at(row1, col1) * (1.0 - col1 + p1)[..., None]
    return al * (1.0 - p0 + row0)[..., None] + ar * (1.0 - row1 + p0)[..., None]


def ref_caustic_refraction(image, level, time, size):
    lens_scale, lighting_amount = float_parameter(level, 0.5 * len(image)), float_parameter(level, 2.0)
    noise = gaussian_filter(caustic_noise(len(image), time, size), sigma=1)
    luma = noise @ np.array([0.2126, 0.7152, 0.0722])
    north, south = at_offset(luma, 0, -1), at_offset(luma, 0, 1)
    west, east = at_offset(luma, -1, 0), at_offset(luma, 1, 0)
    lens_normal = np.stack([east - west, south - north, np.ones_like(luma)], axis=-1)
    lens_normal /= np.linalg.norm(lens_normal, axis=-1, keepdims=True)
    refract_vector = np.round(refract(lens_normal, 4.0) * lens_scale, 3)
    y, x = grid(len(image))
    out = bilinear(image.astype(np.float32) / 255, y + refract_vector[..., 0], x + refract_vector[..., 1])
    out += ((north - south) * lighting_amount)[..., None]
    out += ((east - west) * lighting_amount)[..., None]
    out = np.clip(out, 0, 1)
    return np.clip((out * 255).astype(np.uint8), 0, 255)


def ref_checkerboard_cutout(image, level, angle, cell, cells):
    size = len(image)
    side = int(4 * size // cell)
    fraction = float_parameter(level, 1.0)
    grid_drawn = cells[:side, :side] < fraction
    y, x = grid(size)
    nx = (np.cos(angle) * y + np.sin(angle) * x) / cell
    ny = (-np.sin(angle) * y + np.cos(angle) * x) / cell
    keep = ((nx % 2).astype(int) != (ny % 2).astype(int)) | ~grid_drawn[nx.astype(int), ny.astype(int)]
    return finish(np.where(keep[..., None], image, np.array([128, 128, 128])))


def spectral_noise(power: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """The reference's ``gen_noise`` given the left half of its phases (and the middle column for odd sizes)."""
    size = len(power)
    if size % 2 == 0:
        phases = np.concatenate((phases, phases[::-1, ::-1]), axis=1)
    else:
        phases, center_freq = phases[:, :size // 2], phases[:size // 2, size // 2:size // 2 + 1]
        center_freq = np.concatenate((center_freq, np.array([[0.0]]), center_freq[::-1, :]), axis=0)
        phases = np.concatenate((phases, center_freq, phases[::-1, ::-1]), axis=1)
    fourier_space_noise = power * (np.cos(phases) + np.sin(phases) * 1j)
    fourier_space_noise = np.roll(fourier_space_noise, size // 2, axis=0)
    fourier_space_noise = np.roll(fourier_space_noise, size // 2, axis=1)
    noise = np.real(ifft2(fourier_space_noise))
    return noise / np.std(noise)


def distance_from_centre(size: int) -> np.ndarray:
    y, x = grid(size)
    return np.linalg.norm(np.stack([x, y], axis=-1) - size / 2, axis=-1)


def ref_blue_noise_sample(image, level, phases):
    size = len(image)
    noise = spectral_noise(distance_from_centre(size), phases[0, :, :size // 2 + size % 2])
    mask = noise > float_parameter(level, 3.0) - 2.5
    return finish(image * mask.reshape(size, size, 1))


def ref_brownish_noise(image, level, phases):
    power = 1 / (distance_from_centre(len(image)) ** 2 + 1)
    half = len(image) // 2 + len(image) % 2
    noise = np.stack([spectral_noise(power, phases[c, :, :half]) for c in range(3)], axis=2)
    return finish(image + float_parameter(level, 64) * noise)


def sparkle_weight(size, center, ray_lengths, amount):
    rays = len(ray_lengths)
    y, x = grid(size)
    dp = np.stack([y - center[0], x - center[1]])
    dist = np.linalg.norm(dp, axis=0)
    angle = np.arctan2(dp[1], dp[0])
    d = (angle + np.pi) / (2 * np.pi) * rays
    i = d.astype(int)
    f = d - i
    ray_lengths = np.asarray(ray_lengths)
    length = ray_lengths[i % rays] + f * (ray_lengths[(i + 1) % rays] - ray_lengths[i % rays])
    g = length ** 2 / (dist ** 2 + 1e-4)
    g = g ** ((100 - amount) / 50.0)
    f -= 0.5
    f = 1 - f ** 2
    f *= g
    return np.clip(f, 0, 1)[..., None]


def ref_sparkles(image, level, centers, rays, ray_noise):
    radius, amount, color, randomness = float_parameter(level, 0.1) * len(image), 50, np.array([255, 255, 255]), 25
    image = image.astype(np.float32)
    for center, n, noise in zip(centers, rays, ray_noise):
        ray_lengths = [max(1, radius + randomness / 100.0 * radius * noise[k]) for k in range(n)]
        f = sparkle_weight(len(image), center, ray_lengths, amount)
        image = image + f * (color - image)
    return finish(image)


def ref_inverse_sparkles(image, level, center, rays, ray_noise):
    radius, amount, color, randomness = 0.25 * len(image), 100 - float_parameter(level, 65), np.array([255] * 3), 25
    ray_lengths = [radius + randomness / 100.0 * radius * ray_noise[k] for k in range(rays)]
    f = sparkle_weight(len(image), center, ray_lengths, amount)
    return finish(color + f * (image.astype(np.float32) - color))


class PerlinNoiseGenerator:
    """The reference's generator with its tables given: ``p`` a permutation of 0..255, ``g`` 256 unit gradients,
    both extended to 2 B + 2 entries as its constructor does; ``noise`` vectorised over points."""

    B, N = 256, 16 * 256

    def __init__(self, permutation: np.ndarray, gradients: np.ndarray):
        self.p = np.arange(2 * self.B + 2)
        self.g = np.zeros((2 * self.B + 2, 2))
        self.p[:self.B], self.g[:self.B] = permutation, gradients
        for i in range(self.B + 2):
            self.p[self.B + i] = self.p[i]
            self.g[self.B + i, :] = self.g[i, :]

    @staticmethod
    def s_curve(t):
        return t ** 2 * (3.0 - 2.0 * t)

    def noise(self, x, y):
        t = x + self.N
        bx0 = t.astype(int) % self.B
        bx1 = (bx0 + 1) % self.B
        rx0 = t % 1
        rx1 = rx0 - 1.0
        t = y + self.N
        by0 = t.astype(int) % self.B
        by1 = (by0 + 1) % self.B
        ry0 = t % 1
        ry1 = ry0 - 1.0
        i, j = self.p[bx0], self.p[bx1]
        b00, b10, b01, b11 = self.p[i + by0], self.p[j + by0], self.p[i + by1], self.p[j + by1]
        sx, sy = self.s_curve(rx0), self.s_curve(ry0)
        u = rx0 * self.g[b00, 0] + ry0 * self.g[b00, 1]
        v = rx1 * self.g[b10, 0] + ry0 * self.g[b10, 1]
        a = u + sx * (v - u)
        u = rx0 * self.g[b01, 0] + ry1 * self.g[b01, 1]
        v = rx1 * self.g[b11, 0] + ry1 * self.g[b11, 1]
        b = u + sx * (v - u)
        return 1.5 * (a + sy * (b - a))

    def turbulence(self, x, y, octaves):
        t, f = 0.0, 1.0
        while f <= octaves:
            t += np.abs(self.noise(f * x, f * y)) / f
            f = f * 2
        return t


def ref_perlin_noise(image, level, permutation, gradients):
    m = np.array([[1, 0], [0, 1]]) / (32 * len(image) / 224)
    turbulence, gain, bias, alpha = 16.0, 0.5, 0.5, float_parameter(level, 0.50)
    noise = PerlinNoiseGenerator(permutation, gradients)
    point = np.stack(grid(len(image)), axis=-1) @ m
    f = np.clip(gain * noise.turbulence(point[..., 0], point[..., 1], turbulence) + bias, 0, 1.0)
    out = (1 - alpha) * image.astype(np.float32) + 255 * alpha * np.stack([f, f, f], axis=2)
    return finish(out)


REFERENCES = {name: globals()[f"ref_{name}"] for name in LEVELS}


def _phases(rng: np.random.Generator, channels: int, size: int) -> np.ndarray:
    """Uniform phases ``[channels, size, size]``; the transcriptions read the left half (and middle column)."""
    return rng.uniform(0, 2 * np.pi, (channels, size, size))


def _rays(rng: np.random.Generator, stars: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"rays": rng.integers(50, 200, stars), "ray_noise": rng.normal(size=(*stars, 199))}


def _single_frequency(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    magnitude = rng.uniform(-np.pi, np.pi)
    freq = [magnitude, np.abs(magnitude) * rng.uniform(-1, 1)]
    return {"freq": np.array(freq[::-1] if rng.integers(2) else freq), "phase": rng.uniform(0, 2 * np.pi)}


def _perlin_tables(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    gradients = rng.integers(-256, 256, (256, 2)) / 256
    norm = np.linalg.norm(gradients, axis=-1, keepdims=True)
    return {"permutation": rng.permutation(256), "gradients": gradients / np.maximum(norm, 1e-12)}


SAMPLERS = {
    "blue_noise_sample": lambda rng, size: {"phases": _phases(rng, 1, size)},
    "brownish_noise": lambda rng, size: {"phases": _phases(rng, 3, size)},
    "caustic_refraction": lambda rng, size: {"time": rng.uniform(0.5, 2.0), "size": rng.uniform(0.75, 1.25) * size},
    "checkerboard_cutout": lambda rng, size: {"angle": rng.uniform(0, 2 * np.pi),
                                              "cell": max(rng.uniform(0.1, 0.25) * size, 1),
                                              "cells": rng.uniform(size=(40, 40))},
    "cocentric_sine_waves": lambda rng, size: {"offset": rng.uniform(0, size, 2), "freq": rng.uniform(0, 10),
                                               "amplitude": rng.uniform(0, size / 10),
                                               "ring_width": rng.uniform(0, size / 10)},
    "inverse_sparkles": lambda rng, size: {"center": rng.uniform(0.25, 0.75, 2) * size, **_rays(rng, ())},
    "perlin_noise": _perlin_tables,
    "plasma_noise": lambda rng, size: {"time": rng.uniform(0, 6 * np.pi), "iterations": rng.integers(4, 7),
                                       "sharpness": rng.uniform(0.5, 1.0), "scale": rng.uniform(0.075, 0.2) * size},
    "single_frequency_greyscale": _single_frequency,
    "sparkles": lambda rng, size: {"centers": rng.uniform(0, size, (5, 2)), **_rays(rng, (5,))},
}
"""Each corruption's per-image draws with the reference's distributions, in numpy (``rng``, the square size)."""


def corrupt(image: np.ndarray, severity: int, corruption_name: str,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """ImageNet-C-bar's ``corruption_name`` at ``severity`` (1-5) of one square HxWx3 uint8 image: the draws
    (:data:`SAMPLERS`), then the transcription; uint8 as the reference's files."""
    rng = rng or np.random.default_rng()
    draws = SAMPLERS[corruption_name](rng, len(image))
    return REFERENCES[corruption_name](image, LEVELS[corruption_name][severity - 1], **draws)

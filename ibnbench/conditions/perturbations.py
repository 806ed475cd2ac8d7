"""ImageNet-P perturbation sequences (Hendrycks & Dietterich, ICLR 2019) generated on the batch's device, with the
formulas of hendrycks/robustness ``ImageNet-P/create_p/make_imagenet_p.py``.

:func:`frames` maps a float 0..255 RGB batch ``x[N,3,H,W]`` to frames ``[stop - start, N, 3, size, size]`` of one
perturbation, any range ``[start, stop)`` of its :func:`frame_count` frames at a time (so memory stays bounded:
each frame is one batch). The reference transforms the ``Resize(256)`` image and keeps its ``CenterCrop(224)``;
here ``x`` is that image (any ``H, W >= size``; e.g. its 256x256 centre crop) or the 224 crop itself, in which case
the geometric perturbations (translate, rotate, tilt, scale, shear, zoom_blur) bring black in from outside it
where the reference shows more of the picture. The others perturb the centre crop.

Frames end as the reference's PNG frames did: integer values (rounded where OpenCV or ImageMagick resampled,
truncated where PIL resampled or ``np.uint8`` or torchvision's ``ToPILImage`` converted). The released videos were
then H.264-encoded; that loss is not reproduced.

- noise perturbations (gaussian_noise, shot_noise, speckle_noise): frame 0 is the clean crop, frames 1-30 i.i.d.
  noisy copies of it; ``difficulty`` 1/2/3 sets the noise strength (the reference's ``_2`` and ``_3`` folders);
- the others: smooth sequences, the same at every difficulty (metrics compare frames ``difficulty`` apart).

Random draws are counter-based (:class:`ibnbench.conditions.imaging.Draws`): a function of (``key``, image index,
frame, element), so a sequence does not depend on the batch it is in, the chunk of frames asked for, the device or
the resume point. ``key`` is the caller's, e.g. ``condition_key(seed, "imagenet-p/gaussian_noise")``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn.functional as F

from ibnbench.conditions.corruptions import brightness, liquid_sheen
from ibnbench.conditions.imaging import (
    Draws,
    clipped_zoom,
    device_constant,
    gaussian_filter,
    gray,
    motion_blur_op,
    poisson,
)
from ibnbench.errors import UsageError

TEST_PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness", "translate",
                      "rotate", "tilt", "scale")
"""The 10 perturbations of ImageNet-P's test set, over which mFR and mT5D are averaged."""
EXTRA_PERTURBATIONS = ("speckle_noise", "gaussian_blur", "spatter", "shear")
"""The 4 validation perturbations of ImageNet-P."""
LABELS = {name: name.replace("_", " ").title() for name in TEST_PERTURBATIONS + EXTRA_PERTURBATIONS}
"""Each perturbation's display name (``"gaussian_noise"``: "Gaussian Noise")."""
CROP = 224
NOISE_STRENGTH = {"gaussian_noise": (0.03, 0.05, 0.08), "shot_noise": (300, 120, 60),
                  "speckle_noise": (0.05, 0.10, 0.15)}
"""Per difficulty 1/2/3: the normal's sigma (0..1 scale) for gaussian and speckle noise, the Poisson photon count
for shot noise."""


def is_noise(name: str) -> bool:
    """Whether ``name`` is a noise perturbation (i.i.d. frames around the clean one), by test.py's rule."""
    return "noise" in name


def frame_count(name: str) -> int:
    """Frames in a sequence of ``name``: 41 for translate (shifts -20..20 pixels), 31 for the others."""
    return 41 if name == "translate" else 31


def _crop_origin(length: int, size: int) -> int:
    """torchvision ``CenterCrop``'s first index along a side of ``length`` pixels."""
    return int(round((length - size) / 2.0))


def centre_crop(x: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """The centre ``size x size`` pixels of ``x[..., H, W]``, as torchvision's ``CenterCrop``."""
    top, left = _crop_origin(x.shape[-2], size), _crop_origin(x.shape[-1], size)
    return x[..., top:top + size, left:left + size]


def _output_points(shape: tuple[int, int], size: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre crop's output pixels in full-image coordinates, ``(x, y)`` each ``[size, size]`` float64; pixel
    ``i`` at ``i + offset`` (0.5 for PIL's continuous coordinates, 0 for OpenCV's pixel centres)."""
    ys = torch.arange(size, dtype=torch.float64) + _crop_origin(shape[0], size) + offset
    xs = torch.arange(size, dtype=torch.float64) + _crop_origin(shape[1], size) + offset
    return xs[None].expand(size, size), ys[:, None].expand(size, size)


def _grid(shape: tuple[int, int], xin: torch.Tensor, yin: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``grid_sample``'s float32 grid ``[1, s, s, 2]`` (corners not aligned) for continuous source points
    ``(xin, yin)`` (pixel ``i`` covers ``[i, i + 1)``) in an image of ``shape`` (H, W)."""
    grid = torch.stack((2 * xin / shape[1] - 1, 2 * yin / shape[0] - 1), dim=-1)
    return grid[None].to(device=device, dtype=torch.float32)


def _planes(x: torch.Tensor) -> torch.Tensor:
    """The batch ``x[N,3,H,W]`` as one float32 image of ``3N`` channels, channels last (``x`` itself when ``N`` is
    1, so a batch already laid out comes back as it is): :func:`_sample` then finds each output point's corners and
    weights once for the whole batch and reads its ``3N`` values side by side (the same bits as sampling the ``N``
    images, 2-3x faster on one CPU thread)."""
    if len(x) == 1:
        return x.float()
    return x.float().reshape(1, -1, *x.shape[-2:]).contiguous(memory_format=torch.channels_last)


def _sample(x: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear samples ``[N, 3, s, s]`` (float32) of the batch ``x[N,3,H,W]`` or its :func:`_planes` at ``grid``
    (:func:`_grid`)."""
    sampled = F.grid_sample(_planes(x), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return sampled.reshape(-1, 3, *sampled.shape[-2:])


@lru_cache(maxsize=256)
def _affine_sampling(shape: tuple[int, int], size: int, angle: float, translate: tuple[float, float], scale: float,
                     shear: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The grid and the inside mask ``[s, s]`` (1 where the source point lies in the image; None where all do) of
    :func:`pil_affine`, made once per geometry and device (no host work per batch)."""
    a, s = math.radians(angle), math.radians(shear)
    cx, cy = shape[1] * 0.5 + 0.5, shape[0] * 0.5 + 0.5
    factor = 1.0 / (scale * math.cos(s))  # the inverse of rotation-with-shear, scaled back
    m00, m01, m10, m11 = (factor * math.cos(a + s), factor * math.sin(a + s), -factor * math.sin(a),
                          factor * math.cos(a))
    px, py = _output_points(shape, size, 0.5)
    px, py = px - cx - translate[0], py - cy - translate[1]
    xin, yin = m00 * px + m01 * py + cx, m10 * px + m11 * py + cy
    inside = (xin >= 0) & (xin < shape[1]) & (yin >= 0) & (yin < shape[0])
    mask = None if bool(inside.all()) else inside.to(device=device, dtype=torch.float32)
    return _grid(shape, xin, yin, device), mask


def pil_affine(x: torch.Tensor, angle: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
               shear: float = 0.0, size: int = CROP) -> torch.Tensor:
    """The centre ``size`` crop of torchvision 0.2's ``affine`` of PIL images (angle and shear in degrees,
    translate in pixels, scale a factor; centre ``(W/2 + 0.5, H/2 + 0.5)``) applied to ``x[N,3,H,W]`` (0..255) or
    its :func:`_planes`; float32 ``[N, 3, size, size]``.

    Like PIL's bilinear ``Image.transform``: an output pixel whose source point lies outside the image is 0, one
    inside reads the edge-clamped neighbours; the result is truncated to integers (PIL's uint8 output)."""
    grid, inside = _affine_sampling(tuple(x.shape[-2:]), size, float(angle), tuple(map(float, translate)),
                                    float(scale), float(shear), x.device)
    sampled = _sample(x, grid, "border")
    return (sampled if inside is None else sampled.mul_(inside)).floor_()


def _tilt_matrix(width: int, height: int, degrees: float) -> torch.Tensor:
    """make_imagenet_p.py's tilt homography (3x3 float64, source to output pixels): rotations by ``degrees`` about
    the x and y axes of the image plane placed at the focal length ``sqrt(width**2 + height**2)``."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    f = math.hypot(width, height)
    to_plane = torch.tensor([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1], [0, 0, 1]], dtype=torch.float64)
    about_x = torch.tensor([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]], dtype=torch.float64)
    about_y = torch.tensor([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1]], dtype=torch.float64)
    push = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]], dtype=torch.float64)
    project = torch.tensor([[f, 0, width / 2, 0], [0, f, height / 2, 0], [0, 0, 1, 0]], dtype=torch.float64)
    return project @ push @ about_x @ about_y @ to_plane


@lru_cache(maxsize=128)
def _tilt_grid(shape: tuple[int, int], size: int, degrees: float, device: torch.device) -> torch.Tensor:
    """The grid of :func:`tilt`: each output pixel centre mapped back through the inverse homography."""
    px, py = _output_points(shape, size, 0.0)
    inverse = torch.linalg.inv(_tilt_matrix(shape[1], shape[0], degrees))
    points = inverse @ torch.stack((px, py, torch.ones_like(px))).reshape(3, -1)
    xin, yin = (points[:2] / points[2]).reshape(2, size, size)
    return _grid(shape, xin + 0.5, yin + 0.5, device)


def tilt(x: torch.Tensor, degrees: float, size: int = CROP) -> torch.Tensor:
    """The centre ``size`` crop of make_imagenet_p.py's tilt by ``degrees`` of ``x[N,3,H,W]`` (0..255) or its
    :func:`_planes`: OpenCV's ``warpPerspective`` (bilinear, black outside, pixel centres at integers, result
    rounded); float32."""
    return _sample(x, _tilt_grid(tuple(x.shape[-2:]), size, float(degrees), x.device), "zeros").round_()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """A 0..1 batch as ``np.uint8(255 * clip(x, 0, 1))`` gives it, on the 0..255 scale (truncated); in place: ``x``
    is a temporary of the caller's."""
    return x.clamp_(0, 1).mul_(255).floor_()


def _noise(x: torch.Tensor, clean: torch.Tensor, draws: Draws, name: str, difficulty: int,
           frame: int) -> torch.Tensor:
    """Frame ``frame`` (>= 1) of a noise perturbation of the crop ``x`` (0..255; ``clean`` is ``x / 255``): one
    i.i.d. noisy copy, its draws from stream ``frame`` (computed in place on the fresh draws: the same values as
    ``x / 255 + noise`` and ``x / 255 * (1 + noise)``)."""
    strength = NOISE_STRENGTH[name][difficulty - 1]
    if name == "shot_noise":
        return _to_uint8(poisson(x, strength, draws.levels(frame, x.shape[1:])).div_(strength))
    noise = draws.normal(frame, x.shape[1:]).mul_(strength)
    if name == "speckle_noise":
        return _to_uint8(noise.add_(1).mul_(clean))
    return _to_uint8(noise.add_(clean))


def _noise_frames(crop: torch.Tensor, draws: Draws, name: str, difficulty: int,
                  frames: range) -> Iterator[torch.Tensor]:
    """A noise perturbation's frames: the clean crop, then :func:`_noise` frames."""
    clean = crop / 255
    return (crop if i == 0 else _noise(crop, clean, draws, name, difficulty, i) for i in frames)


def _snow_layer(crop: torch.Tensor, draws: Draws) -> torch.Tensor:
    """The per-image snow layer ``[N,1,s,s]`` on 0..255 (as its PNG held it): N(0.05, 0.3) zoomed 3x, below 0.5
    zeroed."""
    layer = clipped_zoom(draws.normal(0, (1,) + crop.shape[-2:]).mul_(0.3).add_(0.05), 3)
    return _to_uint8(torch.where(layer < 0.5, torch.zeros_like(layer), layer))


def _snow(crop: torch.Tensor, draws: Draws, frames: range) -> Iterator[torch.Tensor]:
    """Snow frames: one snow layer per image, motion-blurred along ``4 i - 150`` degrees in frame ``i``, added with
    its 180-degree rotation to the whitened crop."""
    layer = _snow_layer(crop, draws)
    clean = crop / 255
    base = 0.85 * clean + 0.15 * torch.maximum(clean, gray(clean) * 1.5 + 0.5)
    for i in frames:
        angle = torch.full((len(crop),), 4.0 * i - 150, device=crop.device)
        moving = motion_blur_op(layer, 14, 4, angle).round_().clamp_(0, 255) / 255
        yield _to_uint8(base + moving + moving.flip(-1, -2))


DRIP = (0.05, 0.1, 0.15, 0.7)
"""make_imagenet_p.py's spatter moves its liquid down by ``np.convolve(column, DRIP, 'same')`` after each frame."""


def drip(liquid: torch.Tensor) -> torch.Tensor:
    """One step of the spatter's downward flow: ``np.convolve(column, DRIP, mode='same')`` down every column of
    ``liquid[..., H, W]`` (zeros beyond the image), i.e. row ``i`` becomes ``0.7 row[i-2] + 0.15 row[i-1] +
    0.1 row[i] + 0.05 row[i+1]``."""
    h = liquid.shape[-2]
    padded = F.pad(liquid, (0, 0, 2, 1))
    return sum(weight * padded[..., 3 - k:3 - k + h, :] for k, weight in enumerate(DRIP))


def _spatter(crop: torch.Tensor, draws: Draws, frames: range) -> Iterator[torch.Tensor]:
    """Spatter frames: a liquid layer per image (N(0.65, 0.27) smoothed by a Gaussian of sigma 3.7, below 0.69
    zeroed), its pale turquoise sheen (intensity 0.6) added to the crop; the liquid drips (:func:`drip`) after each
    frame."""
    liquid = gaussian_filter(draws.normal(0, (1,) + crop.shape[-2:]).mul_(0.27).add_(0.65), 3.7)
    liquid = torch.where(liquid < 0.69, torch.zeros_like(liquid), liquid)
    for _ in range(frames.start):
        liquid = drip(liquid)
    colour = device_constant((175, 238, 238), crop.device, crop.dtype).view(1, 3, 1, 1) / 255
    clean = crop / 255
    for _ in frames:
        yield _to_uint8(clean + 0.6 * liquid_sheen(torch.floor(liquid * 255)) * colour)
        liquid = drip(liquid)


def _zoom_blur(x: torch.Tensor, frames: range, size: int) -> Iterator[torch.Tensor]:
    """Zoom blur frames: frame ``i`` is the mean of the crop and the affine zooms by ``1 + 0.004 j``, ``j = 1..i``
    (torchvision's ``ToPILImage``: truncated); frames before ``frames.start`` are summed, not kept."""
    total = centre_crop(x, size).clone()
    if 0 in frames:
        yield total
    planes = _planes(x)
    for i in range(1, frames.stop):
        total += pil_affine(planes, scale=1 + 0.004 * i, size=size)
        if i in frames:
            yield torch.div(total, i + 1).floor_()


def shift(x: torch.Tensor, dx: int, size: int = CROP) -> torch.Tensor:
    """The centre ``size`` crop of ``x[N,3,H,W]`` (0..255) moved right by ``dx`` whole pixels, black where it
    leaves the image: translate's frames, which the reference makes with PIL's nearest-neighbour affine (a copy,
    truncated to integers as its uint8 output); float32."""
    top, left = _crop_origin(x.shape[-2], size), _crop_origin(x.shape[-1], size)
    first, stop = max(0, dx - left), min(size, x.shape[-1] + dx - left)  # output columns with a source column
    out = x.new_empty((len(x), 3, size, size), dtype=torch.float32)
    out[..., :first] = 0
    out[..., stop:] = 0
    out[..., first:stop] = x[..., top:top + size, first + left - dx:stop + left - dx]
    return out.floor_()


def _geometric(x: torch.Tensor, name: str, i: int, size: int) -> torch.Tensor:
    """Frame ``i`` of rotate, scale, shear or tilt of the full image ``x`` (or its :func:`_planes`),
    centre-cropped."""
    if name == "rotate":
        return pil_affine(x, angle=i - 15.0, size=size)
    if name == "scale":
        return pil_affine(x, scale=(i * 2.5 + 40) / 100.0, size=size)
    if name == "shear":
        return pil_affine(x, shear=i - 15.0, size=size)
    return tilt(x, i - 15.0, size)


def _on_crop(crop: torch.Tensor, name: str, frames: range) -> Iterator[torch.Tensor]:
    """Frames of brightness, gaussian_blur or motion_blur of the crop (0..255)."""
    clean = crop / 255  # once per sequence
    for i in frames:
        if name == "brightness":
            yield _to_uint8(brightness(clean, (i - 15) * 2 / 100.0))
        elif name == "gaussian_blur":
            yield _to_uint8(gaussian_filter(clean, 0.25 + 0.035 * i, mode="nearest", truncate=6.0))
        else:
            angle = torch.full((len(crop),), (i - 30) * 4.0, device=crop.device)
            yield motion_blur_op(crop, 10, 3, angle).round_().clamp_(0, 255)


GEOMETRIC = ("translate", "rotate", "scale", "shear", "tilt")
ON_CROP = ("brightness", "gaussian_blur", "motion_blur")
PERTURBATIONS = TEST_PERTURBATIONS + EXTRA_PERTURBATIONS


def _sequence(x: torch.Tensor, draws: Draws, name: str, difficulty: int, frames: range,
              size: int) -> Iterator[torch.Tensor]:
    """The frames ``frames`` of ``name`` of a float32 batch, one ``[N, 3, size, size]`` tensor at a time."""
    if name == "zoom_blur":
        return _zoom_blur(x, frames, size)
    if name == "translate":
        return (shift(x, i - 20, size) for i in frames)
    if name in GEOMETRIC:
        planes = _planes(x)
        return (_geometric(planes, name, i, size) for i in frames)
    crop = centre_crop(x, size)
    if name == "snow":
        return _snow(crop, draws, frames)
    if name == "spatter":
        return _spatter(crop, draws, frames)
    if name in ON_CROP:
        return _on_crop(crop, name, frames)
    return _noise_frames(crop, draws, name, difficulty, frames)


def _check(x: torch.Tensor, name: str, difficulty: int, start: int, stop: int, size: int) -> None:
    """A clear error for an unknown perturbation, a bad difficulty or frame range, or a batch of the wrong shape."""
    if name not in PERTURBATIONS:
        raise UsageError(f"unknown ImageNet-P perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    if difficulty not in (1, 2, 3):
        raise UsageError(f"ImageNet-P difficulty must be 1, 2 or 3, got {difficulty}")
    if not 0 <= start < stop <= frame_count(name):
        raise UsageError(f"{name} has frames 0..{frame_count(name) - 1}; cannot make [{start}, {stop})")
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < size:
        raise UsageError(f"ImageNet-P needs an RGB batch [N, 3, H, W] with H, W >= {size}, got {list(x.shape)}")


def frame_stream(x: torch.Tensor, index: torch.Tensor, name: str, difficulty: int = 1, key: int = 0,
                 start: int = 0, stop: int | None = None, size: int = CROP) -> Iterator[torch.Tensor]:
    """The frames ``[start, stop)`` of :func:`frames`, one ``[N, 3, size, size]`` float32 tensor at a time (the
    arguments are :func:`frames`'); checked before the first frame is made. Memory: one frame, its temporaries and
    the sequence's state (zoom blur's running sum, spatter's liquid, snow's layer), whatever the length."""
    stop = frame_count(name) if stop is None else stop
    _check(x, name, difficulty, start, stop, size)
    return _sequence(x.float(), Draws(key, index.to(x.device)), name, difficulty, range(start, stop), size)


def frames(x: torch.Tensor, index: torch.Tensor, name: str, difficulty: int = 1, key: int = 0, start: int = 0,
           stop: int | None = None, size: int = CROP) -> torch.Tensor:
    """Frames ``[start, stop)`` (default: all :func:`frame_count`) of perturbation ``name`` for the float 0..255
    RGB batch ``x[N,3,H,W]``, as ``[stop - start, N, 3, size, size]`` integer values in ``x``'s dtype and device
    (computed in float32).

    ``index[N]``: each image's dataset index and ``key`` (32-bit) the stream's key; together with the frame and
    element they fix every random draw. ``difficulty``: 1, 2 or 3 (noise strength of the noise perturbations).
    ``size``: the side of the centre crop the frames show (224 as ImageNet-P). Memory: the result, one frame's
    temporaries and, for zoom blur, a running sum (a frame [64, 3, 224, 224] is 38.5 MB in float32)."""
    stop = frame_count(name) if stop is None else stop
    stream = frame_stream(x, index, name, difficulty, key, start, stop, size)
    out = x.new_empty((stop - start, len(x), 3, size, size))
    for k, frame in enumerate(stream):
        out[k] = frame
    return out

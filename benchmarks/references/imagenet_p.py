"""hendrycks/robustness ``ImageNet-P/create_p/make_imagenet_p.py`` ported: every perturbation's frames for one
image as that script makes them before it writes PNGs and calls ffmpeg (not ported). PIL's affine as torchvision 0.2
set it up, OpenCV's perspective warp, skimage's HSV and Gaussian, torch's normal draws for Gaussian noise (as the
script), numpy's elsewhere; ImageMagick's motion blur (Wand) is ``imagecorruptions``' numpy stand-in for it.

:func:`sequence` is what ``ibnbench bench --imagenet-p --reference benchmarks/references/imagenet_p.py:sequence``
times; ``tests/test_imagenet_p.py`` compares our frames with :func:`frame`, :func:`snow`, :func:`spatter_frames`
and :func:`sequence`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.ndimage import zoom
from skimage import color as skcolor
from skimage.filters import gaussian

from benchmarks.references.imagecorruptions_package import motion_blur as magick_motion_blur

NOISE_STRENGTH = {"gaussian_noise": (0.03, 0.05, 0.08), "shot_noise": (300, 120, 60),
                  "speckle_noise": (0.05, 0.10, 0.15)}
"""The script's strengths for its plain, ``_2`` and ``_3`` noise folders (difficulty 1, 2, 3)."""


def pil_affine(img: Image.Image, angle=0.0, translate=(0, 0), scale=1.0, shear=0.0, resample=Image.BILINEAR):
    """torchvision 0.2.1's ``F.affine`` on a PIL image."""
    center = (img.size[0] * 0.5 + 0.5, img.size[1] * 0.5 + 0.5)
    angle, shear, scale = math.radians(angle), math.radians(shear), 1.0 / scale
    d = math.cos(angle + shear) * math.cos(angle) + math.sin(angle + shear) * math.sin(angle)
    matrix = [math.cos(angle + shear), math.sin(angle + shear), 0, -math.sin(angle), math.cos(angle), 0]
    matrix = [scale / d * m for m in matrix]
    matrix[2] += matrix[0] * (-center[0] - translate[0]) + matrix[1] * (-center[1] - translate[1])
    matrix[5] += matrix[3] * (-center[0] - translate[0]) + matrix[4] * (-center[1] - translate[1])
    matrix[2] += center[0]
    matrix[5] += center[1]
    return img.transform(img.size, Image.AFFINE, matrix, resample)


def center_crop(a: np.ndarray) -> np.ndarray:
    """torchvision's ``CenterCrop(224)`` of an HxWx... array."""
    top, left = int(round((a.shape[0] - 224) / 2.0)), int(round((a.shape[1] - 224) / 2.0))
    return a[top:top + 224, left:left + 224]


def tilt(x: np.ndarray, i: int) -> np.ndarray:
    h, w = x.shape[0:2]
    phi, theta = np.deg2rad(i - 15), np.deg2rad(i - 15)
    f = np.sqrt(w ** 2 + h ** 2)
    P1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    RX = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0],
                   [0, 0, 0, 1]])
    RY = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    T = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    P2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return center_crop(cv2.warpPerspective(x, P2 @ T @ RX @ RY @ P1, (w, h)))


def brightness(x: np.ndarray, c: float) -> np.ndarray:
    hsv = skcolor.rgb2hsv(np.array(x, copy=True) / 255.)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.uint8(skcolor.hsv2rgb(hsv) * 255)


def motion_blurred(x: np.ndarray, i: int, motion_blur) -> np.ndarray:
    return np.uint8(np.clip(np.round(motion_blur(x, radius=10, sigma=3, angle=(i - 30) * 4)), 0, 255))


AFFINE = {"translate": lambda i: {"translate": (i - 20, 0), "resample": Image.NEAREST},
          "rotate": lambda i: {"angle": i - 15}, "scale": lambda i: {"scale": (i * 2.5 + 40) / 100.},
          "shear": lambda i: {"shear": i - 15}}
"""The script's ``trn_F.affine`` arguments for frame ``i`` (translate with torchvision's default resampling)."""


def frame(image: np.ndarray, name: str, i: int, motion_blur=None) -> np.ndarray:
    """Frame ``i`` of a perturbation made frame by frame (translate, rotate, scale, shear, tilt, brightness,
    gaussian_blur, motion_blur) of the Resize(256) image (uint8 HxWx3), as the script makes it (uint8 224x224x3)."""
    if name in AFFINE:
        return center_crop(np.asarray(pil_affine(Image.fromarray(image), **AFFINE[name](i))))
    if name == "tilt":
        return tilt(image, i)
    crop = center_crop(image)
    if name == "brightness":
        return brightness(crop, (i - 15) * 2 / 100.)
    if name == "gaussian_blur":
        return np.uint8(255 * gaussian(crop / 255., sigma=0.25 + 0.035 * i, channel_axis=-1, truncate=6.0))
    return motion_blurred(crop, i, motion_blur or magick_motion_blur())


def zoom_blur_frames(image: np.ndarray, count: int = 31) -> list[np.ndarray]:
    """Zoom blur's frames: the running mean (float32 on 0..1, as ``ToTensor``) of the crop and its zooms by
    ``1 + 0.004 j``, truncated to uint8 as ``ToPILImage``."""
    img = Image.fromarray(image)
    first = center_crop(image)
    total = first.astype(np.float32) / 255
    out = [first]
    for i in range(1, count):
        total += center_crop(np.asarray(pil_affine(img, scale=1 + 0.004 * i))).astype(np.float32) / 255
        out.append(np.uint8(total / (i + 1) * 255))
    return out


def snow_layer(rng: np.random.Generator) -> np.ndarray:
    """The snow layer (the script's clipped_zoom trims to the input size), as the uint8 its PNG held."""
    layer = rng.normal(size=(224, 224), loc=0.05, scale=0.3)[..., np.newaxis]
    crop = int(np.ceil(224 / 3))
    top = (224 - crop) // 2
    layer = zoom(layer[top:top + crop, top:top + crop], (3, 3, 1), order=1)
    trim = (layer.shape[0] - 224) // 2
    layer = layer[trim:trim + 224, trim:trim + 224]
    layer[layer < 0.5] = 0
    return (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)


def snow(crop: np.ndarray, layer: np.ndarray, i: int, motion_blur) -> np.ndarray:
    """Snow frame ``i`` of the 224 crop (uint8) with the snow ``layer``."""
    moving = np.round(np.clip(motion_blur(layer.astype(np.float64), radius=14, sigma=4, angle=i * 4 - 150),
                              0, 255)) / 255.
    moving = moving[..., np.newaxis]
    x = crop / 255.
    z = 0.85 * x + (1 - 0.85) * np.maximum(
        x, cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY).reshape(224, 224, 1) * 1.5 + 0.5)
    return np.uint8(np.clip(z + moving + np.rot90(moving, k=2), 0, 1) * 255)


def _spatter_frame(x: np.ndarray, liquid_layer: np.ndarray) -> np.ndarray:
    """One spatter frame of the BGRA float crop ``x`` under ``liquid_layer`` (OpenCV's Canny and distance
    transform)."""
    liquid_layer_i = (liquid_layer * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid_layer_i, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = cv2.cvtColor(liquid_layer_i * dist, cv2.COLOR_GRAY2BGRA)
    m /= np.max(m, axis=(0, 1))
    m *= 0.6
    color = cv2.cvtColor(np.concatenate([v / 255. * np.ones_like(m[..., :1]) for v in (175, 238, 238)], axis=2),
                         cv2.COLOR_BGR2BGRA)
    return np.uint8(cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255)


def spatter_frames(crop: np.ndarray, rng: np.random.Generator, count: int = 31) -> list[np.ndarray]:
    """Spatter's first ``count`` frames of the 224 crop (uint8): a liquid layer that drips down after each frame."""
    x = cv2.cvtColor(np.array(crop, dtype=np.float32) / 255., cv2.COLOR_BGR2BGRA)
    liquid_layer = gaussian(rng.normal(size=x.shape[:2], loc=0.65, scale=0.27), sigma=3.7)
    liquid_layer[liquid_layer < 0.69] = 0
    out = []
    for _ in range(count):
        out.append(_spatter_frame(x, liquid_layer))
        liquid_layer = np.apply_along_axis(lambda mat: np.convolve(mat, np.array([0.05, 0.1, 0.15, 0.7]), mode="same"),
                                           axis=0, arr=liquid_layer)
    return out


def noise_frames(crop: np.ndarray, name: str, difficulty: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The clean crop, then 30 i.i.d. noisy copies (Gaussian noise with torch's draws, as the script)."""
    strength = NOISE_STRENGTH[name][difficulty - 1]
    out = [crop]
    if name == "gaussian_noise":
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div(255)
        for _ in range(30):  # ToPILImage of a float tensor: mul(255).byte()
            out.append(torch.clamp(x + strength * torch.randn_like(x), 0, 1).mul(255).byte().permute(1, 2, 0).numpy())
        return out
    z = np.array(crop, copy=True) / 255.
    for _ in range(30):
        if name == "shot_noise":
            out.append(np.uint8(255 * np.clip(rng.poisson(z * strength) / strength, 0, 1)))
        else:
            out.append(np.uint8(255 * np.clip(z + z * rng.normal(size=z.shape, scale=strength), 0, 1)))
    return out


def sequence(image: np.ndarray, name: str, difficulty: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """All frames ``[frames, 224, 224, 3]`` (uint8) of perturbation ``name`` for the Resize(256) image ``image``
    (uint8 HxWx3), as make_imagenet_p.py makes them; ``difficulty`` 1-3 sets the noise strength."""
    rng = rng or np.random.default_rng()
    crop = center_crop(image)
    if name in NOISE_STRENGTH:
        frames = noise_frames(crop, name, difficulty, rng)
    elif name == "zoom_blur":
        frames = zoom_blur_frames(image)
    elif name == "snow":
        layer, blur = snow_layer(rng), magick_motion_blur()
        frames = [snow(crop, layer, i, blur) for i in range(31)]
    elif name == "spatter":
        frames = spatter_frames(crop, rng)
    else:
        blur = magick_motion_blur() if name == "motion_blur" else None
        frames = [frame(image, name, i, blur) for i in range(41 if name == "translate" else 31)]
    return np.stack(frames)

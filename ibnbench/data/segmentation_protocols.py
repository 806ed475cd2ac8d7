"""Evaluation protocols: what happens to a decoded (image, label) pair before it is scored.

* ``native`` (the default): the image and its label map as released, at full resolution.
* ``robustnet-mapillary``: RobustNet's Mapillary Vistas validation transform (its ``datasets`` package builds
  ``ResizeHeight(1536)`` then ``CenterCropPad(1536)`` from its ``joint_transforms`` module), quirks included:
  the image is resized to height 1536 and width ``int(w / h * 1536)`` (bicubic, antialiased like PIL's; the label
  nearest-neighbour as PIL does it), then cut to 1536 x 1536 around ``round((w - 1536) / 2)`` (Python's rounding).
  A side shorter than 1536 is first padded by the shortfall on *both* ends and the crop offset is still taken from
  the unpadded size, so a portrait image loses the right half-shortfall of its columns and gains 1.5 shortfalls of
  zeros on the left; the padding and the area outside the padded image are label 0 (road, scored), image 0.
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ibnbench.errors import UsageError

ROBUSTNET_MAPILLARY_SIZE = 1536
PROTOCOLS = ("native", "robustnet-mapillary")


def _crop_pad_axis(length: int, size: int) -> tuple[int, int, int]:
    """For one axis of ``CenterCropPad``: the output range ``[start, stop)`` that holds image content and the source
    index of ``start``; the rest of the output is 0."""
    pad = max(size - length, 0)
    offset = int(round((length - size) / 2.0)) - pad  # crop origin in the unpadded image's coordinates
    start, stop = max(0, -offset), min(size, length - offset)
    return start, max(stop, start), start + offset


def centre_crop_pad(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """RobustNet's ``CenterCropPad(size)`` on a ``[..., H, W]`` tensor, zeros outside the image (see the module)."""
    out = tensor.new_zeros((*tensor.shape[:-2], size, size))
    (y0, y1, sy), (x0, x1, sx) = (_crop_pad_axis(n, size) for n in tensor.shape[-2:])
    out[..., y0:y1, x0:x1] = tensor[..., sy:sy + y1 - y0, sx:sx + x1 - x0]
    return out


def robustnet_mapillary(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustNet's Mapillary validation transform of a uint8 ``[3, H, W]`` image and its ``[H, W]`` train ids."""
    height, width = image.shape[-2:]
    size = [ROBUSTNET_MAPILLARY_SIZE, int(width / height * ROBUSTNET_MAPILLARY_SIZE)]
    image = TF.resize(image, size, InterpolationMode.BICUBIC, antialias=True)
    label = TF.resize(label[None], size, InterpolationMode.NEAREST_EXACT)[0]
    return centre_crop_pad(image, ROBUSTNET_MAPILLARY_SIZE), centre_crop_pad(label, ROBUSTNET_MAPILLARY_SIZE)


def apply_protocol(protocol: str, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, label) pair as ``protocol`` scores it."""
    if protocol == "native":
        return image, label
    if protocol == "robustnet-mapillary":
        return robustnet_mapillary(image, label)
    raise UsageError(f"unknown segmentation protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")

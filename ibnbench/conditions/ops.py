"""Pure tensor functions of the photometric conditions (no package imports)."""
from __future__ import annotations

import torch


def shift(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``x + offsets`` with ``offsets`` of shape ``[3]`` (one per RGB channel)."""
    return x + offsets.view(1, -1, 1, 1)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``mu + factor * (x - mu)`` with ``mu`` each image's per-channel mean over H x W (computed in float32), on any
    scale: the paper's ``std*`` conditions (0..255) and ImageNet-C's contrast (0..1,
    :data:`ibnbench.conditions.corruptions.SEVERITY_PARAMETERS`)."""
    mean = x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32).to(x.dtype)
    return (x - mean).mul_(factor).add_(mean)


def finish(x: torch.Tensor, clip: bool, quantize: bool) -> torch.Tensor:
    """Clamp to [0, 255] (``clip``) or round and clamp (``quantize``: uint8 values, float dtype)."""
    if quantize:
        return x.round().clamp_(0.0, 255.0)
    return x.clamp(0.0, 255.0) if clip else x

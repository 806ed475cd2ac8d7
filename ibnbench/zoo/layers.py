"""The IBN layer and a fast instance norm, state_dict-compatible with the official IBN-Net.

In eval mode neither layer splits, copies or concatenates the feature map: the IN statistics
are computed on a channel slice (a view), every channel gets one per-sample scale and shift
(BN folded from its running statistics), and a single fused ``addcmul`` writes the output,
into the input's own memory when the owning block says that is safe (``inplace=True``).
On CPU the statistics are taken one sample at a time through a small reused scratch buffer
(two-pass, as exact as ``var_mean``): large fresh allocations, not arithmetic, dominate there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _statistics_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics are computed in at least float32: float32 for half/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial ``(mean, biased variance)`` in :func:`_statistics_dtype`, shape ``[N, C]``."""
    x = x.to(_statistics_dtype(x))
    if x.device.type != "cpu":
        var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False)
        return mean, var
    n, c = x.shape[:2]
    channels_last = x.stride(1) == 1
    # views: [N, HW, C] for channels_last (slices included), [N, C, HW] for NCHW
    v = x.permute(0, 2, 3, 1).reshape(n, -1, c) if channels_last else x.reshape(n, c, -1)
    pixel_dim = 1 if channels_last else 2
    mean = v.mean(pixel_dim)
    var = torch.empty_like(mean)
    centred = torch.empty(v.shape[1:], dtype=v.dtype)
    for i in range(n):  # one sample at a time: the scratch buffer stays small and is reused
        torch.sub(v[i], mean[i] if channels_last else mean[i, :, None], out=centred)
        centred.mul_(centred)
        torch.mean(centred, pixel_dim - 1, out=var[i])
    return mean, var


def _instance_scale_shift(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel ``(scale, shift)`` of instance norm, in :func:`_statistics_dtype`, shape ``[N, C]``."""
    mean, var = _moments(x)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def _apply(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``x * scale + shift`` with ``[N, C]`` coefficients broadcast over H x W, written in ``x``'s dtype and memory
    format (over ``x`` when ``inplace`` and autograd is not recording). Computed in the coefficients' dtype
    (float32 for half/bfloat16 ``x``): the shift cancels ``x``'s mean, and in the input's own precision that costs
    about |mean| / std of its epsilons (73 bf16 epsilons at mean 100, std 1; torch's own instance norm: 0.35)."""
    scale = scale[..., None, None]
    shift = shift[..., None, None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, scale, shift)):
        return torch.addcmul(shift, x, scale).to(x.dtype)  # autograd takes no out=
    return torch.addcmul(shift, x, scale, out=x if inplace else torch.empty_like(x))


def _folded_batch_norm(bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``(scale, shift)`` of shape ``[C]`` in ``dtype``."""
    scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -bn.running_mean.to(dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return scale, shift


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same keys and semantics) with a fused eval path that keeps
    the memory format (channels_last stays channels_last); ``inplace=True`` lets it overwrite
    its input, for blocks whose input is a temporary."""

    def __init__(self, num_features: int, *args, inplace: bool = False, **kwargs):
        super().__init__(num_features, *args, **kwargs)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.track_running_stats:
            return super().forward(x)
        scale, shift = _instance_scale_shift(x, self.weight, self.bias, self.eps)
        return _apply(x, scale, shift, self.inplace)


class IBN(nn.Module):
    """Instance-Batch Normalisation: IN on ``n_in`` channels, BN on the others.

    ``in_first=True`` (ResNet family): IN on the FIRST ``int(planes * ratio)`` channels.
    ``in_first=False`` (DenseNet family): BN on the first ``int(planes * (1 - ratio))``, IN on the rest.
    Keys are ``IN.weight``, ``IN.bias`` and ``BN.*`` as in the official release.
    """

    def __init__(self, planes: int, ratio: float = 0.5, in_first: bool = True, inplace: bool = False):
        super().__init__()
        self._add_norms(planes, ratio, in_first, inplace)

    def _add_norms(self, planes: int, ratio: float, in_first: bool, inplace: bool) -> None:
        self.in_first = in_first
        self.inplace = inplace
        self.n_in = int(planes * ratio) if in_first else planes - int(planes * (1 - ratio))
        if in_first:
            self.IN = nn.InstanceNorm2d(self.n_in, affine=True)
            self.BN = nn.BatchNorm2d(planes - self.n_in)
        else:  # the official DenseNet layer registers BN first: keep its state_dict key order
            self.BN = nn.BatchNorm2d(planes - self.n_in)
            self.IN = nn.InstanceNorm2d(self.n_in, affine=True)

    def _slices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(IN part, BN part) of ``x`` along channels, as views."""
        n_bn = x.shape[1] - self.n_in
        return (x[:, :self.n_in], x[:, self.n_in:]) if self.in_first else (x[:, n_bn:], x[:, :n_bn])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, x_bn = self._slices(x)
        if self.training:
            out_in, out_bn = self.IN(x_in.contiguous()), self.BN(x_bn.contiguous())
            return torch.cat((out_in, out_bn) if self.in_first else (out_bn, out_in), 1)
        in_scale, in_shift = _instance_scale_shift(x_in, self.IN.weight, self.IN.bias, self.IN.eps)
        bn_scale, bn_shift = _folded_batch_norm(self.BN, in_scale.dtype)
        n = x.shape[0]
        parts = ((in_scale, bn_scale.expand(n, -1)), (in_shift, bn_shift.expand(n, -1)))
        if not self.in_first:
            parts = tuple(p[::-1] for p in parts)
        scale, shift = (torch.cat(p, 1) for p in parts)
        return _apply(x, scale, shift, self.inplace)


class SplitConvIBN(IBN):
    """The official v1.0 ("old") IBN-a head of a block: two 1x1 convolutions, ``conv1`` -> BN on the first half
    of the channels and ``conv2`` -> IN on the second half, concatenated (keys ``conv1``, ``conv2``, ``BN``, ``IN``).

    The two convolutions are one convolution with their weights stacked, so the output is written once and the
    IBN layer normalises it in place: no more memory than a single 1x1 convolution of ``planes`` channels.
    """

    def __init__(self, inplanes: int, planes: int, ratio: float = 0.5):
        nn.Module.__init__(self)
        n_bn = int(planes * (1 - ratio))
        self.conv1 = nn.Conv2d(inplanes, n_bn, 1, bias=False)
        self.conv2 = nn.Conv2d(inplanes, planes - n_bn, 1, bias=False)
        self._add_norms(planes, ratio, in_first=False, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.conv2d(x, torch.cat((self.conv1.weight, self.conv2.weight))))


class SELayer(nn.Module):
    """Squeeze-and-excitation with the official keys ``fc.0`` / ``fc.2`` (no biases)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, int(channels / reduction), bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(int(channels / reduction), channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.avg_pool(x).flatten(1))
        return x * weights[:, :, None, None]


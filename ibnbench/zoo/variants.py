"""Research variants of ResNet-50-IBN from the paper's ablations (no released weights; ``research=True``).

Fig. 4 / Table 3 of the paper sketch four more ways to mix IN and BN in a residual block. The figure is a
drawing, not code, so these are our readings of it (each builder's docstring repeats its reading):

- **IBN-c** (Fig. 4a): the output of the block's first conv goes through IN *and* BN in parallel and the
  two results are concatenated, so the 3x3 conv reads twice the channels (the paper notes the extra
  parameters). Stages 1-3, like IBN-a. Keys ``bn1.IN.*`` (planes channels), ``bn1.BN.*`` (planes).
- **IBN-d** (Fig. 4b): IBN-b with IN on only half of the channels: after the residual addition of the
  last block of stages 1 and 2, IN normalises the first half of the channels and the other half passes
  unchanged; the stem's norm is ``IBN(64)`` (half IN, half BN) instead of IBN-b's full IN.
- **IBN-a&d** (Fig. 4c): IBN-a (``bn1`` of every block in stages 1-3) plus IBN-d.
- **IBN-a x2** (Fig. 4d): IBN-a with a second IBN layer in each block, at ``bn2`` (after the 3x3 conv).

The other two ablations are constructor options: ``ibn_ratio`` (Table 5, the share of IN channels in each
IBN layer; IBN-c's norm has no ratio) and ``ibn_cfg`` (Table 4, which of the four stages carry IN), e.g.
``create_model("resnet50_ibn_ad", ibn_cfg=("a&d", "a", None, None), ibn_ratio=0.25)``. The paper's settings
are registered too: ``resnet50_ibn_a_ratio{0.25,0.75,1.0}`` (with ratio 1.0 the first norm of a block is a
plain ``InstanceNorm(planes)``, keys ``bn1.weight``/``bn1.bias``) and ``resnet50_ibn_a_stages{1,12,1234}``
(IBN-a in stage 1 / stages 1-2 / all four stages; stages 1-3 is ``resnet50_ibn_a`` itself, whose paper
numbers come from ``resnet50_ibn_a_old``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ibnbench.errors import UsageError
from ibnbench.zoo.layers import IBN, InstanceNorm
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import DEPTHS, IBN_A, Bottleneck, ResNetIBN


class ConcatIBN(nn.Module):
    """IBN-c's norm: IN and BN on all ``planes`` channels each, concatenated to ``2 * planes``."""

    def __init__(self, planes: int):
        super().__init__()
        self.IN = InstanceNorm(planes, affine=True)
        self.BN = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.IN(x), self.BN(x)), 1)


class PartialInstanceNorm(InstanceNorm):
    """IN on the first ``num_features`` channels; the remaining channels pass through unchanged (IBN-d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = x[:, :self.num_features].contiguous()
        return torch.cat((super().forward(head), x[:, self.num_features:]), 1)


class VariantBottleneck(Bottleneck):
    """The ResNet bottleneck with the per-block options of Fig. 4 and Table 3: ``ibn`` is "a" (IBN at
    ``bn1``; plain IN when ``ratio`` is 1), "c" (IN and BN concatenated at ``bn1``), "a2" (IBN at ``bn1``
    and ``bn2``) or None. IBN-d lives after the addition and is set by :class:`ResNetIBNVariant`."""

    def __init__(self, inplanes: int, planes: int, ibn: str | None = None, stride: int = 1,
                 downsample: nn.Module | None = None, ratio: float = 0.5):
        if ibn not in ("a", "c", "a2", None):
            raise UsageError(f"research variants: block option {ibn!r} is not one of 'a', 'c', 'a2', None")
        super().__init__(inplanes, planes, "a" if ibn in ("a", "a2") and ratio < 1 else None, stride,
                         downsample, ratio)
        if ibn in ("a", "a2") and ratio >= 1:
            self.bn1 = InstanceNorm(planes, affine=True)
        if ibn == "a2":
            self.bn2 = IBN(planes, ratio) if ratio < 1 else InstanceNorm(planes, affine=True)
        if ibn == "c":
            self.bn1 = ConcatIBN(planes)
            self.conv2 = nn.Conv2d(2 * planes, planes, 3, stride, 1, bias=False)


class ResNetIBNVariant(ResNetIBN):
    """ResNet-50 trunk whose ``ibn_cfg`` entries (one per stage) are "a", "c", "a2", "d", "a&d" or None.

    "d" and "a&d" add :class:`PartialInstanceNorm` (IN on ``ibn_ratio`` of the channels) after the
    addition of the stage's LAST block, as IBN-b does with its full IN, and make the stem norm an
    ``IBN(64, ibn_ratio)`` when stage 1 carries "d".
    """

    def __init__(self, layers: Sequence[int], ibn_cfg: Sequence[str | None], num_classes: int = 1000,
                 ibn_ratio: float = 0.5):
        super().__init__(VariantBottleneck, layers, ibn_cfg, num_classes, ibn_ratio)
        if ibn_cfg[0] in ("d", "a&d"):
            self.bn1 = IBN(64, ibn_ratio)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, ibn: str | None) -> nn.Sequential:
        if ibn == "b":
            raise UsageError("research variants: use resnet50_ibn_b for IBN-b")
        layer = super()._make_layer(block, planes, blocks, stride, {"d": None, "a&d": "a"}.get(ibn, ibn))
        if ibn in ("d", "a&d"):
            channels = planes * block.expansion
            layer[-1].IN = PartialInstanceNorm(int(channels * self.ibn_ratio), affine=True)
        return layer


def _variant(default_cfg: Sequence[str | None], **kwargs) -> ResNetIBNVariant:
    return ResNetIBNVariant(DEPTHS[50][1], tuple(kwargs.pop("ibn_cfg", default_cfg)), **kwargs)


@register_model(family="resnet", variant="ibn-c", research=True)
def resnet50_ibn_c(**kwargs) -> ResNetIBNVariant:
    """ResNet-50-IBN-c (Fig. 4a, our reading): IN and BN in parallel on the first conv's output of every
    block in stages 1-3, concatenated; the 3x3 conv reads the doubled channels."""
    return _variant(("c", "c", "c", None), **kwargs)


@register_model(family="resnet", variant="ibn-d", research=True)
def resnet50_ibn_d(**kwargs) -> ResNetIBNVariant:
    """ResNet-50-IBN-d (Fig. 4b, our reading): IBN-b with IN on half the channels: stem norm IBN(64), and
    IN on the first half of the channels after the addition of the last block of stages 1 and 2."""
    return _variant(("d", "d", None, None), **kwargs)


@register_model(family="resnet", variant="ibn-a&d", research=True)
def resnet50_ibn_ad(**kwargs) -> ResNetIBNVariant:
    """ResNet-50-IBN-a&d (Fig. 4c, our reading): IBN-a at bn1 of every block in stages 1-3 plus IBN-d
    (stem IBN(64), half-channel IN after the last block of stages 1 and 2)."""
    return _variant(("a&d", "a&d", "a", None), **kwargs)


@register_model(family="resnet", variant="ibn-a-x2", research=True)
def resnet50_ibn_a_x2(**kwargs) -> ResNetIBNVariant:
    """ResNet-50-IBN-a x2 (Fig. 4d, our reading): IBN layers at bn1 and bn2 of every block in stages 1-3."""
    return _variant(("a2", "a2", "a2", None), **kwargs)


def _register_ratio(ratio: float) -> None:
    def builder(**kwargs) -> ResNetIBNVariant:
        return _variant(IBN_A, ibn_ratio=kwargs.pop("ibn_ratio", ratio), **kwargs)

    builder.__doc__ = (f"ResNet-50-IBN-a with IN on {ratio:.0%} of the channels of each IBN layer "
                       "(paper Table 5).")
    register_model(builder, name=f"resnet50_ibn_a_ratio{ratio}", family="resnet", variant=f"ibn-a-ratio{ratio}",
                   research=True)


def _register_stages(stages: str) -> None:
    ibn_cfg = tuple("a" if str(stage) in stages else None for stage in range(1, 5))

    def builder(**kwargs) -> ResNetIBNVariant:
        return _variant(ibn_cfg, **kwargs)

    builder.__doc__ = f"ResNet-50-IBN-a with IBN layers in stages {', '.join(stages)} only (paper Table 4)."
    register_model(builder, name=f"resnet50_ibn_a_stages{stages}", family="resnet", variant=f"ibn-a-stages{stages}",
                   research=True)


for _ratio in (0.25, 0.75, 1.0):
    _register_ratio(_ratio)
for _stages in ("1", "12", "1234"):
    _register_stages(_stages)

"""SE-ResNet-IBN-a with the official IBN-Net state_dict keys."""
from __future__ import annotations

import torch
from torch import nn

from ibnbench.errors import UsageError
from ibnbench.zoo.layers import SELayer
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import DEPTHS, IBN_A, IBN_LICENSE, README, Bottleneck, ResNetIBN, official


class SEBottleneck(Bottleneck):
    """The ResNet bottleneck (IBN-a at ``bn1``) with squeeze-and-excitation on the output of ``bn3``,
    before the residual addition."""

    def __init__(self, inplanes: int, planes: int, ibn: str | None = None, stride: int = 1,
                 downsample: nn.Module | None = None, ratio: float = 0.5, reduction: int = 16):
        if ibn == "b":
            raise UsageError("SE-ResNet-IBN: ibn_cfg takes 'a' or None per stage (IBN-b was not released for it)")
        super().__init__(inplanes, planes, ibn, stride, None, ratio)
        self.se = SELayer(planes * self.expansion, reduction)
        self.downsample = downsample  # registered after `se`: the official key order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _se_resnet(depth: int, **kwargs) -> ResNetIBN:
    return ResNetIBN(SEBottleneck, DEPTHS[depth][1], tuple(kwargs.pop("ibn_cfg", IBN_A)), **kwargs)


@register_model(family="se-resnet", variant="ibn-a", license=IBN_LICENSE)
def se_resnet50_ibn_a(**kwargs) -> ResNetIBN:
    """SE-ResNet-50-IBN-a (no released weights)."""
    return _se_resnet(50, **kwargs)


@register_model(family="se-resnet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("se_resnet101_ibn_a-fabed4e2.pth", (21.25, 5.51, README)))
def se_resnet101_ibn_a(**kwargs) -> ResNetIBN:
    """SE-ResNet-101-IBN-a."""
    return _se_resnet(101, **kwargs)


@register_model(family="se-resnet", variant="ibn-a", license=IBN_LICENSE)
def se_resnet152_ibn_a(**kwargs) -> ResNetIBN:
    """SE-ResNet-152-IBN-a (no released weights)."""
    return _se_resnet(152, **kwargs)

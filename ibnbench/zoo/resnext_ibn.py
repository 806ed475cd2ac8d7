"""ResNeXt-IBN-a (32x4d) with the official IBN-Net state_dict keys and module names."""
from __future__ import annotations

from typing import Sequence

import torch

from ibnbench.errors import UsageError
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import IBN_A, IBN_LICENSE, README, Bottleneck, ResNetIBN, official


class ResNeXtBottleneck(Bottleneck):
    """ResNeXt bottleneck (type C): 1x1 to ``D*C``, grouped 3x3 (stride here), 1x1 to ``planes * 4``.

    ``D = floor(planes * base_width / 64)``, ``C = cardinality``; IBN-a puts ``IBN(D*C)`` at ``bn1``.
    """

    cardinality = 32
    base_width = 4


class ResNeXtIBN(ResNetIBN):
    """ResNeXt-IBN-a: the ResNet-IBN trunk with ResNeXt blocks; the stem norm is always BN
    and its max-pool is named ``maxpool1`` as in the official code."""

    def __init__(self, layers: Sequence[int], ibn_cfg: Sequence[str | None] = IBN_A, num_classes: int = 1000,
                 ibn_ratio: float = 0.5):
        if "b" in ibn_cfg:
            raise UsageError("ResNeXt-IBN: ibn_cfg takes 'a' or None per stage (IBN-b was not defined for ResNeXt)")
        super().__init__(ResNeXtBottleneck, layers, ibn_cfg, num_classes, ibn_ratio)
        self._modules = {("maxpool1" if name == "maxpool" else name): module for name, module in self._modules.items()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _resnext(layers: Sequence[int], **kwargs) -> ResNeXtIBN:
    return ResNeXtIBN(layers, tuple(kwargs.pop("ibn_cfg", IBN_A)), **kwargs)


@register_model(family="resnext", variant="ibn-a", license=IBN_LICENSE)
def resnext50_ibn_a(**kwargs) -> ResNeXtIBN:
    """ResNeXt-50-IBN-a 32x4d (no released weights)."""
    return _resnext((3, 4, 6, 3), **kwargs)


@register_model(family="resnext", variant="ibn-a", license=IBN_LICENSE,
                weights=official("resnext101_ibn_a-6ace051d.pth", (20.88, 5.42, README)))
def resnext101_ibn_a(**kwargs) -> ResNeXtIBN:
    """ResNeXt-101-IBN-a 32x4d."""
    return _resnext((3, 4, 23, 3), **kwargs)


@register_model(family="resnext", variant="ibn-a", license=IBN_LICENSE)
def resnext152_ibn_a(**kwargs) -> ResNeXtIBN:
    """ResNeXt-152-IBN-a 32x4d (no released weights)."""
    return _resnext((3, 8, 36, 3), **kwargs)

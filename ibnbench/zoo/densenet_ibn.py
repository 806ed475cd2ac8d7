"""DenseNet-IBN-a: torchvision's DenseNet-BC (same keys) with IBN layers, as in the official IBN-Net."""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
from torchvision.models import DenseNet

from ibnbench.zoo.layers import IBN
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import IBN_LICENSE, README, official

# Checkpoints of the pre-0.4 PyTorch era name dense-layer modules "norm.1", "conv.2", ...
_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(.+)$")


class DenseNetIBN(DenseNet):
    """DenseNet-BC whose dense layers ``i % 3 == 0`` (0-based) in the first ``ibn_blocks`` blocks
    normalise their input with ``IBN(C, ibn_ratio, in_first=False)`` at ``norm1``: BN on the first
    ``int(C * (1 - ibn_ratio))`` channels, IN on the rest (keys ``norm1.BN.*``, ``norm1.IN.*``).

    Forward (torchvision's): features -> relu -> global average pool -> classifier; each dense layer
    is norm1, relu, conv1 1x1, norm2, relu, conv2 3x3 and its output is concatenated to its input.
    """

    def __init__(self, growth_rate: int, block_config: Sequence[int], num_init_features: int,
                 num_classes: int = 1000, ibn_blocks: int = 3, ibn_ratio: float = 0.4, **kwargs):
        super().__init__(growth_rate, tuple(block_config), num_init_features, num_classes=num_classes, **kwargs)
        for block_index in range(1, ibn_blocks + 1):
            for i, layer in enumerate(getattr(self.features, f"denseblock{block_index}").values()):
                if i % 3 == 0:
                    layer.norm1 = IBN(layer.norm1.num_features, ibn_ratio, in_first=False)

    def adapt_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename legacy ``denselayerN.norm.1.*`` keys to ``denselayerN.norm1.*`` (no-op for current ones)."""
        return {_LEGACY_KEY.sub(r"\1\2.\3", key): value for key, value in state_dict.items()}


CONFIGS = {121: (32, (6, 12, 24, 16), 64), 169: (32, (6, 12, 32, 32), 64), 201: (32, (6, 12, 48, 32), 64),
           161: (48, (6, 12, 36, 24), 96)}


def _densenet(depth: int, **kwargs) -> DenseNetIBN:
    growth_rate, block_config, num_init_features = CONFIGS[depth]
    return DenseNetIBN(growth_rate, block_config, num_init_features, **kwargs)


@register_model(family="densenet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("densenet121_ibn_a-e4af5cc1.pth", (24.47, 7.25, README)))
def densenet121_ibn_a(**kwargs) -> DenseNetIBN:
    """DenseNet-121-IBN-a."""
    return _densenet(121, **kwargs)


@register_model(family="densenet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("densenet169_ibn_a-9f32c161.pth", (23.25, 6.51, README)))
def densenet169_ibn_a(**kwargs) -> DenseNetIBN:
    """DenseNet-169-IBN-a."""
    return _densenet(169, **kwargs)


@register_model(family="densenet", variant="ibn-a", license=IBN_LICENSE)
def densenet201_ibn_a(**kwargs) -> DenseNetIBN:
    """DenseNet-201-IBN-a (no released weights)."""
    return _densenet(201, **kwargs)


@register_model(family="densenet", variant="ibn-a", license=IBN_LICENSE)
def densenet161_ibn_a(**kwargs) -> DenseNetIBN:
    """DenseNet-161-IBN-a (no released weights)."""
    return _densenet(161, **kwargs)

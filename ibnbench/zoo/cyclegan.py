"""The CycleGAN ``resnet_9blocks`` generator, state_dict-compatible with the authors' released checkpoints
(``style_monet.pth``, ``style_cezanne.pth``, ``style_ukiyoe.pth``, ``style_vangogh.pth``)."""
from __future__ import annotations

import torch
from torch import nn

from ibnbench.zoo.layers import InstanceNorm
from ibnbench.zoo.meta import Preprocessing
from ibnbench.zoo.registry import register_model

CYCLEGAN_LICENSE = "BSD (junyanz/pytorch-CycleGAN-and-pix2pix)"
# Input and output in [-1, 1]: x / 127.5 - 1 for RGB on the 0..255 scale.
CYCLEGAN_PREPROCESSING = Preprocessing(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
                                       source="CycleGAN: x/127.5 - 1")


def _norm(channels: int) -> nn.Module:
    """Instance norm without affine parameters or running statistics, as in the released models."""
    return InstanceNorm(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """``x + block(x)`` with reflect-padded 3x3 convolutions (keys ``conv_block.1`` and ``conv_block.5``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator: 7x7 stem, two stride-2 downsamplings, residual blocks, two transposed
    convolutions back up, 7x7 head and tanh. Input and output are RGB in [-1, 1]; the output has the
    input's size when height and width are multiples of 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 64, blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7), _norm(width),
                                   nn.ReLU(True)]
        for factor in (1, 2):
            layers += [nn.Conv2d(width * factor, width * factor * 2, 3, stride=2, padding=1),
                       _norm(width * factor * 2), nn.ReLU(True)]
        layers += [ResnetBlock(width * 4) for _ in range(blocks)]
        for factor in (4, 2):
            layers += [nn.ConvTranspose2d(width * factor, width * factor // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       _norm(width * factor // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model(family="cyclegan", variant="resnet_9blocks", task="generator", num_classes=None,
                license=CYCLEGAN_LICENSE,
                preprocessing=CYCLEGAN_PREPROCESSING)
def cyclegan_resnet_9blocks(**kwargs) -> ResnetGenerator:
    """CycleGAN generator with 9 residual blocks (photo-to-painting style transfer)."""
    return ResnetGenerator(**kwargs)

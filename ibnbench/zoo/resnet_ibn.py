"""ResNet, ResNet-IBN-a and ResNet-IBN-b with the official IBN-Net (and torchvision) state_dict keys."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ibnbench.io import hash_prefix_from_name
from ibnbench.zoo.layers import IBN, InstanceNorm, SplitConvIBN
from ibnbench.zoo.meta import Preprocessing, Reference, Weights
from ibnbench.zoo.registry import register_model

RELEASE = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
IBN_LICENSE = "MIT (XingangPan/IBN-Net)"
README = "IBN-Net README"
README_V1 = "IBN-Net README at tag v1.0"
IBN_TAG = "ibn_in1k"
"""Tag of the official IBN-Net v1.0 GitHub release (``resnet50_ibn_a.ibn_in1k``)."""
OLD_TAG = "ibn_gdrive_in1k"
"""Tag of the v1.0 "old" checkpoints the IBN-Net README links on Google Drive."""
TORCHVISION_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}
"""timm's tags for torchvision's ImageNet-1k weights (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``)."""


def official(filename: str, *metrics: tuple[float, float, str]) -> Weights:
    """Weights of the official IBN-Net release with their published ``(top1_err, top5_err, source)`` metrics;
    the file name carries the sha256 prefix."""
    return Weights(url=RELEASE + filename, sha256_prefix=hash_prefix_from_name(filename),
                   metrics=tuple(Reference(*m) for m in metrics), source="IBN-Net v1.0 release", license=IBN_LICENSE,
                   tag=IBN_TAG)


def first_norm(planes: int, ibn: str | None, ratio: float) -> nn.Module:
    """The block's first normalisation: an IBN layer for IBN-a, else BN."""
    return IBN(planes, ratio, inplace=True) if ibn == "a" else nn.BatchNorm2d(planes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, ibn: str | None = None, stride: int = 1,
                 downsample: nn.Module | None = None, ratio: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = first_norm(planes, ibn, ratio)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.IN = InstanceNorm(planes, affine=True, inplace=True) if ibn == "b" else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)  # in place, as the official blocks
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's V1.5 bottleneck (stride on the 3x3 conv), with the IBN options.

    Subclasses set ``cardinality``/``base_width`` for ResNeXt: the inner width is
    ``floor(planes * base_width / 64) * cardinality`` and the 3x3 conv has ``cardinality`` groups."""

    expansion = 4
    cardinality = 1
    base_width = 64

    def __init__(self, inplanes: int, planes: int, ibn: str | None = None, stride: int = 1,
                 downsample: nn.Module | None = None, ratio: float = 0.5):
        super().__init__()
        width = math.floor(planes * self.base_width / 64) * self.cardinality
        self._add_reduction(inplanes, width, ibn, ratio)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=self.cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.IN = InstanceNorm(planes * 4, affine=True, inplace=True) if ibn == "b" else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _add_reduction(self, inplanes: int, width: int, ibn: str | None, ratio: float) -> None:
        """The first 1x1 convolution and its normalisation (keys ``conv1``, ``bn1``)."""
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = first_norm(width, ibn, ratio)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))

    def _after_add(self, out: torch.Tensor) -> torch.Tensor:
        """The normalisation between the residual addition and the last ReLU (IBN-b's IN), if any."""
        return out if self.IN is None else self.IN(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self._reduce(x))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)  # in place, as the official blocks
        return self.relu(self._after_add(out))


class BottleneckOld(Bottleneck):
    """The official v1.0 ("old") IBN-a bottleneck: an IBN-a block's first 1x1 convolution and IBN layer are
    one ``convbnin`` module (:class:`SplitConvIBN`); blocks without IBN are the plain bottleneck."""

    def _add_reduction(self, inplanes: int, width: int, ibn: str | None, ratio: float) -> None:
        if ibn == "a":
            self.convbnin = SplitConvIBN(inplanes, width, ratio)
        else:
            super()._add_reduction(inplanes, width, ibn, ratio)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.convbnin(x) if hasattr(self, "convbnin") else super()._reduce(x)


class ResNetIBN(nn.Module):
    """ResNet whose stages carry IBN-a or IBN-b as ``ibn_cfg`` says (one entry per stage).

    ``ibn_cfg=(None,)*4`` is torchvision's ResNet. IBN-b (official): the stem norm is IN when
    stage 1 is 'b', and only the LAST block of a 'b' stage gets the IN after the addition.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 ibn_cfg: Sequence[str | None] = ("a", "a", "a", None), num_classes: int = 1000,
                 ibn_ratio: float = 0.5):
        super().__init__()
        self.inplanes = 64
        self.ibn_ratio = ibn_ratio
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = InstanceNorm(64, affine=True, inplace=True) if ibn_cfg[0] == "b" else nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, ibn_cfg[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, ibn_cfg[1])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, ibn_cfg[2])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, ibn_cfg[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int, ibn: str | None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = []
        for i in range(blocks):
            block_ibn = ibn if ibn != "b" or i == blocks - 1 else None
            layers.append(block(self.inplanes, planes, block_ibn, stride if i == 0 else 1,
                                downsample if i == 0 else None, self.ibn_ratio))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}
IBN_A = ("a", "a", "a", None)
IBN_B = ("b", "b", None, None)


def _resnet(depth: int, default_cfg: Sequence[str | None], **kwargs) -> ResNetIBN:
    block, layers = DEPTHS[depth]
    return ResNetIBN(block, layers, tuple(kwargs.pop("ibn_cfg", default_cfg)), **kwargs)


def _torchvision_release(enum) -> Weights:
    """One torchvision weights enum entry as a release; preprocessing equal to torchvision's ImageNet default (V1's)
    keeps that name, so that records of the bare ``resnetN`` read the same as before releases."""
    release = Weights.from_torchvision(enum, "BSD-3-Clause (torchvision)", tag=TORCHVISION_TAGS[enum.name])
    default = Preprocessing()
    same = replace(release.preprocessing, source=default.source) == default
    return replace(release, preprocessing=default) if same else release


def _torchvision_releases(depth: int) -> tuple[Weights, ...]:
    """torchvision's ImageNet-1k ResNet weights (IMAGENET1K_V1, the default, then V2 where there is one), each with
    its URL, preprocessing and metrics read from torchvision's own weights enum."""
    import torchvision.models as tvm

    return tuple(_torchvision_release(enum) for enum in getattr(tvm, f"ResNet{depth}_Weights")
                 if enum.name in TORCHVISION_TAGS)


def _register_baseline(depth: int) -> None:
    def builder(**kwargs) -> ResNetIBN:
        return _resnet(depth, (None,) * 4, **kwargs)

    builder.__doc__ = f"ResNet-{depth} (torchvision keys and weights)."
    register_model(builder, name=f"resnet{depth}", family="resnet", variant="none",
                   weights=_torchvision_releases(depth), license="BSD-3-Clause (torchvision)")


for _depth in DEPTHS:
    _register_baseline(_depth)


@register_model(family="resnet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("resnet18_ibn_a-2f571257.pth", (29.17, 10.24, README)))
def resnet18_ibn_a(**kwargs) -> ResNetIBN:
    """ResNet-18-IBN-a."""
    return _resnet(18, IBN_A, **kwargs)


@register_model(family="resnet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("resnet34_ibn_a-94bc1577.pth", (25.78, 8.19, README)))
def resnet34_ibn_a(**kwargs) -> ResNetIBN:
    """ResNet-34-IBN-a."""
    return _resnet(34, IBN_A, **kwargs)


@register_model(family="resnet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("resnet50_ibn_a-d9d0bb7b.pth", (22.54, 6.32, README), (22.76, 6.41, README_V1)))
def resnet50_ibn_a(**kwargs) -> ResNetIBN:
    """ResNet-50-IBN-a, the released faster implementation (the paper's numbers are ``resnet50_ibn_a_old``'s)."""
    return _resnet(50, IBN_A, **kwargs)


@register_model(family="resnet", variant="ibn-a", license=IBN_LICENSE,
                weights=official("resnet101_ibn_a-59ea0ac6.pth", (21.39, 5.59, README), (21.29, 5.61, README_V1)))
def resnet101_ibn_a(**kwargs) -> ResNetIBN:
    """ResNet-101-IBN-a."""
    return _resnet(101, IBN_A, **kwargs)


OLD_WEIGHTS_HINT = ("the IBN-Net README at tag v1.0 links them on Google Drive (PyTorch 0.3.1 and 0.4.1 formats; "
                    "both load); download the file and pass --weights PATH")


def _resnet_old(depth: int, **kwargs) -> ResNetIBN:
    """The official v1.0 ("old") IBN-a ResNet: :class:`BottleneckOld` blocks, layer4 plain, 7x7 average pool."""
    model = ResNetIBN(BottleneckOld, DEPTHS[depth][1], tuple(kwargs.pop("ibn_cfg", IBN_A)), **kwargs)
    model.avgpool = nn.AvgPool2d(7, stride=1)
    return model


def _old_weights(*metrics: tuple[float, float, str]) -> Weights:
    return Weights(url=None, metrics=tuple(Reference(*m) for m in metrics), source="IBN-Net v1.0 (Google Drive)",
                   license=IBN_LICENSE, how_to_get=OLD_WEIGHTS_HINT, tag=OLD_TAG)


@register_model(family="resnet", variant="ibn-a (v1.0 old)", license=IBN_LICENSE,
                weights=_old_weights((22.54, 6.32, "paper Table 2")))
def resnet50_ibn_a_old(**kwargs) -> ResNetIBN:
    """ResNet-50-IBN-a, the official v1.0 "old" implementation behind the paper's numbers (two 1x1 convs)."""
    return _resnet_old(50, **kwargs)


@register_model(family="resnet", variant="ibn-a (v1.0 old)", license=IBN_LICENSE,
                weights=_old_weights((21.39, 5.59, "paper Table 2")))
def resnet101_ibn_a_old(**kwargs) -> ResNetIBN:
    """ResNet-101-IBN-a, the official v1.0 "old" implementation behind the paper's numbers (two 1x1 convs)."""
    return _resnet_old(101, **kwargs)


@register_model(family="resnet", variant="ibn-a (v1.0 old)", license=IBN_LICENSE)
def resnet152_ibn_a_old(**kwargs) -> ResNetIBN:
    """ResNet-152-IBN-a, the official v1.0 "old" implementation (no released weights)."""
    return _resnet_old(152, **kwargs)


@register_model(family="resnet", variant="ibn-a", license=IBN_LICENSE)
def resnet152_ibn_a(**kwargs) -> ResNetIBN:
    """ResNet-152-IBN-a (no released weights)."""
    return _resnet(152, IBN_A, **kwargs)


@register_model(family="resnet", variant="ibn-b", weights=official("resnet18_ibn_b-bc2f3c11.pth"), license=IBN_LICENSE)
def resnet18_ibn_b(**kwargs) -> ResNetIBN:
    """ResNet-18-IBN-b."""
    return _resnet(18, IBN_B, **kwargs)


@register_model(family="resnet", variant="ibn-b", weights=official("resnet34_ibn_b-04134c37.pth"), license=IBN_LICENSE)
def resnet34_ibn_b(**kwargs) -> ResNetIBN:
    """ResNet-34-IBN-b."""
    return _resnet(34, IBN_B, **kwargs)


@register_model(family="resnet", variant="ibn-b", license=IBN_LICENSE,
                weights=official("resnet50_ibn_b-9ca61e85.pth",
                                 (23.64, 6.86, "paper Table 1, IBN-Net50-b; the release publishes none")))
def resnet50_ibn_b(**kwargs) -> ResNetIBN:
    """ResNet-50-IBN-b."""
    return _resnet(50, IBN_B, **kwargs)


@register_model(family="resnet", variant="ibn-b", weights=official("resnet101_ibn_b-c55f6dba.pth"), license=IBN_LICENSE)
def resnet101_ibn_b(**kwargs) -> ResNetIBN:
    """ResNet-101-IBN-b."""
    return _resnet(101, IBN_B, **kwargs)


@register_model(family="resnet", variant="ibn-b", license=IBN_LICENSE)
def resnet152_ibn_b(**kwargs) -> ResNetIBN:
    """ResNet-152-IBN-b (no released weights)."""
    return _resnet(152, IBN_B, **kwargs)

"""RobustNet's DeepLab-v3+ (Choi et al., CVPR 2021: shachoi/RobustNet, ``network.deepv3``) with its state_dict keys,
so that its released checkpoints (``{"state_dict": ...}`` with ``module.`` keys) load strictly.

The backbone is torchvision's ResNet (stride on the 3x3 convolution) under RobustNet's names: ``layer0`` (the stem
as one ``nn.Sequential``), ``layer1`` .. ``layer4``. Output stride 16 (``DeepR50V3PlusD``): every block of layer4,
the first included, has a 3x3 convolution of dilation 2 and stride 1, and its shortcut stride 1. Output stride 8
(``DeepR101V3PlusD_OS8``): layer3 the same with dilation 2, layer4 with dilation 4; ResNet-101 has the deep stem
(three 3x3 convolutions, 64-64-128). The ASPP (image pooling, 1x1, 3x3 at rates 6/12/18, doubled at output stride
8) gives 1280 channels, ``bot_aspp`` takes them to 256; the decoder adds layer1's output through the 48-channel
``bot_fine``, then ``final1`` (two 3x3 convolutions) and ``final2`` (1x1 to the classes). Every upsampling is
bilinear with ``align_corners=True``. ``dsn`` (the auxiliary head on layer3) is kept so that checkpoints load
strictly; evaluation never runs it.

IBN and ISW (RobustNet's ``--wt_layer`` 4 and 2) put an instance norm in place of the batch norm of the stem
convolutions they name (ResNet-50: the 7x7 one; ResNet-101: the first two 3x3 ones) and one after the residual
addition of the last block of layer1 and of layer2 (``instance_norm_layer``): affine for IBN, without parameters for
ISW (whose whitening loss only shapes training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ibnbench.zoo.deeplab import CITYSCAPES_CLASSES, SEGMENTATION, dilate_stage
from ibnbench.zoo.layers import InstanceNorm
from ibnbench.zoo.meta import Weights
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import DEPTHS, Bottleneck

ROBUSTNET_LICENSE = "BSD-3-Clause (shachoi/RobustNet)"
ROBUSTNET_DRIVE = "https://drive.google.com/drive/folders/19i1G-gcJ3BV_VxO0ZG9YMJ4Btyj8c6dM"
ASPP_RATES = (6, 12, 18)
"""The ASPP's dilation rates at output stride 16 (scaled by 16 / output stride)."""


def _norm(channels: int, instance: bool, affine: bool) -> nn.Module:
    return InstanceNorm(channels, affine=affine, inplace=True) if instance else nn.BatchNorm2d(channels)


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class WhitenedBottleneck(Bottleneck):
    """RobustNet's bottleneck: torchvision's, with its optional instance norm after the residual addition under
    RobustNet's key ``instance_norm_layer``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 instance_norm: nn.Module | None = None):
        super().__init__(inplanes, planes, None, stride, downsample)
        self.instance_norm_layer = instance_norm

    def _after_add(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.instance_norm_layer is None else self.instance_norm_layer(out)


def _stem(deep: bool, instance_at: tuple[int, ...], affine: bool) -> nn.Sequential:
    """``layer0``: the 7x7 convolution (or, ``deep``, three 3x3 ones), each with its norm and ReLU, then max-pool;
    the convolutions listed in ``instance_at`` are followed by an instance norm instead of a batch norm."""
    shapes = [(3, 64, 3, 2), (64, 64, 3, 1), (64, 128, 3, 1)] if deep else [(3, 64, 7, 2)]
    layers: list[nn.Module] = []
    for index, (cin, cout, kernel, stride) in enumerate(shapes):
        layers += [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                   _norm(cout, index in instance_at, affine), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(3, 2, 1))


def _stage(inplanes: int, planes: int, blocks: int, stride: int, last_instance: bool, affine: bool) -> nn.Sequential:
    """A stage of RobustNet's ResNet; with ``last_instance`` its last block ends with an instance norm."""
    downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
    layers = [WhitenedBottleneck(inplanes, planes, stride, downsample)]
    for index in range(1, blocks):
        instance = _norm(planes * 4, True, affine) if last_instance and index == blocks - 1 else None
        layers.append(WhitenedBottleneck(planes * 4, planes, instance_norm=instance))
    return nn.Sequential(*layers)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AtrousSpatialPyramidPooling(nn.Module):
    """RobustNet's ASPP: the image-pooling branch (``img_conv``) first, then ``features``: a 1x1 convolution and
    three dilated 3x3 ones, all 256 channels, concatenated (1280)."""

    def __init__(self, in_channels: int, rates: tuple[int, ...], channels: int = 256):
        super().__init__()
        self.features = nn.ModuleList([_conv_bn_relu(in_channels, channels, 1),
                                       *(_conv_bn_relu(in_channels, channels, 3, r) for r in rates)])
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = _conv_bn_relu(in_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _upsample(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([pooled, *(f(x) for f in self.features)], 1)


class RobustNetDeepLabV3Plus(nn.Module):
    """RobustNet's ``DeepV3Plus`` on a ResNet-50 or -101 (see the module's docstring), for evaluation: the forward
    maps a normalised batch ``(N, 3, H, W)`` to logits ``(N, classes, H, W)``.

    ``instance_stem``: the stem convolutions followed by an instance norm; ``instance_stages``: the stages (1..4)
    whose last block ends with one; ``affine``: whether those norms have a scale and shift (IBN) or not (ISW)."""

    classifier_keys = ("final2.0.weight", "final2.0.bias", "dsn.4.weight", "dsn.4.bias")
    """State-dict entries whose first dimension is the class count (a checkpoint for another count is refused)."""

    def __init__(self, depth: int = 50, output_stride: int = 16, instance_stem: tuple[int, ...] = (),
                 instance_stages: tuple[int, ...] = (), affine: bool = True, num_classes: int = CITYSCAPES_CLASSES):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, not {output_stride}")
        blocks = DEPTHS[depth][1]
        deep_stem = depth == 101
        self.layer0 = _stem(deep_stem, instance_stem, affine)
        inplanes = 128 if deep_stem else 64
        for index, (planes, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), start=1):
            stage = _stage(inplanes, planes, blocks[index - 1], stride, index in instance_stages, affine)
            setattr(self, f"layer{index}", stage)
            inplanes = planes * 4
        if output_stride == 8:
            dilate_stage(self.layer3, 2, 2)
        dilate_stage(self.layer4, 32 // output_stride, 32 // output_stride)
        self.aspp = AtrousSpatialPyramidPooling(2048, tuple(r * 16 // output_stride for r in ASPP_RATES))
        self.bot_fine = _conv_bn_relu(256, 48, 1)
        self.bot_aspp = _conv_bn_relu(1280, 256, 1)
        self.final1 = nn.Sequential(*_conv_bn_relu(304, 256, 3), *_conv_bn_relu(256, 256, 3))
        self.final2 = nn.Sequential(nn.Conv2d(256, num_classes, 1))
        self.dsn = nn.Sequential(nn.Conv2d(1024, 512, 3, padding=1), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
                                 nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_level = self.layer1(self.layer0(x))
        deep = self.layer4(self.layer3(self.layer2(low_level)))
        coarse = _upsample(self.bot_aspp(self.aspp(deep)), low_level.shape[2:])
        decoded = self.final1(torch.cat([self.bot_fine(low_level), coarse], 1))
        return _upsample(self.final2(decoded), x.shape[2:])


def _drive_release() -> Weights:
    """RobustNet's trained models (GTA5- and Cityscapes-trained), linked from its README on Google Drive."""
    return Weights(url=None, source="RobustNet README (Google Drive)", license=ROBUSTNET_LICENSE,
                   tag="gdrive", how_to_get=f"RobustNet's README links them on Google Drive "
                   f"({ROBUSTNET_DRIVE}); download the file and pass --weights PATH")


ROBUSTNET = {"family": "robustnet", "license": ROBUSTNET_LICENSE, **SEGMENTATION}
R50_INSTANCE = {"depth": 50, "output_stride": 16, "instance_stem": (0,), "instance_stages": (1, 2)}
R101_INSTANCE = {"depth": 101, "output_stride": 8, "instance_stem": (0, 1), "instance_stages": (1, 2)}


@register_model(variant="none", weights=_drive_release(), **ROBUSTNET)
def robustnet_r50_os16_base(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's baseline: DeepLab-v3+ on ResNet-50, output stride 16 (``DeepR50V3PlusD``, --wt_layer 0 0 0 0 0 0
    0)."""
    return RobustNetDeepLabV3Plus(50, 16, **kwargs)


@register_model(variant="ibn", weights=_drive_release(), **ROBUSTNET)
def robustnet_r50_os16_ibn(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's IBN-Net: DeepLab-v3+ on ResNet-50, output stride 16, affine IN in the stem and after layer1's and
    layer2's last blocks (``DeepR50V3PlusD``, --wt_layer 0 0 4 4 4 0 0)."""
    return RobustNetDeepLabV3Plus(**R50_INSTANCE, affine=True, **kwargs)


@register_model(variant="isw", weights=_drive_release(), **ROBUSTNET)
def robustnet_r50_os16_isw(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's ISW: DeepLab-v3+ on ResNet-50, output stride 16, IN without affine in the stem and after layer1's
    and layer2's last blocks (``DeepR50V3PlusD``, --wt_layer 0 0 2 2 2 0 0)."""
    return RobustNetDeepLabV3Plus(**R50_INSTANCE, affine=False, **kwargs)


@register_model(variant="none", **ROBUSTNET)
def robustnet_r101_os8_base(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's baseline on ResNet-101 (deep stem), output stride 8 (``DeepR101V3PlusD_OS8``, --wt_layer 0 0 0 0 0
    0 0); its README reports results but links no weights: pass --weights PATH."""
    return RobustNetDeepLabV3Plus(101, 8, **kwargs)


@register_model(variant="ibn", **ROBUSTNET)
def robustnet_r101_os8_ibn(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's IBN-Net on ResNet-101 (deep stem), output stride 8: affine IN after the first two stem convolutions
    and layer1's and layer2's last blocks (``DeepR101V3PlusD_OS8``, --wt_layer 4 4 0 4 4 0 0); no linked weights."""
    return RobustNetDeepLabV3Plus(**R101_INSTANCE, affine=True, **kwargs)


@register_model(variant="isw", **ROBUSTNET)
def robustnet_r101_os8_isw(**kwargs) -> RobustNetDeepLabV3Plus:
    """RobustNet's ISW on ResNet-101 (deep stem), output stride 8: IN without affine after the first two stem
    convolutions and layer1's and layer2's last blocks (``DeepR101V3PlusD_OS8``, --wt_layer 2 2 0 2 2 0 0); no linked
    weights."""
    return RobustNetDeepLabV3Plus(**R101_INSTANCE, affine=False, **kwargs)

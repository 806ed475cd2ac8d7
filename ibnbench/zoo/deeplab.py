"""DeepLab segmentation models on ibnbench's ResNet-50, ResNet-50-IBN-a and ResNet-50-IBN-b (IBN-Net's
segmentation experiment: DeepLab on a ResNet-50 with atrous convolution, trained on Cityscapes or GTA5; no
weights are published), and what every segmentation model of the zoo shares: Cityscapes' 19 classes, the
preprocessing and the trade of a ResNet stage's stride for dilation.

The DeepLab head is torchvision's ``DeepLabHead`` (DeepLab-v3 ASPP at rates 12/24/36) on output stride 8 as
torchvision dilates it, so ``deeplab_r50`` has exactly the keys and the output of torchvision's
``deeplabv3_resnet50(num_classes=19, aux_loss=False)``; the IBN backbones keep the IBN-Net keys under ``backbone.``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ibnbench.zoo.meta import Preprocessing
from ibnbench.zoo.registry import register_model
from ibnbench.zoo.resnet_ibn import DEPTHS, IBN_A, IBN_B, IBN_LICENSE, ResNetIBN

CITYSCAPES_CLASSES = 19
"""Classes of a segmentation model: Cityscapes' 19 train ids, the label space every segmentation dataset maps to."""
SEGMENTATION_PREPROCESSING = Preprocessing(source="ImageNet mean/std on the whole image (resize and crop unused)")
"""RobustNet's (and torchvision's) input normalisation; a segmentation model sees the whole image at its size."""
DEEPLAB_LICENSE = f"BSD-3-Clause (torchvision DeepLabHead); {IBN_LICENSE}"


def dilate_stage(stage: nn.Sequential, dilation: int, first_dilation: int) -> None:
    """Trade a bottleneck stage's stride for dilation: every 3x3 convolution (``conv2``) gets stride 1 and dilation
    (and padding) ``dilation``, the first block's ``first_dilation``; the shortcut's 1x1 convolution stride 1."""
    for index, block in enumerate(stage):
        d = first_dilation if index == 0 else dilation
        block.conv2.stride, block.conv2.dilation, block.conv2.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class DeepLabV3(nn.Module):
    """DeepLab-v3 on an ibnbench ResNet (``backbone``, without its pooling and classifier) at output stride 8:
    layer3 dilated 2 and layer4 4 (each stage's first block keeping the dilation before it, as torchvision);
    logits upsampled bilinearly (``align_corners=False``) to the input's size."""

    classifier_keys = ("classifier.4.weight", "classifier.4.bias")
    """State-dict entries whose first dimension is the class count (a checkpoint for another count is refused)."""

    def __init__(self, backbone: ResNetIBN, num_classes: int = CITYSCAPES_CLASSES):
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        del backbone.avgpool, backbone.fc
        dilate_stage(backbone.layer3, 2, 1)
        dilate_stage(backbone.layer4, 4, 2)
        self.backbone = backbone
        self.classifier = DeepLabHead(backbone.inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _deeplab(ibn_cfg: tuple[str | None, ...], **kwargs) -> DeepLabV3:
    block, layers = DEPTHS[50]
    return DeepLabV3(ResNetIBN(block, layers, ibn_cfg), **kwargs)


SEGMENTATION = {"task": "segmentation", "num_classes": CITYSCAPES_CLASSES, "preprocessing": SEGMENTATION_PREPROCESSING}


@register_model(family="deeplab", variant="none", license=DEEPLAB_LICENSE, **SEGMENTATION)
def deeplab_r50(**kwargs) -> DeepLabV3:
    """DeepLab-v3 on ResNet-50 with atrous convolution (output stride 8), IBN-Net's segmentation baseline; no
    published weights: pass --weights PATH."""
    return _deeplab((None,) * 4, **kwargs)


@register_model(family="deeplab", variant="ibn-a", license=DEEPLAB_LICENSE, **SEGMENTATION)
def deeplab_r50_ibn_a(**kwargs) -> DeepLabV3:
    """DeepLab-v3 on ResNet-50-IBN-a with atrous convolution (output stride 8); no published weights: pass
    --weights PATH."""
    return _deeplab(IBN_A, **kwargs)


@register_model(family="deeplab", variant="ibn-b", license=DEEPLAB_LICENSE, **SEGMENTATION)
def deeplab_r50_ibn_b(**kwargs) -> DeepLabV3:
    """DeepLab-v3 on ResNet-50-IBN-b with atrous convolution (output stride 8); no published weights: pass
    --weights PATH."""
    return _deeplab(IBN_B, **kwargs)

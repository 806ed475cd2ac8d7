"""RobustNet's DeepLab-v3+ forward, transcribed here as plain functional torch from our reading of
shachoi/RobustNet (``network/deepv3.py`` ``DeepV3Plus.forward`` and its ASPP; ``network/Resnet.py``
``Bottleneck.forward``; ``mynn.Upsample``: bilinear, align_corners=True; ``Norm2d``: batch norm, eps 1e-5), run on
the state_dict of our model and compared with our model's logits in float64, so that any difference of order,
placement or parameters shows.

Where the transcription says what RobustNet does: the stem (7x7, or three 3x3 for ResNet-101), its norm (an instance
norm where --wt_layer names it), ReLU, max-pool; each bottleneck conv1-bn1-relu, conv2 (the stride, the dilation) -
bn2-relu, conv3-bn3, plus the shortcut, then the instance norm (last block of layer1 and layer2 only), then ReLU; the
ASPP's image pooling concatenated FIRST, then the 1x1 and the three dilated 3x3 branches; ``bot_aspp``, upsampled to
layer1's size, concatenated AFTER ``bot_fine`` of layer1's output; ``final1``, ``final2``, upsampled to the input.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ibnbench

# name: (blocks per stage, strides of the stages, dilation of the stages, ASPP rates, stem norms replaced by an
# instance norm, whether the instance norms exist) -- DeepR50V3PlusD is variant D16, DeepR101V3PlusD_OS8 variant D.
R50_OS16 = ((3, 4, 6, 3), (1, 2, 2, 1), (1, 1, 1, 2), (6, 12, 18))
R101_OS8 = ((3, 4, 23, 3), (1, 2, 1, 1), (1, 1, 2, 4), (12, 24, 36))
MODELS = {
    "robustnet_r50_os16_base": (*R50_OS16, (), False),
    "robustnet_r50_os16_ibn": (*R50_OS16, (0,), True),
    "robustnet_r50_os16_isw": (*R50_OS16, (0,), True),
    "robustnet_r101_os8_base": (*R101_OS8, (), False),
    "robustnet_r101_os8_ibn": (*R101_OS8, (0, 1), True),
    "robustnet_r101_os8_isw": (*R101_OS8, (0, 1), True),
}


def _conv(x, s, key, stride=1, dilation=1):
    weight = s[f"{key}.weight"]
    return F.conv2d(x, weight, s.get(f"{key}.bias"), stride, dilation * (weight.shape[-1] // 2), dilation)


def _bn(x, s, key):
    return F.batch_norm(x, s[f"{key}.running_mean"], s[f"{key}.running_var"], s[f"{key}.weight"], s[f"{key}.bias"],
                        training=False, eps=1e-5)


def _in(x, s, key):
    """nn.InstanceNorm2d: affine (IBN, keys present) or not (ISW's InstanceWhitening, no keys)."""
    return F.instance_norm(x, weight=s.get(f"{key}.weight"), bias=s.get(f"{key}.bias"), eps=1e-5)


def _conv_bn_relu(x, s, key, conv_index=0, dilation=1):
    return F.relu(_bn(_conv(x, s, f"{key}.{conv_index}", dilation=dilation), s, f"{key}.{conv_index + 1}"))


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _stem(x, s, instance_at):
    convs = 3 if "layer0.3.weight" in s else 1  # ResNet-101's deep stem: conv, norm, ReLU three times
    for i in range(convs):
        x = _conv(x, s, f"layer0.{3 * i}", stride=2 if i == 0 else 1)
        x = F.relu(_in(x, s, f"layer0.{3 * i + 1}") if i in instance_at else _bn(x, s, f"layer0.{3 * i + 1}"))
    return F.max_pool2d(x, 3, 2, 1)


def _bottleneck(x, s, key, stride, dilation, instance):
    out = F.relu(_bn(_conv(x, s, f"{key}.conv1"), s, f"{key}.bn1"))
    out = F.relu(_bn(_conv(out, s, f"{key}.conv2", stride, dilation), s, f"{key}.bn2"))
    out = _bn(_conv(out, s, f"{key}.conv3"), s, f"{key}.bn3")
    shortcut = x
    if f"{key}.downsample.0.weight" in s:
        shortcut = _bn(_conv(x, s, f"{key}.downsample.0", stride), s, f"{key}.downsample.1")
    out = out + shortcut
    return F.relu(_in(out, s, f"{key}.instance_norm_layer") if instance else out)


def robustnet_forward(x, s, name):
    """Logits of RobustNet's DeepV3Plus (eval) for the state_dict ``s`` of model ``name``."""
    blocks, strides, dilations, rates, instance_stem, instance = MODELS[name]
    features = _stem(x, s, instance_stem)
    stage_outputs = []
    for stage, (count, stride, dilation) in enumerate(zip(blocks, strides, dilations), start=1):
        for i in range(count):
            last_with_in = instance and stage in (1, 2) and i == count - 1
            features = _bottleneck(features, s, f"layer{stage}.{i}", stride if i == 0 else 1, dilation, last_with_in)
        stage_outputs.append(features)
    low_level, deep = stage_outputs[0], stage_outputs[3]
    pooled = _conv_bn_relu(F.adaptive_avg_pool2d(deep, 1), s, "aspp.img_conv")
    branches = [_conv_bn_relu(deep, s, f"aspp.features.{i}", dilation=r) for i, r in enumerate((1, *rates))]
    aspp = torch.cat([_up(pooled, deep.shape[2:]), *branches], 1)
    coarse = _up(_conv_bn_relu(aspp, s, "bot_aspp"), low_level.shape[2:])
    decoded = torch.cat([_conv_bn_relu(low_level, s, "bot_fine"), coarse], 1)
    decoded = _conv_bn_relu(_conv_bn_relu(decoded, s, "final1"), s, "final1", conv_index=3)
    return _up(_conv(decoded, s, "final2.0"), x.shape[2:])


def calibrated(name: str) -> nn.Module:
    """``name`` in float64 with random weights and batch norm statistics of its own activations (as training leaves
    them: consistent, so that deep features reach the logits), in eval mode."""
    with torch.device("meta"):  # no initialisation to pay for: every entry is filled below
        model = ibnbench.create_model(name)
    model = model.to_empty(device="cpu").double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                value.zero_()
            elif value.dim() > 1:  # convolutions: He-normal, so that activations keep their scale
                value.copy_(torch.randn(value.shape, generator=g).mul_((2 / value[0].numel()) ** 0.5))
            elif key.endswith("weight"):  # norm scales around 1, shifts around 0
                value.copy_(torch.rand(value.shape, generator=g).add_(0.5))
            else:
                value.copy_(torch.randn(value.shape, generator=g).mul_(0.1))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # the plain average over the calibration batch
        model.train()(torch.randn(2, 3, 48, 64, generator=g, dtype=torch.float64))
    return model.eval()


SIZES = {"r50": [(64, 128), (97, 131)], "r101": [(41, 57)]}


@pytest.mark.parametrize("name", [*(n for n in MODELS if "r50" in n), "robustnet_r101_os8_ibn"])
def test_logits_are_robustnets_forward_on_the_same_weights(name):
    """Our logits equal the transcription's at an even and an odd size (ResNet-101 OS8: an odd size only, and only
    IBN, whose stem and stages are those of the other two, to stay fast); the auxiliary ``dsn`` head never runs at
    evaluation."""
    model = calibrated(name)
    model.dsn.register_forward_hook(lambda *_: pytest.fail("dsn ran at evaluation"))
    state = model.state_dict()
    for size in SIZES[name.split("_")[1]]:
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.inference_mode():
            ours, reference = model(x), robustnet_forward(x, state, name)
        assert ours.shape == (1, 19, *size)
        assert reference.std() > 0.5  # deep features reach the logits: a wrong layer would move them
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-9 * float(reference.abs().max()))

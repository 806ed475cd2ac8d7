"""ResNeXt / SE-ResNet / DenseNet-IBN-a and the research variants against straightforward references.

The references below follow the official IBN-Net code's computation (split, IN, BN, concatenate; SE
before the addition; dense concatenation) in plain torch.nn. They share no code with ibnbench: the
same deterministic state_dict is loaded into both and the logits must agree. Global average pooling
stands in for the official ``AvgPool2d(7)``, its equal at 224x224, so small inputs keep tests fast.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import OrderedDict

import pytest
import torch
from torch import nn

import ibnbench
from ibnbench.cli import main as cli_main
from ibnbench.zoo.layers import IBN, InstanceNorm
from ibnbench.zoo.variants import ConcatIBN, PartialInstanceNorm


class RefIBN(nn.Module):
    """ResNet-family IBN: IN on the first ``int(planes * ratio)`` channels, BN on the rest."""

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), 1)


class RefBNIN(nn.Module):
    """DenseNet-family IBN: BN on the first ``int(planes * 0.6)`` channels, IN on the rest."""

    def __init__(self, planes: int):
        super().__init__()
        self.half = int(planes * 0.6)
        self.BN = nn.BatchNorm2d(self.half)
        self.IN = nn.InstanceNorm2d(planes - self.half, affine=True)

    def forward(self, x):
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        return torch.cat((self.BN(first.contiguous()), self.IN(rest.contiguous())), 1)


class RefSE(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        gate = self.fc(self.avg_pool(x).view(x.shape[0], -1))
        return x * gate.view(x.shape[0], -1, 1, 1)


class RefBlock(nn.Module):
    """ResNeXt (``cardinality`` > 1) or SE-ResNet (``se``) bottleneck, IBN-a at bn1 when ``ibn``."""

    def __init__(self, inplanes, planes, stride, downsample, ibn, cardinality=1, se=False):
        super().__init__()
        width = math.floor(planes * 4 / 64) * cardinality if cardinality > 1 else planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = RefIBN(width) if ibn else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.se = RefSE(planes * 4) if se else None
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class RefResNet(nn.Module):
    def __init__(self, layers, cardinality=1, se=False, pool_name="maxpool"):
        super().__init__()
        self.pool_name = pool_name
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        setattr(self, pool_name, nn.MaxPool2d(3, 2, 1))
        inplanes = 64
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if stage == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * 4))
            stage_blocks = []
            for i in range(blocks):
                stage_blocks.append(RefBlock(inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None,
                                             ibn=stage < 3, cardinality=cardinality, se=se))
                inplanes = planes * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = getattr(self, self.pool_name)(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


class RefDenseLayer(nn.Sequential):
    def __init__(self, channels, growth, ibn):
        super().__init__()
        self.norm1 = RefBNIN(channels) if ibn else nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat((x, super().forward(x)), 1)


class RefDenseNet(nn.Module):
    def __init__(self, init_features, growth, blocks):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init_features))
        self.features.add_module("relu0", nn.ReLU())
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        channels = init_features
        for b, n_layers in enumerate(blocks):
            block = nn.Sequential()
            for i in range(n_layers):
                block.add_module(f"denselayer{i + 1}", RefDenseLayer(channels, growth, ibn=b < 3 and i % 3 == 0))
                channels += growth
            self.features.add_module(f"denseblock{b + 1}", block)
            if b < len(blocks) - 1:
                transition = OrderedDict(norm=nn.BatchNorm2d(channels), relu=nn.ReLU(),
                                         conv=nn.Conv2d(channels, channels // 2, 1, bias=False), pool=nn.AvgPool2d(2,
                                                                                                                   2))
                self.features.add_module(f"transition{b + 1}", nn.Sequential(transition))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, 1000)

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)).mean((2, 3)))


REFERENCES = {
    "resnext50_ibn_a": lambda: RefResNet((3, 4, 6, 3), cardinality=32, pool_name="maxpool1"),
    "resnext101_ibn_a": lambda: RefResNet((3, 4, 23, 3), cardinality=32, pool_name="maxpool1"),
    "resnext152_ibn_a": lambda: RefResNet((3, 8, 36, 3), cardinality=32, pool_name="maxpool1"),
    "se_resnet50_ibn_a": lambda: RefResNet((3, 4, 6, 3), se=True),
    "se_resnet101_ibn_a": lambda: RefResNet((3, 4, 23, 3), se=True),
    "se_resnet152_ibn_a": lambda: RefResNet((3, 8, 36, 3), se=True),
    "densenet121_ibn_a": lambda: RefDenseNet(64, 32, (6, 12, 24, 16)),
    "densenet169_ibn_a": lambda: RefDenseNet(64, 32, (6, 12, 32, 32)),
    "densenet201_ibn_a": lambda: RefDenseNet(64, 32, (6, 12, 48, 32)),
    "densenet161_ibn_a": lambda: RefDenseNet(96, 48, (6, 12, 36, 24)),
}
FORWARD_CHECKED = ["resnext50_ibn_a", "resnext101_ibn_a", "se_resnet50_ibn_a", "se_resnet101_ibn_a",
                   "densenet121_ibn_a", "densenet169_ibn_a"]


def deterministic_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every state_dict entry drawn from a generator seeded by its key (BN statistics kept plausible).

    Residual branches end in a small ``bn3`` scale: with unit scales the activations of a 101-layer
    network grow a hundredfold and float32 rounding is amplified chaotically (up to 4% of the logits
    between float32 and float64 runs of the reference itself), which would hide nothing but test noise.
    """
    state = {}
    for key, value in model.state_dict().items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = value.shape
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            state[key] = (0.2 if key.endswith("bn3.weight") else 1) * (1 + 0.1 * torch.randn(shape, generator=gen))
        else:
            state[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / shape[1:].numel())
    return state


def keys_and_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_keys_shapes_and_order_match_reference(name):
    with torch.device("meta"):
        ours, reference = ibnbench.zoo.model_info(name).builder(), REFERENCES[name]()
    assert keys_and_shapes(ours) == keys_and_shapes(reference)


@pytest.mark.parametrize("name", FORWARD_CHECKED)
def test_logits_match_reference(name):
    reference = REFERENCES[name]().eval()
    state = deterministic_state(reference)
    reference.load_state_dict(state, strict=True)
    ours = ibnbench.create_model(name)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
        got_channels_last = ours.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    for logits in (got, got_channels_last):
        assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()
        assert logits.topk(5, dim=1).indices.tolist() == expected.topk(5, dim=1).indices.tolist()


def test_resnext_key_patterns():
    with torch.device("meta"):
        model = ibnbench.zoo.model_info("resnext101_ibn_a").builder()
    state = model.state_dict()
    assert state["layer1.0.bn1.IN.weight"].shape == (64,) and state["layer1.0.bn1.BN.weight"].shape == (64,)
    assert state["layer3.22.bn1.IN.weight"].shape == (256,)  # D*C = 16*32 = 512 channels, half IN
    assert state["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)  # grouped 3x3: 32 groups of 4
    assert state["layer2.0.conv2.weight"].shape == (256, 8, 3, 3)
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert state["fc.weight"].shape == (1000, 2048)
    assert not any(k.startswith("layer4") and ".IN." in k for k in state)
    assert not any(re.fullmatch(r"layer\d\.\d+\.IN\.weight", k) for k in state)  # no IN after the addition
    assert isinstance(model.bn1, nn.BatchNorm2d)
    assert "maxpool1" in dict(model.named_children()) and "maxpool" not in dict(model.named_children())
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert "layer1.0.downsample.1.running_var" in state


def test_se_resnet_key_patterns():
    with torch.device("meta"):
        model = ibnbench.zoo.model_info("se_resnet101_ibn_a").builder()
    state = model.state_dict()
    assert state["layer1.0.se.fc.0.weight"].shape == (16, 256)
    assert state["layer4.2.se.fc.2.weight"].shape == (2048, 128)
    assert not any(".se." in k and k.endswith("bias") for k in state)
    assert all(isinstance(block.bn1, IBN) for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    assert all(isinstance(block.bn1, nn.BatchNorm2d) for block in model.layer4)
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.layer2[0].conv2.stride == (2, 2)


def test_se_is_applied_before_the_addition():
    block = ibnbench.create_model("se_resnet50_ibn_a").layer1[1]
    seen = {}
    block.se.register_forward_hook(lambda module, args, out: seen.update(se_out=out.clone()))  # returns None
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert torch.allclose(out, torch.relu(seen["se_out"] + x))


def test_densenet_key_patterns():
    with torch.device("meta"):
        model = ibnbench.zoo.model_info("densenet121_ibn_a").builder()
    state = model.state_dict()
    assert state["features.denseblock1.denselayer1.norm1.BN.weight"].shape == (38,)  # int(64 * 0.6)
    assert state["features.denseblock1.denselayer1.norm1.IN.weight"].shape == (26,)
    assert state["features.denseblock3.denselayer22.norm1.BN.weight"].shape == (int((256 + 21 * 32) * 0.6),)
    assert "features.denseblock1.denselayer2.norm1.weight" in state
    assert not any(k.startswith("features.denseblock4") and ".IN." in k for k in state)
    assert state["features.transition1.conv.weight"].shape == (128, 256, 1, 1)
    assert state["features.norm5.weight"].shape == (1024,) and state["classifier.weight"].shape == (1000, 1024)
    ibn_layers = [n for n, m in model.named_modules() if isinstance(m, IBN)]
    assert ibn_layers[:3] == [f"features.denseblock1.denselayer{i}.norm1" for i in (1, 4)] + [
        "features.denseblock2.denselayer1.norm1"]
    assert len(ibn_layers) == 2 + 4 + 8


def test_densenet_accepts_legacy_dotted_keys():
    from ibnbench.zoo.weights import load_state_dict_strict

    model = ibnbench.create_model("densenet121_ibn_a")
    state = deterministic_state(model)
    legacy = {k.replace("layer1.norm1.", "layer1.norm.1.").replace("layer1.conv2.", "layer1.conv.2."): v
              for k, v in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.BN.weight" in legacy
    load_state_dict_strict(model, legacy, "densenet121_ibn_a")
    assert torch.equal(model.features.denseblock1.denselayer1.conv2.weight,
                       state["features.denseblock1.denselayer1.conv2.weight"])


# --- research variants -------------------------------------------------------------------------------

def stage_blocks(model, stages=(1, 2, 3, 4)):
    return [(s, i, block) for s in stages for i, block in enumerate(getattr(model, f"layer{s}"))]


def test_ibn_c_concatenates_in_and_bn_at_bn1_of_stages_1_to_3():
    model = ibnbench.create_model("resnet50_ibn_c")
    for stage, _, block in stage_blocks(model):
        planes = block.conv1.out_channels
        if stage < 4:
            assert isinstance(block.bn1, ConcatIBN) and block.bn1.IN.num_features == block.bn1.BN.num_features == planes
            assert block.conv2.in_channels == 2 * planes
        else:
            assert isinstance(block.bn1, nn.BatchNorm2d) and block.conv2.in_channels == planes
        assert block.IN is None
    x = torch.randn(2, 64, 8, 8)
    out = model.layer1[0].bn1.eval()(x)
    assert torch.allclose(out[:, :64], torch.nn.functional.instance_norm(x), atol=1e-5)
    assert torch.allclose(out[:, 64:], x / (1 + 1e-5) ** 0.5, atol=1e-5)  # fresh BN: identity statistics


def test_ibn_d_puts_half_in_after_the_last_block_of_stages_1_and_2():
    model = ibnbench.create_model("resnet50_ibn_d")
    assert isinstance(model.bn1, IBN) and model.bn1.n_in == 32
    for stage, i, block in stage_blocks(model):
        assert isinstance(block.bn1, nn.BatchNorm2d)
        last = i == len(getattr(model, f"layer{stage}")) - 1
        if stage < 3 and last:
            assert isinstance(block.IN, PartialInstanceNorm) and block.IN.num_features == block.bn3.num_features // 2
        else:
            assert block.IN is None
    norm = model.layer1[2].IN
    x = torch.randn(2, 256, 6, 6)
    out = norm(x)
    assert torch.equal(out[:, 128:], x[:, 128:])
    assert torch.allclose(out[:, :128].mean((2, 3)), norm.bias.expand(2, -1), atol=1e-5)


def test_ibn_ad_combines_ibn_a_and_ibn_d():
    model = ibnbench.create_model("resnet50_ibn_ad")
    assert isinstance(model.bn1, IBN)
    for stage, i, block in stage_blocks(model):
        assert isinstance(block.bn1, IBN) == (stage < 4)
        last = i == len(getattr(model, f"layer{stage}")) - 1
        assert isinstance(block.IN, PartialInstanceNorm) == (stage < 3 and last)


def test_ibn_a_x2_has_ibn_at_bn1_and_bn2_of_stages_1_to_3():
    model = ibnbench.create_model("resnet50_ibn_a_x2")
    assert isinstance(model.bn1, nn.BatchNorm2d)
    for stage, _, block in stage_blocks(model):
        assert isinstance(block.bn1, IBN) == isinstance(block.bn2, IBN) == (stage < 4)
        assert isinstance(block.bn3, nn.BatchNorm2d) and block.IN is None


@pytest.mark.parametrize("ratio", [0.25, 0.75, 1.0])
def test_ratio_variants_set_the_share_of_in_channels(ratio):
    name = f"resnet50_ibn_a_ratio{ratio}"
    model = ibnbench.create_model(name)
    first = model.layer1[0].bn1
    if ratio < 1:
        assert isinstance(first, IBN) and first.n_in == int(64 * ratio)
    else:
        assert type(first) is InstanceNorm and first.num_features == 64
    assert isinstance(model.layer4[0].bn1, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["resnet50_ibn_c", "resnet50_ibn_d", "resnet50_ibn_ad", "resnet50_ibn_a_x2",
                                  "resnet50_ibn_a_ratio1.0"])
def test_variants_forward_train_and_eval_and_have_no_weights(name):
    model = ibnbench.create_model(name)
    x = torch.randn(2, 3, 32, 32)
    model.train()(x).sum().backward()
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 1000)
    info = ibnbench.model_info(name)
    assert info.research and info.weights is None
    with pytest.raises(ibnbench.WeightsError, match="no released weights"):
        ibnbench.create_model(name, weights="official")


@pytest.mark.parametrize("stages", ["1", "12", "1234"])
def test_stage_variants_carry_ibn_in_the_named_stages(stages):
    with torch.device("meta"):
        model = ibnbench.zoo.model_info(f"resnet50_ibn_a_stages{stages}").builder()
    for stage, _, block in stage_blocks(model):
        assert isinstance(block.bn1, IBN) == (str(stage) in stages)


def test_ratio_and_stages_are_constructor_options():
    model = ibnbench.create_model("resnet50_ibn_ad", ibn_cfg=("a&d", "a", None, None), ibn_ratio=0.25)
    assert model.bn1.n_in == 16 and model.layer1[0].bn1.n_in == 16 and model.layer2[3].bn1.n_in == 32
    assert model.layer1[-1].IN.num_features == 64 and model.layer2[-1].IN is None
    assert isinstance(model.layer3[0].bn1, nn.BatchNorm2d)
    model = ibnbench.create_model("resnet50_ibn_c", ibn_cfg=("c", None, None, None))
    assert isinstance(model.layer1[0].bn1, ConcatIBN) and isinstance(model.layer2[0].bn1, nn.BatchNorm2d)


def test_variants_reject_ibn_b_stages():
    with pytest.raises(ValueError, match="resnet50_ibn_b"):
        ibnbench.create_model("resnet50_ibn_c", ibn_cfg=("b", None, None, None))


def test_cli_models_lists_every_family(capsys):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ibnbench.list_models(task=None, releases=True):
        assert f"\n{name} " in out
    for family in ("resnext", "se-resnet", "densenet", "efficientnet"):
        assert f" {family} " in out
    assert "20.88/5.42" in out and "research (none)" in out


def test_cli_models_lists_each_resnet50_release_with_its_own_preprocessing_and_error(capsys):
    assert cli_main(["models", "resnet50"]) == 0  # the architecture's name matches all its releases
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"resnet50.tv_in1k", "resnet50.tv2_in1k"}
    assert "official, default" in rows["resnet50.tv_in1k"] and "default" not in rows["resnet50.tv2_in1k"]
    assert "256/224 bilinear" in rows["resnet50.tv_in1k"] and "23.87/7.14" in rows["resnet50.tv_in1k"]
    assert "232/224 bilinear" in rows["resnet50.tv2_in1k"] and "19.14/4.57" in rows["resnet50.tv2_in1k"]


REDUCED_PRECISION_ULPS = 1
"""Fused eval IBN/IN in bf16 or fp16 against ``nn.InstanceNorm2d``/``nn.BatchNorm2d`` in float32 on the same
(rounded) input: within one of the dtype's epsilons, relative to 1 + |expected| (measured on CPU: 0.37, as torch's
own instance norm in that dtype; the output's rounding alone is up to 0.5). Activations far from zero (mean 20
here, std 3) are the hard case: a shift rounded to the input's precision missed by 17 epsilons."""


def _randomised(module: nn.Module, generator: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, (nn.BatchNorm2d, nn.InstanceNorm2d)) and norm.weight is not None:
                norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 1.5 + 0.5)
                norm.bias.copy_(torch.rand(norm.bias.shape, generator=generator) * 2 - 1)
            if isinstance(norm, nn.BatchNorm2d):
                norm.running_mean.copy_(torch.rand(norm.running_mean.shape, generator=generator) * 4 - 2)
                norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) * 3.5 + 0.5)
    return module.eval()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("layer", ["ibn-a", "ibn-densenet", "in"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_eval_norms_in_reduced_precision_match_torchs(device, dtype, layer, layout):
    generator = torch.Generator().manual_seed(0)
    module = _randomised(InstanceNorm(64, affine=True) if layer == "in" else IBN(64, in_first=layer == "ibn-a"),
                         generator)
    x = (torch.randn(4, 64, 14, 14, generator=generator) * 3 + 20).to(dtype)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x.to(memory_format=memory_format)
    reference = nn.InstanceNorm2d(64, affine=True) if layer == "in" else None
    with torch.no_grad():
        if layer == "in":
            reference.load_state_dict(module.state_dict())
            expected = reference.eval()(x.float())
        else:
            in_part, bn_part = module._slices(x.float())
            parts = (module.IN(in_part), module.BN(bn_part))
            expected = torch.cat(parts if module.in_first else parts[::-1], 1)
        out = module.to(device)(x.to(device)).cpu()
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    error = ((out.float() - expected).abs() / (1 + expected.abs())).max().item()
    assert error <= REDUCED_PRECISION_ULPS * torch.finfo(dtype).eps


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_float64_models_compute_instance_norm_statistics_in_float64(layout):
    """A ``.double()`` model normalises in float64: with a large common offset, float32 statistics would be off
    by ~1e-5 relative; float64 ones agree with PyTorch's own float64 instance/batch norm to ~1e-12."""
    generator = torch.Generator().manual_seed(0)
    x = 1000.0 + torch.randn(2, 64, 9, 9, generator=generator, dtype=torch.float64)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    ibn = IBN(64).double().eval()
    norm = InstanceNorm(64, affine=True).double().eval()
    with torch.no_grad():
        for module in (ibn, norm):
            for p in [*module.parameters(), *module.buffers()]:
                if p.is_floating_point():
                    p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64) + 0.5)
        expected_in = nn.functional.instance_norm(x[:, :32].contiguous(), weight=ibn.IN.weight, bias=ibn.IN.bias)
        expected_bn = nn.functional.batch_norm(x[:, 32:].contiguous(), ibn.BN.running_mean, ibn.BN.running_var,
                                               ibn.BN.weight, ibn.BN.bias, False, 0.0, ibn.BN.eps)
        out = ibn(x.clone())
        assert out.dtype == torch.float64
        assert (out - torch.cat((expected_in, expected_bn), 1)).abs().max() < 1e-9
        expected = nn.functional.instance_norm(x.contiguous(), weight=norm.weight, bias=norm.bias)
        assert (norm(x.clone()) - expected).abs().max() < 1e-9

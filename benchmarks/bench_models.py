"""CPU forward of ResNet-50 and its IBN-a / IBN-b versions, and the IBN layer's fast path vs the reference.

Settings: eval, ``torch.no_grad``, channels_last, batch 16 at 224x224, 2 threads. Compare the groups with
``pytest benchmarks --benchmark-only``; with ``--benchmark-disable`` every function runs once, still checked.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ibnbench
from ibnbench.zoo.layers import IBN


def reference_ibn_forward(layer: IBN, x: torch.Tensor) -> torch.Tensor:
    """The official split/normalise/concatenate computation (IBN-Net's IBN.forward), as the reference."""
    x_in, x_bn = layer._slices(x)
    out_in = F.instance_norm(x_in.contiguous(), weight=layer.IN.weight, bias=layer.IN.bias, eps=layer.IN.eps)
    out_bn = F.batch_norm(x_bn.contiguous(), layer.BN.running_mean, layer.BN.running_var,
                          layer.BN.weight, layer.BN.bias, False, 0.0, layer.BN.eps)
    return torch.cat((out_in, out_bn) if layer.in_first else (out_bn, out_in), 1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(
        memory_format=torch.channels_last)


@pytest.mark.benchmark(group="forward resnet50 cpu")
@pytest.mark.parametrize("name", ["resnet50", "resnet50_ibn_a", "resnet50_ibn_b"])
def test_forward(benchmark, name, images):
    model = ibnbench.create_model(name).to(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = benchmark(model, images)
    assert logits.shape == (16, 1000) and torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def ibn_layer_and_input() -> tuple[IBN, torch.Tensor]:
    """The first IBN layer of ResNet-50-IBN-a (64 channels at 56x56), with non-trivial BN statistics."""
    gen = torch.Generator().manual_seed(1)
    layer = IBN(64).eval()
    with torch.no_grad():
        for tensor in (layer.IN.weight, layer.IN.bias, layer.BN.weight, layer.BN.bias, layer.BN.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
        layer.BN.running_var.copy_(0.5 + torch.rand(layer.BN.running_var.shape, generator=gen))
    x = torch.randn(16, 64, 56, 56, generator=gen).to(memory_format=torch.channels_last)
    return layer, x


@pytest.mark.benchmark(group="ibn layer 16x64x56x56 cpu")
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_ibn_layer(benchmark, path, ibn_layer_and_input):
    layer, x = ibn_layer_and_input
    forward = layer if path == "fast" else (lambda inp: reference_ibn_forward(layer, inp))
    with torch.no_grad():
        out = benchmark(forward, x)
        expected = reference_ibn_forward(layer, x)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.benchmark(group="forward resnet50 cuda bf16 channels_last")
@pytest.mark.parametrize("name", ["resnet50", "resnet50_ibn_a", "resnet50_ibn_b"])
def test_forward_cuda_bf16(benchmark, name):
    """GPU throughput as the engine runs it (bf16 autocast, channels_last, batch 256), timed with a sync."""
    model = ibnbench.create_model(name).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(256, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        torch.cuda.synchronize()
        return out

    forward()
    logits = benchmark(forward)
    assert logits.shape == (256, 1000) and torch.isfinite(logits.float()).all()

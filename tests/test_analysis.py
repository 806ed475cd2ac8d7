"""Feature divergence: the Gaussian KL, identical domains, and the IN-stem mechanism."""
from __future__ import annotations

import math

import pytest
import torch

import ibnbench
from ibnbench.analysis import collect, default_layers, gaussian_kl, layer_divergence, symmetric_kl


def test_gaussian_kl_closed_form():
    # KL(N(0,1) || N(1,2^2)) = log 2 + (1 + 1) / 8 - 1/2
    value = gaussian_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0))
    assert float(value) == pytest.approx(math.log(2) + 2 / 8 - 0.5)
    # the paper's printed form (mu_B^2, inverted log) would give a different, wrong number here
    assert float(value) != pytest.approx(math.log(1 / 2) + (1 + 1) / 8 - 0.5)
    sym = symmetric_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0))
    assert float(sym) == pytest.approx(math.log(2) + 2 / 8 - 0.5 + math.log(0.5) + (4 + 1) / 2 - 0.5)
    assert float(symmetric_kl(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(3.0), torch.tensor(0.5))) == 0.0


def test_default_layers_of_resnet50_are_the_17_main_path_relus():
    layers = default_layers(ibnbench.create_model("resnet50"))
    assert len(layers) == 17
    assert layers[0] == "relu" and layers[1] == "layer1.0" and layers[-1] == "layer4.2"


def _batches(seed: int, shift: float = 0.0, n: int = 3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield (torch.rand(4, 3, 64, 64, generator=g) * 255 + shift - 120.0) / 60.0


def test_identical_domains_give_zero():
    model = ibnbench.create_model("resnet18")
    layers = default_layers(model)
    a = collect(model, _batches(0), layers)
    b = collect(model, _batches(0), layers)
    assert all(entry["divergence"] == pytest.approx(0.0, abs=1e-9) for entry in layer_divergence(a, b, layers))


def test_in_stem_cancels_brightness_shift():
    """Unclipped rgb+50 on random weights: IBN-b's stem (IN) all but removes the shift, ResNet's (BN) does not."""
    first = {}
    for name in ("resnet50", "resnet50_ibn_b"):
        torch.manual_seed(0)
        model = ibnbench.create_model(name)
        with torch.no_grad():  # non-trivial BN statistics, as a trained model has
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0)
                    m.running_mean.normal_(0, 0.1)
        a = collect(model, _batches(1), ["relu"])
        b = collect(model, _batches(1, shift=50.0), ["relu"])
        first[name] = layer_divergence(a, b, ["relu"])[0]["divergence"]
    assert first["resnet50_ibn_b"] < 0.05 * first["resnet50"]

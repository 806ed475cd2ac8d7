"""Feature divergence: the Gaussian KL, identical domains, and the IN-stem mechanism."""
from __future__ import annotations

import json
import math

import pytest
import torch

import ibnbench
from ibnbench.cli import main
from ibnbench.tools.divergence import (
    ChannelMeanStats,
    channel_divergence,
    collect,
    default_layers,
    gaussian_kl,
    layer_divergence,
    symmetric_kl,
)


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


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_degenerate_channels_are_finite_and_documented():
    """Channel 0 varies in both domains, 1 is dead in both (0), 2 is dead in A only, 3 is constant in both
    at different values: 2 and 3 have infinite KL and are excluded, never inf/nan in the layer's mean."""
    def t(*values):
        return torch.tensor(values, dtype=torch.float64)

    per_channel = channel_divergence(t(0, 0, 0, 1), t(1, 0, 0, 0), t(1, 0, 0.5, 2), t(2, 0, 0.3, 0))
    expected = float(symmetric_kl(t(0), t(1), t(1), t(2)))
    assert per_channel[0].item() == pytest.approx(expected)
    assert per_channel[1].item() == 0.0
    assert per_channel[2:].isnan().all()

    # the same four kinds of channel from features: the layer's mean is over channels 0 and 1 only
    a, b = ChannelMeanStats(), ChannelMeanStats()
    a.add("x", torch.tensor([[0.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 1.0]]))  # mu 1, s 1 | dead | dead | 1
    b.add("x", torch.tensor([[1.0, 0.0, 0.2, 2.0], [3.0, 0.0, 0.8, 2.0]]))  # mu 2, s 1 | dead | varies | 2
    a.count = b.count = 2
    (entry,) = layer_divergence(a, b, ["x"])
    assert entry["channels"] == 4 and entry["excluded"] == 2
    assert entry["divergence"] == pytest.approx((1.0 + 0.0) / 2)  # equal s, |mu_A - mu_B| = s: sym. KL 1


def test_instance_norm_output_is_constant_not_noise():
    """An IN output's spatial mean is its bias up to float32 rounding: zero divergence between any domains,
    no channel excluded (a fixed 1e-8 floor on s would turn the rounding noise into a huge KL)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.InstanceNorm2d(8, affine=True))
    with torch.no_grad():
        model[1].bias.uniform_(-3.0, 3.0)
    a = collect(model, _batches(0), ["1"])
    b = collect(model, _batches(5, shift=80.0), ["1"])
    (entry,) = layer_divergence(a, b, ["1"])
    assert entry == {"name": "1", "divergence": 0.0, "channels": 8, "excluded": 0}


def test_default_layers_of_other_architectures():
    assert default_layers(ibnbench.create_model("timm:resnet18"))[:2] == ["act1", "layer1.0"]
    densenet = default_layers(ibnbench.create_model("densenet121_ibn_a"))
    assert densenet[0] == "features.relu0" and "features.denseblock4" in densenet
    pytest.importorskip("efficientnet_lite_pytorch")
    assert default_layers(ibnbench.create_model("efficientnet_lite0")) == [f"_blocks.{i}" for i in range(16)]


def test_layer_that_never_runs_is_a_clear_error():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Conv2d(3, 4, 3)])

        def forward(self, x):
            return self.blocks[0](x)

    model = Net()
    assert collect(model, _batches(0), ["blocks.0"]).count == 12
    with pytest.raises(ValueError, match="blocks never ran"):
        collect(model, _batches(0), ["blocks"])
    with pytest.raises(ValueError, match="--layers: nope not in the model"):
        collect(model, _batches(0), ["nope"])


def test_cli_divergence_end_to_end(val100, tmp_path, capsys):
    """Two models on 16 real images, unclipped RGB+50: JSON + PNG, 17 finite layers each, IBN-b's stem far
    below ResNet-50's; then the content split (classes 0-499 vs 500-999) on one model."""
    out, png = tmp_path / "div.json", tmp_path / "div.png"
    code = main(["divergence", "--model", "resnet50", "--model", "resnet50_ibn_b", "--weights", "random",
                 "--data", str(val100), "--condition", "rgb+50", "--limit", "16", "--device", "cpu",
                 "--output", str(out), "--plot", str(png)])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["resnet50", "resnet50_ibn_b"]
    for result in results:
        assert (result["domain_a"], result["domain_b"], result["n_a"], result["n_b"]) == ("origin", "RGB+50", 16, 16)
        assert [e["name"] for e in result["layers"]] == default_layers(ibnbench.create_model("resnet50"))
        assert all(math.isfinite(e["divergence"]) and e["divergence"] >= 0 for e in result["layers"])
    first = {r["model"]: r["layers"][0]["divergence"] for r in results}
    assert first["resnet50_ibn_b"] < 0.05 * first["resnet50"]
    width, height = _png_size(png)
    assert width > 800 and height > 300 and png.stat().st_size > 20_000

    out = tmp_path / "content.json"
    assert main(["divergence", "--model", "resnet50_ibn_b", "--weights", "random", "--data", str(val100),
                 "--split-classes", "--limit", "4", "--device", "cpu", "--output", str(out),
                 "--plot", str(tmp_path / "content.png")]) == 0
    result = json.loads(out.read_text())
    assert (result["domain_a"], result["domain_b"], result["n_a"], result["n_b"]) == \
        ("classes 0-499", "classes 500-999", 4, 4)
    assert len(result["layers"]) == 17
    assert all(math.isfinite(e["divergence"]) and e["divergence"] > 0 for e in result["layers"])
    _png_size(tmp_path / "content.png")


def test_cli_divergence_bad_input(val100, capsys):
    assert main(["divergence", "--model", "resnet18", "--weights", "random", "--data", str(val100),
                 "--condition", "rgb+50", "--limit", "1"]) == 2
    assert "at least 2 images" in capsys.readouterr().err
    assert main(["divergence", "--model", "resnet18", "--weights", "random", "--data", str(val100),
                 "--condition", "r+99", "--limit", "4"]) == 2
    assert "no condition 'r+99'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["divergence", "--help"])
    assert "Eq. 2 prints mu_B^2 instead of (mu_A - mu_B)^2" in " ".join(capsys.readouterr().out.split())

"""Conditions: hand-computed references, clip/quantize, devices, style and dir conditions, and the
mechanism behind the paper's Table 1 (IBN-b's instance-norm stem cancels RGB+50 and std x1.5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ibnbench
from ibnbench.conditions.base import Brightness, Contrast, Identity, Shift
from ibnbench.conditions.ops import finish
from ibnbench.conditions.style import Dir, Style
from ibnbench.io import cache_dir
from ibnbench.zoo import generators
from ibnbench.zoo.generators import WEIGHTS_DIR_ENV

# One 2x2 image per channel: R spans 0..240 (mean 135), G 10..40 (mean 25), B is flat at 250.
SMALL = torch.tensor([[[[0.0, 100.0], [200.0, 240.0]],
                       [[10.0, 20.0], [30.0, 40.0]],
                       [[250.0, 250.0], [250.0, 250.0]]]])

# Worked by hand: shifts add to the channels; std*1.5 gives mu + 1.5 * (x - mu) per channel
# (R: 135 + 1.5 * (-135, -35, 65, 105); G: 25 + 1.5 * (-15, -5, 5, 15); B stays 250).
EXPECTED_UNCLIPPED = {
    "origin": SMALL,
    "rgb+50": torch.tensor([[[[50.0, 150.0], [250.0, 290.0]], [[60.0, 70.0], [80.0, 90.0]],
                             [[300.0, 300.0], [300.0, 300.0]]]]),
    "r+50": torch.tensor([[[[50.0, 150.0], [250.0, 290.0]], [[10.0, 20.0], [30.0, 40.0]],
                           [[250.0, 250.0], [250.0, 250.0]]]]),
    "std*1.5": torch.tensor([[[[-67.5, 82.5], [232.5, 292.5]], [[2.5, 17.5], [32.5, 47.5]],
                              [[250.0, 250.0], [250.0, 250.0]]]]),
}
EXPECTED_CLIPPED = {
    "origin": SMALL,
    "rgb+50": torch.tensor([[[[50.0, 150.0], [250.0, 255.0]], [[60.0, 70.0], [80.0, 90.0]],
                             [[255.0, 255.0], [255.0, 255.0]]]]),
    "r+50": torch.tensor([[[[50.0, 150.0], [250.0, 255.0]], [[10.0, 20.0], [30.0, 40.0]],
                           [[250.0, 250.0], [250.0, 250.0]]]]),
    "std*1.5": torch.tensor([[[[0.0, 82.5], [232.5, 255.0]], [[2.5, 17.5], [32.5, 47.5]],
                              [[250.0, 250.0], [250.0, 250.0]]]]),
}
PHOTOMETRIC = list(EXPECTED_UNCLIPPED)


@pytest.mark.parametrize("suite_name, expected", [("table1", EXPECTED_UNCLIPPED), ("table1-clipped", EXPECTED_CLIPPED)])
@pytest.mark.parametrize("condition_id", PHOTOMETRIC)
def test_table1_matches_hand_computed_values(suite_name, expected, condition_id):
    condition = ibnbench.load_suite(suite_name)[condition_id]
    out = condition(SMALL)
    assert out.dtype == torch.float32 and out.shape == SMALL.shape
    torch.testing.assert_close(out, expected[condition_id], rtol=0, atol=1e-4)
    assert torch.equal(SMALL, EXPECTED_UNCLIPPED["origin"])  # the input is never modified in place


@pytest.mark.parametrize("suite_name, clip", [("table1", False), ("table1-clipped", True)])
def test_table1_matches_float64_formulas_on_images(suite_name, clip):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 255
    mean = x.mean(dim=(2, 3), keepdim=True)
    formulas = {"origin": x, "rgb+50": x + 50, "r+50": x + torch.tensor([50.0, 0, 0]).view(1, 3, 1, 1),
                "std*1.5": mean + 1.5 * (x - mean)}
    suite = ibnbench.load_suite(suite_name)
    for condition_id, reference in formulas.items():
        reference = reference.clamp(0, 255) if clip else reference
        torch.testing.assert_close(suite[condition_id](x.float()).double(), reference, rtol=0, atol=1e-3)


def test_kinds_labels_and_assets_of_table1():
    suite = ibnbench.load_suite("table1", style_weights={"monet": "random"})
    assert [(c.id, c.label, c.kind) for c in suite] == [
        ("origin", "origin", "identity"), ("rgb+50", "RGB+50", "photometric"), ("r+50", "R+50", "photometric"),
        ("std*1.5", "std x1.5", "photometric"), ("monet", "Monet", "style")]
    assert suite.requires == []


def test_quantize_rounds_half_to_even_then_clamps():
    condition = Contrast("q", factor=1.5, quantize=True)
    expected_red = torch.tensor([[0.0, 82.0], [232.0, 255.0]])  # -67.5 -> -68 -> 0, 82.5 -> 82, 292.5 -> 255
    out = condition(SMALL)
    assert out.dtype == torch.float32
    assert torch.equal(out[0, 0], expected_red)
    assert torch.equal(finish(torch.tensor([-0.4, 0.5, 1.5, 254.6, 300.0]), clip=False, quantize=True),
                       torch.tensor([0.0, 0.0, 2.0, 255.0, 255.0]))


def test_brightness_equals_equal_shift_and_identity_is_exact():
    x = torch.rand(2, 3, 8, 8) * 255
    assert torch.equal(Brightness("b", delta=-30)(x), Shift("s", offsets=[-30, -30, -30])(x))
    assert torch.equal(Identity("origin")(x), x)


def test_conditions_are_deterministic_and_batch_independent():
    x = torch.rand(3, 3, 16, 16) * 255
    condition = ibnbench.load_suite("table1")["std*1.5"]
    assert torch.equal(condition(x), condition(x))
    torch.testing.assert_close(condition(x)[1:2], condition(x[1:2]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"offsets": [50, 50]}, "field 'offsets': expected 3 numbers"),
    ({"offsets": "50"}, "field 'offsets': expected 3 numbers"),
    ({"offsets": [50, True, 0]}, "field 'offsets': expected a number"),
])
def test_shift_rejects_bad_offsets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Shift("bad", **kwargs)


def test_contrast_rejects_negative_factor():
    with pytest.raises(ValueError, match="field 'factor': expected a number >= 0"):
        Contrast("bad", factor=-1)


def test_style_with_random_generator_keeps_shape_and_range():
    condition = Style("monet", style="monet", weights="random", generators=generators)
    x = torch.rand(2, 3, 36, 44) * 255  # sides not multiples of 4: padded for the generator, cropped back
    out = condition(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 255 and not torch.allclose(out, x)
    assert torch.equal(Style("again", style="monet", weights="random", generators=generators)(x),
                       out)  # the random generator is seeded
    assert condition.generator.training is False
    assert condition.requires == []


def test_style_generator_follows_the_batch_dtype():
    condition = Style("monet", style="monet", weights="random", generators=generators)
    x = torch.rand(1, 3, 32, 32) * 255
    out64 = condition(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), Style("f32", style="monet", weights="random", generators=generators)(x),
                               rtol=0, atol=1e-3)


def test_official_style_weights_are_reported_missing_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("requires must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    condition = ibnbench.load_suite("table1")["monet"]
    (missing,) = condition.requires
    assert str(cache_dir() / "style_monet.pth") in missing and str(tmp_path) in str(cache_dir())
    assert WEIGHTS_DIR_ENV in missing


def test_style_weights_dir_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    torch.manual_seed(7)
    generator = ibnbench.create_model("cyclegan_resnet_9blocks")
    torch.save(generator.state_dict(), tmp_path / "style_monet.pth")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    condition = ibnbench.load_suite("table1")["monet"]
    assert condition.requires == []
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        expected = ((generator(x / 127.5 - 1) + 1) * 127.5).clamp(0, 255)
    torch.testing.assert_close(condition(x), expected, rtol=0, atol=1e-3)
    assert condition.generator.ibnbench_weights.path == str(tmp_path / "style_monet.pth")


def test_unknown_style_needs_weights():
    with pytest.raises(ValueError, match="field 'style': unknown style 'picasso': released styles are monet"):
        Style("p", style="picasso")


def test_dir_condition_maps_relative_paths(tmp_path):
    (tmp_path / "n01440764").mkdir()
    (tmp_path / "n01440764" / "a.JPEG").write_bytes(b"jpeg")
    condition = Dir("monet-dir", "Monet", root=tmp_path)
    assert condition.kind == "dir" and condition.requires == []
    assert condition.path_for("n01440764/a.JPEG") == tmp_path / "n01440764" / "a.JPEG"
    with pytest.raises(FileNotFoundError, match=r"condition 'monet-dir': .* lacks n01440764/b.JPEG"):
        condition.path_for("n01440764/b.JPEG")
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(condition(x), x)
    (missing,) = Dir("gone", root=tmp_path / "absent").requires
    assert "pre-stylised folder" in missing and "ibnbench stylize" in missing


@pytest.mark.gpu
@pytest.mark.parametrize("suite_name", ["table1", "table1-clipped", "sweep"])
def test_cpu_and_gpu_agree_without_host_synchronisation(suite_name):
    """Photometric ops agree to 1e-4 of a level; the generator (IEEE fp32 convolutions, torch's TF32 default
    notwithstanding) to 0.05 of a level."""
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    suite = ibnbench.load_suite(suite_name, style_weights={s: "random" for s in ("monet", "cezanne", "ukiyoe",
                                                                                  "vangogh")})
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    x_gpu = x.cuda()
    for condition in suite:
        condition(x_gpu)  # builds generators and device constants once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out_gpu = condition(x_gpu)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        tolerance = 0.05 if condition.kind == "style" else 1e-4
        torch.testing.assert_close(out_gpu.cpu(), condition(x), rtol=0, atol=tolerance, msg=condition.id)


class _StemCaptured(Exception):
    """Raised by the hook to stop the forward pass once the stem has run."""


def _stem(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(conv1 output, bn1 output)`` for a 0..255 batch, from hooks on ``model.bn1`` (the input is
    copied before the layer runs: the IBN-b stem normalises its temporary input in place)."""
    captured = {}

    def before(module, inputs):
        captured.update(conv=inputs[0].detach().clone())

    def hook(module, inputs, output):
        captured.update(norm=output.detach())
        raise _StemCaptured

    pre_handle = model.bn1.register_forward_pre_hook(before)
    handle = model.bn1.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(model.ibnbench_info.preprocessing.normalize(x))
    except _StemCaptured:
        pass
    finally:
        handle.remove()
        pre_handle.remove()
    return captured["conv"], captured["norm"]


def _randomised(name: str, seed: int) -> torch.nn.Module:
    """``name`` with random conv1 weights and random stem normalisation parameters and statistics."""
    torch.manual_seed(seed)
    model = ibnbench.create_model(name)
    with torch.no_grad():
        model.bn1.weight.copy_(1 + 0.3 * torch.randn(64))
        model.bn1.bias.copy_(0.3 * torch.randn(64))
        if model.bn1.running_mean is not None:
            model.bn1.running_mean.copy_(0.3 * torch.randn(64))
            model.bn1.running_var.copy_(0.5 + torch.rand(64))
    return model


INTERIOR = (slice(2, 111), slice(2, 111))  # rows/cols of the 112x112 conv1 map that never see padding


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("condition_id, scale", [("rgb+50", 1.0), ("std*1.5", 1.5)])
def test_ibn_b_stem_cancels_unclipped_shift_and_contrast(condition_id, scale, seed):
    """The paper's mechanism, stated exactly.

    After the model's normalisation, unclipped RGB+50 adds a per-channel constant to the input and
    std x1.5 maps it to ``1.5 * n(x) + e_c`` (``e_c`` constant per image and channel). conv1 (7x7,
    stride 2, zero padding 3, no bias) is linear, so ``conv1(n(T x)) = a * conv1(n(x)) + b_{n,c}`` holds
    exactly at every output pixel whose 7x7 window lies inside the image: output rows/cols i with
    ``2i - 3 >= 0`` and ``2i + 3 <= 223``, i.e. 2..110 of the 112x112 map (the 2 first rows/cols and the
    last one see zero padding, where the relation fails). Instance norm removes any such ``a * y + b``
    (up to its eps on the variance), but the IBN-b stem computes its statistics over the whole map,
    border included, so on the shipped model the cancellation is approximate. It is exact:
    (1) for instance norm with statistics over the interior, and (2) for the model's own ``bn1``
    when conv1 runs without padding (every output pixel interior). ResNet-50's BN stem uses fixed
    statistics and keeps the change.
    """
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 10)) * 255
    transformed = ibnbench.load_suite("table1")[condition_id](x)
    ibn_b, resnet = _randomised("resnet50_ibn_b", seed), _randomised("resnet50", seed)

    conv, _ = _stem(ibn_b, x)
    conv_t, _ = _stem(ibn_b, transformed)
    offset = conv_t - scale * conv
    interior = offset[(..., *INTERIOR)]
    assert (interior - interior.mean(dim=(2, 3), keepdim=True)).abs().max() < 1e-4 * conv.abs().max()
    for wider in ((slice(1, 111), INTERIOR[1]), (slice(2, 112), INTERIOR[1])):
        window = offset[(..., *wider)]
        assert (window - window.mean(dim=(2, 3), keepdim=True)).abs().max() > 5e-3 * conv.abs().max()

    def interior_instance_norm(y):
        return F.instance_norm(y[(..., *INTERIOR)], weight=ibn_b.bn1.weight, bias=ibn_b.bn1.bias, eps=ibn_b.bn1.eps)

    reference = interior_instance_norm(conv)
    assert (interior_instance_norm(conv_t) - reference).abs().max() < 1e-4 * reference.abs().max()

    for model in (ibn_b, resnet):
        model.conv1.padding = (0, 0)
    _, norm = _stem(ibn_b, x)
    _, norm_t = _stem(ibn_b, transformed)
    assert norm.shape[-2:] == (109, 109)
    assert (norm_t - norm).abs().max() < 1e-4 * norm.abs().max()
    _, bn = _stem(resnet, x)
    _, bn_t = _stem(resnet, transformed)
    assert (bn_t - bn).abs().max() > 0.05 * bn.abs().max()

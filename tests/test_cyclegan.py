"""The CycleGAN resnet_9blocks generator: parity with the reference, official keys, checkpoint loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.shared import load_fixture

import ibnbench
from ibnbench.conditions.style import stylize_batch
from ibnbench.errors import WeightsError
from ibnbench.zoo.generators import load_generator
from ibnbench.zoo.weights import load_state_dict_strict

NAME = "cyclegan_resnet_9blocks"


def test_registered_as_a_generator():
    info = ibnbench.model_info(NAME)
    assert (info.family, info.variant, info.task) == ("cyclegan", "resnet_9blocks", "generator")
    assert NAME in ibnbench.list_models(task=None) and NAME not in ibnbench.list_models()


def test_keys_and_shapes_match_reference():
    fixture = load_fixture(NAME)
    state = ibnbench.create_model(NAME).state_dict()
    assert [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()] == fixture["keys"]


def test_output_matches_reference(parity_rule):
    fixture = load_fixture(NAME)
    model = ibnbench.create_model(NAME)
    model.load_state_dict({k: torch.from_numpy(np.asarray(parity_rule.value_for(k, tuple(shape))).astype(dtype))
                           for k, shape, dtype in fixture["keys"]}, strict=True)
    spec = fixture["input"]
    x = torch.from_numpy(np.clip(parity_rule.input_batch(tuple(spec["shape"]), spec["seed"]) / 2, -1, 1))
    with torch.no_grad():
        out = model.eval()(x)
    assert list(out.shape) == fixture["output_shape"]
    expected = torch.tensor(fixture["output_strided_16"])
    assert (out[0, :, ::16, ::16] - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert abs(out.mean().item() - fixture["output_mean"]) <= 1e-4
    assert abs(out.std(unbiased=False).item() - fixture["output_std"]) <= 1e-4


def test_old_checkpoints_with_instance_norm_statistics_load():
    model = ibnbench.create_model(NAME)
    state = dict(model.state_dict())
    state["model.2.running_mean"] = torch.zeros(64)  # what PyTorch < 0.4 saved for InstanceNorm2d
    state["model.10.conv_block.2.running_var"] = torch.ones(256)
    load_state_dict_strict(model, state, NAME)
    state["model.1.running_mean"] = torch.zeros(64)  # a conv has no statistics: this stays an error
    with pytest.raises(WeightsError, match=r"1 unexpected \(e.g. model.1.running_mean\)"):
        load_state_dict_strict(model, state, NAME)


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(ibnbench.create_model("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match=rf"{path} does not fit cyclegan_resnet_9blocks \(style 'monet'\): "
                                           r"48 missing \(e.g. model.1.weight.*Is it a checkpoint of another"):
        load_generator("monet", str(path))


def test_official_checkpoint_file_loads_and_is_recorded(tmp_path):
    torch.manual_seed(1)
    saved = ibnbench.create_model(NAME)
    path = tmp_path / "style_cezanne.pth"
    torch.save(saved.state_dict(), path)
    generator = load_generator("cezanne", str(path))
    assert generator.ibnbench_weights.path == str(path) and len(generator.ibnbench_weights.sha256) == 64
    assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(), saved.state_dict().values()))


@pytest.mark.parametrize("size", [(32, 32), (30, 45)])
def test_stylize_batch_keeps_size_and_scale(size):
    generator = load_generator("monet", "random")
    x = torch.rand(2, 3, *size) * 255
    out = stylize_batch(generator, x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 255
    if size == (32, 32):
        with torch.no_grad():
            torch.testing.assert_close(out, (generator(x / 127.5 - 1) + 1) * 127.5, rtol=0, atol=1e-4)

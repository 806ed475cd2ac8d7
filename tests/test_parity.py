"""Architecture parity against ../shared/parity: same keys and shapes, same logits, same top-5."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.shared import PARITY, load_fixture

import ibnbench

CLASSIFIER_FIXTURES = sorted(p.stem for p in [*PARITY.glob("*.json"), *PARITY.glob("pending/*.json")]
                             if p.stem != "cyclegan_resnet_9blocks") or [
    "resnet18", "resnet50", "resnet18_ibn_a", "resnet18_ibn_b", "resnet50_ibn_a", "resnet50_ibn_b",
    "resnet50_ibn_a_old"]


def filled(name: str, rule, fixture: dict) -> torch.nn.Module:
    """The model with every state_dict entry set by ``rule.value_for`` (cast to the fixture's dtype)."""
    model = ibnbench.create_model(name)
    keys = [(k, tuple(shape), dtype) for k, shape, dtype in fixture["keys"]]
    state = {k: torch.from_numpy(np.asarray(rule.value_for(k, shape)).astype(dtype)) for k, shape, dtype in keys}
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("name", CLASSIFIER_FIXTURES)
def test_keys_and_shapes_match_reference(name):
    fixture = load_fixture(name)
    state = ibnbench.create_model(name).state_dict()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]
    assert ours == fixture["keys"]


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("name", CLASSIFIER_FIXTURES)
def test_logits_match_reference(name, channels_last, parity_rule):
    fixture = load_fixture(name)
    model = filled(name, parity_rule, fixture)
    x = torch.from_numpy(parity_rule.input_batch(tuple(fixture["input"]["shape"]), fixture["input"]["seed"]))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model(x)
    expected = torch.tensor(fixture["logits"])
    assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert logits.topk(5, dim=1).indices.tolist() == fixture["top5"]

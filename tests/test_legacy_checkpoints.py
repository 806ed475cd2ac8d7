"""Checkpoints as the IBN-Net authors released them (PyTorch 0.3.1 / 0.4.1 formats): what PyTorch itself
accepts loads, with the same logits as the clean state_dict; nothing looser does."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import pytest
import torch

import ibnbench
from ibnbench.errors import WeightsError
from ibnbench.zoo.meta import LoadedWeights

MODELS = ["resnet50_ibn_a", "resnet50_ibn_b", "densenet121_ibn_a"]


def randomised(name: str) -> torch.nn.Module:
    """The model with every float state_dict entry (BN statistics included) drawn at random, seeded."""
    model = ibnbench.create_model(name)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5 if key.endswith("running_var")
                            else 0.1 * torch.randn(value.shape, generator=generator))
    return model


def as_pytorch_031(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What PyTorch 0.3.1 saved: no BatchNorm ``num_batches_tracked``, ``running_mean``/``running_var`` for every
    InstanceNorm (affine IN layers kept running statistics then), no version metadata."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
    return state


WRAPS = {"plain": lambda sd: sd,  # (single wraps and prefixes of current files: tests/test_weights.py)
         "wrapped_and_prefixed": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 100}}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize("name", MODELS)
def test_pytorch_031_checkpoints_load_with_the_clean_logits(name, wrap, image, tmp_path):
    source = randomised(name)
    legacy = as_pytorch_031(source)
    assert not any(k.endswith("num_batches_tracked") for k in legacy)
    assert any(".IN.running_mean" in k for k in legacy) or any(k == "bn1.running_mean" for k in legacy)
    clean_path, legacy_path = tmp_path / "clean.pth", tmp_path / "legacy.pth"
    torch.save(source.state_dict(), clean_path)
    torch.save(WRAPS[wrap](legacy), legacy_path)
    clean = ibnbench.create_model(name, weights=str(clean_path))
    old = ibnbench.create_model(name, weights=str(legacy_path))
    with torch.no_grad():
        assert torch.equal(clean(image), old(image))
    assert old.ibnbench_weights.sha256 != clean.ibnbench_weights.sha256


def test_missing_counters_are_accepted_exactly_when_pytorch_accepts_them():
    """PyTorch fills BN counters only for state dicts of module version < 2 (or none recorded)."""
    model = ibnbench.create_model("resnet50_ibn_a")
    state = model.state_dict()
    del state["bn1.num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):  # PyTorch's own verdict with version 2
        ibnbench.create_model("resnet50_ibn_a").load_state_dict(state, strict=True)
    with pytest.raises(WeightsError, match=r"does not fit resnet50_ibn_a: 1 missing \(e.g. bn1.num_batches_tracked"):
        ibnbench.zoo.weights.load_state_dict_strict(model, state, "resnet50_ibn_a")
    legacy = OrderedDict(state)  # no version metadata: a pre-0.4.1 file
    ibnbench.create_model("resnet50_ibn_a").load_state_dict(legacy, strict=True)  # PyTorch accepts it ...
    ibnbench.zoo.weights.load_state_dict_strict(model, legacy, "resnet50_ibn_a")  # ... and so do we


def test_saved_file_keeps_the_version_metadata(tmp_path):
    state = ibnbench.create_model("resnet18_ibn_a").state_dict()
    del state["layer1.0.bn2.num_batches_tracked"]
    path = tmp_path / "new-format-missing-counter.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError, match=r"1 missing \(e.g. layer1.0.bn2.num_batches_tracked\)"):
        ibnbench.create_model("resnet18_ibn_a", weights=str(path))


@pytest.mark.parametrize("extra", ["layer1.0.conv1.running_mean", "fc.num_batches_tracked", "layer9.weight"])
def test_other_extra_keys_still_fail(extra, tmp_path):
    state = as_pytorch_031(ibnbench.create_model("resnet50_ibn_a"))
    state[extra] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=rf"does not fit resnet50_ibn_a: 1 unexpected \(e.g. {extra}\)"):
        ibnbench.create_model("resnet50_ibn_a", weights=str(path))


def test_missing_statistics_of_a_legacy_file_still_fail(tmp_path):
    state = as_pytorch_031(ibnbench.create_model("resnet50_ibn_b"))
    del state["layer1.0.bn2.running_var"]
    path = tmp_path / "short.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 missing \(e.g. layer1.0.bn2.running_var\)"):
        ibnbench.create_model("resnet50_ibn_b", weights=str(path))


def test_resnet50_checkpoint_given_to_ibn_a_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet50-legacy.pth"
    torch.save(as_pytorch_031(ibnbench.create_model("resnet50")), path)
    with pytest.raises(WeightsError, match=rf"{path} does not fit resnet50_ibn_a: .*missing \(e.g. layer1.0.bn1.IN"
                                           r".*unexpected.*Is it a checkpoint of another architecture\?"):
        ibnbench.create_model("resnet50_ibn_a", weights=str(path))


def test_official_file_under_another_name_loads_and_the_record_names_its_release(tmp_path, monkeypatch):
    """--weights PATH with the released file renamed: no hash check by name, but the record says which
    release the hash matches."""
    source = randomised("resnet18_ibn_b")
    path = tmp_path / "my-copy.pth"
    torch.save(source.state_dict(), path)
    sha = ibnbench.io.sha256_of(path)
    info = ibnbench.zoo.model_info("resnet18_ibn_b")
    fake_release = replace(info.weights, sha256_prefix=sha[:8])
    monkeypatch.setitem(ibnbench.zoo.registry._REGISTRY, "resnet18_ibn_b",
                        replace(info, weights=fake_release, releases=(fake_release,)))
    loaded = ibnbench.create_model("resnet18_ibn_b", weights=str(path))
    assert loaded.ibnbench_weights == LoadedWeights(source=str(path), path=str(path), sha256=sha,
                                                    release="resnet18_ibn_b.ibn_in1k")
    other = tmp_path / "other.pth"
    torch.save(randomised("resnet18_ibn_a").state_dict(), other)
    assert ibnbench.create_model("resnet18_ibn_a", weights=str(other)).ibnbench_weights.release is None


def test_old_models_official_weights_say_where_to_get_them():
    with pytest.raises(WeightsError, match=r"resnet50_ibn_a_old: the released weights cannot be downloaded "
                                           r"automatically: .*Google Drive.*--weights PATH"):
        ibnbench.create_model("resnet50_ibn_a_old", weights="official")


@pytest.mark.parametrize("depth, blocks", [(50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))])
def test_old_models_share_the_v1_layout(depth, blocks):
    """Every block of stages 1-3 has the two-conv ``convbnin`` head (BN half, IN half), stage 4 is plain."""
    with torch.device("meta"):
        model = ibnbench.zoo.model_info(f"resnet{depth}_ibn_a_old").builder()
    for stage, n in enumerate(blocks, 1):
        layer = getattr(model, f"layer{stage}")
        assert len(layer) == n
        for block in layer:
            names = [name for name, _ in block.named_children()]
            if stage < 4:
                assert names[0] == "convbnin" and "conv1" not in names and "bn1" not in names
                head = block.convbnin
                assert [n for n, _ in head.named_children()] == ["conv1", "conv2", "BN", "IN"]
                assert head.conv1.out_channels == head.BN.num_features == head.IN.num_features
            else:
                assert names[:2] == ["conv1", "bn1"]
    assert isinstance(model.avgpool, torch.nn.AvgPool2d) and model.avgpool.kernel_size == 7

"""Weights: strict round trips for every family, wrapped checkpoints, URLs into the hub cache, clear errors."""
from __future__ import annotations

import hashlib
import urllib.error

import pytest
import torch

import ibnbench
from ibnbench.errors import WeightsError
from ibnbench.io import cache_dir

ROUND_TRIP = ["resnet18", "resnet18_ibn_a", "resnet18_ibn_b", "resnext50_ibn_a", "se_resnet50_ibn_a",
              "densenet121_ibn_a", "resnet50_ibn_d"]


def randomised(name: str) -> torch.nn.Module:
    """The model with every float entry of its state_dict (BN statistics included) set at random."""
    model = ibnbench.create_model(name)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn_like(value))
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_saved_state_dict_loads_back_strictly(name, tmp_path):
    source = randomised(name)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    loaded = ibnbench.create_model(name, weights=str(path))
    assert_same_state(source, loaded)
    assert loaded.ibnbench_weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("wrap", [lambda sd: {"state_dict": sd, "epoch": 90},
                                  lambda sd: {f"module.{k}": v for k, v in sd.items()},
                                  lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}],
                         ids=["state_dict", "module_prefix", "model_and_prefix"])
def test_wrapped_and_prefixed_checkpoints_load(wrap, tmp_path):
    source = randomised("resnet18_ibn_a")
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(source.state_dict()), path)
    assert_same_state(source, ibnbench.create_model("resnet18_ibn_a", weights=str(path)))


def test_checkpoint_of_another_architecture_names_model_and_key(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(ibnbench.create_model("resnet50").state_dict(), path)
    with pytest.raises(WeightsError) as err:
        ibnbench.create_model("resnet50_ibn_a", weights=str(path))
    message = str(err.value)
    assert "resnet50_ibn_a" in message and "bn1.IN.weight" in message and "missing" in message


def test_garbage_and_non_state_dict_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=r"garbage.pth: not a readable PyTorch checkpoint"):
        ibnbench.create_model("resnet18_ibn_a", weights=str(garbage))
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(WeightsError, match=r"list.pth: does not hold a state_dict"):
        ibnbench.create_model("resnet18_ibn_a", weights=str(a_list))
    with pytest.raises(WeightsError, match=r"resnet18_ibn_a: weights file .*absent.pth does not exist"):
        ibnbench.create_model("resnet18_ibn_a", weights=str(tmp_path / "absent.pth"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache_dir()


def test_url_is_downloaded_into_the_hub_cache_and_hash_checked(http_root, hub, tmp_path):
    root, base = http_root
    source = randomised("resnet18_ibn_a")
    staging = tmp_path / "staging.pth"
    torch.save(source.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    good = f"r18ibna-{digest[:8]}.pth"
    (root / good).write_bytes(staging.read_bytes())

    model = ibnbench.create_model("resnet18_ibn_a", weights=f"{base}/{good}")
    assert_same_state(source, model)
    assert (hub / good).is_file() and model.ibnbench_weights["path"] == str(hub / good)

    wrong = f"r18ibna-{'0' * 8 if digest[:8] != '0' * 8 else '1' * 8}.pth"
    (root / wrong).write_bytes(staging.read_bytes())
    with pytest.raises(WeightsError, match=rf"resnet18_ibn_a: .*{wrong} does not match sha256 prefix"):
        ibnbench.create_model("resnet18_ibn_a", weights=f"{base}/{wrong}")
    assert not (hub / wrong).exists()  # the wrong download does not stay in the cache as if it were the file


def test_unreachable_url_says_where_to_place_the_file(http_root, hub):
    _, base = http_root
    with pytest.raises(WeightsError) as err:
        ibnbench.create_model("resnet18_ibn_a", weights=f"{base}/missing-0123abcd.pth")
    assert "cannot download" in str(err.value) and str(hub / "missing-0123abcd.pth") in str(err.value)


@pytest.mark.parametrize("name, filename", [("resnet50_ibn_a", "resnet50_ibn_a-d9d0bb7b.pth"),
                                            ("resnext101_ibn_a", "resnext101_ibn_a-6ace051d.pth"),
                                            ("densenet169_ibn_a", "densenet169_ibn_a-9f32c161.pth")])
def test_official_without_cache_or_network_names_file_and_place(name, filename, hub, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError) as err:
        ibnbench.create_model(name, weights="official")
    message = str(err.value)
    assert message.startswith(f"{name}: cannot download") and filename in message
    assert f"place it at {hub / filename}" in message


def test_official_file_already_in_the_cache_is_used_after_its_hash_check(hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("a cached official file must not be downloaded again"))
    hub.mkdir(parents=True)
    (hub / "se_resnet101_ibn_a-fabed4e2.pth").write_bytes(b"a truncated download")
    with pytest.raises(WeightsError, match="does not match sha256 prefix fabed4e2; delete it and download"):
        ibnbench.create_model("se_resnet101_ibn_a", weights="official")

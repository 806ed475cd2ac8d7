"""Weights: strict round trips for every family, wrapped checkpoints, URLs into the hub cache, clear errors."""
from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ibnbench
from ibnbench.errors import UnknownModelError, WeightsError
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
    assert loaded.ibnbench_weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


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
    assert (hub / good).is_file() and model.ibnbench_weights.path == str(hub / good)

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


# -- releases (timm's arch.tag) ------------------------------------------------------------------------------------

def test_resnet50_holds_torchvisions_v1_and_v2_releases_each_with_its_own_preprocessing_and_metrics():
    """Numbers of torchvision/models/resnet.py: V1 resize 256, acc@1 76.130; V2 resize 232, acc@1 80.858."""
    v1, v2 = ibnbench.model_info("resnet50.tv_in1k"), ibnbench.model_info("resnet50.tv2_in1k")
    for info, filename, resize, acc1 in ((v1, "resnet50-0676ba61.pth", 256, 76.130),
                                         (v2, "resnet50-11ad3fa6.pth", 232, 80.858)):
        pre = info.preprocessing
        assert info.weights.url == f"https://download.pytorch.org/models/{filename}"
        assert info.weights.sha256_prefix == filename[len("resnet50-"):-len(".pth")]
        assert (pre.resize, pre.crop, pre.interpolation) == (resize, 224, "bilinear")
        assert pre == info.weights.preprocessing
        assert info.weights.metrics[0].top1_err == pytest.approx(100 - acc1)
    default = ibnbench.model_info("resnet50")  # the bare name: the first release, torchvision's V1
    assert (default.name, default.weights, default.preprocessing) == ("resnet50", v1.weights, v1.preprocessing)
    assert v1.name == "resnet50.tv_in1k" and v1.architecture == v2.architecture == "resnet50"
    assert ibnbench.model_info("resnet50_ibn_a.ibn_in1k").weights == ibnbench.model_info("resnet50_ibn_a").weights


def test_an_unknown_release_names_the_architectures_releases():
    with pytest.raises(UnknownModelError, match=r"resnet50 has no release 'tv3_in1k' \(its releases: "
                                                r"resnet50.tv_in1k, resnet50.tv2_in1k\)"):
        ibnbench.model_info("resnet50.tv3_in1k")
    with pytest.raises(UnknownModelError, match="unknown model 'resnet50_ibn_a_ratio0.3'"):
        ibnbench.model_info("resnet50_ibn_a_ratio0.3")  # a dot in a registered name is no release tag


@pytest.fixture
def served_v2(http_root, tmp_path, monkeypatch):
    """resnet50's tv2_in1k release pointed at a hash-named state_dict (random init, every parameter moved, the BN
    statistics sound) served over HTTP; yields the model."""
    root, base = http_root
    source = ibnbench.create_model("resnet50")
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    staging = tmp_path / "staging.pth"
    torch.save(source.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    (root / f"resnet50-{digest}.pth").write_bytes(staging.read_bytes())
    info = ibnbench.zoo.registry._REGISTRY["resnet50"]
    v1, v2 = info.releases
    served = replace(v2, url=f"{base}/resnet50-{digest}.pth", sha256_prefix=digest)
    monkeypatch.setitem(ibnbench.zoo.registry._REGISTRY, "resnet50", replace(info, releases=(v1, served)))
    return source


def test_official_weights_of_a_named_release_load_and_the_record_names_the_release(served_v2, hub, tmp_path):
    model = ibnbench.create_model("resnet50.tv2_in1k", weights="official")
    assert_same_state(served_v2, model)
    assert model.ibnbench_info.preprocessing.resize == 232
    loaded = model.ibnbench_weights
    assert (loaded.source, loaded.release) == ("official", "resnet50.tv2_in1k")
    assert loaded.as_dict() == {"source": "official", "path": loaded.path, "sha256": loaded.sha256,
                                "release": "resnet50.tv2_in1k"}
    copy = tmp_path / "renamed.pth"  # the same file under the bare name: recognised by its hash as the V2 release
    copy.write_bytes(Path(loaded.path).read_bytes())
    assert ibnbench.create_model("resnet50", weights=str(copy)).ibnbench_weights.release == "resnet50.tv2_in1k"


def test_a_run_record_names_the_release_and_its_preprocessing(served_v2, hub, tiny_val, tmp_path):
    from ibnbench.cli import main
    from ibnbench.results.record import read_record

    output = tmp_path / "r.json"
    assert main(["run", "--model", "resnet50.tv2_in1k", "--weights", "official", "--data", str(tiny_val),
                 "--conditions", "origin", "--device", "cpu", "--workers", "0", "--limit", "2",
                 "--output", str(output)]) == 0
    (entry,) = read_record(output).models.values()
    assert (entry["model"], entry["weights"]) == ("resnet50.tv2_in1k", "official")
    assert entry["release"] == "resnet50.tv2_in1k"
    assert (entry["preprocessing"]["resize"], entry["preprocessing"]["crop"]) == (232, 224)


def test_a_record_written_before_releases_still_reads(tmp_path):
    import json

    from ibnbench.results.record import read_record

    records = Path(__file__).resolve().parents[1] / "leaderboards" / "records"
    committed = records / "table1-efficientnet_lite0-val100.json"
    data = json.loads(committed.read_text())
    for entry in data["models"].values():
        del entry["release"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert "release" not in read_record(old).models["efficientnet_lite0"]

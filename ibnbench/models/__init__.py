"""The model zoo: importing this package registers every architecture."""
from . import (cyclegan, densenet_ibn, external, resnet_ibn, resnext_ibn,  # noqa: F401  (registers)
               se_resnet_ibn, variants)
from .registry import (ModelInfo, Preprocessing, UnknownModelError, Weights, create_model, list_models,
                       model_info, register_model)

__all__ = ["ModelInfo", "Preprocessing", "UnknownModelError", "Weights", "create_model", "list_models",
           "model_info", "register_model"]

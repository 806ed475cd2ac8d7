"""The model zoo: importing this package registers every architecture."""
from . import densenet_ibn, external, resnet_ibn, resnext_ibn, se_resnet_ibn, variants  # noqa: F401  (registers)
from .registry import (ModelInfo, Preprocessing, UnknownModelError, Weights, create_model, list_models,
                       model_info, register_model)

__all__ = ["ModelInfo", "Preprocessing", "UnknownModelError", "Weights", "create_model", "list_models",
           "model_info", "register_model"]

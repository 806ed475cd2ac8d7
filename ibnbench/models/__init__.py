"""The model zoo: importing this package registers every architecture."""
from . import cyclegan, resnet_ibn  # noqa: F401  (registers)
from .registry import (ModelInfo, Preprocessing, UnknownModelError, Weights, create_model, list_models,
                       model_info, register_model)

__all__ = ["ModelInfo", "Preprocessing", "UnknownModelError", "Weights", "create_model", "list_models",
           "model_info", "register_model"]

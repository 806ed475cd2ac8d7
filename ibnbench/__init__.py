"""ibnbench: how much does a classifier's ImageNet accuracy drop when appearance changes?"""
from .models import ModelInfo, Preprocessing, Weights, create_model, list_models, model_info, register_model
from .suites import load_suite
from .weights import WeightsError

__version__ = "0.1.0"
__all__ = ["ModelInfo", "Preprocessing", "Weights", "WeightsError", "create_model", "list_models", "load_suite",
           "model_info", "register_model"]

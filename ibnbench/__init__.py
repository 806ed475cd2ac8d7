"""ibnbench: how much does a classifier's ImageNet accuracy drop when appearance changes?"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["ModelInfo", "Preprocessing", "Weights", "WeightsError", "create_model", "list_models", "load_suite",
           "model_info", "register_model"]

_LAZY = {"ModelInfo": "models", "Preprocessing": "models", "Weights": "models", "create_model": "models",
         "list_models": "models", "model_info": "models", "register_model": "models", "load_suite": "suites",
         "WeightsError": "weights"}
"""Public names and the submodule holding each, imported on first use so that ``ibnbench --help`` stays fast."""


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ibnbench' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)

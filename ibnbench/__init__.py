"""ibnbench: how much does a classifier's ImageNet accuracy drop when appearance changes?"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["IbnbenchError", "ModelInfo", "Preprocessing", "Record", "Weights", "WeightsError", "create_model",
           "list_models", "load_suite", "model_info", "register_model", "run"]

_LAZY = {"ModelInfo": "zoo", "Preprocessing": "zoo", "Weights": "zoo", "create_model": "zoo", "list_models": "zoo",
         "model_info": "zoo", "register_model": "zoo", "load_suite": "eval.plan", "run": "eval.engine",
         "Record": "results.record", "WeightsError": "errors", "IbnbenchError": "errors"}
"""Public names and the submodule holding each, imported on first use so that ``ibnbench --help`` stays fast."""


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ibnbench' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)

"""ibnbench: how much does a classifier's ImageNet accuracy drop when appearance changes?

Every public name is importable from here (``from ibnbench import run, RunOptions``) and imported on first use, so
that ``ibnbench --help`` stays fast; ``dir(ibnbench)`` and type checkers see them all."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ibnbench._version import __version__ as __version__

_LAZY: dict[str, tuple[str, str]] = {
    # running: the one entry for condition and dataset suites, how to run, what a run is made of
    "run": ("eval.api", "run"),
    "RunOptions": ("eval.options", "RunOptions"),
    "load_suite": ("eval.plan", "load_suite"),
    "evaluate": ("eval.engine", "evaluate"),
    "Classifier": ("eval.plan", "Classifier"),
    # results: records, their stored predictions, regression checks in pytest
    "Record": ("results.record", "Record"),
    "read_record": ("results.record", "read_record"),
    "predictions_for": ("results.predictions", "for_record"),
    "assert_no_regression": ("pytest_plugin", "assert_no_regression"),
    # models
    "create_model": ("zoo", "create_model"),
    "list_models": ("zoo", "list_models"),
    "model_info": ("zoo", "model_info"),
    "register_model": ("zoo", "register_model"),
    "ModelInfo": ("zoo", "ModelInfo"),
    "Preprocessing": ("zoo", "Preprocessing"),
    "Weights": ("zoo", "Weights"),
    # errors
    "IbnbenchError": ("errors", "IbnbenchError"),
    "RecordWriteError": ("errors", "RecordWriteError"),
    "WeightsError": ("errors", "WeightsError"),
    # conditions: the functional ops go here
}
"""Public name -> (submodule, attribute), imported on first use."""

__all__ = ["Classifier", "IbnbenchError", "ModelInfo", "Preprocessing", "Record", "RecordWriteError", "RunOptions",
           "Weights", "WeightsError", "assert_no_regression", "create_model", "evaluate", "list_models", "load_suite",
           "model_info", "predictions_for", "read_record", "register_model", "run"]
"""The public names: those of :data:`_LAZY`."""

if TYPE_CHECKING:
    from ibnbench.errors import IbnbenchError, RecordWriteError, WeightsError
    from ibnbench.eval.api import run
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.options import RunOptions
    from ibnbench.eval.plan import Classifier, load_suite
    from ibnbench.pytest_plugin import assert_no_regression
    from ibnbench.results.predictions import for_record as predictions_for
    from ibnbench.results.record import Record, read_record
    from ibnbench.zoo import ModelInfo, Preprocessing, Weights, create_model, list_models, model_info, register_model


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ibnbench' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])

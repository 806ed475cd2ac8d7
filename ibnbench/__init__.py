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
    # conditions: ImageNet-C's ops as pure functions with explicit parameters, their severities, one severity applied
    "brightness": ("conditions.corruptions", "brightness"),
    "contrast": ("conditions.corruptions", "contrast"),
    "defocus_blur": ("conditions.corruptions", "defocus_blur"),
    "elastic_transform": ("conditions.corruptions", "elastic_transform"),
    "fog": ("conditions.corruptions", "fog"),
    "frost": ("conditions.corruptions", "frost"),
    "gaussian_blur": ("conditions.corruptions", "gaussian_blur"),
    "gaussian_noise": ("conditions.corruptions", "gaussian_noise"),
    "glass_blur": ("conditions.corruptions", "glass_blur"),
    "impulse_noise": ("conditions.corruptions", "impulse_noise"),
    "jpeg_compression": ("conditions.corruptions", "jpeg_compression"),
    "motion_blur": ("conditions.corruptions", "motion_blur"),
    "pixelate": ("conditions.corruptions", "pixelate"),
    "saturate": ("conditions.corruptions", "saturate"),
    "shot_noise": ("conditions.corruptions", "shot_noise"),
    "snow": ("conditions.corruptions", "snow"),
    "spatter": ("conditions.corruptions", "spatter"),
    "speckle_noise": ("conditions.corruptions", "speckle_noise"),
    "zoom_blur": ("conditions.corruptions", "zoom_blur"),
    "CORRUPTIONS": ("conditions.corruptions", "CORRUPTIONS"),
    "SEVERITY_PARAMETERS": ("conditions.corruptions", "SEVERITY_PARAMETERS"),
    "corrupt": ("conditions.corruptions", "corrupt"),
    "Draws": ("conditions.imaging", "Draws"),
}
"""Public name -> (submodule, attribute), imported on first use."""

__all__ = ["CORRUPTIONS", "Classifier", "Draws", "IbnbenchError", "ModelInfo", "Preprocessing", "Record",
           "RecordWriteError", "RunOptions", "SEVERITY_PARAMETERS", "Weights", "WeightsError",
           "assert_no_regression", "brightness", "contrast", "corrupt", "create_model", "defocus_blur",
           "elastic_transform", "evaluate", "fog", "frost", "gaussian_blur", "gaussian_noise", "glass_blur",
           "impulse_noise", "jpeg_compression", "list_models", "load_suite", "model_info", "motion_blur", "pixelate",
           "predictions_for", "read_record", "register_model", "run", "saturate", "shot_noise", "snow", "spatter",
           "speckle_noise", "zoom_blur"]
"""The public names: those of :data:`_LAZY`."""

if TYPE_CHECKING:
    from ibnbench.conditions.corruptions import (
        CORRUPTIONS,
        SEVERITY_PARAMETERS,
        brightness,
        contrast,
        corrupt,
        defocus_blur,
        elastic_transform,
        fog,
        frost,
        gaussian_blur,
        gaussian_noise,
        glass_blur,
        impulse_noise,
        jpeg_compression,
        motion_blur,
        pixelate,
        saturate,
        shot_noise,
        snow,
        spatter,
        speckle_noise,
        zoom_blur,
    )
    from ibnbench.conditions.imaging import Draws
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

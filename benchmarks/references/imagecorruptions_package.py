"""``imagecorruptions`` 1.1.2 made importable on today's stack (shims: ``pkg_resources`` is gone from setuptools >=
81, ``np.float_`` from numpy 2, ``multichannel`` from scikit-image's ``gaussian``)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import numpy as np


def load() -> types.ModuleType:
    """The ``imagecorruptions`` package with its shims; :class:`ModuleNotFoundError` when it is not installed."""
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ModuleNotFoundError("the reference package `imagecorruptions` is not installed (pip install -e .[test])",
                                  name="imagecorruptions")
    shimmed = "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None
    if shimmed:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: os.path.join(
            os.path.dirname(sys.modules[package].__file__), name)
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    try:
        module = importlib.import_module("imagecorruptions")
    finally:  # the package keeps the name it imported; other code must not find a stub pkg_resources
        if shimmed:
            del sys.modules["pkg_resources"]
    corruptions = sys.modules["imagecorruptions.corruptions"]
    if not getattr(corruptions.gaussian, "shimmed", False):
        from skimage.filters import gaussian

        def gaussian_shim(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs["channel_axis"] = -1
            return gaussian(image, *args, **kwargs)

        gaussian_shim.shimmed = True
        corruptions.gaussian = gaussian_shim
    return module


def motion_blur():
    """imagecorruptions' numpy stand-in for ImageMagick's motion blur: ``(x, radius, sigma, angle)`` -> float32."""
    load()
    return sys.modules["imagecorruptions.corruptions"]._motion_blur

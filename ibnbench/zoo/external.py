"""Models from outside the zoo, with the preprocessing their authors state.

Specs: ``timm:NAME`` (timm's resolved data config), ``torchvision:NAME`` (the weights enum's
``transforms()``) and ``package.module:factory`` (what the factory declares in a ``preprocessing`` attribute or
returns beside the model, else torchvision's ImageNet default, assumed and said so). Each accepts ``weights``
None / "random" / "official" / a path / a URL; files load strictly.
"""
from __future__ import annotations

import difflib
import importlib
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Callable
from urllib.parse import urlparse

from torch import nn

from ibnbench.errors import UnknownModelError, WeightsError
from ibnbench.io import fetch, sha256_of
from ibnbench.zoo.meta import ModelInfo, Preprocessing, Weights
from ibnbench.zoo.weights import load_weights

TORCHVISION_LICENSE = "BSD-3-Clause (torchvision)"


def _to_255(values) -> tuple[float, ...]:
    """0..1 statistics on the 0..255 scale, rounded so that ImageNet's equal the registry constants."""
    return tuple(round(255 * v, 4) for v in values)


def _timm_info(spec: str, name: str) -> ModelInfo:
    import timm
    import timm.data

    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models()."
        raise UnknownModelError(f"unknown timm model {name!r} in {spec!r}.{hint}")
    cfg = timm.models.get_pretrained_cfg(name)
    data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
    crop = data["input_size"][-1]
    mode = "" if data.get("crop_mode", "center") == "center" else f", timm crop_mode {data['crop_mode']} not applied"
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg and cfg.tag else name
    preprocessing = Preprocessing(resize=math.floor(crop / data["crop_pct"]), crop=crop,
                                  mean=_to_255(data["mean"]), std=_to_255(data["std"]),
                                  interpolation=data["interpolation"], source=f"timm data config of {tag}{mode}")
    return ModelInfo(name=spec, builder=None, family="timm", variant="none", preprocessing=preprocessing,
                     license="see timm model card", description=f"timm model {name}")


def _torchvision_enum(spec: str, name: str):
    """The DEFAULT weights enum of a torchvision classification model."""
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        close = difflib.get_close_matches(name, tvm.list_models(module=tvm), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See torchvision.models.list_models()."
        raise UnknownModelError(f"unknown torchvision classification model {name!r} in {spec!r}.{hint}")
    return tvm.get_model_weights(name).DEFAULT


def _torchvision_info(spec: str, name: str) -> ModelInfo:
    enum = _torchvision_enum(spec, name)
    transform = enum.transforms()
    preprocessing = Preprocessing(resize=transform.resize_size[0], crop=transform.crop_size[0],
                                  mean=_to_255(transform.mean), std=_to_255(transform.std),
                                  interpolation=transform.interpolation.value,
                                  source=f"torchvision {enum}.transforms()")
    released = Weights.from_torchvision(enum, TORCHVISION_LICENSE)
    return ModelInfo(name=spec, builder=None, family="torchvision", variant="none", preprocessing=preprocessing,
                     weights=released, license=TORCHVISION_LICENSE, description=f"torchvision model {name}")


def _factory(spec: str, module_name: str, attr: str) -> Callable[..., nn.Module]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownModelError(f"model spec {spec!r}: cannot import module {module_name!r} "
                                f"({type(exc).__name__}: {exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnknownModelError(f"model spec {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def external_info(spec: str) -> ModelInfo:
    """Metadata (preprocessing above all) of ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory``."""
    prefix, _, name = spec.partition(":")
    if not prefix or not name:
        raise UnknownModelError(f"model spec {spec!r}: expected timm:NAME, torchvision:NAME or package.module:factory")
    if prefix == "timm":
        return _timm_info(spec, name)
    if prefix == "torchvision":
        return _torchvision_info(spec, name)
    declared = getattr(_factory(spec, prefix, name), "preprocessing", None)
    return ModelInfo(name=spec, builder=None, family="external", variant="none",
                     preprocessing=(_declared(spec, declared) if declared is not None
                                    else Preprocessing(source=ASSUMED_PREPROCESSING)),
                     description=f"{prefix}.{name}()")


ASSUMED_PREPROCESSING = "default (assumed)"


def _declared(spec: str, value: object) -> Preprocessing:
    """The preprocessing a factory declares (its ``preprocessing`` attribute, or the second item it returns):
    a :class:`Preprocessing`, a mapping of its fields or a ``--preprocessing`` string."""
    source = f"declared by {spec}"
    if isinstance(value, Preprocessing):
        return replace(value, source=source)
    if isinstance(value, str):
        return replace(Preprocessing.from_spec(value), source=source)
    if isinstance(value, Mapping):
        try:
            return Preprocessing(**{**value, "source": source})
        except TypeError as exc:
            raise UnknownModelError(f"model spec {spec!r}: its preprocessing {dict(value)} is not valid "
                                    f"({exc})") from None
    raise UnknownModelError(f"model spec {spec!r}: preprocessing must be a Preprocessing, a mapping or a string, "
                            f"not {type(value).__name__}")


def _hub_offline_unless_reachable() -> None:
    """Put huggingface_hub in offline mode when its endpoint cannot be reached, so that a missing file fails at
    once instead of after a minute of retries (nothing changes when HF_HUB_OFFLINE is set either way)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True


HUB_PROBE_TIMEOUT_S = 3.0


def create_external(spec: str, weights: str | None = None, **overrides) -> tuple[nn.Module, ModelInfo, dict]:
    """Build an external model; returns it with its :class:`ModelInfo` and what was loaded
    (``{"source", "path", "sha256"}``, as :func:`ibnbench.zoo.weights.load_weights`)."""
    info = external_info(spec)
    prefix, _, name = spec.partition(":")
    if weights != "official":
        if prefix == "timm":
            import timm

            model = timm.create_model(name, pretrained=False, **overrides)
        elif prefix == "torchvision":
            import torchvision.models as tvm

            model = tvm.get_model(name, weights=None, **overrides)
        else:
            model = _factory(spec, prefix, name)(**overrides)
            if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module):
                model, declared = model
                info = replace(info, preprocessing=_declared(spec, declared))
            if not isinstance(model, nn.Module):
                raise UnknownModelError(f"model spec {spec!r}: the factory returned {type(model).__name__}, "
                                        "not a torch.nn.Module (or a (module, preprocessing) pair)")
        return model, info, load_weights(model, info, weights)
    if prefix == "timm":
        import timm

        _hub_offline_unless_reachable()
        try:
            model = timm.create_model(name, pretrained=True, **overrides)
        except OSError as exc:  # offline, hub unreachable, file absent from the cache
            raise WeightsError(f"{spec}: cannot fetch timm's pretrained weights ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}). Run once with network access to fill the cache, "
                               "or pass --weights PATH.") from None
        return model, info, {"source": "official", "path": None, "sha256": None}
    if prefix == "torchvision":
        import torchvision.models as tvm

        path = fetch(info.weights.url, info.weights.sha256_prefix, spec)  # into torch hub's cache, where tv looks
        model = tvm.get_model(name, weights=_torchvision_enum(spec, name), **overrides)
        return model, info, {"source": "official", "path": str(path), "sha256": sha256_of(path)}
    raise WeightsError(f"{spec}: no released weights are known for a package.module:factory model; "
                       "pass --weights PATH (a state_dict file) or --weights random.")









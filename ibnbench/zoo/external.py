"""Models from outside the zoo's registry, with the preprocessing their authors state, as one protocol.

A spec names its source by prefix, chosen once (:func:`source_of`): ``timm:NAME`` (:class:`TimmSource`, timm's
resolved data config), ``torchvision:NAME`` (:class:`TorchvisionSource`, the weights enum's ``transforms()``) and
``package.module:factory`` (:class:`FactorySource`: what the factory declares in a ``preprocessing`` attribute or
returns beside the model, else torchvision's ImageNet default, assumed and said so). Each accepts ``weights`` None /
"random" / "official" / a path / a URL; files load strictly.

Nothing here touches the network unless asked: timm's official weights come from its cache or the Hugging Face
hub as timm fetches them. ``IBNBENCH_HUB_PROBE=1`` first checks that the hub answers, and when it does not, asks
timm's download for the cached file only (fails at once instead of after a minute of retries); the process's
environment is never changed.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import math
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Callable
from urllib.parse import urlparse

from torch import nn

from ibnbench.errors import UnknownModelError, WeightsError
from ibnbench.io import fetch, sha256_of
from ibnbench.zoo.meta import LoadedWeights, ModelInfo, Preprocessing, Weights, to_255, torchvision_preprocessing
from ibnbench.zoo.weights import load_weights

TORCHVISION_LICENSE = "BSD-3-Clause (torchvision)"
ASSUMED_PREPROCESSING = "default (assumed)"
HUB_PROBE_ENV = "IBNBENCH_HUB_PROBE"
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ExternalSource(ABC):
    """Where an external model comes from: ``spec`` as given, ``name`` after the prefix."""

    spec: str
    name: str

    @abstractmethod
    def info(self) -> ModelInfo:
        """The model's metadata, its preprocessing above all (nothing is built)."""

    def build(self, info: ModelInfo, **overrides) -> tuple[nn.Module, ModelInfo]:
        """The model with random weights, and ``info`` (as the build may have declared more)."""
        return self._random(**overrides), info

    @abstractmethod
    def _random(self, **overrides) -> nn.Module:
        """The model with random weights."""

    @abstractmethod
    def pretrained(self, info: ModelInfo, **overrides) -> tuple[nn.Module, LoadedWeights]:
        """The model with its official weights, and what was loaded."""


class TimmSource(ExternalSource):
    """``timm:NAME``: preprocessing from timm's resolved data config, official weights as timm fetches them."""

    def info(self) -> ModelInfo:
        import timm
        import timm.data

        if not timm.is_model(self.name):
            close = difflib.get_close_matches(self.name.split(".")[0], timm.list_models(), n=5)
            hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models()."
            raise UnknownModelError(f"unknown timm model {self.name!r} in {self.spec!r}.{hint}")
        cfg = timm.models.get_pretrained_cfg(self.name)
        data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
        crop = data["input_size"][-1]
        crop_mode = data.get("crop_mode", "center")
        mode = "" if crop_mode == "center" else f", timm crop_mode {crop_mode} not applied"
        preprocessing = Preprocessing(resize=math.floor(crop / data["crop_pct"]), crop=crop,
                                      mean=to_255(data["mean"]), std=to_255(data["std"]),
                                      interpolation=data["interpolation"],
                                      source=f"timm data config of {self._tagged(cfg)}{mode}")
        return ModelInfo(name=self.spec, builder=None, family="timm", variant="none", preprocessing=preprocessing,
                         license="see timm model card", description=f"timm model {self.name}")

    def _tagged(self, cfg) -> str:
        """timm's ``architecture.tag`` of the pretrained config ``name`` resolves to."""
        return f"{cfg.architecture}.{cfg.tag}" if cfg and cfg.tag else self.name

    def _random(self, **overrides) -> nn.Module:
        import timm

        return timm.create_model(self.name, pretrained=False, **overrides)

    def pretrained(self, info: ModelInfo, **overrides) -> tuple[nn.Module, LoadedWeights]:
        import timm

        try:
            with _hub_offline_if_probed_unreachable():
                model = timm.create_model(self.name, pretrained=True, **overrides)
        except OSError as exc:  # offline, hub unreachable, file absent from the cache
            raise WeightsError(f"{self.spec}: cannot fetch timm's pretrained weights ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}). Run once with network access to fill the cache, "
                               "or pass --weights PATH.") from None
        release = self._tagged(timm.models.get_pretrained_cfg(self.name))
        return model, LoadedWeights(source="official", release=f"timm {release}")


class TorchvisionSource(ExternalSource):
    """``torchvision:NAME``: the DEFAULT weights enum gives preprocessing, URL, hash and metrics."""

    def _enum(self):
        import torchvision.models as tvm

        if self.name not in tvm.list_models(module=tvm):
            close = difflib.get_close_matches(self.name, tvm.list_models(module=tvm), n=5)
            hint = f" Did you mean: {', '.join(close)}?" if close else " See torchvision.models.list_models()."
            raise UnknownModelError(f"unknown torchvision classification model {self.name!r} in {self.spec!r}.{hint}")
        return tvm.get_model_weights(self.name).DEFAULT

    def info(self) -> ModelInfo:
        enum = self._enum()
        return ModelInfo(name=self.spec, builder=None, family="torchvision", variant="none",
                         preprocessing=torchvision_preprocessing(enum),
                         weights=Weights.from_torchvision(enum, TORCHVISION_LICENSE), license=TORCHVISION_LICENSE,
                         description=f"torchvision model {self.name}")

    def _random(self, **overrides) -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(self.name, weights=None, **overrides)

    def pretrained(self, info: ModelInfo, **overrides) -> tuple[nn.Module, LoadedWeights]:
        import torchvision.models as tvm

        path = fetch(info.weights.url, info.weights.sha256_prefix, self.spec)  # into torch hub's cache, where tv looks
        model = tvm.get_model(self.name, weights=self._enum(), **overrides)
        return model, LoadedWeights(source="official", path=str(path), sha256=sha256_of(path),
                                    release=info.release_name(info.weights))


class FactorySource(ExternalSource):
    """``package.module:factory``: a callable returning a module (or a ``(module, preprocessing)`` pair)."""

    def _factory(self) -> Callable[..., nn.Module]:
        module_name = self.spec.partition(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownModelError(f"model spec {self.spec!r}: cannot import module {module_name!r} "
                                    f"({type(exc).__name__}: {exc})") from None
        factory = getattr(module, self.name, None)
        if not callable(factory):
            raise UnknownModelError(f"model spec {self.spec!r}: module {module_name!r} has no callable {self.name!r}")
        return factory

    def info(self) -> ModelInfo:
        declared = getattr(self._factory(), "preprocessing", None)
        return ModelInfo(name=self.spec, builder=None, family="external", variant="none",
                         preprocessing=(self._declared(declared) if declared is not None
                                        else Preprocessing(source=ASSUMED_PREPROCESSING)),
                         description=f"{self.spec.replace(':', '.')}()")

    def build(self, info: ModelInfo, **overrides) -> tuple[nn.Module, ModelInfo]:
        model = self._random(**overrides)
        if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module):
            model, declared = model
            info = replace(info, preprocessing=self._declared(declared))
        if not isinstance(model, nn.Module):
            raise UnknownModelError(f"model spec {self.spec!r}: the factory returned {type(model).__name__}, "
                                    "not a torch.nn.Module (or a (module, preprocessing) pair)")
        return model, info

    def _random(self, **overrides) -> nn.Module:
        return self._factory()(**overrides)

    def pretrained(self, info: ModelInfo, **overrides) -> tuple[nn.Module, LoadedWeights]:
        raise WeightsError(f"{self.spec}: no released weights are known for a package.module:factory model; "
                           "pass --weights PATH (a state_dict file) or --weights random.")

    def _declared(self, value: object) -> Preprocessing:
        """The preprocessing the factory declares (its ``preprocessing`` attribute, or the second item it returns):
        a :class:`Preprocessing`, a mapping of its fields or a ``--preprocessing`` string."""
        source = f"declared by {self.spec}"
        if isinstance(value, Preprocessing):
            return replace(value, source=source)
        if isinstance(value, str):
            return replace(Preprocessing.from_spec(value), source=source)
        if isinstance(value, Mapping):
            try:
                return Preprocessing(**{**value, "source": source})
            except TypeError as exc:
                raise UnknownModelError(f"model spec {self.spec!r}: its preprocessing {dict(value)} is not valid "
                                        f"({exc})") from None
        raise UnknownModelError(f"model spec {self.spec!r}: preprocessing must be a Preprocessing, a mapping or a "
                                f"string, not {type(value).__name__}")


def _hub_unreachable() -> bool:
    """Whether the Hugging Face hub's endpoint does not answer within :data:`HUB_PROBE_TIMEOUT_S`."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def _hub_offline_if_probed_unreachable() -> Iterator[None]:
    """With ``IBNBENCH_HUB_PROBE=1`` and the hub unreachable, huggingface_hub's offline mode for the ``with`` body
    only (a cached file loads, a missing one fails at once); otherwise nothing."""
    if os.environ.get(HUB_PROBE_ENV) != "1" or not _hub_unreachable():
        yield
        return
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


SOURCES: dict[str, type[ExternalSource]] = {"timm": TimmSource, "torchvision": TorchvisionSource}
"""The sources named by a prefix; any other prefix is a module (:class:`FactorySource`)."""


def source_of(spec: str) -> ExternalSource:
    """The source a ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory`` spec names."""
    prefix, _, name = spec.partition(":")
    if not prefix or not name:
        raise UnknownModelError(f"model spec {spec!r}: expected timm:NAME, torchvision:NAME or package.module:factory")
    return SOURCES.get(prefix, FactorySource)(spec, name)


def external_info(spec: str) -> ModelInfo:
    """Metadata (preprocessing above all) of an external spec."""
    return source_of(spec).info()


def create_external(spec: str, weights: str | None = None, **overrides) -> tuple[nn.Module, ModelInfo, LoadedWeights]:
    """Build an external model; returns it with its :class:`ModelInfo` and what was loaded."""
    source = source_of(spec)
    info = source.info()
    if weights == "official":
        model, loaded = source.pretrained(info, **overrides)
        return model, info, loaded
    model, info = source.build(info, **overrides)
    return model, info, load_weights(model, info, weights)

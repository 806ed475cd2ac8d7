"""Model registry in the style of timm: tiny ``@register_model`` builders plus metadata.

Every registered architecture carries a :class:`ModelInfo` that says how to preprocess for it and lists its
releases, timm's ``arch.tag`` way (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``): where each one's weights live
(URL + sha256 prefix, torchvision-style), its own preprocessing and the error its authors report, so a benchmark
never has to guess. The bare name (``resnet50``) means the default release, the first registered.
"""
from __future__ import annotations

import fnmatch
from dataclasses import replace
from typing import Callable, Sequence

import torch
from torch import nn

from ibnbench.errors import UnknownModelError, UsageError
from ibnbench.zoo.meta import ModelInfo, Preprocessing, Weights

_REGISTRY: dict[str, ModelInfo] = {}

PARAMETER_COUNTS = {
    "cyclegan_resnet_9blocks": 11378179,
    "deeplab_r50": 39638355,
    "deeplab_r50_ibn_a": 39638355,
    "deeplab_r50_ibn_b": 39639891,
    "densenet121_ibn_a": 7978856,
    "densenet161_ibn_a": 28681000,
    "densenet169_ibn_a": 14149480,
    "densenet201_ibn_a": 20013928,
    "efficientnet_lite0": 4652008,
    "efficientnet_lite1": 5416680,
    "efficientnet_lite2": 6092072,
    "resnet101": 44549160,
    "resnet101_ibn_a": 44549160,
    "resnet101_ibn_a_old": 44549160,
    "resnet101_ibn_b": 44550696,
    "resnet152": 60192808,
    "resnet152_ibn_a": 60192808,
    "resnet152_ibn_a_old": 60192808,
    "resnet152_ibn_b": 60194344,
    "resnet18": 11689512,
    "resnet18_ibn_a": 11689512,
    "resnet18_ibn_b": 11689896,
    "resnet34": 21797672,
    "resnet34_ibn_a": 21797672,
    "resnet34_ibn_b": 21798056,
    "resnet50": 25557032,
    "resnet50_ibn_a": 25557032,
    "resnet50_ibn_a_old": 25557032,
    "resnet50_ibn_a_ratio0.25": 25557032,
    "resnet50_ibn_a_ratio0.75": 25557032,
    "resnet50_ibn_a_ratio1.0": 25557032,
    "resnet50_ibn_a_stages1": 25557032,
    "resnet50_ibn_a_stages12": 25557032,
    "resnet50_ibn_a_stages1234": 25557032,
    "resnet50_ibn_a_x2": 25557032,
    "resnet50_ibn_ad": 25557800,
    "resnet50_ibn_b": 25558568,
    "resnet50_ibn_c": 29800872,
    "resnet50_ibn_d": 25557800,
    "resnext101_ibn_a": 44177704,
    "resnext152_ibn_a": 59951400,
    "resnext50_ibn_a": 25028904,
    "robustnet_r101_os8_base": 64197446,
    "robustnet_r101_os8_ibn": 64198982,
    "robustnet_r101_os8_isw": 64197190,
    "robustnet_r50_os16_base": 45081542,
    "robustnet_r50_os16_ibn": 45083078,
    "robustnet_r50_os16_isw": 45081414,
    "se_resnet101_ibn_a": 49292328,
    "se_resnet152_ibn_a": 66770984,
    "se_resnet50_ibn_a": 28071976,
}
"""Parameters of each registered model, so that ``ibnbench models`` lists them without building every
architecture (tests/test_registry.py checks each against a meta-device build; a model registered without an
entry here, or with ``params=`` in its ``register_model``, fails that test)."""


def register_model(fn: Callable | None = None, *, weights: Weights | Sequence[Weights] | None = None,
                   **meta) -> Callable:
    """Register a builder under its function name: ``@register_model(family=..., variant=..., weights=...)``;
    ``weights``: one release or several (``arch.tag``, each with its own ``tag``), the default first."""
    releases = (weights,) if isinstance(weights, Weights) else tuple(weights or ())

    def wrap(builder: Callable) -> Callable:
        name = meta.pop("name", builder.__name__)
        if name in _REGISTRY:
            raise UsageError(f"model {name!r} is registered twice")
        first_paragraph = (builder.__doc__ or "").strip().split("\n\n")[0]
        description = meta.pop("description", " ".join(first_paragraph.split()))
        preprocessing = meta.pop("preprocessing", Preprocessing())
        info = ModelInfo(name=name, builder=builder, description=description, architecture=name,
                         params=meta.pop("params", PARAMETER_COUNTS.get(name)), preprocessing=preprocessing,
                         releases=tuple(replace(w, preprocessing=w.preprocessing or preprocessing) for w in releases),
                         **meta)
        _REGISTRY[name] = info.with_release() if releases else info
        return builder

    return wrap(fn) if fn is not None else wrap


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (``arch``: its default release; ``arch.tag``: that release), or of an
    external spec (``timm:``, ``torchvision:``, ``pkg.mod:fn``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    architecture, _, tag = name.rpartition(".")
    if architecture in _REGISTRY and ":" not in name:
        return _REGISTRY[architecture].with_release(tag)
    if ":" in name:
        from ibnbench.zoo import external

        return external.external_info(name)
    close = fnmatch.filter(_REGISTRY, f"*{name}*")[:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `ibnbench models`."
    raise UnknownModelError(f"unknown model {name!r}.{hint}")


def list_models(pattern: str = "*", *, task: str | None = "classification", releases: bool = False) -> list[str]:
    """Registered architectures matching a glob ``pattern`` (all tasks with ``task=None``); with ``releases``, each
    architecture's releases as ``arch.tag`` instead (an architecture without one by its bare name), matched on
    either name."""
    names = []
    for arch, info in _REGISTRY.items():
        if task is not None and info.task != task:
            continue
        for name in [info.release_name(w) for w in info.releases] if releases and info.releases else [arch]:
            if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(arch, pattern):
                names.append(name)
    return sorted(names)


def create_model(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a model by name (``arch``, ``arch.tag`` or an external spec); ``weights``: None (random init),
    "random", "official" (the named release's file), a path or a URL.

    Random initialisation is seeded (seed 0, without touching the global RNG), so every process of a
    distributed run, and every rerun, builds the same random model. The model comes back in eval mode with
    ``model.ibnbench_info`` (its :class:`ModelInfo`) and ``model.ibnbench_weights`` (the
    :class:`~ibnbench.zoo.meta.LoadedWeights`: source, file, sha256, release) attached.
    """
    from ibnbench.zoo.weights import load_weights

    info = model_info(name)
    if info.builder is None:  # external specs build themselves with their weights
        from ibnbench.zoo import external

        model, info, loaded = external.create_external(name, weights=weights, **overrides)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = info.builder(**overrides)
        loaded = load_weights(model, info, weights)
    model.ibnbench_info = info if not overrides else replace(info, description=f"{info.description} {overrides}")
    model.ibnbench_weights = loaded
    return model.eval()

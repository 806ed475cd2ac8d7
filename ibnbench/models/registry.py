"""Model registry in the style of timm: tiny ``@register_model`` builders plus metadata.

Every registered model carries a :class:`ModelInfo` that says how to preprocess for it,
where its released weights live (URL + sha256 prefix, torchvision-style) and what error
its authors report, so a benchmark never has to guess.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


class UnknownModelError(KeyError):
    """Raised for a model name that is neither registered nor an external spec."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one clean line
        return str(self.args[0])


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing: shorter side -> ``resize``, centre crop ``crop``, then
    ``(x - mean) / std`` with ``x`` RGB on the 0..255 scale."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    interpolation: str = "bilinear"
    source: str = "torchvision ImageNet default"

    @property
    def convention(self) -> str:
        """A short human description of the input normalisation."""
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return f"(x-{self.mean[0]:g})/{self.std[0]:g}"
        return "imagenet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN_255, IMAGENET_STD_255) else "mean/std"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a 0..255 RGB batch ``[N,3,H,W]`` to the model's input."""
        mean, inv_std = _normalization(self.mean, self.std, x.device, x.dtype)
        return (x - mean) * inv_std

    def as_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "convention": self.convention, "source": self.source}


@cache
def _normalization(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``1/std`` as ``[1,3,1,1]`` tensors on ``device``, made once per (statistics, device, dtype):
    made from Python numbers on every call, they would cost a copy to the device and a host sync per forward."""
    values = torch.tensor([mean, [1.0 / s for s in std]], dtype=dtype, device=device)
    return values[0].view(1, 3, 1, 1), values[1].view(1, 3, 1, 1)


EFFICIENTNET_LITE_PREPROCESSING = Preprocessing(
    mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), source="efficientnet-lite: (x-127)/128"
)


@dataclass(frozen=True)
class Weights:
    """A released checkpoint: where it is, how to verify it, what it scores (percent error).

    ``local_path``, when set, returns the path of a copy shipped inside an installed Python package;
    it is used instead of downloading ``url`` (which then only names the file's origin).
    """

    url: str
    sha256_prefix: str | None = None
    top1_err: float | None = None
    top5_err: float | None = None
    source: str = ""
    license: str = ""
    local_path: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model."""

    name: str
    builder: Callable[..., nn.Module] = field(repr=False)
    family: str
    variant: str
    preprocessing: Preprocessing = Preprocessing()
    weights: Weights | None = None
    license: str = ""
    task: str = "classification"
    research: bool = False
    description: str = ""

    def num_params(self) -> int:
        """Parameter count, computed on the meta device (no memory, no init cost)."""
        with torch.device("meta"):
            model = self.builder()
        return sum(p.numel() for p in model.parameters())


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(fn: Callable | None = None, **meta) -> Callable:
    """Register a builder under its function name: ``@register_model(family=..., variant=...)``."""

    def wrap(builder: Callable) -> Callable:
        name = meta.pop("name", builder.__name__)
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        description = meta.pop("description", (builder.__doc__ or "").strip().split("\n")[0])
        _REGISTRY[name] = ModelInfo(name=name, builder=builder, description=description, **meta)
        return builder

    return wrap(fn) if fn is not None else wrap


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model, or of an external spec (``timm:``, ``torchvision:``, ``pkg.mod:fn``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        from . import external

        return external.external_info(name)
    close = fnmatch.filter(_REGISTRY, f"*{name}*")[:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `ibnbench models`."
    raise UnknownModelError(f"unknown model {name!r}.{hint}")


def list_models(pattern: str = "*", *, task: str | None = "classification") -> list[str]:
    """Registered model names matching a glob ``pattern`` (all tasks with ``task=None``)."""
    return sorted(n for n, i in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (task is None or i.task == task))


def create_model(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a model by name; ``weights``: None (random init), "random", "official", a path or a URL.

    Random initialisation is seeded (seed 0, without touching the global RNG), so every process of a
    distributed run, and every rerun, builds the same random model. The model comes back in eval mode with ``model.ibnbench_info`` (its :class:`ModelInfo`)
    and ``model.ibnbench_weights`` (what was loaded: source and sha256) attached.
    """
    from ..weights import load_weights

    info = model_info(name)
    if info.builder is None:  # external specs build themselves with their weights
        from . import external

        model, info, loaded = external.create_external(name, weights=weights, **overrides)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = info.builder(**overrides)
        loaded = load_weights(model, info, weights)
    model.ibnbench_info = info if not overrides else replace(info, description=f"{info.description} {overrides}")
    model.ibnbench_weights = loaded
    return model.eval()

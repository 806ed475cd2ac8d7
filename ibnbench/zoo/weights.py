"""Resolve and load model weights: a local path, a URL (into the torch hub cache, sha256-checked),
"official" (the model's released file) or "random", with one clear error for every failure.

Checkpoints of every PyTorch version load as PyTorch itself loads them (legacy BN counters, IN statistics).
"""
from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from ibnbench.errors import WeightsError
from ibnbench.io import checkpoint_file, fetch, sha256_of, verified
from ibnbench.zoo.meta import RANDOM_WEIGHTS, LoadedWeights

if TYPE_CHECKING:
    from ibnbench.zoo.meta import ModelInfo, Weights


WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
LEGACY_IN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
NUMPY_SCALAR_TYPES = ("f8", "f4")
"""The numpy scalars a checkpoint may hold beside its state_dict (float64 and float32, e.g. RobustNet's
``mean_iu``): ``torch.load(weights_only=True)`` rebuilds exactly these and refuses every other numpy object."""


def _numpy_dtype(spec, align, copy):
    """``numpy.dtype`` as a pickle calls it to rebuild a scalar's dtype, for :data:`NUMPY_SCALAR_TYPES` only."""
    import numpy as np

    if spec not in NUMPY_SCALAR_TYPES or align not in (0, False) or copy not in (1, True):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not one of the allowed scalar types "
                                     f"{', '.join(NUMPY_SCALAR_TYPES)}")
    return np.dtype(spec)


def _numpy_scalar(dtype, data):
    """numpy's scalar reconstructor, for a float scalar of an allowed dtype given as its raw bytes."""
    import numpy as np

    if not (isinstance(dtype, np.dtype) and dtype.str[1:] in NUMPY_SCALAR_TYPES and isinstance(data, bytes)
            and len(data) == dtype.itemsize):
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not an allowed float scalar")
    return np.frombuffer(data, dtype)[0]


def numpy_scalar_globals() -> list[tuple]:
    """What ``torch.load(weights_only=True)`` needs to rebuild the allowed numpy scalars, under the names numpy 1.x
    (``numpy.core``) and 2.x (``numpy._core``) pickle them with: checked stand-ins for the reconstructor and
    ``numpy.dtype``, and the dtype classes whose pickled state numpy itself then sets."""
    import numpy as np

    dtype_classes = [(type(np.dtype(spec)), f"numpy.dtypes.{type(np.dtype(spec)).__name__}")
                     for spec in NUMPY_SCALAR_TYPES]
    return [(_numpy_scalar, "numpy.core.multiarray.scalar"), (_numpy_scalar, "numpy._core.multiarray.scalar"),
            (_numpy_dtype, "numpy.dtype"), *dtype_classes]


def _load_error(exc: Exception) -> str:
    """The part of a ``torch.load`` failure that says what is wrong (for weights-only refusals: which global)."""
    refused = re.search(r"WeightsUnpickler error:\s*(.*?)(?: Please use|\n|$)", str(exc))
    if refused:
        return (f"it holds an object ibnbench does not unpickle ({refused.group(1).strip().rstrip('.')}); only "
                "tensors, plain Python values and numpy float scalars are read")
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def resolve(spec: str, info: ModelInfo, progress: bool = True) -> Path | None:
    """The checkpoint file ``spec`` names for ``info`` (None for random init)."""
    if spec == "random":
        return None
    if spec == "official":
        released: Weights | None = info.weights
        if released is None:
            raise WeightsError(f"{info.name}: no released weights (research variant or not published); "
                               "pass --weights PATH or --weights random.")
        if released.url is None and released.local_path is None:
            raise WeightsError(f"{info.name}: the released weights cannot be downloaded automatically: "
                               f"{released.how_to_get}.")
        if released.local_path is not None:  # shipped inside an installed package
            return verified(Path(released.local_path()), released.sha256_prefix, info.name,
                             f"reinstall the package that ships it ({released.source})")
        return fetch(released.url, released.sha256_prefix, info.name, progress)
    return checkpoint_file(spec, info.name, progress)


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def read_state_dict(path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """Read a checkpoint, unwrap ``{"state_dict": ...}``-style containers and strip ``module.`` prefixes.

    The file is read with ``weights_only=True``: tensors, plain Python values and the numpy float scalars of
    :data:`NUMPY_SCALAR_TYPES` (RobustNet saves its ``mean_iu`` as one); any other object is refused.

    PyTorch's per-module version metadata (``_metadata``), when the file has it, is kept (prefixes stripped):
    it decides which legacy layouts PyTorch, and so :func:`load_state_dict_strict`, accepts."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch.save's zip archive nor a legacy pickle
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor a pickle: "
                           "is it a text or image file?)")
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_load_error(exc)})") from None
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state_dict (a mapping of names to tensors).")
    state = OrderedDict((_strip_module(k), v) for k, v in obj.items())
    metadata = getattr(obj, "_metadata", None)
    if metadata is not None:
        state._metadata = OrderedDict((_strip_module(k) if k != "module" else "", v) for k, v in metadata.items())
    return state


def _as_pytorch_reads_legacy(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             metadata: Mapping[str, dict] | None) -> OrderedDict[str, torch.Tensor]:
    """``state_dict`` as PyTorch reads checkpoints written before its norm layers' current versions:
    a BatchNorm without ``num_batches_tracked`` (module version < 2 or none recorded) gets the counter at 0;
    an InstanceNorm that keeps no running statistics drops the ``running_mean``/``running_var`` that
    PyTorch < 0.4 saved for it. Nothing else changes."""
    out = OrderedDict(state_dict)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        version = (metadata or {}).get(name, {}).get("version")
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
                and (version is None or version < 2) and f"{prefix}running_mean" in out):
            out.setdefault(f"{prefix}num_batches_tracked", torch.tensor(0, dtype=torch.long))
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
            for stat in LEGACY_IN_STATISTICS:
                out.pop(prefix + stat, None)
    if metadata is not None:
        out._metadata = metadata
    return out


def _check_class_count(model: nn.Module, own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                       model_name: str, origin: str) -> None:
    """A checkpoint trained for another number of classes fails with one error giving both counts: the model's
    ``classifier_keys`` name the state-dict entries whose first dimension is its class count."""
    for key in getattr(model, "classifier_keys", ()):
        if key in state_dict and key in own and state_dict[key].shape[:1] != own[key].shape[:1]:
            raise WeightsError(f"{origin} is a checkpoint for {state_dict[key].shape[0]} classes ({key}); "
                               f"{model_name} predicts {own[key].shape[0]}")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], model_name: str,
                           origin: str = "checkpoint") -> None:
    """Strict load that accepts exactly the legacy layouts PyTorch accepts (plus PyTorch < 0.4's instance-norm
    statistics, dropped); any other mismatch raises one error naming the model and the first offending keys."""
    metadata = getattr(state_dict, "_metadata", None)
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        state_dict = adapt(dict(state_dict))
    state_dict = _as_pytorch_reads_legacy(model, state_dict, metadata)
    own = model.state_dict()
    _check_class_count(model, own, state_dict, model_name, origin)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                   for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise WeightsError(f"{origin} does not fit {model_name}: {'; '.join(parts)}. "
                           f"Is it a checkpoint of another architecture?")
    model.load_state_dict(state_dict, strict=True)


def load_weights(model: nn.Module, info: ModelInfo, spec: str | None, progress: bool = True) -> LoadedWeights:
    """Load ``spec`` into ``model``; returns what was loaded, for the result record (its ``release``: the release
    of ``info``'s architecture whose hash the file has, whatever its name or origin, else None)."""
    if spec is None or spec == "random":
        return RANDOM_WEIGHTS
    path = resolve(spec, info, progress)
    load_state_dict_strict(model, read_state_dict(path), info.name, origin=str(path))
    sha256 = sha256_of(path)
    return LoadedWeights(source=spec, path=str(path), sha256=sha256, release=info.release_of(sha256))

"""PLAN"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from ibnbench.conditions.suite import Suite, read_suite
from ibnbench.errors import UsageError
from ibnbench.zoo import generators


def per_model(values: Sequence[str] | None, names: Sequence[str], default: str | None, option: str) -> list:
    """One value per model: ``values`` holds one for all, one per model, or none (``default``)."""
    given = list(values or [default])
    if len(given) not in (1, len(names)):
        raise UsageError(f"{option}: give one for all models or one per --model ({len(names)}), not {len(given)}")
    return given * len(names) if len(given) == 1 else given


def weights_per_model(weights: Sequence[str] | None, names: Sequence[str], default: str) -> list[str]:
    """One weights spec per model: ``weights`` holds one for all, one per model, or none (``default``)."""
    return per_model(weights, names, default, "--weights")


def _weights_label(spec: str) -> str:
    return spec.rstrip("/").rsplit("/", 1)[-1] if spec not in ("official", "random") else spec


def column_names(names: Sequence[str], weights: Sequence[str], preprocessing: Sequence[str | None]) -> list[str]:
    """One result column per ``--model``: a name given more than once is told apart by its weights
    (``resnet18[random]``, ``resnet18[a.pth]``) or, where those agree, by its position (``resnet18#2``)."""
    runs = list(zip(names, weights, preprocessing))
    twin = next((r for i, r in enumerate(runs) if r in runs[:i]), None)
    if twin is not None:
        raise UsageError(f"--model {twin[0]} is given twice with the same --weights {twin[1]}"
                         + (f" and --preprocessing {twin[2]}" if twin[2] else "") + ": drop one")
    columns = []
    for i, (name, spec, _) in enumerate(runs):
        same = [j for j, n in enumerate(names) if n == name]
        labels = [_weights_label(weights[j]) for j in same]
        if len(same) == 1:
            columns.append(name)
        elif len(set(labels)) == len(labels):
            columns.append(f"{name}[{_weights_label(spec)}]")
        else:
            columns.append(f"{name}#{same.index(i) + 1}")
    return columns


def load_suite(name_or_path: str | os.PathLike, *, style_weights: Mapping[str, str] | None = None) -> Suite:
    """A shipped suite by name (``"table1"``) or a suite file by path, ready to run: its style conditions get their
    CycleGAN generators from the zoo. ``style_weights`` maps a style name to the generator weights its style
    conditions use instead of the file's (``{"monet": "random"}`` or ``{"monet": "/path/style_monet.pth"}``)."""
    return read_suite(name_or_path, style_weights=style_weights, generators=generators)

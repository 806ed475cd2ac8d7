"""What a run will do, settled before any image is decoded: one weights spec and preprocessing per model, result
columns, the suite's conditions (missing assets refused or skipped), the dataset and its class subset.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from torch import nn

from ibnbench.conditions.imagenet_c_release import RELEASED_LAYOUT, is_released_tree, released_suite
from ibnbench.conditions.imagenet_p_release import is_released_p, released_p_dataset, released_p_suite
from ibnbench.conditions.suite import Suite, read_suite
from ibnbench.data.classes import ClassSubset
from ibnbench.data.discovery import ValDataset, class_subset, open_dataset, restrict
from ibnbench.data.geometry import Geometry
from ibnbench.data.image_list import select_images
from ibnbench.errors import UsageError
from ibnbench.zoo import create_model, generators, model_info
from ibnbench.zoo.meta import Preprocessing


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


def load_suite(name_or_path: str | os.PathLike, *, style_weights: Mapping[str, str] | None = None,
               style_dirs: Mapping[str, str | os.PathLike] | None = None) -> Suite:
    """A shipped suite by name (``"table1"``) or a suite file by path, ready to run: its style conditions get their
    CycleGAN generators from the zoo. ``style_weights`` maps a style name to the generator weights its style
    conditions use instead of the file's (``{"monet": "random"}`` or ``{"monet": "/path/style_monet.pth"}``),
    ``style_dirs`` maps a style name to its pre-rendered
    output (:func:`~ibnbench.conditions.suite.read_suite`)."""
    return read_suite(name_or_path, style_weights=style_weights, generators=generators,
                      style_dirs=style_dirs)


def check_rendered_geometry(suite: Suite, columns: Sequence[str], geometries: Sequence[Preprocessing]) -> None:
    """Refuse pre-rendered style images (``--style-dir``) cut otherwise than a model's inputs are."""
    for condition in suite.conditions:
        rendered = getattr(condition, "rendered_geometry", None)
        for column, geometry in zip(columns, geometries):
            if rendered is not None and rendered != Geometry.of(geometry):
                raise UsageError(f"--style-dir {condition.style}={condition.rendered}: its images are the crops "
                                 f"{rendered.key}, model {column} takes {Geometry.of(geometry).key}; render them "
                                 "for its preprocessing or let the generator run")


@dataclass(frozen=True)
class Classifier:
    """A model as the engine runs it: the module, the preprocessing its inputs get, and where its weights came
    from (``{"source", "sha256", "release", ...}``, for the record)."""

    module: nn.Module
    preprocessing: Preprocessing
    weights: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, model: nn.Module | Classifier) -> Classifier:
        """``model`` as :func:`ibnbench.create_model` made it (which notes its preprocessing and weights)."""
        if isinstance(model, Classifier):
            return model
        info = getattr(model, "ibnbench_info", None)
        if info is None:
            raise UsageError(f"{type(model).__name__} was not made by ibnbench.create_model: give "
                             "Classifier(module, preprocessing) instead")
        return cls(model, info.preprocessing, model.ibnbench_weights.as_dict())


def select_conditions(suite: Suite, conditions: Sequence[str] | None = None, skip_missing: bool = False,
                      hint: str = "or pass --skip-missing") -> tuple[Suite, list[str]]:
    """``suite`` narrowed to ``conditions`` (all when None) and to those whose assets are present; a missing asset
    stops the run (naming it) unless ``skip_missing``, which leaves the condition out and returns its id."""
    chosen = suite if conditions is None else suite.select(conditions)
    missing = {c.id: c.requires for c in chosen.conditions if c.requires}
    if missing and not skip_missing:
        details = "; ".join(f"{cid}: {', '.join(req)}" for cid, req in missing.items())
        raise UsageError(f"missing assets for condition(s) {details} ({hint})")
    if missing:
        chosen = chosen.select([c.id for c in chosen.conditions if c.id not in missing])
    return chosen, list(missing)


def _first(dataset: ValDataset, limit: int | None) -> ValDataset:
    """The first ``limit`` images of ``dataset`` (all when None)."""
    if limit is None:
        return dataset
    return dataclasses.replace(dataset, files=dataset.files[:limit], labels=dataset.labels[:limit],
                               sizes=dataset.sizes[:limit])


def released_conditions(suite: Suite, data: str | os.PathLike, difficulty: int = 1):
    """``suite`` as ``data`` serves it, the ids it cannot serve, and how to list the run's images
    (``read(suite, labels, limit)``): the downloaded ImageNet-C (each corruption read from its folder, already
    224x224) or ImageNet-P (each perturbation's videos at ``difficulty``), or an ImageNet val folder."""
    if is_released_tree(data):
        def read_c(chosen: Suite, labels, limit) -> ValDataset:
            listed = open_dataset(chosen.conditions[0].root, labels=labels, limit=limit)
            return dataclasses.replace(listed, layout=RELEASED_LAYOUT, cropped=True)
        return *released_suite(suite, data), read_c
    if is_released_p(data):
        def read_p(chosen: Suite, labels, limit) -> ValDataset:
            if labels is not None:
                raise UsageError("--labels does not apply to the released ImageNet-P: its wnid folders label it")
            return released_p_dataset(chosen, limit)
        return *released_p_suite(suite, data, difficulty), read_p
    return suite, [], lambda chosen, labels, limit: open_dataset(data, labels=labels, limit=limit)


@dataclass
class RunPlan:
    """What a run (``run``, ``bench``) evaluates, settled before any image is decoded: models with their weights
    and preprocessing, the conditions that will run (and those left out), the dataset and its class subset."""

    names: list[str]
    columns: list[str]
    weights: list[str]
    preprocessing: list[Preprocessing | None]
    suite: Suite
    dataset: ValDataset
    classes: ClassSubset | None = None
    not_run: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, model: Sequence[str], data: str | os.PathLike, suite: str = "table1",
             conditions: Sequence[str] | None = None, weights: Sequence[str] | None = None, *,
             default_weights: str = "official", labels: str | os.PathLike | None = None, limit: int | None = None,
             skip_missing: bool = False, missing_hint: str = "or pass --skip-missing",
             style_weights: Mapping[str, str] | None = None, preprocessing: Sequence[str] | None = None,
             classes_from_folders: bool = False, classes: str | os.PathLike | ClassSubset | None = None,
             restrict_to_classes: bool = False, style_dirs: Mapping[str, str | os.PathLike] | None = None,
             subset: str | os.PathLike | None = None, difficulty: int = 1) -> RunPlan:
        """Check every argument (models first, then suite and assets, then the data listing) and plan the run;
        ``subset``: a file listing the images to evaluate (:func:`~ibnbench.data.image_list.select_images`), before
        ``limit``; ``difficulty``: the ImageNet-P difficulty, which picks the released noise folders (``--data``
        the downloaded ImageNet-P)."""
        names = list(model)
        if not names:
            raise UsageError("give at least one --model")
        infos = [model_info(name) for name in names]  # an unknown model fails before anything else is looked at
        segmenter = next((name for name, info in zip(names, infos) if info.task == "segmentation"), None)
        if segmenter is not None:
            raise UsageError(f"--model {segmenter} is a segmentation model; run it with --task segmentation "
                             "--data NAME=PATH (docs/segmentation.md)")
        specs = weights_per_model(weights, names, default_weights)
        prep_specs = per_model(preprocessing, names, None, "--preprocessing")
        chosen_prep = [Preprocessing.from_spec(p, i.preprocessing) if p is not None else None
                       for p, i in zip(prep_specs, infos)]
        columns = column_names(names, specs, prep_specs)
        chosen = load_suite(suite, style_weights=style_weights, style_dirs=style_dirs)
        if conditions is not None:
            chosen = chosen.select(conditions)
        labels_by_id = {c.id: c.label for c in chosen.conditions}
        chosen, not_run, read = released_conditions(chosen, data, difficulty)
        chosen, missing = select_conditions(chosen, skip_missing=skip_missing, hint=missing_hint)
        check_rendered_geometry(chosen, columns, [p or i.preprocessing for p, i in zip(chosen_prep, infos)])
        dataset = read(chosen, labels, None if subset else limit)
        if subset:
            dataset = _first(select_images(dataset, subset), limit)
        subset = class_subset(dataset, classes_from_folders, classes, check=not restrict_to_classes)
        if restrict_to_classes:
            if subset is None:
                raise UsageError("--restrict-to-classes needs a class subset "
                                 "(--classes FILE or --classes-from-folders)")
            dataset = restrict(dataset, subset.indices)
        for condition in chosen.conditions:
            condition.source(dataset)  # a condition with images of its own must have every one: fail before any work
        return cls(names, columns, specs, chosen_prep, chosen, dataset, subset, not_run + missing, labels_by_id)

    def build(self, announce: bool = True) -> dict[str, Classifier]:
        """The models by result column, weights loaded (downloaded if need be); ``announce`` notes assumed
        preprocessing on stderr."""
        models = {}
        for column, name, spec, prep in zip(self.columns, self.names, self.weights, self.preprocessing):
            module = create_model(name, weights=spec)
            own = module.ibnbench_info.preprocessing
            if prep is None and "assumed" in own.source and announce:
                print(f"note: {column}: preprocessing assumed: torchvision's ImageNet default (resize {own.resize}, "
                      f"crop {own.crop}, {own.convention}); pass --preprocessing resize=..,crop=..,mean=..,std=.. "
                      "if it expects another", file=sys.stderr, flush=True)
            models[column] = Classifier(module, prep or own, module.ibnbench_weights.as_dict())
        return models

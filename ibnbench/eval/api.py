"""The public entry, :func:`ibnbench.run`: one call for condition suites and dataset suites alike."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ibnbench.conditions.dataset_suites import is_dataset_suite
from ibnbench.data.classes import ClassSubset
from ibnbench.errors import UsageError
from ibnbench.eval.condition_runs import run_condition_suite
from ibnbench.eval.natural_runs import run_dataset_suite
from ibnbench.eval.options import RunOptions, RunRequest
from ibnbench.results.record import Record


def run(models: Sequence[str], data: str | os.PathLike, *, suite: str | os.PathLike = "table1",
        options: RunOptions | None = None, output: str | os.PathLike | None = None,
        results_dir: str | os.PathLike = "results", conditions: Sequence[str] | None = None,
        weights: Sequence[str] | None = None, preprocessing: Sequence[str] | None = None,
        labels: str | os.PathLike | None = None, resume: bool = False, restart: bool = False,
        skip_missing: bool = False, style_weights: Mapping[str, str] | None = None,
        classes_from_folders: bool = False, classes: str | os.PathLike | ClassSubset | None = None,
        restrict_to_classes: bool = False) -> Record:
    """``ibnbench run`` as a function: evaluate ``models`` under ``suite`` on ``data`` (an ImageNet val folder),
    write the record (and its predictions sidecar) and return it.

    ``suite``: a condition suite (``"table1"``, ``"imagenet-c"``, a TOML path; :func:`ibnbench.load_suite`) or a
    dataset suite (``"natural"``: val, ImageNetV2, -Sketch, -R, -A, Stylized-ImageNet, from ``$IBNBENCH_DATA``).
    ``options``: how to run (:class:`ibnbench.RunOptions`: device, batch size, precision, ``limit``, ...), checked
    before any weight is loaded. ``output``: the record path (default ``<results_dir>/<suite>-<models>-<time>.json``).
    ``conditions``: a subset of the suite's condition ids (of a dataset suite: dataset ids). ``weights`` and
    ``preprocessing`` give one spec for all models or one per model ("official", "random", a path or URL;
    ``resize=..,crop=..,mean=..,std=..``). ``labels``: the labels file of a flat val folder. A checkpoint left by
    an interrupted run stops the run unless ``resume`` (continue it) or ``restart`` (delete it); ``skip_missing``
    reports conditions or datasets whose assets are missing as not run instead of stopping.
    Condition suites only: ``style_weights`` (``{"monet": "random"}``), ``classes_from_folders`` / ``classes``
    (score on a class subset, the protocol of ImageNet-R and -A) and ``restrict_to_classes`` (keep only that
    subset's images). A record that cannot be written raises :class:`~ibnbench.errors.RecordWriteError`, which
    holds it.
    """
    options = options if options is not None else RunOptions()
    options.validate()
    if resume and restart:
        raise UsageError("--resume continues an interrupted run and --restart deletes it: give one of them")
    request = RunRequest(models, data, suite, conditions, weights, preprocessing, labels, output, results_dir, resume,
                         restart, skip_missing, style_weights, classes_from_folders, classes, restrict_to_classes)
    if not is_dataset_suite(suite):
        return run_condition_suite(request, options)
    given = [flag for flag, on in (("--classes-from-folders", classes_from_folders), ("--classes", classes),
                                   ("--restrict-to-classes", restrict_to_classes),
                                   ("--style-weights", style_weights), ("--style-dir", options.style_dir)) if on]
    if given:
        raise UsageError(f"{given[0]} does not apply to dataset suite {suite}: its file says per dataset whether "
                         "it is scored on a class subset")
    return run_dataset_suite(request, options)

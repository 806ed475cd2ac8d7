"""Runs of a condition suite: every model under every condition on one dataset, one record (with its predictions
sidecar) written. :func:`ibnbench.run` calls :func:`run_condition_suite` for a condition suite, and the dataset-suite
runs (:mod:`ibnbench.eval.natural_runs`) call it once per dataset."""
from __future__ import annotations

from collections.abc import Mapping

from ibnbench.conditions.benchmark_generator import record_generator
from ibnbench.errors import UsageError
from ibnbench.eval.checkpoint import Checkpoint, check_checkpoint, telling_how_to_go_on
from ibnbench.eval.distributed import DistContext
from ibnbench.eval.engine import EvalResult, environment, evaluate
from ibnbench.eval.options import RunOptions, RunRequest
from ibnbench.eval.output import RecordOutput, created_now, write_with_predictions
from ibnbench.eval.plan import Classifier, RunPlan
from ibnbench.eval.sequences import sequence_conditions
from ibnbench.io import ensure_writable
from ibnbench.results.record import Record
from ibnbench.results.stats import ece


def run_condition_suite(request: RunRequest, options: RunOptions) -> Record:
    """Evaluate the request's models under its condition suite on its data and write the record. Everything
    (models, suite assets, data listing, a writable output, the checkpoint state) is checked before any weight is
    loaded or image decoded."""
    r = request
    plan = RunPlan.make(r.models, r.data, r.suite, r.conditions, r.weights, labels=r.labels, limit=options.limit,
                        skip_missing=r.skip_missing, style_weights=r.style_weights, preprocessing=r.preprocessing,
                        classes_from_folders=r.classes_from_folders, classes=r.classes,
                        restrict_to_classes=r.restrict_to_classes, style_dirs=options.style_dirs(),
                        subset=options.subset, difficulty=options.difficulty)
    sequences = sequence_conditions(plan.suite.conditions)
    if options.difficulty != 1 and not sequences:
        raise UsageError(f"--difficulty {options.difficulty}: suite {plan.suite.name!r} has no ImageNet-P "
                         "perturbation (the difficulty applies to those only)")
    dist = DistContext.detect()
    out = RecordOutput.choose(r.output, r.results_dir, plan.suite.name, plan.names)
    checkpoint_path = out.side_file(f"rank{dist.rank}.resume.pt")
    if dist.is_main:
        out.check()
    ensure_writable(checkpoint_path, "checkpoint")
    check_checkpoint(out.stem, checkpoint_path, r.resume, r.restart, dist.world_size)
    built = plan.build(announce=dist.is_main)
    fingerprint = plan.dataset.fingerprint()
    checkpoint = Checkpoint(checkpoint_path, _identity(plan, built, fingerprint, options, dist))
    result = _evaluate(plan, built, options, checkpoint, dist)
    record = _record(plan, built, fingerprint, result, environment(dist.device(options.resolved_device()), options,
                                                                    result.close_calls_left), options.difficulty)
    if not any(row["n_images"] for row in record.results):
        checkpoint.remove()
        raise UsageError(f"no image could be scored: all {len(plan.dataset)} image(s) of {r.data} were unreadable and "
                         f"skipped (e.g. {', '.join(result.skipped[:3])}); nothing was written")
    if dist.is_main:
        write_with_predictions(record, result.predictions, out.path)
    dist.barrier()
    checkpoint.remove()
    return record


def _identity(plan: RunPlan, built: Mapping[str, Classifier], fingerprint: dict, options: RunOptions,
              dist: DistContext) -> dict:
    """What a checkpoint must match to be resumed: suite, conditions, data, ranks, weights, preprocessing,
    precision and class subset."""
    identity = {"suite_hash": plan.suite.hash, "conditions": [c.id for c in plan.suite.conditions],
                "dataset": fingerprint["sha256"], "world_size": dist.world_size, "rank": dist.rank,
                "models": {n: m.weights.get("sha256") for n, m in built.items()},
                "preprocessing": {n: m.preprocessing.as_dict() for n, m in built.items()},
                "precision": (options.amp, options.refine)}
    if plan.classes is not None:
        identity["classes"] = plan.classes.indices
    if sequence_conditions(plan.suite.conditions):
        identity["difficulty"] = options.difficulty
    return identity


def _evaluate(plan: RunPlan, built: Mapping[str, Classifier], options: RunOptions, checkpoint: Checkpoint,
              dist: DistContext) -> EvalResult:
    """:func:`~ibnbench.eval.engine.evaluate`, telling on Ctrl-C or an unreadable image what was saved and how to
    go on."""
    with telling_how_to_go_on(checkpoint):
        return evaluate(built, plan.suite.conditions, plan.dataset, options, checkpoint, dist, classes=plan.classes)


def _record(plan: RunPlan, built: Mapping[str, Classifier], fingerprint: dict, result: EvalResult,
            env: dict, difficulty: int = 1) -> Record:
    """The run's record (its ``predictions`` reference set when written); each sequence condition (ImageNet-P)
    notes the ``difficulty`` its frames were made and compared at."""
    sequences = sequence_conditions(plan.suite.conditions)
    predictions, subset = result.predictions, plan.classes
    for row in result.results:  # from the stored (float16) confidences, so the sidecar reproduces it exactly
        row["ece"] = round(100 * ece(predictions.confidence(row["model"], row["condition"]),
                                     predictions.correct(row["model"], row["condition"])), 4)
    return Record(
        suite=plan.suite.name, suite_hash=plan.suite.hash,
        conditions=[{"id": c.id, "label": c.label, **c.provenance(),
                     **({"difficulty": difficulty} if c.id in sequences else {})} for c in plan.suite.conditions]
        + [{"id": cid, "label": plan.labels[cid], "not_run": True} for cid in plan.not_run],
        dataset={**fingerprint, "n_skipped": len(result.skipped), "skipped": result.skipped,
                 **({"classes": subset.as_dict()} if subset is not None else {})},
        models={n: {"model": name, "weights": m.weights.get("source"), "sha256": m.weights.get("sha256"),
                    "release": m.weights.get("release"), "preprocessing": m.preprocessing.as_dict()}
                for (n, m), name in zip(built.items(), plan.names)},
        environment=env, timing=result.timing, results=result.results,
        per_image={"files": list(plan.dataset.files), **result.per_image},
        generator=record_generator(plan.suite.conditions), created=created_now())

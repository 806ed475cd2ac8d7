"""The steps that run the engine: Table 1 on the fake val set, the 100 real images, the host syncs per call site,
ImageNet-C per condition, and ``pytest -m gpu``."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import torch

from benchmarks.gpu_check.common import (
    FULL_VAL,
    REAL_CONDITIONS,
    REPO,
    STYLE_WEIGHTS,
    Plan,
    Step,
    create_models,
    extrapolated_50k,
    fake_val,
    imagenet_c_conditions,
    run_options,
    val100,
    warm_clock,
)
from benchmarks.gpu_check.sync_sites import count_syncs

TABLE1_GOAL_S = 60
IMAGENET_C_GOAL_S = 300


def _timing_row(label: str, result) -> dict:
    return {"run": label, "images": result.timing["images"], "seconds": result.timing["seconds"],
            "warm": warm_clock(result), "50k_s": extrapolated_50k(result)}


def step_table1(plan: Plan, step: Step) -> None:
    """Table 1 on the fake val set: IBN-b alone, then the 3 models, with the Monet condition and without it;
    the warm clock (warm-up batch excluded) extrapolated to 50,000 images."""
    from ibnbench.data.discovery import open_dataset
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    dataset = open_dataset(fake_val(plan, step.work))
    suite = load_suite("table1", style_weights=STYLE_WEIGHTS)
    without_monet = [c for c in suite.conditions if c.id != "monet"]
    runs = [(f"{plan.models[-1]} x 5", plan.models[-1:], suite.conditions),
            ("3 models x 5", plan.models, suite.conditions),
            ("3 models x 4 (Monet off)", plan.models, without_monet)]
    rows: list[dict] = []
    for label, names, conditions in runs:
        result = evaluate(create_models(names), conditions, dataset, run_options(plan))
        rows.append(_timing_row(label, result))
        step.save({"rows": rows})
    line = "; ".join(f"{r['run']}: 50k in {r['50k_s']['warm']} s warm (whole run: {r['50k_s']['upper']} s)"
                     for r in rows) + f" (goal IBN-b <= {TABLE1_GOAL_S} s)"
    step.save({"rows": rows, "line": line}, complete=True)


def _lite0() -> tuple[dict | None, str | None]:
    """EfficientNet-Lite0 with its released weights, or None and why (its packages or the val images absent)."""
    from ibnbench.errors import MissingExtraError

    if not val100().is_dir():
        return None, f"{val100()} is absent"
    try:
        return create_models(["efficientnet_lite0"], weights="official"), None
    except (ImportError, MissingExtraError) as exc:
        return None, f"efficientnet_lite0: {exc}"


def _answers_differing(a, b) -> int:
    return sum(x != y for kind in ("top1", "top5") for model in a.per_image[kind] for cond in a.per_image[kind][model]
               for x, y in zip(a.per_image[kind][model][cond], b.per_image[kind][model][cond], strict=True))


def step_real100(plan: Plan, step: Step) -> None:
    """Lite0 on the 100 real images: bf16 + refine against IEEE fp32 (answers must be identical), then the
    ``--cache gpu`` run twice (the second reads the crops from device memory)."""
    from ibnbench.data.discovery import open_dataset
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    models, absent = _lite0()
    if models is None:
        step.save({"skipped": absent, "line": f"skipped: {absent}"}, complete=True)
        return
    conditions = load_suite("table1").select(REAL_CONDITIONS).conditions
    dataset = open_dataset(val100(), limit=plan.real_limit)
    options = dict(batch_size=50, channels_last=False)
    fp32 = evaluate(models, conditions, dataset, run_options(plan, amp="off", **options))
    bf16 = evaluate(models, conditions, dataset, run_options(plan, amp="bf16", refine=0.125, **options))
    result = {"images": len(dataset), "answers_differing": _answers_differing(fp32, bf16),
              "close_calls_left": bf16.close_calls_left,
              "fp32_top1_err": {r["condition"]: r["top1_err"] for r in fp32.results},
              "seconds": {"fp32": fp32.timing["seconds"], "bf16+refine": bf16.timing["seconds"]}}
    step.save(result)
    first, second = (evaluate(models, conditions, dataset, run_options(plan, cache="gpu", **options))
                     for _ in range(2))
    result["cache_gpu"] = {"first_s": first.timing["seconds"], "second_s": second.timing["seconds"],
                           "second_from_cache": second.timing["from_cache"],
                           "identical_answers": first.per_image == second.per_image == fp32.per_image}
    result["line"] = (f"{result['answers_differing']} answers of bf16+refine differ from fp32 on {len(dataset)} "
                      f"images; --cache gpu second run {second.timing['seconds']} s (first {first.timing['seconds']}"
                      f" s), {second.timing['from_cache']} from cache, same answers: "
                      f"{result['cache_gpu']['identical_answers']}")
    step.save(result, complete=True)


def step_syncs(plan: Plan, step: Step) -> None:
    """Host syncs per call site over two batches of Table 1 (3 models) and of ImageNet-C (one model), bf16:
    ``torch.cuda.set_sync_debug_mode("warn")`` on a GPU; on the CPU, the ops that would sync there."""
    from ibnbench.data.discovery import open_dataset
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    folder, batch = fake_val(plan, step.work), min(plan.batch_size, 64)
    dataset, warm_up = (open_dataset(folder, limit=n * batch) for n in (2, 1))
    suites = {"table1": (plan.models, load_suite("table1", style_weights=STYLE_WEIGHTS).conditions),
              "imagenet-c": (plan.models[:1], imagenet_c_conditions(plan))}
    result: dict = {"batches": 2}
    for name, (names, conditions) in suites.items():
        models = create_models(names)
        evaluate(models, conditions, warm_up, run_options(plan, amp="bf16", batch_size=batch))
        with count_syncs(torch.device(plan.device)) as sites:
            evaluate(models, conditions, dataset, run_options(plan, amp="bf16", batch_size=batch))
        result[name] = dict(Counter(sites).most_common())
        step.save(result)
    result["line"] = "; ".join(f"{name}: {sum(result[name].values())} syncs at {len(result[name])} sites"
                               for name in suites)
    step.save(result, complete=True)


def _condition_seconds(plan: Plan, conditions, batch: int) -> dict[str, float]:
    """Seconds per batch of ``batch`` random 224 crops for each condition on the device (CUDA events)."""
    from benchmarks.gpu_check.device_steps import seconds_per_call

    device = torch.device(plan.device)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, 224, 224, generator=gen) * 255).round().to(device)
    index = torch.arange(batch, device=device)
    return {c.id: round(seconds_per_call(lambda c=c: c(x, index), device, iters=2 if plan.dry_run else 3), 4)
            for c in conditions}


def step_imagenet_c(plan: Plan, step: Step) -> None:
    """ImageNet-C: ResNet-50 over every condition on the fake set (warm clock, extrapolated to 50k), each
    condition's seconds per batch of 256, and Lite0's error per condition on the real images."""
    from ibnbench.data.discovery import open_dataset
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    suite = load_suite("imagenet-c")
    if suite.requires:
        step.save({"skipped": "; ".join(suite.requires), "line": f"skipped: {suite.requires[0]}"}, complete=True)
        return
    conditions = imagenet_c_conditions(plan)
    dataset = open_dataset(fake_val(plan, step.work), limit=min(plan.fake_n, 512))
    whole = evaluate(create_models(plan.models[:1]), conditions, dataset, run_options(plan))
    result = {"model": plan.models[0], "conditions": len(conditions), **_timing_row("all conditions", whole)}
    step.save(result)
    result["condition_batch"] = batch = 1 if plan.dry_run else 256
    result["batch_seconds"] = _condition_seconds(plan, conditions, batch)
    step.save(result)
    models, result["lite0_absent"] = _lite0()
    if models is not None:
        real = evaluate(models, conditions, open_dataset(val100(), limit=plan.real_limit), run_options(plan))
        result["lite0_top1_err"] = {r["condition"]: r["top1_err"] for r in real.results}
    slowest = max(result["batch_seconds"], key=result["batch_seconds"].get)
    conditions_50k = round(sum(result["batch_seconds"].values()) * FULL_VAL / batch)
    result["line"] = (f"{plan.models[0]} x {len(conditions)} conditions: 50k in {result['50k_s']['warm']} s warm, "
                      f"{result['50k_s']['upper']} s whole run (goal <= {IMAGENET_C_GOAL_S} s); the conditions "
                      f"alone {conditions_50k} s; slowest {slowest}: {result['batch_seconds'][slowest]} s per "
                      f"{batch} images")
    step.save(result, complete=True)


def step_pytest_gpu(plan: Plan, step: Step) -> None:
    """``pytest -m gpu`` over the test suite (its output is this step's log): counts and the failing tests."""
    from benchmarks.gpu_check.summary import pytest_counts

    xml = step.work / "logs" / "pytest_gpu.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs",
                           "--junitxml", str(xml), "tests"], cwd=REPO, check=False)
    counts = pytest_counts(xml) or {}
    counts["exit_code"] = done.returncode
    counts["line"] = (f"{counts.get('tests')} tests, {counts.get('failures', 0) + counts.get('errors', 0)} failed, "
                      f"{counts.get('skipped')} skipped" + (f": {', '.join(counts['failed'][:4])}"
                                                            if counts.get("failed") else ""))
    step.save(counts, complete=True)

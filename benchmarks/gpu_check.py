"""The steps of the GPU check (issue 20) and its summary; ``benchmarks/gpu_check.sh`` runs each step in its own
process under its own ``timeout`` and rebuilds the summary after every step, so a run cut short leaves what it
measured.

``python benchmarks/gpu_check.py STEP --out DIR [--work DIR] [--budget S] [--dry-run]`` runs one step and writes
``DIR/steps/STEP.json``; steps that measure in rounds write after each round. ``summarize`` (json only, no torch)
merges the steps and the shell's exit statuses into ``DIR/summary.json`` and ``DIR/summary.md``.
``--dry-run`` runs every step on the CPU at toy sizes: it checks the script, it measures nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_VAL = 50_000
TABLE1_GOAL_S = 60
FANOUT_GOAL = 10
IBN_GOAL = 0.05
REAL_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]
STYLE_WEIGHTS = {"monet": "random"}


@dataclass(frozen=True)
class Plan:
    """Sizes of every step: a GPU run, or the CPU dry run (toy sizes)."""

    device: str
    models: tuple[str, ...]
    fake_n: int
    batch_size: int
    workers: int
    table1_sizes: tuple[int, ...]
    conditions: tuple[str, ...] | None
    fanout_n: int
    pipeline_n: int
    throughput_batch: int
    throughput_iters: int
    throughput_size: int
    real_limit: int | None
    cache_n: int
    imagenet_c_n: int

    @classmethod
    def make(cls, dry_run: bool) -> Plan:
        if dry_run:
            return cls(device="cpu", models=("resnet18", "resnet18_ibn_a"), fake_n=4, batch_size=2, workers=0,
                       table1_sizes=(2, 4), conditions=("origin", "std*1.5"), fanout_n=2, pipeline_n=2,
                       throughput_batch=2, throughput_iters=1, throughput_size=64, real_limit=2, cache_n=2,
                       imagenet_c_n=1)
        workers = min(16, os.cpu_count() or 1)
        return cls(device="cuda", models=("resnet50", "resnet50_ibn_a", "resnet50_ibn_b"), fake_n=8192,
                   batch_size=256, workers=workers, table1_sizes=(2048, 4096, 8192), conditions=None,
                   fanout_n=1024, pipeline_n=1024, throughput_batch=256, throughput_iters=20,
                   throughput_size=224, real_limit=None, cache_n=4096, imagenet_c_n=512)


class Step:
    """One step's output file: ``save`` may be called after every round, so a timeout keeps the rounds done."""

    def __init__(self, name: str, out: Path, budget: float, dry_run: bool):
        self.name, self.path, self.budget, self.dry_run = name, out / "steps" / f"{name}.json", budget, dry_run
        self.start = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def save(self, result: dict, complete: bool = False) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": self.name, "complete": complete, "dry_run": self.dry_run,
                                   "seconds": round(time.perf_counter() - self.start, 2), "result": result},
                                  indent=1, default=str))
        os.replace(tmp, self.path)


def _fake(work: Path) -> Path:
    return work / "fakeval"


def _val100() -> Path:
    shared = Path(os.environ.get("IBNBENCH_SHARED", REPO.parent / "shared"))
    return shared / "data" / "imagenet-val-100" / "val"


def _models(names, weights: str = "random") -> dict:
    from ibnbench.zoo import create_model

    return {n: create_model(n, weights=weights) for n in names}


def _options(plan: Plan, **extra):
    from ibnbench.eval.options import RunOptions

    return RunOptions(**{"device": plan.device, "batch_size": plan.batch_size, "workers": plan.workers,
                         "channels_last": True, "progress": False, **extra})


def _table1(plan: Plan):
    """Table 1's suite (the Monet generator random), or the dry run's subset of it."""
    from ibnbench.eval.plan import load_suite

    suite = load_suite("table1", style_weights=STYLE_WEIGHTS)
    return suite.select(list(plan.conditions)) if plan.conditions else suite


# --------------------------------------------------------------------------------------------------------- steps


def step_env(plan: Plan, step: Step, work: Path) -> None:
    """Versions, the device, and whether nvJPEG decodes here."""
    import torch
    import torchvision

    import ibnbench

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
           "ibnbench": ibnbench.__version__, "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count(),
           "device": plan.device}
    if torch.cuda.is_available():
        from torchvision.io import decode_jpeg, encode_jpeg

        env.update(device_name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                   gpus=torch.cuda.device_count(), cuda=torch.version.cuda,
                   memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        try:
            jpeg = encode_jpeg(torch.zeros(3, 16, 16, dtype=torch.uint8))
            env["nvjpeg"] = decode_jpeg([jpeg], device="cuda")[0].is_cuda
        except RuntimeError as exc:
            env["nvjpeg"] = f"fails: {str(exc).splitlines()[0]}"
    step.save(env, complete=True)


def step_fake_val(plan: Plan, step: Step, work: Path) -> None:
    """The synthetic ImageNet-like val set the timing steps read (kept between runs: files already there stay)."""
    from ibnbench.tools.fake_val import make_fake_val

    make_fake_val(plan.fake_n, _fake(work), workers=max(1, plan.workers), progress=False)
    step.save({"n_images": plan.fake_n, "folder": str(_fake(work))}, complete=True)


def step_pipeline(plan: Plan, step: Step, work: Path) -> None:
    """Images/s per stage: decode (CPU and nvJPEG), crop, each condition (the CycleGAN too), each forward."""
    from ibnbench.tools.bench import pipeline

    out = pipeline(list(plan.models), _fake(work), suite="table1", weights=["random"], limit=plan.pipeline_n,
                   conditions=list(plan.conditions) if plan.conditions else None,
                   batch_size=plan.batch_size, device=plan.device, channels_last=True, workers=plan.workers,
                   cache="gpu", style_weights=STYLE_WEIGHTS)
    step.save(out, complete=True)


def step_table1(plan: Plan, step: Step, work: Path) -> None:
    """Table 1 (3 models x 5 conditions, Monet with a random generator) on growing N while the budget allows;
    the largest N is extrapolated to 50,000 images (set-up once plus the per-image rate)."""
    from ibnbench.data import discovery as data
    from ibnbench.eval.engine import evaluate

    start = time.perf_counter()
    models, suite = _models(plan.models), _table1(plan)
    setup = time.perf_counter() - start
    rounds: list[dict] = []
    for n in plan.table1_sizes:
        if rounds and 2.5 * rounds[-1]["wall_s"] > step.left():
            break
        start = time.perf_counter()
        result = evaluate(models, suite.conditions, data.open_dataset(_fake(work), limit=n), _options(plan))
        wall = time.perf_counter() - start
        seconds = result.timing["seconds"]
        rounds.append({"n_images": n, "wall_s": round(wall, 2), "evaluation_s": seconds,
                       "images_per_s": round(n / seconds, 1), "close_calls_left": result.close_calls_left,
                       "extrapolated_50k_s": round(setup + (wall - seconds) + seconds * FULL_VAL / n, 1)})
        step.save({"models": list(plan.models), "conditions": [c.id for c in suite.conditions],
                   "setup_s": round(setup, 2), "rounds": rounds, "largest": rounds[-1]})
    step.save({"models": list(plan.models), "conditions": [c.id for c in suite.conditions],
               "setup_s": round(setup, 2), "rounds": rounds, "largest": rounds[-1]}, complete=True)


def step_fanout(plan: Plan, step: Step, work: Path) -> None:
    """Fan-out engine against one pass per (model, condition), same data, same precision."""
    from ibnbench.tools.bench import compare_baseline

    out = compare_baseline(list(plan.models), _fake(work), suite="table1", weights=["random"],
                           conditions=list(plan.conditions) if plan.conditions else None,
                           style_weights=STYLE_WEIGHTS, limit=plan.fanout_n, device=plan.device,
                           batch_size=plan.batch_size, workers=plan.workers, channels_last=True, progress=False)
    step.save({"n_images": out["n_images"], "fanout_s": out["fanout"]["seconds"],
               "baseline_s": out["baseline"]["seconds"], "speedup": out["speedup"],
               "identical_counts": out["identical_counts"]}, complete=True)


def step_throughput(plan: Plan, step: Step, work: Path) -> None:
    """IBN-a/b against ResNet, bf16 autocast, channels_last, synthetic input."""
    from ibnbench.tools.bench import throughput

    rows = []
    for name in plan.models:
        rows.append(throughput(name, batch_size=plan.throughput_batch, amp="bf16", channels_last=True,
                               device=plan.device, iters=plan.throughput_iters, size=plan.throughput_size))
        base = rows[0]["images_per_s"]
        for row in rows:
            row["vs_first"] = round(row["images_per_s"] / base, 3)
        step.save({"rows": rows})
    step.save({"rows": rows}, complete=True)


def step_real100(plan: Plan, step: Step, work: Path) -> None:
    """bf16 + refine against IEEE fp32 on the 100 real images (EfficientNet-Lite0, its released weights)."""
    from ibnbench.data import discovery as data
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    if not _val100().is_dir():
        step.save({"skipped": f"{_val100()} is absent"}, complete=True)
        return
    try:
        models = _models(["efficientnet_lite0"], weights="official")
    except ImportError as exc:
        step.save({"skipped": f"efficientnet_lite0 not installed ({exc})"}, complete=True)
        return
    chosen = [c for c in REAL_CONDITIONS if not plan.conditions or c in plan.conditions]
    conditions = load_suite("table1").select(chosen).conditions
    dataset = data.open_dataset(_val100(), limit=plan.real_limit)
    runs = {}
    for label, amp in (("fp32", "off"), ("bf16+refine", "bf16")):
        runs[label] = evaluate(models, conditions, dataset, _options(plan, amp=amp, batch_size=50, channels_last=False))
    per = {k: v.per_image for k, v in runs.items()}
    differing = sum(a != b for kind in ("top1", "top5") for model in per["fp32"][kind]
                    for cond in per["fp32"][kind][model]
                    for a, b in zip(per["fp32"][kind][model][cond], per["bf16+refine"][kind][model][cond]))
    step.save({"n_images": len(dataset),
               "results": {k: {r["condition"]: [r["top1_err"], r["top5_err"]] for r in v.results}
                           for k, v in runs.items()},
               "answers_differing": differing, "close_calls_left": runs["bf16+refine"].close_calls_left,
               "seconds": {k: v.timing["seconds"] for k, v in runs.items()}}, complete=True)


def step_cache_gpu(plan: Plan, step: Step, work: Path) -> None:
    """Table 1 twice with ``--cache gpu``: the second run reads the crops from device memory."""
    from ibnbench.data import discovery as data
    from ibnbench.eval.engine import evaluate

    models, suite = _models(plan.models), _table1(plan)
    dataset = data.open_dataset(_fake(work), limit=plan.cache_n)
    first = evaluate(models, suite.conditions, dataset, _options(plan, cache="gpu"))
    second = evaluate(models, suite.conditions, dataset, _options(plan, cache="gpu"))
    step.save({"n_images": len(dataset), "first_s": first.timing["seconds"],
               "second_s": second.timing["seconds"], "second_from_cache": second.timing["from_cache"],
               "identical_answers": first.per_image == second.per_image}, complete=True)


def step_imagenet_c(plan: Plan, step: Step, work: Path) -> None:
    """Image-conditions per second under the ImageNet-C suite, when a suite of that name is shipped."""
    from ibnbench.conditions.suite import shipped_suites
    from ibnbench.data import discovery as data
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.plan import load_suite

    if "imagenet-c" not in shipped_suites():
        step.save({"skipped": "no suite named imagenet-c"}, complete=True)
        return
    suite = load_suite("imagenet-c")
    if suite.requires:
        step.save({"skipped": f"missing assets: {'; '.join(suite.requires)}"}, complete=True)
        return
    dataset = data.open_dataset(_fake(work), limit=plan.imagenet_c_n)
    result = evaluate(_models(plan.models[:1]), suite.conditions, dataset, _options(plan))
    seconds = result.timing["seconds"]
    step.save({"model": plan.models[0], "n_images": len(dataset), "conditions": len(suite.conditions),
               "seconds": seconds, "image_conditions_per_s": round(len(dataset) * len(suite.conditions) / seconds, 1),
               "extrapolated_50k_s": round(seconds * FULL_VAL / len(dataset), 1)}, complete=True)


STEPS = {name.removeprefix("step_"): fn for name, fn in dict(globals()).items() if name.startswith("step_")}
ORDER = ["install", "env", "pytest_gpu", "fake_val", "pipeline", "table1", "fanout", "throughput", "real100",
         "cache_gpu", "imagenet_c"]


# ------------------------------------------------------------------------------------------------------- summary


def _pytest_counts(xml: Path) -> dict | None:
    if not xml.is_file():
        return None
    try:
        suites = ET.parse(xml).getroot()
    except ET.ParseError:
        return None
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None]
    return counts


def summarize(out: Path) -> dict:
    """Merge ``steps/*.json`` (results) and ``steps/*.status`` (the shell's exit codes) into the summary files."""
    steps: dict[str, dict] = {}
    for status_file in sorted((out / "steps").glob("*.status")):
        name = status_file.stem
        rc, wall, limit = (status_file.read_text().split() + ["", "", ""])[:3]
        state = {"0": "ok", "124": "timed out", "137": "timed out", "skip": "not run (no time left)"}.get(rc, "failed")
        steps[name] = {"status": state, "rc": rc, "wall_s": float(wall or 0), "timeout_s": float(limit or 0)}
    for result_file in sorted((out / "steps").glob("*.json")):
        saved = json.loads(result_file.read_text())
        entry = steps.setdefault(saved["step"], {"status": "running"})
        entry.update(complete=saved["complete"], result=saved["result"], dry_run=saved["dry_run"])
    pytest = _pytest_counts(out / "logs" / "pytest_gpu.xml")
    if pytest is not None:
        steps.setdefault("pytest_gpu", {"status": "running"})["result"] = pytest
    steps = dict(sorted(steps.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))
    summary = {"steps": steps, "dry_run": any(s.get("dry_run") for s in steps.values())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def _headline(name: str, result: dict) -> str:
    """One line per step with the number that answers its question."""
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    if name == "env":
        return f"{result.get('device_name', 'CPU')}, torch {result['torch']}, nvJPEG: {result.get('nvjpeg', '-')}"
    if name == "pytest_gpu":
        return (f"{result['tests']} tests, {result['failures'] + result['errors']} failed, {result['skipped']} skipped"
                + (f" ({', '.join(result['failed'][:5])})" if result["failed"] else ""))
    if name == "table1" and result.get("rounds"):
        top = result["largest"]
        return (f"N={top['n_images']}: {top['evaluation_s']} s ({top['images_per_s']} img/s), "
                f"extrapolated to 50k: {top['extrapolated_50k_s']} s (goal <= {TABLE1_GOAL_S} s)")
    if name == "fanout":
        return (f"N={result['n_images']}: fan-out {result['fanout_s']} s vs baseline {result['baseline_s']} s = "
                f"{result['speedup']}x (goal >= {FANOUT_GOAL}x), identical counts: {result['identical_counts']}")
    if name == "throughput" and result.get("rows"):
        return ", ".join(f"{r['model']} {r['images_per_s']} img/s ({r['vs_first']})" for r in result["rows"]) + \
            f" (goal: IBN within {IBN_GOAL:.0%})"
    if name == "real100":
        return (f"{result['answers_differing']} answers differ from fp32 over {result['n_images']} images, "
                f"close calls left {result['close_calls_left']}")
    if name == "cache_gpu":
        return (f"N={result['n_images']}: first {result['first_s']} s, second {result['second_s']} s "
                f"({result['second_from_cache']} from cache), identical: {result['identical_answers']}")
    if name == "pipeline":
        return f"{len(result['stages'])} stages on {result['n_images']} images (table below)"
    if name == "imagenet_c":
        return (f"{result['image_conditions_per_s']} image-conditions/s, 50k extrapolated "
                f"{result['extrapolated_50k_s']} s")
    return json.dumps(result)[:200]


def markdown(summary: dict) -> str:
    title = "GPU check" + (" -- DRY RUN on the CPU: toy sizes, not measurements" if summary["dry_run"] else "")
    lines = [f"# {title}", "", "| step | status | wall s | result |", "|---|---|---|---|"]
    for name, entry in summary["steps"].items():
        result = entry.get("result")
        partial = " (partial)" if result is not None and entry.get("complete") is False else ""
        try:
            text = _headline(name, result) if result is not None else "-"
        except (KeyError, TypeError, IndexError):  # a step cut short before its first round
            text = json.dumps(result)[:200]
        lines.append(f"| {name} | {entry['status']}{partial} | {entry.get('wall_s', '-')} | {text} |")
    stages = summary["steps"].get("pipeline", {}).get("result", {}).get("stages")
    if stages:
        lines += ["", "## Pipeline stages", "", "| stage | seconds | images/s |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds']} | {s['images_per_s']} |" for s in stages]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "summarize"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ibnbench-gpu-check"))
    parser.add_argument("--budget", type=float, default=60.0, help="seconds this step may take (its timeout)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.step == "summarize":
        summarize(args.out)
        return 0
    plan = Plan.make(args.dry_run)
    step = Step(args.step, args.out, args.budget, args.dry_run)
    step.save({"plan": asdict(plan)})
    STEPS[args.step](plan, step, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

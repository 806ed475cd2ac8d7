"""What every step shares: the sizes of a GPU run and of the CPU dry run, a step's result file, the fake val
folder, the models and the run options."""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu-carry"
FULL_VAL = 50_000
MODELS = ("resnet50", "resnet50_ibn_a", "resnet50_ibn_b")
DRY_MODELS = ("resnet18", "resnet18_ibn_a", "resnet18_ibn_b")
STYLE_WEIGHTS = {"monet": "random"}
REAL_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]


@dataclass(frozen=True)
class Plan:
    """Sizes of every step: a GPU run, or the CPU dry run (toy sizes, nothing measured)."""

    dry_run: bool
    device: str
    models: tuple[str, ...]
    fake_n: int
    batch_size: int
    workers: int
    throughput_batch: int
    throughput_iters: int
    throughput_size: int
    real_limit: int | None

    @classmethod
    def make(cls, dry_run: bool) -> Plan:
        if dry_run:
            return cls(dry_run=True, device="cpu", models=DRY_MODELS, fake_n=4, batch_size=2, workers=0,
                       throughput_batch=2, throughput_iters=1, throughput_size=64, real_limit=4)
        return cls(dry_run=False, device="cuda", models=MODELS, fake_n=2048, batch_size=256,
                   workers=min(16, os.cpu_count() or 1), throughput_batch=256, throughput_iters=20,
                   throughput_size=224, real_limit=None)


class Step:
    """One step's result file (``WORK/steps/STEP.json``): ``save`` may be called after every round, so a step cut
    short by its timeout keeps the rounds it finished."""

    def __init__(self, name: str, work: Path, plan: Plan):
        self.name, self.work, self.plan = name, work, plan
        self.path = work / "steps" / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()

    def save(self, result: dict, complete: bool = False) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": self.name, "complete": complete, "dry_run": self.plan.dry_run,
                                   "seconds": round(time.perf_counter() - self.start, 2), "result": result},
                                  indent=1, default=str))
        os.replace(tmp, self.path)


def from_tests(name: str):
    """A module of tests/helpers/ (the mechanism a step shares with the test that pins it: gpu_race, syncs)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    return importlib.import_module(f"helpers.{name}")


def shared_root() -> Path:
    """``$IBNBENCH_SHARED`` (gpu_check.sh points it into the carried folder), else ``../shared``."""
    return Path(os.environ.get("IBNBENCH_SHARED", REPO.parent / "shared"))


def val100() -> Path:
    """The 100 real ImageNet val images."""
    return shared_root() / "data" / "imagenet-val-100" / "val"


def fake_val(plan: Plan, work: Path) -> Path:
    """The synthetic val folder of ``plan.fake_n`` images (written once, kept between steps and runs)."""
    from ibnbench.tools.fake_val import make_fake_val

    return make_fake_val(plan.fake_n, work / "fakeval", workers=max(1, plan.workers), progress=False)


def create_models(names, weights: str = "random") -> dict:
    from ibnbench.zoo import create_model

    return {name: create_model(name, weights=weights) for name in names}


def run_options(plan: Plan, **extra):
    """The run options of a timing run (channels_last, the plan's batch and workers), ``extra`` overriding."""
    from ibnbench.eval.options import RunOptions

    return RunOptions(**{"device": plan.device, "batch_size": plan.batch_size, "workers": plan.workers,
                         "channels_last": True, "progress": False, **extra})


def imagenet_c_conditions(plan: Plan) -> list:
    """The ImageNet-C suite's conditions: all 76, or in the dry run the clean one and severity 3 of each."""
    from ibnbench.eval.plan import load_suite

    conditions = load_suite("imagenet-c").conditions
    return [c for c in conditions if not plan.dry_run or c.id == "origin" or c.id.endswith("-3")]


def warm_clock(result) -> dict | None:
    """The engine's clock after its warm-up batch (``timing["warm"]``: seconds, images, images_per_s; per-batch
    CUDA events on a GPU), or None from an engine that does not keep one. The one place this is read."""
    return result.timing.get("warm")


def extrapolated_50k(result) -> dict:
    """Seconds for 50,000 images: ``warm`` at the warm rate (start-up and warm-up batches excluded; None without
    the engine's warm clock), ``upper`` from the whole run's clock (start-up and warm-up included: too high)."""
    warm = warm_clock(result)
    timing = result.timing
    return {"warm": round(FULL_VAL / warm["images_per_s"], 1) if warm and warm.get("images_per_s") else None,
            "upper": round(timing["seconds"] * FULL_VAL / timing["images"], 1) if timing["images"] else None}

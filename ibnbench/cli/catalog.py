"""Commands that list what ibnbench ships: models and suites."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tabulate import tabulate, tabulate_formats

if TYPE_CHECKING:
    from ibnbench.zoo.meta import ModelInfo


def _weights_column(info: ModelInfo) -> str:
    """How to get the weights of one release (or that there are none), the default release marked."""
    w = info.weights
    if info.research:
        return "research (none)"
    if w is None:
        return "none"
    how = "official" if w.url or w.local_path else "--weights PATH"
    return f"{how}, default" if len(info.releases) > 1 and w == info.releases[0] else how


def _input_column(info: ModelInfo) -> str:
    """What the model is given: resize/crop (a segmentation model sees the whole image) and the normalisation."""
    pre = info.preprocessing
    size = "whole image" if info.task == "segmentation" else f"{pre.resize}/{pre.crop} {pre.interpolation}"
    return f"{size}, {pre.convention}"


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model zoo as a table, one row per release (``arch.tag``; an architecture without one by name),
    each with its own weights, published error and preprocessing."""
    from ibnbench import zoo as models

    rows = []
    for name in models.list_models(args.pattern, task=None, releases=True):
        info = models.model_info(name)
        w = info.weights
        ref = "; ".join(map(str, w.metrics)) if w and w.metrics else "-"
        params = "-" if info.params is None else f"{info.params / 1e6:.1f}M"
        rows.append([name, info.family, info.variant, params, _weights_column(info), ref,
                     _input_column(info), info.license or "-"])
    print(tabulate(rows, headers=["model", "family", "variant", "params", "weights", "published err top1/top5 (source)",
                                  "input (resize/crop)", "licence"], tablefmt=args.format))
    return 0


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _definition(condition) -> str:
    """``shift offsets=[50, 0, 0] clip``: the op, its parameters and the flags that are on."""
    params = [f"{k}={_show(v)}" for k, v in condition.params().items()]
    return " ".join([condition.op, *params, *(f for f in ("clip", "quantize") if getattr(condition, f))])


def cmd_suites(args: argparse.Namespace) -> int:
    """Print each suite (or the one named) with its conditions (a dataset suite: its datasets and where they are);
    missing assets are listed after it."""
    from ibnbench.conditions.dataset_suites import is_dataset_suite, load_dataset_suite
    from ibnbench.conditions.suite import list_suites, shipped_suites
    from ibnbench.eval.plan import load_suite

    for name in [args.suite] if args.suite else list_suites() + list(shipped_suites("datasets")):
        if is_dataset_suite(name):
            datasets = load_dataset_suite(name)
            print(f"{datasets.name}: dataset suite, {len(datasets.datasets)} datasets beside val, sha256 "
                  f"{datasets.hash[:16]}  ({datasets.path})")
            rows = [[d.id, d.label, "from folders" if d.classes == "folders" else d.classes or "all 1000",
                     str(where) if not isinstance(where := d.locate(), str) else f"missing: {where}"]
                    for d in datasets.datasets]
            print(tabulate(rows, headers=["id", "label", "classes", "folder"], tablefmt=args.format))
            print()
            continue
        suite = load_suite(name)
        print(f"{suite.name}: {len(suite)} conditions, sha256 {suite.hash[:16]}  ({suite.path})")
        if suite.description:
            print(f"  {suite.description}")
        rows = [[c.id, c.label, c.kind, _definition(c), "missing" if c.requires else "ready"] for c in suite]
        print(tabulate(rows, headers=["id", "label", "kind", "definition", "assets"], tablefmt=args.format))
        for missing in dict.fromkeys(suite.requires):
            print(f"  missing: {missing}")
        print()
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download an asset into torch hub's cache, each file checked against its sha256."""
    from ibnbench.conditions.frost import fetch_frost

    print(f"frost textures: {fetch_frost()}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ibnbench`` parser."""
    p = sub.add_parser("models", help="list registered models, one row per release (arch.tag), with parameters, "
                                      "variant, weights, published error and preprocessing")
    p.add_argument("pattern", nargs="?", default="*",
                   help="glob on release or architecture names (default: all)")
    p.add_argument("--format", default="simple", choices=tabulate_formats, metavar="FORMAT",
                   help="tabulate format: simple, github, latex, ... (default simple)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("suites", help="list condition suites (transforms/*.toml) and their conditions")
    p.add_argument("suite", nargs="?", help="a suite name or .toml path (default: every shipped suite)")
    p.add_argument("--format", default="simple", choices=tabulate_formats, metavar="FORMAT",
                   help="tabulate format: simple, github, latex, ... (default simple)")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("fetch", help="download an asset into torch hub's cache, sha256-checked",
                       description="frost: the six frost textures of ImageNet-C's frost corruption (Apache-2.0, from "
                                   "the imagecorruptions repository, or $IBNBENCH_FROST_URL), into "
                                   "$TORCH_HOME/hub/checkpoints/imagecorruptions-frost/.")
    p.add_argument("asset", choices=["frost"], help="what to download")
    p.set_defaults(func=cmd_fetch)

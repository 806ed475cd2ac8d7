"""``ibnbench`` command line: argparse subcommands that call the library functions, nothing more."""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from . import models
from .models.registry import UnknownModelError
from .weights import WeightsError

CLEAN_ERRORS = (UnknownModelError, WeightsError, FileNotFoundError, ValueError)


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model zoo as a table."""
    rows = []
    for name in models.list_models(args.pattern, task=None):
        info = models.model_info(name)
        w = info.weights
        ref = f"{w.top1_err:.2f}/{w.top5_err:.2f}" if w and w.top1_err is not None else "-"
        rows.append([name, info.family, info.variant, f"{info.num_params() / 1e6:.1f}M",
                     "research (none)" if info.research else ("official" if w else "none"),
                     ref, info.preprocessing.convention, info.license or "-"])
    print(tabulate(rows, headers=["model", "family", "variant", "params", "weights", "ref err top1/top5",
                                  "input", "licence"], tablefmt=args.format))
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
    """Print each suite (or the one named) with its conditions; missing assets are listed after it."""
    from .suites import list_suites, load_suite

    for name in [args.suite] if args.suite else list_suites():
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


def cmd_stylize(args: argparse.Namespace) -> int:
    """Write a stylised copy of a dataset."""
    from .style import stylize

    summary = stylize(args.style, args.data, args.out, weights=args.weights, device=args.device,
                      limit=args.limit, size=args.size, workers=args.workers)
    print(f"stylize {args.style}: {summary['written']} written, {summary['skipped']} already present, "
          f"{summary['total']} in all -> {summary['out']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibnbench",
        description="Appearance-robustness benchmark for ImageNet classifiers (IBN-Net, ECCV 2018, Table 1).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered models with parameters, variant and weights")
    p.add_argument("pattern", nargs="?", default="*", help="glob on model names (default: all)")
    p.add_argument("--format", default="simple", help="tabulate format: simple, github, latex, ... (default simple)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("suites", help="list condition suites (transforms/*.toml) and their conditions")
    p.add_argument("suite", nargs="?", help="a suite name or .toml path (default: every shipped suite)")
    p.add_argument("--format", default="simple", help="tabulate format: simple, github, latex, ... (default simple)")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("stylize", help="write a CycleGAN-stylised copy of a dataset (for `op = \"dir\"` conditions)")
    p.add_argument("--style", required=True, help="monet, cezanne, ukiyoe or vangogh (or any name with --weights)")
    p.add_argument("--data", required=True, help="dataset folder; every .jpg/.jpeg/.png under it is stylised")
    p.add_argument("--out", required=True, help="output folder (same relative paths; existing files are skipped)")
    p.add_argument("--weights", help="generator weights: official (default), a path, a URL or random")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--limit", type=int, help="only the first N images in sorted path order")
    p.add_argument("--size", type=int, default=256, help="shorter side the images are resized to (default 256)")
    p.add_argument("--workers", type=int, default=4, help="decoding worker processes (default 4)")
    p.set_defaults(func=cmd_stylize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLEAN_ERRORS as exc:
        print(f"ibnbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ibnbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

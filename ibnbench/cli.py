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

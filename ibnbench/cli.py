"""``ibnbench`` command line: argparse subcommands that call the library functions, nothing more."""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from . import models
from .engine import RunOptions
from .models.registry import UnknownModelError
from .weights import WeightsError

CLEAN_ERRORS = (UnknownModelError, WeightsError, FileNotFoundError, ValueError, OSError)


def cmd_run(args: argparse.Namespace) -> int:
    """Evaluate models under a suite and write the record, then print its Table-1 report."""
    from .engine import run
    from .report import render, table1

    record = run(args.model, args.data, suite=args.suite, conditions=args.conditions, weights=args.weights,
                 output=args.output, results_dir=args.results_dir, labels=args.labels, resume=args.resume,
                 skip_missing=args.skip_missing, device=args.device, batch_size=args.batch_size,
                 workers=args.workers, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                 limit=args.limit, on_bad_image=args.on_bad_image, fanout=not args.no_fanout)
    if record.path:
        print(render(table1([record]), "markdown"))
        skipped = record.dataset.get("n_skipped", 0)
        if skipped:
            print(f"\n{skipped} unreadable image(s) skipped: {', '.join(record.dataset['skipped'][:5])}"
                  + (" ..." if skipped > 5 else ""))
        not_run = [c["id"] for c in record.conditions if c.get("not_run")]
        if not_run:
            print(f"not run (missing assets): {', '.join(not_run)}")
        print(f"\nrecord: {record.path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print (or write) the Table-1 report of result records."""
    from .report import report

    text = report(args.results, format=args.format, vs=args.vs, output=args.output)
    print(text if not args.output else f"wrote {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Compare a new record with a recorded one; exit 0 ok, 1 regression, 2 incomparable."""
    from .check import check

    outcome = check(args.results, args.against, tolerance=args.tolerance, metric=args.metric,
                    either_way=args.either_way)
    print(outcome.render())
    return outcome.exit_code


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Rebuild leaderboards/<suite>.md from leaderboards/records/."""
    from .leaderboard import build

    for path in build(args.root):
        print(f"wrote {path}")
    return 0


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

    p = sub.add_parser("run", help="evaluate models under a condition suite (the paper's Table 1 by default)",
                       description="Decode the validation set once, apply every condition of the suite on the device, "
                                   "feed every condition to every model, and write a JSON record plus a Table-1 report.")
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="registered model (see `ibnbench models`), timm:NAME, torchvision:NAME or pkg.mod:factory; repeat")
    p.add_argument("--data", required=True, metavar="DIR", help="ImageNet val folder (val/<wnid>/*.JPEG, or flat with labels)")
    p.add_argument("--labels", metavar="FILE", help="labels for a flat folder: LOC_val_solution.csv or '<file> <index>' lines")
    p.add_argument("--suite", default="table1", help="condition suite name or TOML path (default table1; see `ibnbench suites`)")
    p.add_argument("--conditions", type=lambda s: [c for c in s.split(",") if c], metavar="IDS",
                   help="comma-separated subset of the suite's condition ids")
    p.add_argument("--weights", action="append", metavar="SPEC",
                   help="official (default), random, a path or a URL; once for all models or once per --model")
    p.add_argument("--output", metavar="FILE", help="record path (default: RESULTS_DIR/<suite>-<models>-<time>.json)")
    p.add_argument("--results-dir", default="results", metavar="DIR", help="where records go by default (default results/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last completed chunk")
    p.add_argument("--skip-missing", action="store_true", help="report conditions with missing assets as not run instead of stopping")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (halved automatically on out-of-memory; default 64)")
    p.add_argument("--workers", type=int, default=RunOptions.workers, help=f"decode worker processes (default {RunOptions.workers})")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="autocast dtype (auto: bf16 on CUDA, off on CPU)")
    p.add_argument("--channels-last", action="store_true", help="run models in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images (sorted order)")
    p.add_argument("--on-bad-image", default="fail", choices=["fail", "skip"], help="corrupt image: stop (default) or skip and count it")
    p.add_argument("--no-fanout", action="store_true", help="baseline mode: one pass over the data per (model, condition), like peers do")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="print the Table-1 report of result records")
    p.add_argument("results", nargs="+", metavar="RECORD", help="record files or directories")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "json", "latex", "html"])
    p.add_argument("--vs", choices=["paper"], help="show the paper's published numbers next to ours, with differences")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE instead of printing it")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("check", help="compare new results with recorded ones (exit 0 ok, 1 regression, 2 incomparable)")
    p.add_argument("--results", required=True, metavar="NEW", help="the new record")
    p.add_argument("--against", required=True, metavar="RECORDED", help="the recorded (reference) record")
    p.add_argument("--tolerance", type=float, default=0.5, metavar="POINTS", help="allowed error increase in points (default 0.5)")
    p.add_argument("--metric", default="top1", choices=["top1", "top5", "drop"], help="what to compare (default top1 error)")
    p.add_argument("--either-way", action="store_true", help="also fail when the error moves DOWN by more than the tolerance")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("leaderboard", help="leaderboards from committed records")
    lb = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = lb.add_parser("build", help="turn leaderboards/records/*.json into leaderboards/<suite>.md")
    b.add_argument("--root", default="leaderboards", help="leaderboard folder (default leaderboards/)")
    b.set_defaults(func=cmd_leaderboard)
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

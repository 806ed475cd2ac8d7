"""``ibnbench run --task segmentation``: the run, then its tables."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ibnbench.cli.arguments import positive_int
from ibnbench.eval.options import RunOptions

if TYPE_CHECKING:
    from ibnbench.results.segmentation_record import SegmentationRecord


def run_segmentation_command(args: argparse.Namespace) -> int:
    """Run segmentation models on ``--data NAME=PATH`` datasets, write the record and print its tables."""
    from ibnbench.eval.segmentation_inference import Inference
    from ibnbench.eval.segmentation_runs import run_segmentation

    inference = Inference(scales=args.scales or (1.0,), flip=args.flip, window=args.window, stride=args.stride)
    record = run_segmentation(args.model, args.data, suite=args.suite or "none", conditions=args.conditions,
                              weights=args.weights, options=RunOptions.from_args(args), inference=inference,
                              output=args.output, results_dir=args.results_dir, resume=args.resume,
                              restart=args.restart, skip_missing=args.skip_missing)
    if record.path:
        print_segmentation(record)
        print(f"record: {record.path}")
    return 0


def print_segmentation(record: SegmentationRecord) -> None:
    """A segmentation run's tables, what it skipped and how fast it went."""
    from ibnbench.results.segmentation_report import summary_tables

    for title, table in summary_tables(record).items():
        print(f"{title}\n\n{table}\n")
    skipped = {k: d["n_skipped"] for k, d in record.datasets.items() if d.get("n_skipped")}
    for name, count in skipped.items():
        print(f"{name}: {count} unreadable pair(s) skipped: {', '.join(record.datasets[name]['skipped'][:3])}")
    timing = record.timing
    print(f"{timing['images']} images in {timing['seconds']:.1f} s")


def add_segmentation_flags(p: argparse.ArgumentParser) -> None:
    """``run``'s flags of how a segmentation model's predictions are made."""
    segmentation = p.add_argument_group("--task segmentation: how predictions are made (default: the whole image, "
                                        "one scale, no flip, as RobustNet's valid.py)")
    segmentation.add_argument("--scales", type=scale_list, metavar="LIST",
                              help="image scales whose softmax outputs are averaged, e.g. 0.5,0.75,1.0,1.25,1.5")
    segmentation.add_argument("--flip", action="store_true", help="add each image's horizontal mirror")
    segmentation.add_argument("--window", type=positive_int, metavar="PIXELS",
                              help="sliding-window inference with square tiles of this side")
    segmentation.add_argument("--stride", type=positive_int, metavar="PIXELS",
                              help="pixels between sliding windows (default two thirds of --window)")


def scale_list(text: str) -> tuple[float, ...]:
    """``0.5,1.0,1.5`` as a tuple of positive numbers."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (0.5,1.0,1.5), not {text!r}") from None
    if not scales or any(not 0 < s <= 8 for s in scales):
        raise argparse.ArgumentTypeError(f"expected scales in (0, 8], not {text!r}")
    return scales

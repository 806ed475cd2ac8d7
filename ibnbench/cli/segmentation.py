"""``ibnbench run --task segmentation``: the run, then its tables."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

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

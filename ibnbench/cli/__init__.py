"""``ibnbench`` command line: argparse subcommands that call the library functions, nothing more. Our own errors
(:class:`ibnbench.errors.IbnbenchError`) print as one line naming the file or option (exit 2); anything else is a bug
and keeps its traceback."""
from __future__ import annotations

import argparse
import os
import sys

from ibnbench.cli import catalog, evaluate, records
from ibnbench.cli.allocator import keep_freed_memory
from ibnbench.cli.evaluate import print_summary
from ibnbench.cli.segmentation import print_segmentation
from ibnbench.errors import IbnbenchError, RecordWriteError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibnbench",
        description="Appearance-robustness benchmark for ImageNet classifiers (IBN-Net, ECCV 2018, Table 1).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (catalog, evaluate, records):
        commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # batches reuse freed memory instead of faulting in fresh pages (cli/allocator.py)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        print(f"ibnbench {args.command}: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except IbnbenchError as exc:  # the user's input: one line; anything else is a bug and keeps its traceback
        if isinstance(exc, RecordWriteError):  # the run finished but its record could not be written
            print_summary(exc.record) if hasattr(exc.record, "top1_err") else print_segmentation(exc.record)
        print(f"ibnbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`ibnbench suites | head`): quiet, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush fails no more
        return 141  # 128 + SIGPIPE, what a shell reports for a command cut off by its pipe


if __name__ == "__main__":
    sys.exit(main())

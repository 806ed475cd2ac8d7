"""``python -m benchmarks.gpu_check COMMAND`` (from the repository root):

  carry [--python 3.11,3.12,3.13]           build .gpu-carry/ here (wheels, the 100 val images, frost textures)
  plan [--dry-run]                          the steps in order with their time limits (what gpu_check.sh runs)
  step NAME --work DIR [--dry-run]          run one step; its result goes to DIR/steps/NAME.json
  summarize --work DIR --out DIR [--step NAME]
                                            rebuild OUT's three files; with --step, print that step's line
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from benchmarks.gpu_check.carry import PYTHONS, build_carry
from benchmarks.gpu_check.common import CARRY, Plan, Step

STEPS = {  # name: (module of its step_NAME, limit in seconds); in order of value, the limits sum to 420 with
    # gpu_check.sh's install (20 s)
    "preflight": ("device_steps", 25),
    "throughput": ("device_steps", 55),
    "table1": ("eval_steps", 95),
    "real100": ("eval_steps", 45),
    "syncs": ("eval_steps", 35),
    "nvjpeg_race": ("device_steps", 20),
    "pytest_gpu": ("eval_steps", 70),
    "imagenet_c": ("eval_steps", 55),
}
DRY_RUN_LIMIT = 600  # the CPU is slow and shared; nothing in a dry run is a measurement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["carry", "plan", "step", "summarize"])
    parser.add_argument("name", nargs="?", choices=list(STEPS), help="the step (with `step`)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ibnbench-gpu-check"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--step", help="with summarize: print this step's line")
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins at toy sizes: measures nothing")
    parser.add_argument("--python", default=",".join(PYTHONS), help="with carry: the Python versions to carry "
                        "kornia-rs wheels for (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "carry":
        print(f"{CARRY}: {build_carry(pythons=args.python.split(',')):.1f} MiB")
    elif args.command == "plan":
        for name, (_, limit) in STEPS.items():
            print(name, DRY_RUN_LIMIT if args.dry_run else limit)
    elif args.command == "step":
        if args.name is None:
            parser.error("step needs a step name")
        plan = Plan.make(args.dry_run)
        module = importlib.import_module(f"benchmarks.gpu_check.{STEPS[args.name][0]}")
        getattr(module, f"step_{args.name}")(plan, Step(args.name, args.work, plan))
    else:
        from benchmarks.gpu_check.summary import line, summarize

        if args.out is None:
            parser.error("summarize needs --out")
        steps = summarize(args.work, args.out)
        if args.step in steps:
            print(line(args.step, steps[args.step]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

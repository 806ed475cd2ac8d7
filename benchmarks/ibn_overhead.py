"""Interleaved CPU timing of resnet50 vs resnet50_ibn_a / _ibn_b (the issue-2 target: IBN <= 1.03x).

Run: ``python benchmarks/ibn_overhead.py [--threads 2] [--batch 16] [--rounds 20]``. The three models are
timed in turn within each round, so machine load affects them alike; medians and ratios are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ibnbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, 224, 224).to(memory_format=torch.channels_last)
    names = ("resnet50", "resnet50_ibn_a", "resnet50_ibn_b")
    models = {n: ibnbench.create_model(n).to(memory_format=torch.channels_last) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for model in models.values():
            model(x)
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["resnet50"])
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:16s} median {median * 1000:7.1f} ms  ratio {median / base:.3f}")


if __name__ == "__main__":
    main()

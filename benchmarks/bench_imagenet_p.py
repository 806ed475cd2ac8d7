"""ImageNet-P's frame generation memory on the CPU: the peak resident memory that streaming one perturbation's
frames adds to a process already holding its input batch (what the engine does, :mod:`ibnbench.eval.sequences`).

``python benchmarks/bench_imagenet_p.py [BATCH] [FRAMES]`` prints the peak per perturbation (MB) for a batch of
``BATCH`` 224-pixel crops (default 64) over its first ``FRAMES`` frames (default 4; the stream holds one frame at a
time). Measured on the CPU for batch 64: at most 330 MB above the input over 4 frames (shot_noise), 606 MB over
whole sequences (``64 41``; 428 MB after shot_noise, 606 MB after spatter).
Beyond the frame's temporaries, the counter-based draws cache one table per frame number
(``imaging._element_hashes``, one image's elements, whatever the batch): about 6 MB per noise frame at 224 pixels,
kept for the process, at most 41 frame numbers."""
from __future__ import annotations

import json
import resource
import sys


def peaks(batch: int, frames: int) -> dict[str, float]:
    """Peak resident memory (MB) each perturbation's stream of ``frames`` frames adds to this process, after a warm
    run of every code path on two images; one perturbation after another (peaks only grow)."""
    import torch

    from ibnbench.conditions.imagenet_p import Perturbation
    from ibnbench.conditions.perturbations import PERTURBATIONS

    x, index = torch.rand(batch, 3, 224, 224) * 255, torch.arange(batch)
    for name in PERTURBATIONS:
        for _ in Perturbation(name, perturbation=name).stream(x[:2], index[:2], 3, 0, 2):
            pass
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {}
    for name in PERTURBATIONS:
        for _ in Perturbation(name, perturbation=name).stream(x, index, 3, 0, frames):
            pass
        out[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return out


if __name__ == "__main__":
    batch, frames = (int(a) for a in (sys.argv[1:] + ["64", "4"][len(sys.argv) - 1:])[:2])
    print(json.dumps({name: round(mb, 1) for name, mb in peaks(batch, frames).items()}))

"""Speed of generating ImageNet-P's frame sequences and ImageNet-C-bar's corruptions: ours on a batch, side by side
with an optional reference (``FILE.py:FUNCTION`` or ``MODULE:FUNCTION``, e.g. the numpy ports in the repository's
``benchmarks/references/``; the package never imports them) on each image of the same crops.

Rows hold milliseconds per image (medians of ``repeat`` interleaved rounds) and ``ratio`` = reference / ours (above
1: ours is faster); ``total`` sums the rows (all sequences, or all corruptions x severities, of one image) and
``geometric_mean`` is over the rows' ratios. Without a reference only ours is timed.
"""
from __future__ import annotations

import os
import statistics
from typing import Sequence

from tqdm.auto import tqdm

from ibnbench.errors import UsageError
from ibnbench.tools.bench import (
    bench_crops,
    corruptions,
    intra_op_threads,
    load_reference,
    repeated_batch,
    side_by_side,
)

P_SIDE = 256
"""ImageNet-P's script transforms the Resize(256) image and keeps its 224 centre crop: both sides get the 256 x 256
centre crop of it (square, so that the crops batch)."""


def _summary(rows: list[dict], **info) -> dict:
    """``rows`` with their ``total`` and the ``geometric_mean`` of their ratios (None without a reference)."""
    ours = sum(r["ours_ms"] for r in rows)
    timed = all(r["reference_ms"] is not None for r in rows)
    reference = sum(r["reference_ms"] for r in rows) if timed else None
    return {"rows": rows, "total": {"ours_ms": ours, "reference_ms": reference,
                                    "ratio": reference / ours if timed else None},
            "geometric_mean": statistics.geometric_mean(r["ratio"] for r in rows) if timed else None, **info}


def imagenet_p(data: str | os.PathLike, limit: int = 2, batch_size: int = 8, device: str | None = None,
               perturbations: Sequence[str] | None = None, difficulty: int = 1, reference: str | None = None,
               repeat: int = 3, threads: int | None = None) -> dict:
    """Every frame of each ImageNet-P perturbation (default all 14), ours against ``reference``: ms per image.

    Ours: :func:`~ibnbench.conditions.perturbations.frames` of a batch of ``batch_size`` (the ``limit`` crops
    repeated) on ``device`` in one call per perturbation, after one warm-up call. The reference:
    ``reference(image, name, difficulty)`` -> the sequence, for each crop (HxWx3 uint8)."""
    from ibnbench.conditions import perturbations as P
    from ibnbench.data.geometry import Geometry
    from ibnbench.eval.distributed import resolve_device

    names = list(perturbations or P.PERTURBATIONS)
    unknown = [n for n in names if n not in P.PERTURBATIONS]
    if unknown:
        raise UsageError(f"--conditions: {', '.join(unknown)} not ImageNet-P perturbation(s); known: "
                         f"{', '.join(P.PERTURBATIONS)}")
    if batch_size < 1 or repeat < 1 or limit < 1 or difficulty not in (1, 2, 3):
        raise UsageError(f"--batch-size, --repeat and --limit must be at least 1 and --difficulty 1, 2 or 3, got "
                         f"{batch_size}, {repeat}, {limit}, {difficulty}")
    reference_fn = load_reference(reference) if reference else None
    dev = resolve_device(device)
    crops = bench_crops(data, limit, Geometry(P_SIDE, P_SIDE))
    images = list(crops.permute(0, 2, 3, 1).contiguous().numpy())
    batch, index = repeated_batch(crops, batch_size, dev)

    def row(name: str) -> dict:
        def ours():
            return P.frames(batch, index, name, difficulty)

        def theirs():
            for image in images:
                reference_fn(image, name, difficulty)

        ours()  # warm-up: grids, tables and filters are built once
        return {"op": name, "frames": P.frame_count(name),
                **side_by_side(ours, theirs if reference_fn else None, (len(batch), len(images)), dev, repeat)}

    with intra_op_threads(threads) as used:
        rows = [row(name) for name in tqdm(names, desc="imagenet-p", unit="perturbation", disable=None)]
    return _summary(rows, suite="imagenet-p", difficulty=difficulty, n_images=len(images), batch_size=batch_size,
                    repeat=repeat, device=str(dev), threads=used)


def c_bar(data: str | os.PathLike, limit: int = 2, batch_size: int = 8, device: str | None = None,
          names: Sequence[str] | None = None, reference: str | None = None, repeat: int = 3,
          threads: int | None = None) -> dict:
    """Each ImageNet-C-bar corruption at all 5 severities (the ``imagenet-c-bar`` suite's conditions), ours
    against ``reference(image, severity=, corruption_name=)``: per corruption, ms per image summed over the
    severities (timed as :func:`~ibnbench.tools.bench.corruptions` times them, on 224 crops)."""
    out = corruptions(data, limit=limit, batch_size=batch_size, device=device, conditions=names, reference=reference,
                      severities=(1, 2, 3, 4, 5), repeat=repeat, threads=threads, suites=("imagenet-c-bar",))
    rows = []
    for op in dict.fromkeys(r["op"] for r in out["rows"]):
        mine = [r for r in out["rows"] if r["op"] == op]
        ours = sum(r["ours_ms"] for r in mine)
        theirs = sum(r["reference_ms"] for r in mine) if reference else None
        rows.append({"op": op, "severities": len(mine), "ours_ms": ours, "reference_ms": theirs,
                     "ratio": theirs / ours if reference else None})
    return _summary(rows, suite="imagenet-c-bar", **{k: out[k] for k in ("n_images", "batch_size", "repeat",
                                                                         "device", "threads")})


def speed_table(out: dict) -> str:
    """:func:`imagenet_p`'s or :func:`c_bar`'s rows as a markdown table, a row for the total, and the geometric
    mean of the ratios."""
    import pandas as pd

    total = {"op": "all (one image)", **out["total"]}
    for count in ("frames", "severities"):
        if count in out["rows"][0]:
            total[count] = sum(r[count] for r in out["rows"])
    frame = pd.DataFrame(out["rows"] + [total]).set_index("op").round({"ours_ms": 2, "reference_ms": 2, "ratio": 2})
    if out["geometric_mean"] is None:
        frame = frame.drop(columns=["reference_ms", "ratio"])
        return f"{frame.to_markdown()}\n\nno --reference: ours alone, ms per image"
    return (f"{frame.to_markdown()}\n\nms per image; ratio = reference / ours (>1: ours faster); geometric mean of "
            f"the {len(out['rows'])} rows' ratios: {out['geometric_mean']:.2f}x, of the totals: "
            f"{out['total']['ratio']:.2f}x")

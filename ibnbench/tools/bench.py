"""Speed: timm-style synthetic throughput, fan-out against the per-pair baseline, per-stage pipeline timing, and
ImageNet-C ops against the reference package.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ibnbench.errors import MissingFileError, UsageError
from ibnbench.eval.options import RunOptions
from ibnbench.eval.runner import halve_on_oom
from ibnbench.precision import AMP_DTYPES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model_name: str, batch_size: int = 64, amp: str = "off", channels_last: bool = False,
               compile: bool = False, device: str | None = None, warmup: int = 3, iters: int = 10,
               size: int = 224) -> dict:
    """Synthetic eval throughput of one model (images/s, peak memory); halves the batch on out-of-memory."""
    from ibnbench.eval.distributed import resolve_device
    from ibnbench.zoo import create_model

    if batch_size < 1 or iters < 1:
        raise UsageError(f"--batch-size and --iters must be at least 1, got {batch_size} and {iters}")
    dev = resolve_device(device)
    model = create_model(model_name).to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    dtype = AMP_DTYPES.get(amp)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext()
    def measure(batch: int) -> float:
        x = torch.randn(batch, 3, size, size, device=dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad(), autocast:
            for _ in range(warmup):
                model(x)
            _sync(dev)
            start = time.perf_counter()
            for _ in range(iters):
                model(x)
            _sync(dev)
        return time.perf_counter() - start

    elapsed, batch_size = halve_on_oom(measure, batch_size, dev, what="batch")
    return {"model": model_name, "device": str(dev), "amp": amp, "channels_last": channels_last, "compile": compile,
            "batch_size": batch_size, "images_per_s": round(batch_size * iters / elapsed, 1),
            "ms_per_batch": round(1000 * elapsed / iters, 2),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None}


def _prepare(models: Sequence[str], data: str | os.PathLike, suite: str, conditions: Sequence[str] | None,
             weights: Sequence[str] | None, limit: int | None, style_weights: dict | None) -> tuple:
    """``(plan, {column: classifier})`` for a timing run, planned as ``run`` plans (random weights unless given);
    every asset is required."""
    from ibnbench.eval.plan import RunPlan

    plan = RunPlan.make(models, data, suite, conditions, weights, default_weights="random", limit=limit,
                        style_weights=style_weights, missing_hint="select --conditions without them")
    return plan, plan.build(announce=False)


def compare_baseline(models: Sequence[str], data: str | os.PathLike, suite: str = "table1",
                     conditions: Sequence[str] | None = None, weights: Sequence[str] | None = None,
                     **options) -> dict:
    """Time the fan-out engine against the per-(model, condition) baseline on the same data, and count decodes."""
    from ibnbench.eval.engine import evaluate

    plan, built = _prepare(models, data, suite, conditions, weights, options.get("limit"),
                           options.pop("style_weights", None))
    chosen, dataset = plan.suite, plan.dataset
    out: dict = {}
    for mode, fanout in (("fanout", True), ("baseline", False)):
        result = evaluate(built, chosen.conditions, dataset, RunOptions(fanout=fanout, **options))
        out[mode] = {"seconds": result.timing["seconds"], "decodes": result.timing["decoded"],
                     "results": result.results}
    out["speedup"] = round(out["baseline"]["seconds"] / out["fanout"]["seconds"], 2)
    out["n_images"] = len(dataset)
    out["identical_counts"] = out["fanout"]["results"] == out["baseline"]["results"]
    return out


def _nvjpeg_seconds(paths: Sequence[Path], batch_size: int, device: torch.device) -> float:
    """Seconds to decode ``paths`` on the GPU in batched nvJPEG calls (files already read; one warm-up batch),
    scaled to all of ``paths`` from the files the engine sends to nvJPEG (the others go to CPU workers)."""
    from ibnbench.data.decode import nvjpeg_can_decode, nvjpeg_decode, nvjpeg_device, read_bytes

    device = nvjpeg_device(device)
    encoded = [d for d in map(read_bytes, paths) if nvjpeg_can_decode(d)]
    if not encoded:
        return float("nan")
    batches = [encoded[i:i + batch_size] for i in range(0, len(encoded), batch_size)]
    nvjpeg_decode(batches[0], device)
    return _timed(lambda: [nvjpeg_decode(b, device) for b in batches], device) * len(paths) / len(encoded)


def _timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (synchronised on CUDA)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def _import_file(path: Path):
    """The module in file ``path``; one inside a package (folders with ``__init__.py``) is imported under its
    dotted name, the folder above its outermost package on ``sys.path``, so that it can import its siblings."""
    import importlib
    import importlib.util
    import sys

    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    path = path.resolve()
    parts, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) > 1:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        return importlib.import_module(".".join(parts))
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_reference(spec: str):
    """The reference function named by ``module:function`` or ``path/to/file.py:function`` (e.g. ImageNet-C's
    ``corrupt(image_hwc_uint8, severity=, corruption_name=)``)."""
    import importlib

    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise UsageError(f"--reference: expected MODULE:FUNCTION or FILE.py:FUNCTION, not {spec!r}")
    try:
        module = _import_file(Path(target)) if target.endswith(".py") else importlib.import_module(target)
        return getattr(module, name)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        raise UsageError(f"--reference {spec}: cannot load it ({type(exc).__name__}: {exc}); imagecorruptions 1.1.2 "
                         "needs pkg_resources (setuptools < 81), numpy < 2 and scikit-image < 0.19, or pass "
                         "--reference benchmarks/references/imagenet_c.py:corrupt (the same code with its shims)") \
            from None


def _imagenet_c_conditions(conditions: Sequence[str] | None, severities: Sequence[int],
                           suites: Sequence[str]) -> list:
    """The suites' corruption conditions at ``severities``, those named by ``conditions`` (ids such as ``fog-3``
    or corruption names such as ``fog``) when given."""
    from ibnbench.eval.plan import load_suite

    chosen = [c for s in suites for c in load_suite(s).conditions
              if c.kind == "corruption" and c.severity in set(severities)]
    if conditions:
        wanted = set(conditions)
        chosen = [c for c in chosen if c.id in wanted or c.corruption in wanted]
        if not chosen:
            raise UsageError(f"--conditions: none of {', '.join(conditions)} is an ImageNet-C condition at "
                             f"severities {', '.join(map(str, severities))}")
    missing = next((c.requires[0] for c in chosen if c.requires), None)
    if missing:
        raise MissingFileError(f"{missing} (or leave it out with --conditions)")
    return chosen


def _ms_per_image(fn, images: int, device: torch.device) -> float:
    return 1000 * _timed(fn, device) / images


def side_by_side(ours, theirs, images: tuple[int, int], device: torch.device, repeat: int) -> dict:
    """Milliseconds per image of ``ours()`` (on ``images[0]`` images, on ``device``) and ``theirs()`` (on
    ``images[1]``, on the CPU; None: not timed), alternating ``repeat`` times; medians, and ``ratio`` theirs / ours."""
    ours_ms, reference_ms = [], []
    for _ in range(repeat):
        ours_ms.append(_ms_per_image(ours, images[0], device))
        if theirs is not None:
            reference_ms.append(_ms_per_image(theirs, images[1], torch.device("cpu")))
    ours_median = statistics.median(ours_ms)
    reference = statistics.median(reference_ms) if reference_ms else None
    return {"ours_ms": ours_median, "reference_ms": reference,
            "ratio": reference / ours_median if reference is not None else None}


def _time_op(condition, batch: torch.Tensor, index: torch.Tensor, images: list, reference_fn, repeat: int) -> dict:
    """One row of :func:`corruptions`: ours on the batch and the reference (if any) on each image, alternating
    ``repeat`` times after one warm-up call of ours; medians."""
    condition(batch, index)  # warm-up: tables, textures and filter matrices are built once

    def theirs():
        for image in images:
            reference_fn(image, severity=condition.severity, corruption_name=condition.corruption)

    return {"op": condition.corruption, "severity": condition.severity,
            **side_by_side(lambda: condition(batch, index), theirs if reference_fn else None,
                           (len(batch), len(images)), batch.device, repeat)}


@contextlib.contextmanager
def intra_op_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` (None: left as they are) inside the block; yields the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def bench_crops(data: str | os.PathLike, limit: int, geometry) -> torch.Tensor:
    """The first ``limit`` images of ``data`` decoded and cut by ``geometry``: uint8 ``[N, 3, crop, crop]``."""
    from ibnbench.data.decode import decode_file
    from ibnbench.data.discovery import open_dataset

    dataset = open_dataset(data, limit=limit)
    return torch.stack([geometry.apply(decode_file(dataset.path(i))) for i in range(len(dataset))])


def repeated_batch(crops: torch.Tensor, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``crops`` repeated to a float batch of ``batch_size`` on ``device``, and its indices 0..batch_size-1."""
    batch = crops.repeat(math.ceil(batch_size / len(crops)), 1, 1, 1)[:batch_size].to(device).float()
    return batch, torch.arange(batch_size, device=device)


def corruptions(data: str | os.PathLike, limit: int = 4, batch_size: int = 64, device: str | None = None,
                conditions: Sequence[str] | None = None, reference: str | None = "imagecorruptions:corrupt",
                severities: Sequence[int] = (3,), repeat: int = 3, threads: int | None = None,
                suites: Sequence[str] = ("imagenet-c", "imagenet-c-extra")) -> dict:
    """Our ImageNet-C (or, by ``suites``, ImageNet-C-bar) ops against the reference on the same crops, op by op:
    milliseconds per image each.

    ``limit`` images are cut as ImageNet-C was made (Resize 256 + CenterCrop 224). The reference corrupts each of
    them (HxWx3 uint8 numpy, one at a time, as it works); ours corrupts a batch of ``batch_size`` (the crops
    repeated) on ``device``, after one warm-up call. The two alternate ``repeat`` times and each keeps its median,
    so that load from elsewhere falls on both. ``ratio`` is reference over ours (above 1: ours is faster);
    ``geometric_mean`` is over the rows' ratios (None without a ``reference``: ours alone is timed). ``threads``
    sets torch's intra-op threads for the run (the reference runs on one)."""
    from ibnbench.data.geometry import Geometry
    from ibnbench.eval.distributed import resolve_device

    if batch_size < 1 or repeat < 1 or limit < 1:
        raise UsageError(f"--batch-size, --repeat and --limit must be at least 1, got {batch_size}, {repeat}, {limit}")
    chosen = _imagenet_c_conditions(conditions, severities, suites)
    reference_fn = load_reference(reference) if reference else None
    dev = resolve_device(device)
    crops = bench_crops(data, limit, Geometry())
    images = list(crops.permute(0, 2, 3, 1).contiguous().numpy())
    batch, index = repeated_batch(crops, batch_size, dev)
    with intra_op_threads(threads) as used:
        rows = [_time_op(c, batch, index, images, reference_fn, repeat) for c in
                tqdm(chosen, desc="corruptions", unit="condition", disable=None)]
    return {"rows": rows, "geometric_mean": statistics.geometric_mean(r["ratio"] for r in rows) if reference_fn
            else None, "n_images": len(images), "batch_size": batch_size, "repeat": repeat, "device": str(dev),
            "threads": used}


def corruption_table(out: dict) -> str:
    """:func:`corruptions`' rows side by side (one column of ratios per severity when there are several; ours' ms
    per severity without a reference), as a markdown table, with the geometric mean of the ratios under it."""
    import pandas as pd

    frame = pd.DataFrame(out["rows"])
    timed = out["geometric_mean"] is not None
    if frame["severity"].nunique() == 1:
        table = frame.drop(columns="severity").set_index("op").round({"ours_ms": 2, "reference_ms": 2, "ratio": 2})
        if not timed:
            table = table[["ours_ms"]]
    else:
        value = "ratio" if timed else "ours_ms"
        table = frame.pivot(index="op", columns="severity", values=value).round(2)
        table.columns = [f"{value}, severity {s}" for s in table.columns]
        table = table.loc[frame["op"].unique()]
    if not timed:
        return f"{table.to_markdown()}\n\nno --reference: ours alone, ms per image"
    return (f"{table.to_markdown()}\n\ngeometric mean of the ratios (reference ms / ours ms, >1: ours faster) over "
            f"{len(frame)} row(s): {out['geometric_mean']:.2f}x")


def _rate(images: int, seconds: float) -> float:
    """Images per second to four significant digits (one decimal lost 3 % on a slow stage's 1.8 images/s)."""
    return float(f"{images / seconds:.4g}")


def pipeline(models: Sequence[str], data: str | os.PathLike, suite: str = "table1",
             conditions: Sequence[str] | None = None, weights: Sequence[str] | None = None, limit: int = 256,
             batch_size: int = 64, device: str | None = None, amp: str = "auto", channels_last: bool = False,
             workers: int = 0, refine: float = RunOptions.refine, cache: str | None = None,
             style_weights: dict | None = None) -> dict:
    """Time each stage of a real run on ``limit`` images (decode, crop, each condition, each model's forward)
    and the whole fan-out evaluation; images/s per stage. With ``cache`` (a folder or "gpu"), also the
    loader decoding every image against the loader reading the filled crop cache."""
    from ibnbench.data.decode import decode_file
    from ibnbench.data.geometry import Geometry
    from ibnbench.data.loader import make_loader
    from ibnbench.eval.engine import evaluate
    from ibnbench.eval.runner import ModelRunner

    plan, built = _prepare(models, data, suite, conditions, weights, limit, style_weights)
    chosen, dataset = plan.suite, plan.dataset
    options = RunOptions(device=device, batch_size=batch_size, amp=amp, channels_last=channels_last,
                         workers=workers, refine=refine, progress=False)
    dev = options.resolved_device()
    geometry = Geometry()
    paths = [dataset.path(i) for i in range(len(dataset))]
    n = len(paths)
    start = time.perf_counter()
    images = [decode_file(p) for p in paths]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    crops = torch.stack([geometry.apply(im) for im in images])
    crop_s = time.perf_counter() - start
    batch = crops[:batch_size].to(dev).float()
    labels = dataset.labels[:batch_size].to(dev)
    scale = n / batch.shape[0]  # per-batch timings scaled to the whole sample
    stages = {"decode (1 CPU process)": decode_s, "resize + crop (1 CPU process)": crop_s}
    if dev.type == "cuda":
        stages[f"decode (nvJPEG, batches of {batch_size})"] = _nvjpeg_seconds(paths, batch_size, dev)
    if cache:
        def loader(cache_spec: str | None):
            return make_loader(dataset, [geometry], batch_size=batch_size, workers=workers, cache=cache_spec,
                                        decoder=options.resolved_decoder(dev), device=dev)

        stages[f"loader, decoding ({workers} workers)"] = _timed(lambda: list(loader(None)), dev)
        list(loader(cache))  # fill
        stages[f"loader, from the crop cache ({cache})"] = _timed(lambda: list(loader(cache)), dev)
    for condition in chosen.conditions:
        condition(batch)  # warm-up (style generators are built lazily)
        stages[f"condition {condition.id} ({condition.kind})"] = _timed(lambda c=condition: c(batch), dev, 3) * scale
    for name, model in built.items():
        runner = ModelRunner(model.module, model.preprocessing, dev, options)
        runner.hits(batch, labels)
        stages[f"forward {name}"] = _timed(lambda r=runner: r.hits(batch, labels), dev, 3) * scale
    whole = evaluate(built, chosen.conditions, dataset, options)
    rows = [{"stage": k, "seconds": round(v, 4), "images_per_s": _rate(n, v) if v else None}
            for k, v in stages.items()]
    rows.append({"stage": f"whole fan-out evaluation ({workers} workers)", "seconds": whole.timing["seconds"],
                 "images_per_s": _rate(n, whole.timing["seconds"])})
    return {"n_images": n, "device": str(dev), "batch_size": batch_size, "stages": rows,
            "pairs": len(built) * len(chosen.conditions)}

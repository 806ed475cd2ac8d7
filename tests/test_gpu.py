"""The CUDA paths (issue 19), run only where CUDA is: the engine with autocast, refine and out-of-memory halving,
nvJPEG's outputs against writes still queued on freed memory, nvJPEG's failure path, the GPU crop cache, no host
sync inside the batch loop, NCCL. benchmarks/gpu_check.sh runs these with ``pytest -m gpu``, ``$IBNBENCH_SHARED``
and the Lite0 packages from its carried folder (.gpu-carry/)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers.gpu_race import overwritten_images
from helpers.images import GPU_MAX_TOLERANCE, GPU_MEAN_TOLERANCE, write_image
from helpers.runs import inverted_copy_suite, run_args, torchrun
from torchvision.io import ImageReadMode, decode_jpeg

import ibnbench
from ibnbench.data import cache
from ibnbench.data import decode as data
from ibnbench.data.classes import imagenet_wnids
from ibnbench.data.discovery import open_dataset
from ibnbench.data.geometry import Geometry
from ibnbench.data.loader import make_loader
from ibnbench.eval import engine
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite
from ibnbench.eval.runner import ModelRunner
from ibnbench.eval.state import EvalState
from ibnbench.zoo import create_model
from ibnbench.zoo.meta import Preprocessing

pytestmark = pytest.mark.gpu
REAL_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]


@pytest.fixture()
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    return {"efficientnet_lite0": create_model("efficientnet_lite0", weights="official")}


def test_bf16_refine_with_out_of_memory_halving_gives_the_fp32_answers(val100, lite0, monkeypatch):
    """On the 100 real images: bf16 + refine, with the first full batches running out of memory, decides every
    image as IEEE fp32 does, counts no close call twice, and leaves none."""
    conditions = load_suite("table1").select(REAL_CONDITIONS).conditions
    dataset = open_dataset(val100)
    fp32 = evaluate(lite0, conditions, dataset, RunOptions(device="cuda", amp="off", batch_size=50, workers=2,
                                                           progress=False))
    sizes = []
    forward = ModelRunner._forward

    def out_of_memory_once(self, x, reduced=True):
        sizes.append(len(x))
        if len(x) == 50 and sizes.count(50) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x, reduced)

    monkeypatch.setattr(ModelRunner, "_forward", out_of_memory_once)
    bf16 = evaluate(lite0, conditions, dataset, RunOptions(device="cuda", amp="bf16", refine=0.125, batch_size=50,
                                                           workers=2, progress=False))
    assert sizes.count(50) == 1 and max(sizes[1:]) == 25
    assert bf16.close_calls_left == 0 and fp32.close_calls_left is None
    assert bf16.per_image == fp32.per_image


def test_nvjpeg_outputs_survive_writes_queued_on_memory_freed_before_the_decode(tmp_path):
    """The A/B of pytorch/vision#9606 on one stream and one allocator pool: torchvision's own call is handed blocks
    whose queued writes then overwrite its images (so this test can see the race), ``nvjpeg_decode`` is not."""
    for i in range(4):
        write_image(tmp_path / f"{i}.JPEG", seed=i, height=240, width=320)
    jpegs = [data.read_bytes(tmp_path / f"{i}.JPEG") for i in range(4)]
    device = data.nvjpeg_device("cuda")
    unfixed = overwritten_images(lambda d: decode_jpeg(d, mode=ImageReadMode.RGB, device=device), jpegs, device)
    assert unfixed > 0, "no image overwritten without the fix: the race did not show (fixed upstream?)"
    assert overwritten_images(lambda d: data.nvjpeg_decode(d, device), jpegs, device) == 0


def test_nvjpeg_batch_failure_retries_one_by_one_then_decodes_on_the_cpu(tmp_path):
    """A file with the end marker but a bogus Huffman table is sent to nvJPEG, fails the batch, fails alone, and
    gets libjpeg's error on the CPU; the other images of the batch are still decoded on the device."""
    wnid = imagenet_wnids()[5]
    for i in range(6):
        write_image(tmp_path / "val" / wnid / f"{i}.JPEG", seed=i, height=120, width=160)
    good = (tmp_path / "val" / wnid / "0.JPEG").read_bytes()
    corrupt = tmp_path / "val" / wnid / "3.JPEG"
    corrupt.write_bytes(good[:400] + bytes(range(256)) * 4 + b"\xff\xd9")
    assert data.nvjpeg_can_decode(data.read_bytes(corrupt))
    dataset = open_dataset(tmp_path / "val")
    cpu = list(make_loader(dataset, [Preprocessing()], batch_size=8, workers=0, on_bad_image="skip"))[0]
    loader = make_loader(dataset, [Preprocessing()], batch_size=8, workers=0, on_bad_image="skip",
                              decoder="nvjpeg", device="cuda")
    (batch,) = list(loader)
    assert loader.gpu.fallbacks == 1 and loader.gpu.decoded_on_device == 5
    assert batch["ok"].tolist() == cpu["ok"].tolist() == [i != 3 for i in range(6)]
    assert batch["bad"] == cpu["bad"] and "Huffman" in batch["bad"][0][1]
    key = Geometry().key
    diff = (batch["crops"][key].cpu().float() - cpu["crops"][key].float()).abs()
    assert diff.mean() < GPU_MEAN_TOLERANCE and diff.max() < GPU_MAX_TOLERANCE


def test_gpu_cache_second_run_reads_device_memory_with_identical_answers(val100, lite0, tmp_path):
    cache.clear_memory()
    options = RunOptions(device="cuda", batch_size=50, workers=2, progress=False)
    cached = dataclasses.replace(options, cache="gpu")
    kwargs = dict(suite="table1", conditions=REAL_CONDITIONS)
    plain = ibnbench.run(["efficientnet_lite0"], val100, output=tmp_path / "plain.json", options=options, **kwargs)
    first = ibnbench.run(["efficientnet_lite0"], val100, output=tmp_path / "1.json", options=cached, **kwargs)
    second = ibnbench.run(["efficientnet_lite0"], val100, output=tmp_path / "2.json", options=cached, **kwargs)
    cache.clear_memory()
    assert first.timing["from_cache"] == 0 and second.timing["from_cache"] == 100
    assert first.per_image == second.per_image == plain.per_image
    assert second.environment["cache"] == "gpu" and second.environment["decoder"] == "nvjpeg"
    assert second.environment["fp32_conv"] == "ieee"


def test_one_evaluated_batch_makes_no_host_sync(tiny_val, tmp_path):
    """Every condition kind (a `dir` condition and a style generator included), two models, bf16 + refine: the
    batch loop runs with torch's sync debug mode set to raise on any synchronising call."""
    conditions, styled = inverted_copy_suite(tiny_val, tmp_path)
    more = load_suite("table1", style_weights={"monet": "random"}).select(["rgb+50", "std*1.5", "monet"])
    conditions = [*conditions, *more.conditions]
    torch.manual_seed(0)
    models = {n: create_model(n) for n in ("resnet18", "resnet18_ibn_a")}
    device = torch.device("cuda", torch.cuda.current_device())
    options = RunOptions(device="cuda", amp="bf16", refine=0.25)
    runners = {n: ModelRunner(m, m.ibnbench_info.preprocessing, device, options) for n, m in models.items()}
    dataset = open_dataset(tiny_val)
    state = EvalState(len(dataset), [(m, c.id) for m in models for c in conditions], device)
    loaders = [make_loader(d, [Preprocessing()], batch_size=4, workers=0, decoder="nvjpeg", device=device,
                                pin_memory=True)
               for d in (dataset, open_dataset(styled))]
    (first, first_dir), (second, second_dir) = list(zip(*loaders))[:2]
    engine._evaluate_batch(first, runners, conditions, state, device, {"inverted": first_dir})  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine._evaluate_batch(second, runners, conditions, state, device, {"inverted": second_dir})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(state.done.sum()) == 8


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL with two processes needs two GPUs")
def test_two_nccl_ranks_match_one_process(val100, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from ibnbench.cli import main

    def on_cuda(args: list[str]) -> list[str]:
        return [a if a != "cpu" else "cuda" for a in args]

    single, double = tmp_path / "single.json", tmp_path / "double.json"
    assert main(on_cuda(run_args(val100, single))) == 0
    done = torchrun(2, on_cuda(run_args(val100, double)), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert b["timing"]["world_size"] == 2 and a["per_image"] == b["per_image"]

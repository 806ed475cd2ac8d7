"""The uint8 crop cache: later passes read crops instead of decoding, with the very same crops and results."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers.runs import CONDITIONS, inverted_copy_suite, small_models

from ibnbench import run
from ibnbench.data import cache
from ibnbench.data.discovery import open_dataset
from ibnbench.data.geometry import Geometry
from ibnbench.data.loader import make_loader
from ibnbench.errors import BadImageError
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite

KEY = Geometry().key


def crops_of(loader) -> dict[int, torch.Tensor]:
    return {int(i): c for b in loader for i, c in zip(b["index"], b["crops"][KEY])}


@pytest.fixture
def decodes(decoded):
    """``decodes(fn)``: how many images the loader decodes on the CPU while ``fn`` runs (the tests use workers=0)."""
    def count(fn) -> int:
        before = len(decoded)
        fn()
        return len(decoded) - before

    return count


@pytest.fixture(autouse=True)
def _fresh_memory_caches():
    cache.clear_memory()
    yield
    cache.clear_memory()


def test_partly_filled_cache_gives_the_decoded_crops_in_the_same_batches(tiny_val, tmp_path, decodes):
    dataset = open_dataset(tiny_val)
    plain = crops_of(make_loader(dataset, [Geometry()], batch_size=4, workers=0))
    fill = make_loader(dataset, [Geometry()], batch_size=2, workers=0, indices=[0, 2, 5, 8],
                            cache=str(tmp_path / "c"))
    assert decodes(lambda: list(fill)) == 4
    mixed = make_loader(dataset, [Geometry()], batch_size=4, workers=0, cache=str(tmp_path / "c"))
    out = {}
    assert decodes(lambda: out.update(crops_of(mixed))) == 5  # only the images not cached yet
    assert [b for b in mixed.batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert mixed.from_cache == 4 and out.keys() == plain.keys()
    assert all(torch.equal(out[i], plain[i]) for i in plain)
    again = make_loader(dataset, [Geometry()], batch_size=3, workers=2, cache=str(tmp_path / "c"))
    assert decodes(lambda: out.update(crops_of(again))) == 0 and again.from_cache == 9
    assert all(torch.equal(out[i], plain[i]) for i in plain)


def test_second_run_reads_the_cache_and_gives_identical_results(tiny_val, tmp_path, decodes):
    kwargs = dict(suite="table1", conditions=CONDITIONS, weights=["random"],
                  options=RunOptions(device="cpu", workers=0, batch_size=4, progress=False,
                                     cache=str(tmp_path / "cache")))
    first = []
    assert decodes(lambda: first.append(run(["resnet18_ibn_b"], tiny_val, output=tmp_path / "1.json", **kwargs))) == 9
    second = []
    assert decodes(lambda: second.append(run(["resnet18_ibn_b"], tiny_val, output=tmp_path / "2.json", **kwargs))) == 0
    assert second[0].results == first[0].results and second[0].per_image == first[0].per_image
    assert first[0].timing["from_cache"] == 0 and second[0].timing["from_cache"] == 9
    assert len(list((tmp_path / "cache").glob("crops-v1-*-bilinear256-crop224-cpu.u8"))) == 1


def test_bad_images_are_never_cached(tiny_val, tmp_path, decodes):
    victim = sorted(tiny_val.rglob("*.JPEG"))[4]
    victim.write_bytes(victim.read_bytes()[:200])
    options = RunOptions(device="cpu", workers=0, batch_size=4, progress=False, cache=str(tmp_path / "cache"),
                         on_bad_image="skip")
    kwargs = dict(conditions=["origin"], weights=["random"], options=options)
    first = run(["resnet18"], tiny_val, output=tmp_path / "1.json", **kwargs)
    second = []
    assert decodes(lambda: second.append(run(["resnet18"], tiny_val, output=tmp_path / "2.json", **kwargs))) == 1
    assert second[0].dataset["skipped"] == first.dataset["skipped"] == [str(victim.relative_to(tiny_val))]
    assert second[0].per_image == first.per_image and second[0].timing["from_cache"] == 8
    with pytest.raises(BadImageError, match=victim.name):
        run(["resnet18"], tiny_val, output=tmp_path / "3.json",
            **{**kwargs, "options": dataclasses.replace(options, on_bad_image="fail")})


def test_memory_cache_makes_the_baseline_decode_once(tiny_val, decodes):
    models = small_models(("resnet18", "resnet18_ibn_a"))
    conditions = load_suite("table1").select(["origin", "rgb+50"]).conditions
    dataset = open_dataset(tiny_val)
    opts = dict(workers=0, batch_size=4, device="cpu", progress=False, fanout=False)
    plain, cached = [], []
    assert decodes(lambda: plain.append(evaluate(models, conditions, dataset, RunOptions(**opts)))) == 4 * 9
    assert decodes(lambda: cached.append(evaluate(models, conditions, dataset, RunOptions(cache="gpu", **opts)))) == 9
    assert cached[0].per_image == plain[0].per_image and cached[0].timing["from_cache"] == 3 * 9


def test_dir_condition_with_a_partly_cached_source_stays_aligned(tiny_val, tmp_path):
    conditions, _styled = inverted_copy_suite(tiny_val, tmp_path)
    models = small_models(("resnet18",))
    dataset = open_dataset(tiny_val)
    opts = dict(workers=0, batch_size=4, device="cpu", progress=False)
    plain = evaluate(models, conditions, dataset, RunOptions(**opts))
    list(make_loader(dataset, [Geometry()], batch_size=3, workers=0, indices=[1, 4, 6],
                          cache=str(tmp_path / "c")))  # the originals partly cached, the stylised copies not
    cached = evaluate(models, conditions, dataset, RunOptions(cache=str(tmp_path / "c"), **opts))
    assert cached.per_image == plain.per_image and cached.timing["from_cache"] == 3


def test_cache_file_of_the_wrong_size_is_one_clear_error(tiny_val, tmp_path):
    dataset = open_dataset(tiny_val)
    list(make_loader(dataset, [Geometry()], batch_size=4, workers=0, cache=str(tmp_path)))
    crops = next(tmp_path.glob("*.u8"))
    crops.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=f"{crops.name}: crop cache file has 10 bytes, expected {9 * 3 * 224 * 224}"):
        make_loader(dataset, [Geometry()], batch_size=4, workers=0, cache=str(tmp_path))


def test_cli_run_with_cache(tiny_val, tmp_path, capsys, decodes):
    from ibnbench.cli import main

    args = ["run", "--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--conditions", "origin",
            "--device", "cpu", "--workers", "0", "--cache", str(tmp_path / "c")]
    assert main([*args, "--output", str(tmp_path / "1.json")]) == 0
    assert decodes(lambda: main([*args, "--output", str(tmp_path / "2.json")])) == 0
    assert Path(tmp_path / "2.json").exists()


class Brightness(torch.nn.Module):
    """Class 1 for dark inputs, class 999 for bright ones: top-1 hits that tell an image from its inverted copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3))
        logits = torch.full((len(x), 1000), -1e4)
        logits[:, 1], logits[:, 999] = -level, level
        return logits


def test_cli_cache_keeps_a_dir_condition_apart_from_the_originals(tiny_val, tmp_path):
    """The pre-stylised copy has the originals' file list: cached crops are keyed by folder too, so a cached run
    scores `origin` on the originals and `inverted` on the copy, exactly as a run without the cache."""
    from ibnbench.cli import main

    inverted_copy_suite(tiny_val, tmp_path)
    args = ["run", "--model", "test_cache:Brightness", "--weights", "random", "--data", str(tiny_val), "--suite",
            str(tmp_path / "styled.toml"), "--device", "cpu", "--workers", "0", "--batch-size", "4"]
    assert main([*args, "--output", str(tmp_path / "plain.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    hits = plain["per_image"]["top1"]["test_cache:Brightness"]
    assert hits["origin"] != hits["inverted"]  # the test can see which folder the crops came from
    for n in (1, 2):  # fills the cache, then reads it
        assert main([*args, "--cache", str(tmp_path / "c"), "--output", str(tmp_path / f"cached{n}.json")]) == 0
        cached = json.loads((tmp_path / f"cached{n}.json").read_text())
        assert cached["results"] == plain["results"] and cached["per_image"] == plain["per_image"]
    assert cached["timing"]["from_cache"] == 9 and cached["environment"]["cache"] == "dir"
    assert len(list((tmp_path / "c").glob("*.u8"))) == 2


def test_host_tensors_go_to_a_gpu_cache_pinned_and_asynchronously(monkeypatch):
    """Fault 2 (issue 25), the mechanism seen on the CPU: a pageable host tensor is pinned, then copied with
    ``non_blocking`` (a blocking copy from pageable memory waits for the device); a CPU cache takes it as it is."""
    copies, pinned = [], []

    def to(tensor, device, dtype=None, non_blocking=False):
        copies.append((str(device), non_blocking, any(tensor is p for p in pinned)))
        return tensor

    def pin_memory(tensor):
        pinned.append(tensor.clone())
        return pinned[-1]

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda tensor: False)
    cache._to_cache(torch.arange(4), torch.device("cuda", 0))
    cache._to_cache(torch.arange(4), torch.device("cpu"))
    assert copies == [("cuda:0", True, True), ("cpu", False, False)] and len(pinned) == 1


@pytest.mark.gpu
def test_gpu_cache_get_and_put_make_no_host_sync():
    """Fault 2 (issue 25) on the device: ``put`` (pageable and pinned host crops, device crops) and ``get`` (pageable
    indices) run under torch's sync debug mode set to raise, and give back what was stored."""
    device = torch.device("cuda", torch.cuda.current_device())
    store = cache.CropCache(torch.zeros(8, 3, 4, 4, dtype=torch.uint8, device=device),
                            torch.zeros(8, dtype=torch.uint8, device=device))
    crops = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        store.put(torch.tensor([0, 1]), crops[:2], torch.tensor([True, False]))
        store.put(torch.tensor([2, 3]).pin_memory(), crops[2:4].pin_memory(), torch.tensor([True, True]).pin_memory())
        store.put(torch.tensor([4, 5]), crops[4:].to(device), torch.tensor([True, True]))
        got = store.get(torch.tensor([5, 0, 3]))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(got.cpu(), crops[[5, 0, 3]])
    assert store.filled.cpu().tolist() == [1, 0, 1, 1, 1, 1, 0, 0]

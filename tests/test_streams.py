"""``--overlap``: the next condition on a second CUDA stream while the models score the current one. The stream calls
are checked with stand-ins for CUDA's streams; the results with and without it are the same."""
from __future__ import annotations

import contextlib

import pytest
import torch

from ibnbench.data.discovery import open_dataset
from ibnbench.eval import engine, streams
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import Classifier, load_suite
from ibnbench.eval.runner import ModelRunner
from ibnbench.eval.state import EvalState
from ibnbench.zoo.meta import Preprocessing

SMALL = Preprocessing(resize=73, crop=64)


def _pooled_linear() -> Classifier:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 1000))
    return Classifier(module, SMALL)


class _Stream:
    """Stands in for ``torch.cuda.Stream``: notes what it is asked to wait for in the shared ``log``."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def wait_stream(self, other: _Stream) -> None:
        self.log.append(f"{self.name} waits for {other.name}")


@pytest.fixture
def fake_cuda(monkeypatch) -> list:
    """CUDA's stream calls replaced by stand-ins that log to the returned list."""
    log: list = []
    current = _Stream("current", log)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: _Stream("side", log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: current)

    @contextlib.contextmanager
    def on(stream):
        log.append(f"enter {stream.name}")
        yield
        log.append(f"leave {stream.name}")

    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: log.append(f"{t.shape[0]} used on {s.name}"))
    return log


def test_side_stream_waits_records_and_hands_back_in_order(fake_cuda):
    side = streams.SideStream(torch.device("cuda"), enabled=True)
    x = torch.ones(3)
    out = side.run(lambda t, scale: fake_cuda.append("work") or t * scale, x, 2.0)
    assert fake_cuda == ["side waits for current", "enter side", "work", "leave side", "3 used on side"]
    fake_cuda.clear()
    assert side.take(out) is out and fake_cuda == ["current waits for side", "3 used on current"]
    assert not streams.SideStream(torch.device("cpu"), enabled=True).enabled
    assert not streams.SideStream(torch.device("cuda"), enabled=False).enabled


class _LoggedSide:
    """An enabled side stream that runs the work at once and logs which condition it queued and handed back."""

    enabled = True

    def __init__(self, log: list):
        self.log = log

    def run(self, work, condition, *args):
        self.log.append(f"queue {condition.id}")
        return work(condition, *args)

    def take(self, out):
        self.log.append("take")
        return out


class _LoggedRunner(ModelRunner):
    log: list = []

    def score(self, x, label):
        self.log.append("score")
        return super().score(x, label)


def test_the_engine_queues_each_next_condition_before_scoring_the_current(monkeypatch):
    """The first condition runs on the current stream; each next one is queued on the side stream before the
    models score the current one, and handed back before it is scored; the stored answers are those in order."""
    conditions = load_suite("table1").select(["origin", "rgb+50", "std*1.5"]).conditions
    log: list = []
    monkeypatch.setattr(_LoggedRunner, "log", log)
    device = torch.device("cpu")
    runner = _LoggedRunner(_pooled_linear().module, SMALL, device, RunOptions(device="cpu"))
    crops = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = {"index": torch.arange(4), "label": torch.tensor([1, 2, 3, 4]), "ok": torch.ones(4, dtype=torch.bool),
             "crops": {runner.geometry: crops}, "bad": []}
    states = []
    for side in (None, _LoggedSide(log)):
        states.append(EvalState(4, [("m", c.id) for c in conditions], device))
        log.clear()
        engine._evaluate_batch(batch, {"m": runner}, conditions, states[-1], device, side=side)
    assert log == ["queue rgb+50", "score", "take", "queue std*1.5", "score", "take", "score"]
    for name in ("top5_index", "top5_prob", "label_prob"):
        for pair in states[0].pairs:
            assert torch.equal(states[0].predicted[name][pair], states[1].predicted[name][pair])


def test_overlap_gives_identical_results(tiny_val):
    """``--overlap`` on the CPU runs in order: the same results as without it."""
    conditions = load_suite("table1").select(["origin", "rgb+50", "std*1.5"]).conditions
    dataset = open_dataset(tiny_val)
    runs = [engine.evaluate({"m": _pooled_linear()}, conditions, dataset,
                            RunOptions(workers=0, batch_size=4, device="cpu", progress=False, overlap=overlap))
            for overlap in (False, True)]
    assert runs[0].results == runs[1].results and runs[0].per_image == runs[1].per_image
    assert (runs[0].predictions.top5_prob == runs[1].predictions.top5_prob).all()


@pytest.mark.gpu
def test_overlap_on_cuda_stores_the_answers_of_a_run_in_order_with_no_host_sync():
    """On the device: the batch with the next condition on a side stream, under torch's sync debug mode set to raise,
    stores bit for bit what the batch in order stores."""
    from ibnbench.zoo import create_model

    conditions = load_suite("imagenet-c").select(["origin", "gaussian_noise-3", "motion_blur-2", "fog-4"]).conditions
    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    runner = ModelRunner(create_model("resnet18_ibn_a"), SMALL, device, RunOptions(device="cuda", amp="bf16"))
    crops = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = {"index": torch.arange(8).pin_memory(), "label": torch.arange(8).pin_memory(),
             "ok": torch.ones(8, dtype=torch.bool).pin_memory(), "crops": {runner.geometry: crops.pin_memory()}}
    states = []
    for side in (None, streams.SideStream(device, enabled=True), streams.SideStream(device, enabled=True)):
        states.append(EvalState(8, [("m", c.id) for c in conditions], device))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if len(states) == 3 else "default")  # the second run warms up
        try:
            engine._evaluate_batch(batch, {"m": runner}, conditions, states[-1], device, side=side)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for name in ("top5_index", "top5_prob", "label_prob"):
        for pair in states[0].pairs:
            assert torch.equal(states[0].predicted[name][pair], states[2].predicted[name][pair])

"""No host synchronisation in one evaluated batch of the table1, imagenet-c, imagenet-c-bar and imagenet-p suites, in
fp32 and under bf16 autocast with refine (issue 25): seen on the CPU by :class:`syncs.HostSyncProbe`, which records
what would make the host wait for a GPU. The few host-by-design sites are named in :data:`syncs.HOST_BY_DESIGN`."""
from __future__ import annotations

import pytest
import torch
from helpers.syncs import HostSyncProbe
from helpers.tiny import tiny_classifier

from ibnbench.conditions.style import Dir
from ibnbench.eval import engine
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite
from ibnbench.eval.runner import ModelRunner, decision_gap
from ibnbench.eval.sequences import sequence_conditions
from ibnbench.eval.state import EvalState
from ibnbench.zoo import create_model
from ibnbench.zoo.meta import Preprocessing

SMALL = Preprocessing(resize=73, crop=64)
"""64-pixel crops: every condition of both suites runs on them, and the test stays fast."""


def _batch(first: int, n: int, key: str) -> dict:
    """A batch as the loader hands it over: dataset indices, labels, decode flags and uint8 crops."""
    generator = torch.Generator().manual_seed(first)
    crops = torch.randint(0, 256, (n, 3, SMALL.crop, SMALL.crop), dtype=torch.uint8, generator=generator)
    return {"index": torch.arange(first, first + n), "label": torch.randint(0, 1000, (n,), generator=generator),
            "ok": torch.ones(n, dtype=torch.bool), "crops": {key: crops}, "bad": []}


def _probe_second_batch(conditions: list, options: RunOptions, models: tuple[str, ...], n: int,
                        dir_id: str | None = None, modules: dict[str, torch.nn.Module] | None = None) -> HostSyncProbe:
    """``models`` of the zoo, or ``modules`` by name (``SMALL`` crops), under ``conditions`` on two batches of ``n``
    images: the first warms up (constants built once per device), the second is evaluated inside the probe."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    modules = modules or {name: create_model(name) for name in models}
    runners = {name: ModelRunner(module, SMALL, device, options, name=name) for name, module in modules.items()}
    key = next(iter(runners.values())).geometry
    state = EvalState(2 * n, [(m, c.id) for m in runners for c in conditions], device, sequence_conditions(conditions))
    (first, first_own), (second, second_own) = [(_batch(at, n, key), _batch(100 + at, n, key)) for at in (0, n)]
    engine._evaluate_batch(first, runners, conditions, state, device, {dir_id: first_own} if dir_id else None)
    with HostSyncProbe() as probe:
        engine._evaluate_batch(second, runners, conditions, state, device, {dir_id: second_own} if dir_id else None)
    assert bool(state.done.all())
    return probe


PRECISIONS = [pytest.param(RunOptions(device="cpu", amp="off"), id="fp32"),
              pytest.param(RunOptions(device="cpu", amp="bf16", refine=0.25), id="bf16-refine")]


@pytest.mark.parametrize("options", PRECISIONS)
def test_table1_batch_makes_no_host_sync(options, tmp_path):
    """Every Table 1 condition (the Monet generator with random weights) and a `dir` condition's own images."""
    conditions = [*load_suite("table1", style_weights={"monet": "random"}).conditions, Dir("styled", root=tmp_path)]
    probe = _probe_second_batch(conditions, options, ("resnet18_ibn_a", "resnet18_ibn_b"), 4, dir_id="styled")
    assert probe.unexpected == []


@pytest.mark.parametrize("options", PRECISIONS)
def test_imagenet_c_batch_makes_no_host_sync(options):
    """All 75 corruptions and the clean images (one model, 2 images, to stay fast); only the host-by-design sites
    read values on the host."""
    probe = _probe_second_batch(load_suite("imagenet-c").conditions, options, ("resnet18_ibn_a",), 2)
    assert probe.unexpected == []


@pytest.mark.parametrize("options", PRECISIONS)
def test_imagenet_c_bar_batch_makes_no_host_sync(options):
    """All 50 C-bar corruptions and the clean images (one model, 2 images)."""
    probe = _probe_second_batch(load_suite("imagenet-c-bar").conditions, options, ("resnet18_ibn_a",), 2)
    assert probe.unexpected == []


def test_imagenet_p_batch_makes_no_host_sync():
    """Every frame of the 10 ImageNet-P test sequences (and the clean images), each scored as it is made and its
    top-5 kept; the tiny model in fp32 (310 frames are scored per batch; the bf16 scoring is the tests' above)."""
    probe = _probe_second_batch(load_suite("imagenet-p").conditions, RunOptions(device="cpu", amp="off"), (), 2,
                                modules={"tiny": tiny_classifier()})
    assert probe.unexpected == []


def test_the_probe_sees_each_kind_of_host_sync():
    """What the probe records: the wrong ways, each once; their sync-free equivalents, none."""
    x = torch.rand(4, 8)
    with HostSyncProbe() as probe:
        x[:, [0, 4]], x[x > 0.5], x.nonzero(), x.sum().item(), bool(x[0, 0] > 0), x.tolist(), x.cpu()
        torch.tensor([1.0, 2.0])
    assert [event.kind for event in probe.events] == ["tensor from host data", "index", "nonzero", "item", "item",
                                                      "tolist", "cpu", "tensor from host data"]
    with HostSyncProbe() as probe:
        x[:, ::4], x.masked_fill(x > 0.5, 0.0), x.sum() > 0, x.topk(2, dim=1).indices, x + 1.0
    assert probe.events == []


def test_decision_gap_uses_no_host_built_index():
    """Fault 1: the top-1 and fifth-best columns as a strided view, not a Python-list index copied to the device."""
    logits, label = torch.randn(6, 1000), torch.randint(0, 1000, (6,))
    with HostSyncProbe() as probe:
        gap = decision_gap(logits, label)
    assert probe.events == []
    others = logits.scatter(1, label[:, None], float("-inf")).topk(5, dim=1).values
    own = logits.gather(1, label[:, None])[:, 0]
    expected = torch.minimum((own - others[:, 0]).abs(), (own - others[:, 4]).abs())
    torch.testing.assert_close(gap, expected)

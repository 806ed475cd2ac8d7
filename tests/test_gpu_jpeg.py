"""The JPEG round trip from CUDA (issue 25, fault 3): the host's 4:2:0 libjpeg result, reached by one pinned
device-to-host copy and one host-to-device copy per batch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ibnbench.conditions import imaging
from ibnbench.conditions.base import Corruption

pytestmark = pytest.mark.gpu


def _batch(n: int = 8, size: int = 96) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    smooth = F.interpolate(torch.rand(n, 3, 7, 7, generator=gen) * 255, size=(size, size), mode="bicubic")
    return (smooth + torch.randn(n, 3, size, size, generator=gen) * 10).clamp(0, 255).round()


class _DeviceCopies(TorchDispatchMode):
    """Records every copy between host and device: (direction, non_blocking, host side pinned)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, bool, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten._to_copy):
            source = args[1] if func.overloadpacket is torch.ops.aten.copy_ else args[0]
            target = args[0] if func.overloadpacket is torch.ops.aten.copy_ else out
            if source.device.type != target.device.type:
                host = target if target.device.type == "cpu" else source
                direction = "to host" if target.device.type == "cpu" else "to device"
                non_blocking = bool(kwargs.get("non_blocking", args[2] if len(args) > 2 else False))
                self.seen.append((direction, non_blocking, host.is_pinned()))
        return out


@pytest.mark.parametrize("quality", [7, 85])
def test_cuda_round_trip_equals_the_cpu_one(quality):
    batch = _batch()
    cpu = imaging.jpeg_round_trip(batch, quality)
    cuda = imaging.jpeg_round_trip(batch.cuda(), quality)
    assert cuda.device.type == "cuda" and cuda.dtype == batch.dtype
    assert torch.equal(cuda.cpu(), cpu)


def test_cuda_round_trip_copies_the_batch_once_each_way_pinned_and_non_blocking():
    x = _batch().cuda()
    imaging.jpeg_round_trip(x, 50)  # warm-up
    torch.cuda.synchronize()
    with _DeviceCopies() as copies:
        imaging.jpeg_round_trip(x, 50)
    assert copies.seen == [("to host", True, True), ("to device", True, True)]


def test_jpeg_compression_and_the_jpeg_finish_on_cuda_equal_the_cpu():
    batch = _batch(4, 224)
    index = torch.arange(4)
    for condition in (Corruption("jpeg_compression-5", corruption="jpeg_compression", severity=5),
                      Corruption("contrast-2", corruption="contrast", severity=2, jpeg=85)):
        assert torch.equal(condition(batch.cuda(), index.cuda()).cpu(), condition(batch, index))

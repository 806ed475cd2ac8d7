"""torch.distributed glue: torchrun detection, deterministic sharding, reductions, rank-0 writes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as torch_dist

from ibnbench.errors import UsageError

DEFAULT_TIMEOUT_S = float(os.environ.get("IBNBENCH_DIST_TIMEOUT", 600))


def resolve_device(spec: str | None) -> torch.device:
    """The device ``spec`` names (None: cuda if available, else cpu); ValueError for a name torch does not
    know or a CUDA device this machine does not have."""
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r} is not a device name (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


@dataclass
class DistContext:
    """Where this process sits in a torchrun job (``world_size == 1`` when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def detect(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and join the process group (NCCL on GPUs, else gloo)."""
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
            return cls()
        ctx = cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(ctx.local_rank)
            torch_dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return ctx

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def shard(self, indices: Iterable[int]) -> list[int]:
        """This rank's share: every ``world_size``-th index, so each image is evaluated exactly once."""
        return list(indices)[self.rank::self.world_size]

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        if self.enabled:
            work = tensor if torch_dist.get_backend() != "nccl" or tensor.is_cuda else tensor.cuda()
            torch_dist.all_reduce(work, op=torch_dist.ReduceOp.SUM)
            if work is not tensor:
                tensor.copy_(work)

    def gather_lists(self, items: list) -> list:
        """Concatenate a Python list across ranks."""
        if not self.enabled:
            return list(items)
        gathered: list[list] = [[] for _ in range(self.world_size)]
        torch_dist.all_gather_object(gathered, list(items))
        return [x for part in gathered for x in part]

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

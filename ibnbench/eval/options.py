"""How to run (not what): :class:`RunOptions`, kept free of heavy imports so that ``ibnbench --help`` can show
its defaults without loading torch."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibnbench.errors import UsageError

if TYPE_CHECKING:
    import torch

AMP_NAMES = ("bf16", "fp16")


@dataclass
class RunOptions:
    """How to run (not what): device, batching, precision, resumability."""

    device: str | None = None
    batch_size: int = 64
    workers: int = min(8, os.cpu_count() or 1)
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    limit: int | None = None
    chunk_size: int = 2048
    on_bad_image: str = "fail"
    decoder: str = "auto"
    cache: str | None = None
    refine: float = 0.125
    fanout: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "off", *AMP_NAMES):
            raise UsageError(f"--amp must be bf16, fp16, off or auto, not {self.amp!r}")
        if not 0.0 <= self.refine <= 1.0:
            raise UsageError(f"--refine must be a share of the batch between 0 and 1, not {self.refine}")
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be at least 1 image, not {self.chunk_size}")

    def resolved_device(self) -> torch.device:
        from ibnbench.eval.distributed import resolve_device

        return resolve_device(self.device)

    def resolved_decoder(self, device: torch.device) -> str:
        """nvJPEG on CUDA, CPU workers otherwise (``decoder="auto"``)."""
        return self.decoder if self.decoder != "auto" else ("nvjpeg" if device.type == "cuda" else "cpu")

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype (``auto``: bf16 on CUDA), or None for full precision."""
        from ibnbench.precision import AMP_DTYPES

        return AMP_DTYPES.get(self.amp if self.amp != "auto" else ("bf16" if device.type == "cuda" else "off"))

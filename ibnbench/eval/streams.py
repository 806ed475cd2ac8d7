"""``--overlap``: a batch's next condition computed on a second CUDA stream while the models score the current one."""
from __future__ import annotations

from typing import Callable

import torch


class SideStream:
    """A second CUDA stream for work queued ahead of the current stream's (``enabled`` and on CUDA); elsewhere
    :attr:`enabled` is False and callers run everything in order on the current stream.

    Stream semantics (torch's CUDA semantics notes): the side stream first waits for the current one, so the inputs
    made there are ready; inputs are ``record_stream``-ed on the side stream and outputs on the current one, so that
    the caching allocator does not hand their memory to another stream while a stream that did not allocate it may
    still use it; the current stream waits for the side stream before it reads an output. No host sync."""

    def __init__(self, device: torch.device, enabled: bool):
        self.stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None
        self.device = device

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def run(self, work: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
        """``work(*args)`` queued on the side stream after the current stream's work so far; the tensors among
        ``args`` (made on the current stream) are recorded as used by the side stream."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = work(*args)
        for tensor in args:
            if isinstance(tensor, torch.Tensor):
                tensor.record_stream(self.stream)
        return out

    def take(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` of :meth:`run`, for the current stream: its later work waits for the side stream's so far."""
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        out.record_stream(current)
        return out

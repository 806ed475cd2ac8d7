"""The warm clock: evaluation time after each pass's first batch, which carries the start-up (decode workers,
cuDNN autotuning, nvJPEG and generator warm-up) that a rate extrapolated to 50,000 images must leave out."""
from __future__ import annotations

import time

import torch


class WarmClock:
    """Time from the end of each pass's first batch to the end of its last, and the images in between.

    On CUDA the marks are events recorded on the current stream (the time the device reaches them; no host sync per
    batch, one when :meth:`result` reads them); elsewhere :func:`time.perf_counter`, where the work is done when the
    call returns."""

    def __init__(self, device: torch.device):
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.spans: list[tuple[object, object, int]] = []
        self._start: object | None = None
        self._images = 0

    def _mark(self) -> object:
        if not self.on_cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def batch_done(self, images: int) -> None:
        """Call after each batch's work is queued: the first of a pass starts the clock, the others are counted."""
        if self._start is None:
            self._start = self._mark()
        else:
            self._images += images

    def pass_done(self) -> None:
        """Close the pass's span (none for a pass of one batch)."""
        if self._images:
            self.spans.append((self._start, self._mark(), self._images))
        self._start, self._images = None, 0

    def result(self) -> dict | None:
        """``{"seconds", "images", "images_per_s"}`` over every pass's batches after its first; None when no pass
        had more than one batch (there is nothing warm to time)."""
        if not self.spans:
            return None
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            seconds = sum(start.elapsed_time(end) / 1000 for start, end, _ in self.spans)
        else:
            seconds = sum(end - start for start, end, _ in self.spans)
        images = sum(n for _, _, n in self.spans)
        return {"seconds": round(seconds, 3), "images": images, "images_per_s": round(images / max(seconds, 1e-9), 2)}

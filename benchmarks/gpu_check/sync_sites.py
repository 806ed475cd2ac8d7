"""Host synchronisations counted per call site: under ``torch.cuda.set_sync_debug_mode("warn")`` on a GPU (each
warning torch raises, at the innermost frame of ibnbench's own code); on the CPU, the operations that would wait
there, as tests/helpers/syncs.py's probe records them."""
from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

import ibnbench
from benchmarks.gpu_check.common import from_tests

PACKAGE = Path(ibnbench.__file__).resolve().parent
TORCH = Path(torch.__file__).resolve().parent


def call_site() -> str:
    """``ibnbench/...py:LINE (function)`` of the innermost ibnbench frame on the stack, else of the innermost
    frame that is neither torch's nor this module's."""
    stack = [frame for frame in traceback.extract_stack()
             if not Path(frame.filename).resolve().is_relative_to(TORCH) and frame.filename != __file__]
    ours = [frame for frame in stack if Path(frame.filename).resolve().is_relative_to(PACKAGE)]
    frame = (ours or stack)[-1]
    name = Path(frame.filename).resolve()
    where = name.relative_to(PACKAGE.parent) if name.is_relative_to(PACKAGE.parent) else name
    return f"{where}:{frame.lineno} ({frame.name})"


@contextlib.contextmanager
def count_syncs(device: torch.device) -> Iterator[list[str]]:
    """Yields the list the block's host syncs are appended to, one site each (on the CPU, when the block ends)."""
    sites: list[str] = []
    if device.type != "cuda":
        with from_tests("syncs").HostSyncProbe() as probe:
            yield sites
        sites.extend(str(event) for event in probe.events)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show = warnings.showwarning
        warnings.showwarning = lambda message, *rest: sites.append(call_site()) if "synchroniz" in str(message) \
            else show(message, *rest)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode("default")

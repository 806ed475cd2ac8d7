"""Host synchronisations counted per call site: under ``torch.cuda.set_sync_debug_mode("warn")`` on a GPU (each
warning torch raises), on the CPU the ops that synchronise on a GPU (``item``/``tolist``, ``nonzero``, copies to
the host, indexing by a boolean mask), seen by a dispatch mode. A site is the innermost frame of ibnbench's own
code."""
from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ibnbench

PACKAGE = Path(ibnbench.__file__).resolve().parent
SYNCING_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default}
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


class _SyncingOps(TorchDispatchMode):
    """Records the call site of every op that would make the host wait for a GPU."""

    def __init__(self, sites: list[str]):
        super().__init__()
        self.sites = sites

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        copy_to_host = func is torch.ops.aten._to_copy.default and (kwargs or {}).get("device") == torch.device("cpu")
        mask_index = func is torch.ops.aten.index.Tensor and any(
            index is not None and index.dtype == torch.bool for index in args[1])
        if func in SYNCING_OPS or copy_to_host or mask_index:
            self.sites.append(call_site())
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs(device: torch.device) -> Iterator[list[str]]:
    """Yields the list the block's host syncs are appended to, one call site each."""
    sites: list[str] = []
    if device.type != "cuda":
        with _SyncingOps(sites):
            yield sites
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

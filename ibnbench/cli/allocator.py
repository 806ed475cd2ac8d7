"""How the ``ibnbench`` process allocates memory. A batch's tensors are large (a 64-image float batch at 224 is
38.5 MB, 154 MB at batch 256): above glibc malloc's mmap threshold (at most 32 MiB when left to adjust itself), so
each one is mapped fresh and every page faults again on first touch, about 0.25 ms per 224 image on the 2-core CI
machine, as much as a whole JPEG round trip. The command keeps freed blocks for reuse instead (glibc's
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``, what the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
environment variables set; PyTorch's CPU performance guide recommends a caching allocator such as jemalloc for the
same reason). The cost: memory freed stays with the process until it exits. The library never does this on import:
only the command line, unless the user set these thresholds themselves or ``IBNBENCH_SYSTEM_MALLOC=1``."""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks under 1 GiB come from the heap and are reused
TRIM_ABOVE = (1 << 31) - 1  # the heap's free top is returned to the system only above 2 GiB

_kept = False


def _user_chose() -> bool:
    """Whether the environment already sets either threshold, as a variable or a glibc tunable."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return (any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
            or "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep and reuse freed blocks under 1 GiB (once per process); True when it took the
    setting. Nothing happens off Linux, with another C library, with ``IBNBENCH_SYSTEM_MALLOC=1``, or when the
    user set either threshold (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``)."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("IBNBENCH_SYSTEM_MALLOC") == "1" or _user_chose():
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols, the C library's among them (no ldconfig subprocess)
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl's mallopt is a stub)
        return False
    _kept = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE) == 1
    return _kept

"""A CPU probe for host synchronisation (not a test module itself): what would make the host wait for the GPU.

On CUDA, torch's sync debug mode sees a wait when it happens; on the CPU nothing waits, so :class:`HostSyncProbe`
records the operations that wait on CUDA instead: a read of a device value on the host (``item``, ``int()``,
``bool()``, ``tolist``, ``numpy``, ``cpu``), an op whose output size depends on device values (``nonzero``, boolean
mask indexing, ``masked_select``, ``unique``, ...) and a tensor built from host data (``torch.tensor([...])``, a
Python list used as an index, a Python number assigned through a tensor index as in ``t[index] = True``: on CUDA each
is a blocking copy to the device from pageable memory; a number assigned to a slice, ``t[:] = 0``, is a ``fill_``
and stays on the host). Each event keeps the Python
functions on the stack where it happened, so that the few host-by-design sites can be named and exempted."""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten.unique_dim.default,
                  aten._unique2.default, aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
                  aten.bincount.default, aten.histc.default}
"""Ops whose output size is a function of device values: the host waits for them to know it."""

HOST_READS = ("tolist", "numpy", "cpu")
"""Tensor methods that read device values on the host without reaching the dispatcher on a CPU tensor, so they are
watched as Python methods (``item``, ``int()``, ``bool()`` dispatch ``_local_scalar_dense``)."""

HOST_BY_DESIGN = {
    ("motion_blur_op", "tolist"): "motion blur's CPU-only branch reads the per-image offsets on the host (about 4x "
                                  "faster there); off the CPU the offsets stay on the device",
    ("jpeg_round_trip", "*"): "the JPEG round trip encodes and decodes on the host by design (libjpeg 4:2:0, as "
                              "the reference): one host copy per batch",
    ("_jpeg_image", "*"): "the same round trip, image by image in a worker thread (whose stack does not hold "
                          "jpeg_round_trip) when torch has several threads",
}
"""(Python function on the stack, event kind or "*") -> why a host read there is by design."""


@dataclass(frozen=True)
class SyncEvent:
    """One host synchronisation: its ``kind`` (an op or method name) and the Python functions on the stack."""

    kind: str
    functions: tuple[str, ...]

    def exemption(self) -> str | None:
        """Why this event is by design (:data:`HOST_BY_DESIGN`), or None."""
        return next((why for (function, kind), why in HOST_BY_DESIGN.items()
                     if function in self.functions and kind in ("*", self.kind)), None)

    def __str__(self) -> str:
        return f"{self.kind} in {' < '.join(self.functions[:6])}"


def _stack() -> tuple[str, ...]:
    """The names of the Python functions on the stack, innermost first (this module's and torch's left out)."""
    frame, names = sys._getframe(1), []
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != __name__ and module.split(".")[0] != "torch":
            names.append(frame.f_code.co_name)
        frame = frame.f_back
    return tuple(names)


def _flat(args, kwargs) -> list:
    """The arguments, with the tensors inside lists (an index's) listed too."""
    return [b for a in (*args, *kwargs.values()) for b in (a if isinstance(a, (list, tuple)) else (a,))]


def _is_mask_index(func, args) -> bool:
    """``index``/``index_put`` with a boolean mask: the kernel runs ``nonzero`` inside (not dispatched)."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default):
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (args[1] or ()))


class HostSyncProbe(TorchDispatchMode):
    """Records :class:`SyncEvent` s while active (``with HostSyncProbe() as probe``); :attr:`unexpected` are those
    not in :data:`HOST_BY_DESIGN`."""

    def __init__(self):
        super().__init__()
        self.events: list[SyncEvent] = []
        self._saved: dict[str, object] = {}
        self._host_scalars: dict[int, weakref.ref] = {}  # by id: tensors compare element-wise

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self._record("item")
        elif func in DATA_DEPENDENT or _is_mask_index(func, args):
            self._record(func.overloadpacket.__name__)
        elif func in (aten._to_copy.default, aten.copy_.default):
            self._check_device_to_host(func, args, kwargs)
        if func not in (aten.fill_.Tensor, aten.copy_.default, aten.lift_fresh.default) and any(
                self._is_host_scalar(a) for a in _flat(args, kwargs)):
            self._record("host number copied to the device")
        out = func(*args, **kwargs)
        if func is aten.lift_fresh.default:
            if out.dim():
                self._record("tensor from host data")
            else:  # a Python number made a tensor: only a fill_ or a copy_ of it stays on the host
                self._host_scalars[id(out)] = weakref.ref(out)
        return out

    def _is_host_scalar(self, value) -> bool:
        held = self._host_scalars.get(id(value))
        return held is not None and held() is value

    def _check_device_to_host(self, func, args, kwargs) -> None:
        source = args[1] if func is aten.copy_.default else args[0]
        target = args[0].device if func is aten.copy_.default else kwargs.get("device", source.device)
        if source.device.type != "cpu" and torch.device(target).type == "cpu":
            self._record("copy to the host")

    def _record(self, kind: str) -> None:
        self.events.append(SyncEvent(kind, _stack()))

    @property
    def unexpected(self) -> list[SyncEvent]:
        return [event for event in self.events if event.exemption() is None]

    def __enter__(self):
        for name in HOST_READS:
            method = getattr(torch.Tensor, name)
            self._saved[name] = torch.Tensor.__dict__.get(name)

            def watched(tensor, *args, _method=method, _name=name, **kwargs):
                self._record(_name)
                return _method(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, watched)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for name, saved in self._saved.items():
                if saved is None:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, saved)

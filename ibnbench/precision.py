"""Full-precision float32: what "fp32" means in a record.

torch 2.14 runs cuDNN float32 convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision ==
"tf32"``): a 10-bit mantissa on Ampere and later GPUs, so a model, the ``--refine`` re-score or a CycleGAN
generator "in fp32" would not be. :func:`full_fp32` switches float32 convolutions, RNNs and matmuls to IEEE precision
(cuDNN, cuBLAS and oneDNN on the CPU) for a block and restores the caller's settings after it; the engine's
forwards, the style generators and the conditions' matrix products run inside it, and the record says so in
``environment.fp32_conv``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

IEEE = "ieee"
INHERIT = "none"  # an op's setting that takes its backend's (then torch.backends.fp32_precision's) value


def _ops() -> list:
    """The per-op float32-precision settings of the backends that run our convolutions, RNNs and matmuls: cuDNN conv
    and RNN, cuBLAS matmul, oneDNN conv, matmul and RNN (each reads back its effective value, inherited or not)."""
    backends = torch.backends
    return [backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul,
            backends.mkldnn.conv, backends.mkldnn.matmul, backends.mkldnn.rnn]


def _legacy_matmul_precision(cublas: str, onednn: str) -> str:
    """The ``torch.set_float32_matmul_precision`` value that sets cuBLAS and oneDNN matmuls as given."""
    if cublas != "tf32":
        return "highest"
    return "medium" if onednn == "bf16" else "high"


def _set_legacy(cudnn_tf32: bool, matmul: str) -> None:
    """torch's legacy switches, which also set the per-op values (set those after these)."""
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.set_float32_matmul_precision(matmul)


def _restore(op, value: str) -> None:
    """Give ``op`` back ``value``: as "none" (inherited) where its backend's setting already gives it."""
    op.fp32_precision = INHERIT
    if op.fp32_precision != value:
        op.fp32_precision = value


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Float32 convolutions, RNNs and matmuls in IEEE precision (no TF32, no bf16 passes) inside the block.

    Each op is set to "ieee" explicitly: "none" would inherit ``torch.backends.fp32_precision`` or
    ``cudnn.fp32_precision``, which may say "tf32". torch's legacy switches are set to agree (``cudnn.allow_tf32``
    False, ``get_float32_matmul_precision()`` "highest"), so code that reads them inside the block sees IEEE and
    does not raise torch's "mix of the legacy and new APIs" error. After the block every op reads back its
    previous value (an op that inherited it inherits again), and the legacy switches say what those values mean."""
    ops = _ops()
    saved = [op.fp32_precision for op in ops]
    _set_legacy(False, "highest")
    for op in ops:
        op.fp32_precision = IEEE
    try:
        yield
    finally:
        cudnn_conv, _, cublas, _, onednn, _ = saved
        _set_legacy(cudnn_conv == "tf32", _legacy_matmul_precision(cublas, onednn))
        for op, value in zip(ops, saved):
            _restore(op, value)


def fp32_conv_precision(device: torch.device) -> str:
    """The precision float32 convolutions on ``device`` get inside :func:`full_fp32`, as the backend reports it
    ("ieee", or "tf32"/"bf16" had torch refused the setting)."""
    with full_fp32():
        op = torch.backends.cudnn.conv if device.type == "cuda" else torch.backends.mkldnn.conv
        return op.fp32_precision


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # keys: options.AMP_NAMES

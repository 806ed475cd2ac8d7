"""Full-precision float32: what "fp32" means in a record.

torch 2.14 runs cuDNN float32 convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision ==
"tf32"``): a 10-bit mantissa on Ampere and later GPUs, so a model, the ``--refine`` re-score or a CycleGAN
generator "in fp32" would not be. :func:`full_fp32` switches float32 convolutions and matmuls to IEEE precision
(cuDNN, cuBLAS and oneDNN on the CPU) for a block and restores the caller's settings after it; the engine's
forwards and the style generators run inside it, and the record says so in ``environment.fp32_conv``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

IEEE = "ieee"


def _knobs() -> list:
    """The float32-precision settings, besides cuDNN's, of the backends that run our matmuls and CPU convolutions."""
    backends = torch.backends
    return [backends.cuda.matmul, backends.mkldnn.conv, backends.mkldnn.matmul]


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Float32 convolutions and matmuls in IEEE precision (no TF32, no bf16 passes) inside the block.

    cuDNN is switched through ``torch.backends.cudnn.allow_tf32`` (which sets its conv and RNN precision to
    "none", i.e. IEEE): switched through ``fp32_precision`` alone, the legacy flag would disagree with it, and
    code that still reads ``cudnn.allow_tf32`` (inductor's conv templates, ``cudnn.flags``) would raise."""
    cudnn, knobs = torch.backends.cudnn, _knobs()
    saved_cudnn = cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision
    saved = [k.fp32_precision for k in knobs]
    cudnn.allow_tf32 = False
    for knob in knobs:
        knob.fp32_precision = IEEE
    try:
        yield
    finally:
        cudnn.allow_tf32 = saved_cudnn[0] == "tf32"
        cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved_cudnn
        for knob, value in zip(knobs, saved):
            knob.fp32_precision = value


def fp32_conv_precision(device: torch.device) -> str:
    """The precision float32 convolutions on ``device`` get inside :func:`full_fp32` ("ieee", or "tf32"/"bf16"
    had torch refused the setting; "none" in torch's settings means no reduced precision, IEEE)."""
    with full_fp32():
        knob = torch.backends.cudnn.conv if device.type == "cuda" else torch.backends.mkldnn.conv
        value = knob.fp32_precision
    return IEEE if value == "none" else value


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # keys: options.AMP_NAMES

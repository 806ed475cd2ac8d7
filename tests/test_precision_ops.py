"""What runs in IEEE fp32 and what the conditions cost per call: ``full_fp32`` against torch's inherited and legacy
precision settings, the conditions' matrix products and style generator under a caller's settings, constants kept
on the device, and motion blur batched (bit for bit the per-image loop it replaced)."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ibnbench.conditions import corruptions, imaging
from ibnbench.conditions.frost import frost_dir
from ibnbench.precision import full_fp32

OPS = ("cudnn.conv", "cudnn.rnn", "cuda.matmul", "mkldnn.conv", "mkldnn.matmul", "mkldnn.rnn")


def _op(name: str):
    backend, op = name.split(".")
    return getattr(getattr(torch.backends, backend), op)


def _effective() -> dict[str, str]:
    return {name: _op(name).fp32_precision for name in OPS}


@pytest.fixture
def torch_precision():
    """Leaves torch's float32-precision settings as torch's defaults after the test."""
    defaults = _effective()
    yield
    torch.backends.fp32_precision = "none"
    torch.backends.cudnn.fp32_precision = "none"
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("highest")
    for name, value in defaults.items():
        _op(name).fp32_precision = value


@pytest.mark.parametrize("parent", ["torch.backends", "torch.backends.cudnn"])
def test_full_fp32_is_ieee_when_a_parent_setting_says_tf32(parent, torch_precision):
    """An op set to "none" inherits its backend's (or torch's) "tf32": inside the block every op reads "ieee"."""
    owner = torch.backends if parent == "torch.backends" else torch.backends.cudnn
    owner.fp32_precision = "tf32"
    before = _effective()
    assert before["cudnn.conv"] == "tf32" and before["cuda.matmul"] == "tf32"
    with full_fp32():
        assert _effective() == dict.fromkeys(OPS, "ieee")
        assert torch.backends.cudnn.allow_tf32 is False
    assert _effective() == before and owner.fp32_precision == "tf32"
    owner.fp32_precision = "none"  # ops that inherited before the block inherit again after it
    assert torch.backends.cuda.matmul.fp32_precision == "none"


@pytest.mark.parametrize("legacy", ["high", "medium"])
def test_full_fp32_agrees_with_the_legacy_matmul_setting(legacy, torch_precision):
    """After ``set_float32_matmul_precision('high')`` (torch.compile suggests it) the legacy flags read inside the
    block say IEEE, without torch's "mix of the legacy and new APIs" error; the caller's setting comes back."""
    torch.set_float32_matmul_precision(legacy)
    before = _effective()
    with full_fp32():
        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert _effective() == dict.fromkeys(OPS, "ieee")
    assert torch.get_float32_matmul_precision() == legacy and _effective() == before
    assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True


def test_full_fp32_restores_torch_defaults_exactly(torch_precision):
    before = _effective()
    with full_fp32():
        pass
    assert _effective() == before and before["cudnn.conv"] == "tf32" and before["cuda.matmul"] == "none"
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32 is True


def test_every_style_generator_comes_in_eval_mode(tmp_path):
    """Random or from a file, the generator is in eval mode (its InstanceNorm/dropout as in inference)."""
    from ibnbench.zoo import generators

    random = generators.load_generator("monet", "random")
    path = tmp_path / "style_monet.pth"
    torch.save(random.state_dict(), path)
    from_file = generators.load_generator("monet", str(path), progress=False)
    for generator in (random, from_file):
        assert not any(module.training for module in generator.modules())


class _TinyGenerators:
    """A GeneratorSource whose generator is one convolution (records the dtypes its outputs come in)."""

    def __init__(self):
        self.dtypes: list[torch.dtype] = []

    def missing_style_weights(self, style: str, weights: str = "official") -> None:
        return None

    def load_generator(self, style: str, weights: str = "official", progress: bool = True) -> torch.nn.Module:
        conv = torch.nn.Conv2d(3, 3, 3, padding=1).eval()
        conv.register_forward_hook(lambda module, args, out: self.dtypes.append(out.dtype))
        return conv


def test_the_style_generator_runs_in_fp32_under_a_callers_autocast():
    from ibnbench.conditions.style import Style

    source = _TinyGenerators()
    condition = Style("monet", style="monet", weights="random", generators=source)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = condition(torch.rand(2, 3, 8, 8) * 255)
    assert source.dtypes == [torch.float32] and out.dtype == torch.float32


class _MatmulPrecisionSpy(TorchDispatchMode):
    """Records the effective (cuBLAS, oneDNN) matmul precision at every matrix product dispatched."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.bmm, torch.ops.aten.addmm):
            self.seen.add((torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("legacy", ["high", "medium"])
@pytest.mark.parametrize("name", ["gaussian_blur", "glass_blur", "elastic_transform", "spatter", "pixelate"])
def test_condition_matrix_products_run_in_ieee_under_a_callers_tf32(name, legacy, torch_precision):
    """Blur matrix products on 0..255 values end in a floor: TF32 or bf16 would flip levels. Pixelate sums its
    boxes exactly (index_add of integers) and has no matrix product left."""
    from ibnbench.conditions.corruptions import corrupt

    torch.set_float32_matmul_precision(legacy)
    spy = _MatmulPrecisionSpy()
    with spy:
        corrupt(torch.rand(2, 3, 16, 16) * 255, torch.arange(2), name, 1, 0)
    assert spy.seen == (set() if name == "pixelate" else {("ieee", "ieee")})
    assert torch.get_float32_matmul_precision() == legacy


def _motion_blur_loop_reference(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """motion_blur_op as it was before batching (image by image, tap by tap): the bits the new one must give."""
    h, w = x.shape[-2:]
    width = 2 * radius + 1
    weights = torch.exp(-torch.arange(width, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).tolist()
    dy, dx = (d.tolist() for d in imaging._motion_offsets(radius, angle))
    padded = F.pad(x, (width, width, width, width), mode="replicate")
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for weight, oy, ox in zip(weights, dy[n], dx[n]):
            out[n].add_(padded[n, :, width - oy:width - oy + h, width - ox:width - ox + w], alpha=weight)
    return out


@pytest.mark.parametrize("batched", [True, False])
def test_motion_blur_gives_the_per_image_loops_bits(batched):
    generator = torch.Generator().manual_seed(0)
    for shape, radius, sigma in [((4, 3, 48, 64), 15, 8), ((3, 1, 37, 50), 20, 15), ((2, 3, 30, 30), 10, 3)]:
        x = torch.rand(shape, generator=generator) * 255
        angle = torch.rand(shape[0], generator=generator) * 270 - 135
        expected = _motion_blur_loop_reference(x, radius, sigma, angle)
        assert torch.equal(imaging.motion_blur_op(x, radius, sigma, angle, batched=batched), expected)


@pytest.mark.parametrize("name", ["motion_blur", "snow"])
def test_motion_blur_and_snow_keep_their_bits_at_every_severity(name, monkeypatch):
    from ibnbench.conditions import corruptions

    x = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1)) * 255
    index = torch.tensor([0, 7, 4242])
    for severity in corruptions.SEVERITIES:
        monkeypatch.setattr(corruptions, "motion_blur_op", _motion_blur_loop_reference)
        expected = corruptions.corrupt(x, index, name, severity, 123)
        for batched in (True, False):
            monkeypatch.setattr(corruptions, "motion_blur_op", functools.partial(imaging.motion_blur_op,
                                                                                 batched=batched))
            assert torch.equal(corruptions.corrupt(x, index, name, severity, 123), expected), (severity, batched)


class _HostTraffic(TorchDispatchMode):
    """Records host-to-device copies (CPU tensors into "meta" ones: meta stands in for an accelerator) and host
    syncs (``_local_scalar_dense``, ``item``, ``nonzero``) dispatched inside it."""

    SYNCS = (torch.ops.aten._local_scalar_dense, torch.ops.aten.item, torch.ops.aten.nonzero)

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        from_host = any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args)
        if func.overloadpacket in self.SYNCS or (from_host and isinstance(out, torch.Tensor)
                                                 and out.device.type == "meta"):
            self.seen.append(str(func))
        return out


@pytest.mark.parametrize("name", [n for n in corruptions.COMMON + corruptions.EXTRA if n != "jpeg_compression"])
def test_imagenet_c_ops_copy_no_constants_and_read_nothing_back_after_the_first_batch(name, monkeypatch):
    """Constants (blur disks, box weights, frost textures, colours, grey weights) are made on the device once and
    kept; per-image offsets stay there: a second batch copies nothing from the host, builds no tensor from Python
    values and syncs nothing."""
    if name == "frost" and frost_dir() is None:
        pytest.skip("frost textures absent (ibnbench fetch frost)")
    built = []
    monkeypatch.setattr(torch, "tensor", lambda *a, _make=torch.tensor, **k: built.append(a) or _make(*a, **k))
    x, index = torch.zeros(2, 3, 32, 32, device="meta"), torch.arange(2, device="meta")
    for severity in (1, 5):  # spatter: liquid, then mud
        corruptions.corrupt(x, index, name, severity, 1)
        built.clear()
        with _HostTraffic() as traffic:
            corruptions.corrupt(x, index, name, severity, 1)
        assert traffic.seen == [] and built == [], (severity, traffic.seen, built)


def _photo_like(seed: int, size: int = 64) -> torch.Tensor:
    """A smooth colour image with texture (what JPEG is made for), ``[3, size, size]`` on 0..255 floats."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=gen) * 255
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    return (smooth + torch.randn(3, size, size, generator=gen) * 12).clamp(0, 255).round()


@pytest.mark.parametrize("quality", [7, 25, 85])
def test_jpeg_round_trip_is_pils_420_jpeg_bit_for_bit(quality):
    """The round trip (jpeg_compression, the ``jpeg = 85`` finish) equals PIL saving at that quality with its
    default chroma subsampling, 4:2:0 (as ImageNet-C's files were written), and PIL decoding, on every image."""
    import io

    import numpy as np
    from PIL import Image, JpegImagePlugin

    batch = torch.stack([_photo_like(seed) for seed in range(4)])
    off_grid = batch + torch.empty_like(batch).uniform_(-0.45, 0.45, generator=torch.Generator().manual_seed(0))
    off_grid[:, :, :2] = torch.tensor([-7.0, 300.0]).repeat_interleave(off_grid.shape[-1] // 2)  # clipped rows
    for given in (batch, off_grid, batch.to(torch.uint8)):  # what the encoder sees: rounded, clipped to 0..255
        ours = imaging.jpeg_round_trip(given, quality)
        assert ours.dtype == given.dtype
        for image, mine in zip(given, ours):
            encoded = io.BytesIO()
            pixels = image.double().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(encoded, "JPEG", quality=quality)
            written = Image.open(encoded)
            assert JpegImagePlugin.get_sampling(written) == 2  # PIL's code for 4:2:0
            expected = torch.from_numpy(np.array(written.convert("RGB"))).permute(2, 0, 1).to(given.dtype)
            assert torch.equal(mine, expected)
        assert not torch.equal(ours, given)  # it did compress

"""Pure tensor helpers of the ImageNet-C corruptions: counter-based random draws, separable filters, blur kernels,
JPEG and PIL-box resampling."""
from __future__ import annotations

import hashlib
import io
import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from ibnbench.precision import full_fp32

_MASK = 0xFFFFFFFF


def _int32(h: torch.Tensor) -> torch.Tensor:
    """Values in [0, 2**32) (int64) as the int32 with the same 32 bits."""
    return (h - ((h >> 31) << 32)).to(torch.int32)


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32) on an int32 tensor, in place: multiplications wrap modulo 2**32, right
    shifts are made logical by masking (int32 arithmetic is about 4x faster than int64 on the CPU); one temporary."""
    shifted = torch.empty_like(h)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B - (1 << 32)), (16, None)):
        torch.bitwise_right_shift(h, shift, out=shifted)
        h ^= shifted.bitwise_and_((1 << (32 - shift)) - 1)
        if multiplier is not None:
            h *= multiplier
    return h


def condition_key(seed: int, name: str) -> int:
    """The 32-bit key of a condition's random stream: a hash of the suite seed and the condition's name."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "little")


@lru_cache(maxsize=None)
def _element_hashes(n: int, stream: int, device: torch.device) -> torch.Tensor:
    return _mix(_int32((torch.arange(n, device=device, dtype=torch.int64) + (stream << 24)) & _MASK))


@lru_cache(maxsize=None)
def _inverse_normal_table(device: torch.device) -> torch.Tensor:
    """The standard normal quantile at the 2**16 uniform levels ``(k + 0.5) / 2**16``."""
    u = (torch.arange(1 << 16, dtype=torch.float64) + 0.5) / (1 << 16)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)).float().to(device)


class Draws:
    """Random numbers of one condition for a batch: each a function of (key, image index, stream, element).

    Uniforms come at 16-bit resolution (two per 32-bit hash), normals by inversion of a 2**16-level quantile table."""

    def __init__(self, key: int, index: torch.Tensor):
        self.image = _mix(_int32((index.to(torch.int64) & _MASK) ^ key))

    def hashes(self, stream: int, count: int) -> torch.Tensor:
        """``count`` 32-bit hashes per image ``[N, count]`` (int32) for draw ``stream``: the bits every draw is cut
        from (the low 16 bits of hash ``j`` are level ``j``, the high 16 bits level ``count + j``)."""
        return _mix(self.image[:, None] ^ _element_hashes(count, stream, self.image.device)[None])

    def levels(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform integers in [0, 2**16) ``[N, *shape]`` (int32) for draw ``stream``."""
        n = math.prod(shape)
        half = (n + 1) // 2
        h = self.hashes(stream, half)
        out = torch.empty(h.shape[0], 2 * half, dtype=h.dtype, device=h.device)
        torch.bitwise_and(h, 0xFFFF, out=out[:, :half])
        torch.bitwise_right_shift(h, 16, out=out[:, half:]).bitwise_and_(0xFFFF)
        return out[:, :n].reshape(-1, *shape)

    def uniform(self, stream: int, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform floats in the open interval (low, high)."""
        u = (self.levels(stream, shape).float() + 0.5) * (1.0 / (1 << 16))
        return low + (high - low) * u if (low, high) != (0.0, 1.0) else u

    def normal(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal floats."""
        levels = self.levels(stream, shape)
        return _inverse_normal_table(self.image.device).index_select(0, levels.reshape(-1)).view(levels.shape)

    def integers(self, stream: int, low: int, high: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Integers in [low, high) (int64), ``[N, *shape]``."""
        return low + (self.levels(stream, shape) * (high - low)) // (1 << 16)


def _gaussian_taps(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(device=device, dtype=dtype)


def _pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    period = 2 * n  # "reflect" as scipy spells it: half-sample symmetric (d c b a | a b c d | d c b a)
    i = i % period
    return torch.where(i < n, i, period - 1 - i)


@lru_cache(maxsize=None)
def _filter_matrix(n: int, sigma: float, mode: str, truncate: float, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """The 1-D Gaussian filter of length-``n`` signals as an ``[n, n]`` matrix, the border mode folded in."""
    taps = _gaussian_taps(sigma, truncate, torch.float64)
    r = (len(taps) - 1) // 2
    source = _pad_index(n, r, mode, None)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for out in range(n):
        matrix[out].index_add_(0, source[out:out + 2 * r + 1], taps)
    return matrix.to(device=device, dtype=dtype)


FILTER_BLOCK = 32
"""Outputs per block of the banded filter products: a block reads only the ``FILTER_BLOCK + 2 radius`` inputs its
band covers (about 3x fewer multiply-adds than the whole ``n x n`` matrix at 224 for sigma up to 6)."""


@lru_cache(maxsize=None)
def _filter_blocks(n: int, sigma: float, mode: str, truncate: float, device: torch.device,
                   dtype: torch.dtype) -> tuple[tuple[slice, slice, torch.Tensor], ...]:
    """:func:`_filter_matrix` cut into row blocks of :data:`FILTER_BLOCK` outputs: ``(outputs, inputs, weights)``,
    ``inputs`` the columns where the block has non-zero weights (the border folding included)."""
    matrix = _filter_matrix(n, sigma, mode, truncate, torch.device("cpu"), torch.float64)
    blocks = []
    for start in range(0, n, FILTER_BLOCK):
        rows = slice(start, min(start + FILTER_BLOCK, n))
        used = matrix[rows].ne(0).any(0).nonzero().flatten().tolist()
        columns = slice(used[0], used[-1] + 1)
        blocks.append((rows, columns, matrix[rows, columns].to(device=device, dtype=dtype)))
    return tuple(blocks)


def gaussian_filter(x: torch.Tensor, sigma: float | tuple[float, float], mode: str = "nearest",
                    truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over H and W of ``x[..., H, W]`` (skimage.filters.gaussian; ``sigma``: one
    for both, or ``(sigma_h, sigma_w)``), as matrix products by blocks of the banded filter matrices
    (:func:`_filter_blocks`) in IEEE precision (never TF32: :func:`ibnbench.precision.full_fp32`)."""
    h, w = x.shape[-2:]
    sigma_h, sigma_w = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    across, out = x.new_empty(x.shape), x.new_empty(x.shape)
    with full_fp32():
        for outputs, inputs, weights in _filter_blocks(w, sigma_w, mode, truncate, x.device, x.dtype):
            across[..., outputs] = x[..., inputs] @ weights.T
        for outputs, inputs, weights in _filter_blocks(h, sigma_h, mode, truncate, x.device, x.dtype):
            out[..., outputs, :] = weights @ across[..., inputs, :]
    return out


def _smooth_length(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n``: a length pocketfft transforms fast (244 = 4 x 61 is about 3x slower)."""
    def rest(m: int) -> int:  # m without its factors 2, 3 and 5
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m

    while rest(n) != 1:
        n += 1
    return n


@lru_cache(maxsize=None)
def _disk_spectrum(radius: float, alias_blur: float, size: tuple[int, int], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    return torch.fft.rfft2(disk(radius, alias_blur, device, dtype).flip(-1, -2), s=size)


def disk_filter(x: torch.Tensor, radius: float, alias_blur: float) -> torch.Tensor:
    """Correlation of ``x[N,C,H,W]`` with :func:`disk` (cv2.filter2D, border reflect-101), by FFT: the padded image
    zero-extended to a 5-smooth length (the outputs kept never wrap around), the disk's spectrum made once."""
    r = disk(radius, alias_blur, x.device, x.dtype).shape[-1] // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    size = (_smooth_length(h + 2 * r), _smooth_length(w + 2 * r))
    spectrum = torch.fft.rfft2(padded, s=size).mul_(_disk_spectrum(radius, alias_blur, size, x.device, x.dtype))
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * r:2 * r + h, 2 * r:2 * r + w]


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """imagecorruptions' ``clipped_zoom``: the centre ``ceil(n / factor)`` pixels zoomed by ``factor`` (scipy's
    order-1 zoom: bilinear, corners aligned), the first ``n`` rows and columns kept."""
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    size = (int(round(ch * factor)), int(round(cw * factor)))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]


def _motion_offsets(radius: int, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer (dy, dx) of each of the ``2 radius + 1`` taps of imagecorruptions' motion blur, per image."""
    i = torch.arange(2 * radius + 1, device=angle.device, dtype=torch.float64)[None]
    a = torch.deg2rad(angle.double())[:, None]
    return -torch.ceil(i * torch.sin(a) - 0.5).long(), -torch.ceil(i * torch.cos(a) - 0.5).long()


@lru_cache(maxsize=None)
def _motion_weights(radius: int, sigma: float) -> tuple[float, ...]:
    """The normalised Gaussian weights of the ``2 radius + 1`` taps of imagecorruptions' motion blur."""
    weights = torch.exp(-torch.arange(2 * radius + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    return tuple((weights / weights.sum()).tolist())


def motion_blur_op(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor,
                   batched: bool | None = None) -> torch.Tensor:
    """imagecorruptions' ``_motion_blur``: a Gaussian-weighted sum of edge-replicated shifts along ``angle``
    (degrees, one per image), the shifts added tap by tap.

    ``batched`` (default: off the CPU) adds each tap to the whole batch by one indexing kernel, the offsets staying
    on the device (no host sync, 2 radius + 1 kernels); otherwise image by image from slices at offsets read on the
    host, which is the faster way on the CPU (about 4x) and costs no sync there. Both give the same bits."""
    n, c, h, w = x.shape
    width = 2 * radius + 1
    dy, dx = _motion_offsets(radius, angle)  # [N, taps]
    top, left = width - dy, width - dx
    padded = F.pad(x, (width, width, width, width), mode="replicate")  # the reference's shifts repeat the edge
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # [N, C, 2 width + 1, 2 width + 1, H, W], a view
    weights = _motion_weights(radius, float(sigma))
    out = torch.zeros_like(x)
    if batched if batched is not None else x.device.type != "cpu":
        images = torch.arange(n, device=x.device)
        for tap, weight in enumerate(weights):
            out.add_(windows[images, :, top[:, tap], left[:, tap]], alpha=weight)
        return out
    for image, (rows, cols) in enumerate(zip(top.tolist(), left.tolist())):
        for weight, row, col in zip(weights, rows, cols):
            out[image].add_(windows[image, :, row, col], alpha=weight)
    return out


@lru_cache(maxsize=None)
def disk(radius: float, alias_blur: float, device: torch.device | None = None,
         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """imagecorruptions' ``disk``: an aliased disk, normalised, then blurred by cv2.GaussianBlur (3x3 or 5x5); made
    once per device and dtype."""
    half = 8 if radius <= 8 else int(radius)
    size = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[None] ** 2 + grid[:, None] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    taps = torch.exp(-(torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2 / (2 * alias_blur ** 2))
    taps /= taps.sum()
    kernel = kornia.filters.filter2d_separable(disk[None, None], taps[None], taps[None], border_type="reflect")
    return kernel[0, 0].to(device, dtype)


@lru_cache(maxsize=None)
def device_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, made once per device and dtype (no host copy per call)."""
    return torch.tensor(values, device=device, dtype=dtype)


GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def gray(x: torch.Tensor) -> torch.Tensor:
    """cv2's RGB2GRAY (0.299 R + 0.587 G + 0.114 B), ``[N,1,H,W]``."""
    return kornia.color.rgb_to_grayscale(x, device_constant(GRAY_WEIGHTS, x.device, x.dtype))


def rgb_to_hsv_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value ``max(r, g, b)`` and saturation ``(max - min) / max`` (0 where max is 0), as skimage defines them."""
    v = x.amax(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - x.amin(dim=1, keepdim=True)) / v.clamp_min(1e-12), torch.zeros_like(v))
    return v, s


def host_copy_for_jpeg(pixels: torch.Tensor) -> torch.Tensor:
    """``pixels`` (on a device) in host memory for the JPEG encoder. From CUDA: one non-blocking copy of the whole
    batch into pinned memory, then the one host sync by design (the host reads what the copy wrote): an event
    recorded after the copy on the current stream, waited for."""
    if pixels.device.type != "cuda":
        return pixels.cpu()
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(pixels.device))
    copied.synchronize()
    return host


def _uint8(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to 0..255 as uint8 (by way of int16: the same values, and on the CPU about half the time of
    torch's direct float-to-uint8 cast)."""
    return x if x.dtype == torch.uint8 else x.round().clamp_(0, 255).to(torch.int16).to(torch.uint8)


def _pil_rgb(planes: np.ndarray):
    """One ``[3, H, W]`` image (numpy, float or uint8) rounded to 0..255 as a PIL RGB image: rounded and clipped in
    one float copy (none for uint8), cast to uint8 planes, interleaved by PIL's merge (faster than numpy's strided
    channel copies)."""
    from PIL import Image

    if planes.dtype != np.uint8:
        planes = np.clip(planes, 0, 255)
        np.rint(planes, out=planes)
    planes = planes.astype(np.uint8, order="C", copy=False)  # contiguous planes for PIL, whatever the input's strides
    height, width = planes.shape[1:]
    return Image.merge("RGB", [Image.frombuffer("L", (width, height), plane, "raw", "L", 0, 1) for plane in planes])


def _jpeg_image(pixels: np.ndarray, quality: int, out: np.ndarray) -> None:
    """One ``[3, H, W]`` image (numpy, host memory) through JPEG into ``out`` (numpy ``[3, H, W]``, float or uint8),
    all in numpy, PIL and the codecs (no OpenMP region in a worker thread): PIL's encoder (4:2:0 chroma, as
    ImageNet-C's files were written) on :func:`_pil_rgb`, torchvision's CPU decoder (PIL's pixels, faster), whose
    ``[3, H, W]`` result is cast into ``out`` in one pass."""
    from torchvision.io import decode_jpeg

    encoded = io.BytesIO()
    _pil_rgb(pixels).save(encoded, "JPEG", quality=quality)
    np.copyto(out, decode_jpeg(torch.frombuffer(encoded.getbuffer(), dtype=torch.uint8)).numpy(), casting="unsafe")


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as JPEG at ``quality`` and decode it with the host's libjpeg (:func:`_jpeg_image`), images
    in parallel threads when torch has several (the decoder and numpy release the GIL; PIL's encoder, writing to
    memory, holds it). On the CPU each image is converted, coded and written back in its thread, in numpy and PIL
    (no batch-wide pass, no OpenMP region of the threads' own). A
    CUDA batch is rounded to uint8 on the device, goes to the host in one pinned copy (:func:`host_copy_for_jpeg`)
    and comes back in one non-blocking copy (torch's host allocator keeps the pinned buffer until that copy has
    run)."""
    on_host, on_cuda = x.device.type == "cpu", x.device.type == "cuda"
    if on_host:
        pixels = x.detach() if x.dtype in (torch.float32, torch.uint8) else x.detach().float()
    else:
        pixels = host_copy_for_jpeg(_uint8(x))
    back = torch.empty(x.shape, dtype=pixels.dtype if on_host else torch.uint8, pin_memory=on_cuda)
    source, target = pixels.numpy(), back.numpy()

    def round_trip(i: int) -> None:
        _jpeg_image(source[i], quality, target[i])

    workers = min(len(x), torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # made per call: nothing to go stale in a forked worker
            list(pool.map(round_trip, range(len(x))))
    else:
        for i in range(len(x)):
            round_trip(i)
    return back.to(x.dtype) if on_host else back.to(x.device, non_blocking=on_cuda).to(x.dtype)


@lru_cache(maxsize=None)
def _pil_box_runs(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's BOX resampling from ``n_in`` to ``n_out`` samples (ImagingResample's box coefficients: 1 where
    ``-0.5 < t <= 0.5``, normalised): output ``j`` is the mean of the inputs whose centre ``i + 0.5`` lies in
    ``(j scale, (j + 1) scale]``, runs that tile the input. ``(run, length)``: each input's run, each run's length;
    made once per device and dtype."""
    scale = n_in / n_out
    run = [j for j in range(n_out) for i in range(n_in) if j * scale < i + 0.5 <= (j + 1) * scale]
    assert len(run) == n_in  # every input in exactly one run
    return (torch.tensor(run, device=device),
            torch.tensor([run.count(j) for j in range(n_out)], device=device, dtype=dtype))


def _box_pass(x: torch.Tensor, dim: int, runs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One PIL BOX pass along ``dim`` of uint8-valued ``x``, rounded to uint8 as PIL stores it: each run's sum
    (exact: integers below 2**24, whatever the order) over its length."""
    run, length = runs
    shape = list(x.shape)
    shape[dim] = len(length)
    sums = x.new_zeros(shape).index_add_(dim, run, x)
    return sums.div_(length if dim == -1 else length[:, None]).add_(0.5).floor_()


def pixelate_op(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL resize to ``int(n * factor)`` with BOX (horizontal then vertical pass, uint8 between), then NEAREST back
    (PIL's source pixel ``int((i + 0.5) * small / n)`` is torch's "nearest-exact"). No matrix products: run means
    of uint8 values by prefix sums, exact in float32 up to the division."""
    h, w = x.shape[-2:]
    small = _box_pass(x, -1, _pil_box_runs(w, int(w * factor), x.device, x.dtype))
    small = _box_pass(small, -2, _pil_box_runs(h, int(h * factor), x.device, x.dtype))
    return F.interpolate(small, size=(h, w), mode="nearest-exact")


POISSON_BITS = 12


@lru_cache(maxsize=None)
def _poisson_table(scale: float, device: torch.device) -> torch.Tensor:
    """Poisson quantiles ``[256 * 2**12]`` (float32: exact integers) for the rates ``scale * v / 255`` (v = 0..255,
    the uint8 values) at the 2**12 uniform levels ``(k + 0.5) / 2**12``: inversion of the exact CDF."""
    rates = torch.arange(256, dtype=torch.float64) * (scale / 255)
    k = torch.arange(int(scale + 12 * math.sqrt(scale) + 20), dtype=torch.float64)
    cdf = torch.special.gammaincc(k[None] + 1, rates[:, None].clamp_min(1e-300))  # P(X <= k)
    cdf[0] = 1.0
    u = ((torch.arange(1 << POISSON_BITS, dtype=torch.float64) + 0.5) / (1 << POISSON_BITS))
    return torch.searchsorted(cdf, u.expand(256, -1).contiguous()).to(torch.float32).flatten().to(device)


def poisson(x: torch.Tensor, scale: float, levels: torch.Tensor) -> torch.Tensor:
    """Poisson samples of rate ``x * scale / 255`` for uint8-valued ``x`` (0..255), by table inversion of 16-bit
    ``levels`` (their top 12 bits)."""
    table = _poisson_table(float(scale), x.device)
    index = x.round().clamp_(0, 255).to(torch.int32).bitwise_left_shift_(POISSON_BITS)
    index += levels >> (16 - POISSON_BITS)
    return table.index_select(0, index.reshape(-1)).view(index.shape).to(x.dtype)


def filter3x3(x: torch.Tensor, kernel: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """``x[N,C,H,W]`` correlated with a 3x3 ``kernel`` (reflect-101 borders, as OpenCV's default and kornia's
    "reflect"), as a sum of shifted slices: on one channel this beats a convolution call many times over."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    out = torch.zeros_like(x)
    for i, row in enumerate(kernel):
        for j, weight in enumerate(row):
            if weight:
                out.add_(padded[..., i:i + h, j:j + w], alpha=weight)
    return out


BOX3 = ((1 / 9,) * 3,) * 3


def _offset_minimum(values: torch.Tensor, limit: int, dim: int) -> torch.Tensor:
    """``min`` over the offsets ``k`` in ``[-limit, limit]`` along ``dim`` (-1 or -2) of ``values`` at ``k`` plus
    ``k^2`` (``limit^2`` beyond the image): one padded copy raised by ``k^2`` per offset, read at both shifts."""
    far, n = limit * limit, values.shape[dim]
    padded = F.pad(values, (limit, limit) if dim == -1 else (0, 0, limit, limit), value=far)
    best, raised = values.clone(), torch.empty_like(padded)
    for k in range(1, limit + 1):
        torch.add(padded, k * k, out=raised)
        for start in (limit + k, limit - k):
            torch.minimum(best, raised.narrow(dim, start, n), out=best)
    return best


def truncated_distance(edges: torch.Tensor, limit: int) -> torch.Tensor:
    """Euclidean distance of every pixel to the nearest ``edges`` pixel, capped at ``limit``: the capped squared
    distance down the columns, then along the rows (:func:`_offset_minimum`), exact in 16-bit integers."""
    squared = torch.where(edges, 0, limit * limit).to(torch.int16)
    return _offset_minimum(_offset_minimum(squared, limit, -2), limit, -1).float().sqrt()


def erode3x3(mask: torch.Tensor) -> torch.Tensor:
    """Binary erosion of the boolean ``mask[..., H, W]`` by a 3x3 square, pixels beyond the image not counted (a
    pixel stays where it and its neighbours inside the image are all set), as AND of shifted slices."""
    padded = F.pad(mask, (1, 1, 1, 1), value=True)
    rows = padded[..., :-2, :] & padded[..., 1:-1, :] & padded[..., 2:, :]
    return rows[..., :-2] & rows[..., 1:-1] & rows[..., 2:]


def equalize(x: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist of uint8-valued ``x[N,1,H,W]``, per image."""
    n = x.shape[0]
    values = x.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=x.device, dtype=torch.float64).scatter_add_(
        1, values, torch.ones_like(values, dtype=torch.float64))
    cdf = hist.cumsum(1)
    first = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    lut = ((cdf - first) * 255 / (values.shape[1] - first).clamp_min(1)).round().clamp(0, 255)
    return lut.gather(1, values).view_as(x).to(x.dtype)

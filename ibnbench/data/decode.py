"""Decoding and file sniffing.

:func:`decode_file` is the one CPU decoder (``torchvision.io.decode_image``, RGB). It rejects
zero-byte, unreadable and non-image files, JPEGs whose headers are broken, and truncated JPEGs:
torchvision's libjpeg wrapper turns libjpeg's "premature end of data" warning into an error, as PIL
does by default, so a truncated file is never scored on a half-grey picture. Corrupt entropy-coded
data that libjpeg can resynchronise past (the end marker present) decodes with libjpeg's warning on
stderr, as it does in PIL. PNGs whose image data libpng would fail on mid-image (which crashes
torchvision's decoder) are caught first by :func:`png_stream_problem`; 16-bit PNGs become 8-bit; a JPEG or
PNG header claiming more than :data:`MAX_PIXELS` pixels is refused before anything is allocated.

On CUDA, baseline/progressive 3-component JPEGs can be decoded in batches with nvJPEG (:func:`nvjpeg_decode`);
:func:`nvjpeg_can_decode` tells which files must go to the CPU decoder instead.
"""
from __future__ import annotations

import os
import zlib
from functools import lru_cache

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from ibnbench.errors import BadImageError

MAX_PIXELS = 2**28
"""Largest image :func:`decode_file` decodes (16384 x 16384; 768 MiB as uint8 RGB): a header claiming
more (a decompression bomb or a corrupt size field) is refused before memory is allocated."""



def _decoder_reason(exc: Exception) -> str:
    """torchvision's message without its ``function, /source/file.cpp:123,`` prefix."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    parts = message.split(", ", 2)
    return parts[2] if len(parts) == 3 and ".cpp:" in parts[1] else message


def read_bytes(path: str | os.PathLike) -> torch.Tensor:
    """The bytes of an image file as a uint8 tensor; BadImageError if unreadable or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadImageError(path, f"unreadable ({exc.strerror or exc})") from None
    if not data:
        raise BadImageError(path, "empty file (0 bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_file(path: str | os.PathLike) -> torch.Tensor:
    """Read and decode one image file (JPEG, PNG, ...; greyscale and CMYK too) to uint8 RGB ``[3,H,W]``.

    16-bit PNGs are scaled to 8 bits (the high byte). A JPEG or PNG whose header claims more than
    :data:`MAX_PIXELS` pixels is refused before any memory is allocated for it."""
    image = _decode_checked(path, ImageReadMode.RGB)
    return TF.to_dtype(image, torch.uint8, scale=True) if image.dtype != torch.uint8 else image


def decode_unchanged(path: str | os.PathLike) -> torch.Tensor:
    """Decode one image file as stored, ``[C,H,W]`` uint8 or uint16 (a label map: palette PNGs give their indices,
    16-bit PNGs their 16-bit values), with the checks of :func:`decode_file`."""
    return _decode_checked(path, ImageReadMode.UNCHANGED)


def _decode_checked(path: str | os.PathLike, mode: ImageReadMode) -> torch.Tensor:
    """``decode_image`` of the file's bytes after refusing oversized headers and PNG data that would crash it."""
    data = read_bytes(path)
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadImageError(path, f"too large to decode ({size[0]}x{size[1]} pixels, more than the "
                                  f"{MAX_PIXELS:,} an image may have)")
    problem = png_stream_problem(data)
    if problem:
        raise BadImageError(path, f"cannot decode (corrupt PNG: {problem})")
    try:
        return decode_image(data, mode=mode)
    except RuntimeError as exc:
        raise BadImageError(path, f"cannot decode ({_decoder_reason(exc)})") from None


_SOF_NVJPEG = {0xC0, 0xC1, 0xC2}  # Huffman baseline, extended, progressive
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_frame(raw: memoryview) -> int | None:
    """Offset of the frame header (SOFn marker) of JPEG bytes; None if the markers before it are broken
    or a scan starts first."""
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_NVJPEG or marker in _SOF_OTHER:
            return pos
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(bytes(raw[pos + 2:pos + 4]), "big")
    return None


def image_size(data: torch.Tensor) -> tuple[int, int] | None:
    """``(width, height)`` from the header of JPEG or PNG bytes, without decoding; None for other data."""
    raw = memoryview(data.numpy())
    if bytes(raw[:8]) == _PNG_SIGNATURE and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if bytes(raw[:2]) == b"\xff\xd8":
        pos = _jpeg_frame(raw)
        if pos is not None and pos + 9 <= len(raw):
            return int.from_bytes(raw[pos + 7:pos + 9], "big"), int.from_bytes(raw[pos + 5:pos + 7], "big")
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_stream_problem(data: torch.Tensor) -> str | None:
    """What is wrong with the image data of PNG bytes, or None (also for non-PNG data).

    torchvision's PNG decoder crashes the process (segmentation fault) when libpng fails while reading
    rows: an IDAT chunk with a bad CRC, a corrupt or short zlib stream, a row filter byte above 4. This
    checks exactly those in Python (one extra inflate per PNG) so that such a file raises instead.
    Header problems and files cut short are left to the decoder, which reports them cleanly."""
    raw = data.numpy().tobytes() if data[:8].numpy().tobytes() == _PNG_SIGNATURE else b""
    header, stream, pos = b"", [], 8
    while pos + 12 <= len(raw):
        length, kind = int.from_bytes(raw[pos:pos + 4], "big"), raw[pos + 4:pos + 8]
        end = pos + 8 + length
        if end + 4 > len(raw):
            break
        if kind == b"IHDR":
            header = raw[pos + 8:end]
        elif kind == b"IDAT":
            if zlib.crc32(raw[pos + 4:end]) != int.from_bytes(raw[end:end + 4], "big"):
                return "IDAT chunk CRC error"
            stream.append(raw[pos + 8:end])
        elif kind == b"IEND":
            break
        pos = end + 4
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    if len(header) != 13 or not stream or header[9] not in _PNG_CHANNELS or header[12] > 1 or not width * height:
        return None
    bits = header[8] * _PNG_CHANNELS[header[9]]
    passes = [(width, height)] if header[12] == 0 else [
        (-(-(width - x) // dx), -(-(height - y) // dy)) for x, y, dx, dy in _ADAM7 if width > x and height > y]
    rows = [(1 + (w * bits + 7) // 8, h) for w, h in passes]
    expected = sum(stride * h for stride, h in rows)
    inflate = zlib.decompressobj()
    try:
        pixels = inflate.decompress(b"".join(stream), expected)
        while inflate.unconsumed_tail:  # extra data after the rows: libpng checks it up to the checksum
            inflate.decompress(inflate.unconsumed_tail, 1 << 16)
        inflate.flush()
    except zlib.error as exc:
        return f"corrupt image data ({str(exc).split(': ')[-1]})"
    if len(pixels) < expected or not inflate.eof:
        return "not enough image data"
    start = 0
    for stride, h in rows:
        if max(pixels[start:start + stride * h:stride]) > 4:
            return "bad row filter"
        start += stride * h
    return None


def nvjpeg_can_decode(data: torch.Tensor) -> bool:
    """Whether JPEG bytes are a complete, Huffman-coded, 3-component (YCbCr) image that nvJPEG decodes
    like libjpeg; greyscale, CMYK, non-JPEG data and files without the end marker go to the CPU."""
    raw = memoryview(data.numpy())
    if bytes(raw[:2]) != b"\xff\xd8" or bytes(raw[-2:]) != b"\xff\xd9":
        return False
    pos = _jpeg_frame(raw)
    return pos is not None and raw[pos + 1] in _SOF_NVJPEG and pos + 9 < len(raw) and raw[pos + 9] == 3


def nvjpeg_device(device: torch.device | str) -> torch.device:
    """``device`` with its index (``cuda`` -> ``cuda:N``, the current one): torchvision keeps one global nvJPEG
    decoder and rebuilds it whenever the device it is asked for differs, ``cuda`` from ``cuda:0`` included."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@lru_cache(maxsize=None)
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def nvjpeg_decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Decode JPEG bytes to RGB on ``device`` in one batched nvJPEG call; the images are ready for use on
    ``device``'s current stream.

    torchvision 0.29 allocates the outputs on the current stream but has nvJPEG write them from a stream of its
    own that does not wait for the current one, so memory that kernels still queued there had just freed could
    be overwritten (pytorch/vision#9606). So the call runs on a side stream on which no kernel ever runs (it
    waits for the current stream first): the outputs come from that stream's memory pool, whose blocks return
    only once every stream that used them is done (``record_stream``). The current stream then waits for the
    decode. No host synchronisation is added. Off CUDA (tests), ``decode_jpeg`` is called as it is."""
    if device.type != "cuda":
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    current, side = torch.cuda.current_stream(device), _decode_stream(device)
    side.wait_stream(current)
    with torch.cuda.device(device), torch.cuda.stream(side):
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    current.wait_stream(side)
    for image in images:
        image.record_stream(current)
    return images

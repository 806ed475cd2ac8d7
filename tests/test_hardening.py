"""Bad input through every command: each case exits 2 with one line naming the file/option and the reason
(no traceback), or exits 0 where the input is unusual but valid (CMYK, greyscale, 16-bit PNG, symlink loops).

The corpus is generated in tmp_path: tiny synthetic JPEGs/PNGs, hand-made headers, corrupt records and suites.
Runs use resnet18 with random weights, one condition, no worker processes and the CPU, so each case is fast.
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.images import A, make_folder, picture, val_name, write_image
from PIL import Image

from ibnbench.cli import main
from ibnbench.data import decode as data
from ibnbench.errors import BadImageError, RecordError
from ibnbench.results import record as results
from ibnbench.results.record import read_record
from ibnbench.zoo import create_model

RUN = ["run", "--model", "resnet18", "--weights", "random", "--conditions", "origin", "--workers", "0",
       "--device", "cpu", "--batch-size", "4"]


# ------------------------------------------------------------------------------------------------ corpus


# Adam7 passes (x, y, dx, dy) as the PNG specification defines them
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, lines: bytes, interlace: int = 0,
              stream: bytes | None = None) -> bytes:
    """A PNG written by hand from filtered scanlines (``stream``: the zlib stream itself, if given)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(lines) if stream is None else stream) + png_chunk(b"IEND", b""))


def scanlines(pixels: np.ndarray, interlace: bool = False) -> bytes:
    """Unfiltered (filter 0) scanlines of ``[H, W, C]`` samples, in Adam7 pass order when ``interlace``."""
    views = [pixels[y::dy, x::dx] for x, y, dx, dy in ADAM7] if interlace else [pixels]
    return b"".join(b"\x00" + row.tobytes() for view in views if view.size for row in view)


def png_of(pixels: np.ndarray, interlace: bool = False) -> bytes:
    """RGB (3 channels) or grey-alpha (2) PNG of uint8 or big-endian uint16 ``pixels``."""
    height, width, channels = pixels.shape
    return png_bytes(width, height, pixels.dtype.itemsize * 8, {1: 0, 2: 4, 3: 2, 4: 6}[channels],
                     scanlines(pixels, interlace), int(interlace))


def rgb8(height: int = 40, width: int = 56) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (height, width, 3)).astype(np.uint8)


def rgb16(height: int = 40, width: int = 56) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 65536, (height, width, 3)).astype(">u2")


def corrupt_png(kind: str) -> bytes:
    """A 56x40 RGB PNG whose image data is broken in a way libpng only notices while reading rows."""
    pixels = rgb8()
    lines = bytearray(scanlines(pixels))
    if kind == "crc":  # a flipped bit in the IDAT chunk, the CRC left as it was
        good = bytearray(png_of(pixels))
        good[good.index(b"IDAT") + 40] ^= 0x10
        return bytes(good)
    if kind == "checksum":  # the zlib stream's adler32 broken (the chunk CRC fixed to match)
        stream = bytearray(zlib.compress(bytes(lines)))
        stream[-1] ^= 0xFF
        return png_bytes(56, 40, 8, 2, b"", stream=bytes(stream))
    if kind == "short":  # half the rows
        return png_bytes(56, 40, 8, 2, bytes(lines[: len(lines) // 2]))
    lines[(1 + 56 * 3) * 5] = 9  # row 5 names filter 9 (0..4 exist)
    return png_bytes(56, 40, 8, 2, bytes(lines))


CORRUPT_PNGS = {"crc": "IDAT chunk CRC error", "checksum": "corrupt image data (incorrect data check)",
                "short": "not enough image data", "filter": "bad row filter"}


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    picture(0).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def jpeg_claiming(size: int) -> bytes:
    """A real small JPEG whose frame header is edited to claim ``size`` x ``size`` pixels."""
    raw = bytearray(small_jpeg())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", size, size)
    return bytes(raw)


def without(args: list[str], *flags: str) -> list[str]:
    """``args`` without the given options and their values."""
    out = list(args)
    for flag in flags:
        i = out.index(flag)
        del out[i:i + 2]
    return out


BAD_IMAGES = {  # name -> (the file's bytes, the words the error line must hold)
    "empty": (lambda: b"", ["empty file (0 bytes)"]),
    "truncated": (lambda: small_jpeg()[:400], ["cannot decode (Image is incomplete or truncated)"]),
    "truncated-png": (lambda: png_of(rgb8())[:300], ["cannot decode (Out of bound read in decode_png"]),
    "not-an-image": (lambda: b"<html>this is not an image</html>\n", ["cannot decode (Unsupported image file"]),
    "huge-jpeg": (lambda: jpeg_claiming(60000), ["too large to decode", "60000x60000 pixels", "268,435,456"]),
    "huge-png": (lambda: png_bytes(20000, 20000, 8, 2, b""), ["too large to decode", "20000x20000 pixels"]),
}


def folder_with(tmp_path: Path, name: str, content: bytes) -> tuple[Path, Path]:
    """``val/<A>/`` with one good image and ``name`` holding ``content``; returns (val folder, bad file)."""
    root = make_folder(tmp_path / "val", {A: [1]})
    bad = root / A / name
    bad.write_bytes(content)
    return root, bad


def cli(capfd, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def fails(capfd, *args, words: list[str]) -> str:
    """Run the CLI, require exit 2 and one ``ibnbench CMD: error:`` line holding ``words``; return that line."""
    code, out, err = cli(capfd, *args)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"ibnbench {args[0]}: error: ")]
    assert code == 2 and len(lines) == 1, (code, err)
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def works(capfd, *args) -> str:
    code, out, err = cli(capfd, *args)
    assert code == 0 and "Traceback" not in err, err
    return out


# ------------------------------------------------------------------------------------- images: run and others


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_run_on_bad_image_names_file_and_reason(tmp_path, capfd, kind):
    content, words = BAD_IMAGES[kind]
    root, bad = folder_with(tmp_path, "bad.JPEG", content())
    line = fails(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json", words=[f"{bad}: ", *words])
    assert not (tmp_path / "r.json").exists(), line


def test_decoded_pixels_are_guarded_before_any_allocation(tmp_path, monkeypatch):
    """A claimed 60000x60000 JPEG (10.8 GB as RGB) is refused from its header: the decoder is never called."""
    monkeypatch.setattr(data, "decode_image", lambda *a, **k: pytest.fail("decoder called on a huge image"))
    bad = tmp_path / "huge.JPEG"
    bad.write_bytes(jpeg_claiming(60000))
    with pytest.raises(BadImageError, match="too large to decode"):
        data.decode_file(bad)
    limit = int(data.MAX_PIXELS ** 0.5)  # 16384 x 16384 exactly is allowed through the guard
    assert data.image_size(torch.frombuffer(bytearray(jpeg_claiming(limit)), dtype=torch.uint8)) == (limit, limit)


def test_skip_policy_lists_every_bad_image_and_scores_the_rest(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    for kind, (content, _words) in BAD_IMAGES.items():
        (root / A / f"{kind}.JPEG").write_bytes(content())
    out = works(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json", "--on-bad-image", "skip")
    record = read_record(tmp_path / "r.json")
    assert record.dataset["n_skipped"] == len(BAD_IMAGES) and record.result("resnet18", "origin")["n_images"] == 2
    assert sorted(record.dataset["skipped"]) == sorted(f"{A}/{kind}.JPEG" for kind in BAD_IMAGES)
    assert f"{len(BAD_IMAGES)} unreadable image(s) skipped" in out


@pytest.mark.parametrize("workers", ["0", "1"])
def test_stylize_bad_image_is_one_line_also_from_a_worker_process(tmp_path, capfd, workers):
    root, bad = folder_with(tmp_path, "a.JPEG", small_jpeg()[:300])  # sorted first: fails before any output
    fails(capfd, "stylize", "--style", "monet", "--weights", "random", "--data", root, "--out", tmp_path / "out",
          "--device", "cpu", "--size", "32", "--workers", workers, words=[f"{bad}: cannot decode"])
    assert not list((tmp_path / "out").rglob("a.JPEG"))


def test_divergence_and_bench_on_bad_image(tmp_path, capfd):
    root, bad = folder_with(tmp_path, "bad.JPEG", b"")
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", root, "--condition", "rgb+50",
          "--device", "cpu", words=[f"{bad}: empty file (0 bytes)"])
    fails(capfd, "bench", "--model", "resnet18", "--compare-baseline", "--data", root, "--conditions", "origin",
          "--device", "cpu", "--batch-size", "4", words=[f"{bad}: empty file (0 bytes)"])


# ------------------------------------------------------------------------------- unusual but valid images


def cmyk_jpeg(path: Path) -> Path:
    return write_image(path, seed=3, mode="CMYK")


def grey_jpeg(path: Path) -> Path:
    return write_image(path, seed=4, mode="L")


def png16_grey(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 65536, (40, 56)).astype(np.uint16)).save(path)
    return path


def png16_rgb(path: Path) -> Path:
    path.write_bytes(png_of(rgb16()))
    return path


VALID = {"cmyk.JPEG": cmyk_jpeg, "grey.JPEG": grey_jpeg, "grey16.png": png16_grey, "rgb16.png": png16_rgb,
         "rgb16-named.JPEG": png16_rgb}  # a 16-bit PNG behind a .JPEG name


@pytest.mark.parametrize("name", list(VALID))
def test_unusual_valid_images_are_scored(tmp_path, capfd, name):
    root = make_folder(tmp_path / "val", {A: [1]})
    VALID[name](root / A / name)
    out = works(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json")
    record = read_record(tmp_path / "r.json")
    assert record.dataset["n_skipped"] == 0 and record.result("resnet18", "origin")["n_images"] == 2
    assert "record:" in out


def test_16_bit_png_decodes_to_its_high_byte(tmp_path):
    rgb = data.decode_file(png16_rgb(tmp_path / "rgb16.JPEG"))
    high_bytes = torch.from_numpy((rgb16() >> 8).astype(np.uint8)).permute(2, 0, 1)
    assert rgb.dtype == torch.uint8 and torch.equal(rgb, high_bytes)
    grey = data.decode_file(png16_grey(tmp_path / "grey16.png"))
    expected = torch.from_numpy((np.asarray(Image.open(tmp_path / "grey16.png")) >> 8).astype(np.uint8))
    assert grey.shape == (3, 40, 56) and all(torch.equal(channel, expected) for channel in grey)


def test_cmyk_and_greyscale_decode_to_rgb_like_pil(tmp_path):
    for make in (cmyk_jpeg, grey_jpeg):
        path = make(tmp_path / f"{make.__name__}.JPEG")
        reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert (data.decode_file(path).int() - reference.int()).abs().max() <= 1


def as_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


@pytest.mark.parametrize("kind", list(CORRUPT_PNGS))
def test_corrupt_png_data_is_named_before_the_decoder_sees_it(kind):
    """torchvision's PNG decoder segfaults on these (libpng fails while reading rows), so the check must catch
    them first; a process-level run over the same files is in test_real_process_survives_corrupt_pngs."""
    assert data.png_stream_problem(as_tensor(corrupt_png(kind))) == CORRUPT_PNGS[kind]


def pil_pngs(folder: Path) -> list[Path]:
    """PNGs as PIL writes them: 1-bit, palette, grey, grey-alpha, RGBA."""
    paths = []
    for mode in ("1", "P", "L", "LA", "RGBA"):
        paths.append(folder / f"pil-{mode}.png")
        picture(7, 37, 51).convert(mode).save(paths[-1])
    return paths


def test_valid_pngs_pass_the_check_and_decode_like_pil(tmp_path):
    hand_made = {"rgb8": png_of(rgb8()), "rgb8-interlaced": png_of(rgb8(), interlace=True),
                 "rgb8-interlaced-7x5": png_of(rgb8(5, 7), interlace=True),  # some Adam7 passes are empty
                 "rgb16-interlaced": png_of(rgb16(), interlace=True),
                 "grey-alpha16": png_of(rgb16()[..., :2])}
    for name, raw in hand_made.items():
        (tmp_path / f"{name}.png").write_bytes(raw)
    for path in [*(tmp_path / f"{name}.png" for name in hand_made), *pil_pngs(tmp_path)]:
        assert data.png_stream_problem(as_tensor(path.read_bytes())) is None, path.name
        with Image.open(path) as image:  # PIL reads 16-bit colour as its high byte, like decode_file
            expected = np.array(image.convert("RGB"))
        assert torch.equal(data.decode_file(path), torch.from_numpy(expected).permute(2, 0, 1)), path.name


# ---------------------------------------------------------------------------------------------- the file system


def test_symlink_loops_are_not_followed(tmp_path, capfd):
    """``val/<wnid>/loop -> ..`` and ``val/self -> .``: every command that walks folders still terminates."""
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    (root / A / "loop").symlink_to("..")
    (root / "self").symlink_to(".")
    works(capfd, *RUN, "--data", root, "--output", tmp_path / "records" / "r.json")
    assert read_record(tmp_path / "records" / "r.json").dataset["n_images"] == 2
    (tmp_path / "records" / "loop").symlink_to("..")
    assert "resnet18" in works(capfd, "report", tmp_path / "records")
    out = works(capfd, "stylize", "--style", "monet", "--weights", "random", "--data", root, "--out",
                tmp_path / "monet", "--device", "cpu", "--size", "16", "--workers", "0")
    assert "2 written, 0 already present, 2 in all" in out
    board = tmp_path / "board"
    (board / "records").mkdir(parents=True)
    (board / "records" / "r.json").write_bytes((tmp_path / "records" / "r.json").read_bytes())
    (board / "records" / "loop").symlink_to("..")
    assert "table1.md" in works(capfd, "leaderboard", "build", "--root", board)


def test_self_referencing_symlink_names_the_file(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    (root / A / "self.JPEG").symlink_to("self.JPEG")
    fails(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json",
          words=["Too many levels of symbolic links", str(root / A / "self.JPEG")])


def test_unreadable_file(tmp_path, capfd):
    if os.geteuid() == 0:
        pytest.skip("running as root: root reads files whatever their permissions, so chmod 000 changes nothing")
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    locked = root / A / val_name(2)
    locked.chmod(0)
    fails(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json",
          words=[f"{locked}: unreadable (Permission denied)"])


def test_missing_and_non_folder_data(tmp_path, capfd):
    fails(capfd, *RUN, "--data", tmp_path / "nowhere", words=["dataset folder", "does not exist"])
    (tmp_path / "file").write_text("x")
    fails(capfd, *RUN, "--data", tmp_path / "file", words=["is not a folder"])


# --------------------------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(create_model("resnet18", weights="random").state_dict(), path)
    return path


def test_wrong_checkpoint_for_the_architecture(tmp_path, capfd, resnet18_checkpoint):
    root = make_folder(tmp_path / "val", {A: [1]})
    args = without(RUN, "--weights")
    args[args.index("resnet18")] = "resnet50_ibn_a"
    fails(capfd, *args, "--weights", resnet18_checkpoint, "--data", root,
          words=[f"{resnet18_checkpoint} does not fit resnet50_ibn_a", "missing", "wrong shape",
                 "Is it a checkpoint of another architecture?"])
    fails(capfd, "stylize", "--style", "monet", "--weights", resnet18_checkpoint, "--data", root, "--out",
          tmp_path / "out", "--device", "cpu", "--workers", "0",
          words=[f"{resnet18_checkpoint} does not fit cyclegan_resnet_9blocks"])


def test_checkpoint_that_is_not_a_checkpoint(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    junk = tmp_path / "junk.pth"
    junk.write_bytes(small_jpeg())
    args = without(RUN, "--weights")
    fails(capfd, *args, "--weights", junk, "--data", root, words=[f"{junk}: not a readable PyTorch checkpoint"])
    fails(capfd, "divergence", "--model", "resnet18", "--weights", tmp_path / "absent.pth", "--data", root,
          "--condition", "rgb+50", "--device", "cpu", words=["resnet18: weights file", "absent.pth does not exist"])


# ----------------------------------------------------------------------------------------------------- suites


CORRUPT_SUITES = {
    "truncated": (b'[[conditions]]\nid = "origin"\nop = "ident', ["not valid TOML"]),
    "binary": (b"\xff\xfe\x00garbage", ["not valid TOML (not UTF-8 text)"]),
    "unknown-op": (b'[[conditions]]\nid = "x"\nop = "blur"\n', ["condition 'x'", "field 'op'", "'blur'"]),
    "no-conditions": (b'description = "empty"\n', ["field 'conditions'", "non-empty"]),
}


@pytest.mark.parametrize("kind", list(CORRUPT_SUITES))
def test_corrupt_suite_file_in_every_command_that_reads_one(tmp_path, capfd, kind):
    content, words = CORRUPT_SUITES[kind]
    suite = tmp_path / "bad.toml"
    suite.write_bytes(content)
    root = make_folder(tmp_path / "val", {A: [1]})
    words = [str(suite), *words]
    fails(capfd, "suites", suite, words=words)
    fails(capfd, *without(RUN, "--conditions"), "--suite", suite, "--data", root,
          words=words)
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", root, "--suite", suite,
          "--condition", "x", "--device", "cpu", words=words)
    fails(capfd, "bench", "--model", "resnet18", "--compare-baseline", "--data", root, "--suite", suite,
          "--device", "cpu", words=words)


def test_unknown_suite_and_condition(tmp_path, capfd):
    fails(capfd, "suites", "nosuch", words=["unknown suite 'nosuch'", "table1"])
    fails(capfd, "suites", tmp_path / "absent.toml", words=["suite file", "absent.toml does not exist"])
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *without(RUN, "--conditions"), "--conditions", "origin,blur", "--data", root,
          words=["suite 'table1' has no condition 'blur'", "available: origin"])


# ---------------------------------------------------------------------------------------------------- records


def good_record(path: Path) -> Path:
    from helpers.records import make_record

    return results.write_record(make_record({"resnet50": {"origin": (24.0, 7.0), "rgb+50": (28.0, 9.0)}}), path)


def edited(record: dict, **changes) -> str:
    return json.dumps({**record, **changes})


CORRUPT_RECORDS = {  # name -> (content from the good record's JSON, the words of the error)
    "truncated": (lambda text, rec: text[: len(text) // 2], ["corrupt record (invalid JSON at line"]),
    "binary": (lambda text, rec: b"\x89PNG\r\n\x1a\n\xff", ["corrupt record (not UTF-8 text)"]),
    "array": (lambda text, rec: "[1, 2]", ["not a result record (expected a JSON object)"]),
    "foreign": (lambda text, rec: '{"name": "package", "version": "1.0"}', ["not a result record (missing suite"]),
    "wrong-types": (lambda text, rec: edited(rec, dataset=[], models="resnet50"),
                    ["wrong type: dataset (expected an object), models (expected an object)"]),
    "string-error": (lambda text, rec: edited(rec, results=[{**rec["results"][0], "top1_err": "24%"}]),
                     ["results[0] has a wrong type in top1_err"]),
    "row-lacks": (lambda text, rec: edited(rec, results=[{"model": "resnet50"}]),
                  ["results[0] lacks condition, top1_err, top5_err, n_images"]),
    "newer-schema": (lambda text, rec: edited(rec, schema=99), ["record schema 99 is newer"]),
}


@pytest.mark.parametrize("kind", list(CORRUPT_RECORDS))
def test_corrupt_record_in_report_check_and_leaderboard(tmp_path, capfd, kind):
    good = good_record(tmp_path / "good.json")
    text = good.read_text()
    content = CORRUPT_RECORDS[kind][0](text, json.loads(text))
    board = tmp_path / "board" / "records"
    board.mkdir(parents=True)
    bad = board / "bad.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    words = [f"{bad}: ", *CORRUPT_RECORDS[kind][1]]
    fails(capfd, "report", bad, words=words)
    fails(capfd, "report", good, board, words=words)  # found inside a folder too
    fails(capfd, "check", "--results", bad, "--against", good, words=words)
    fails(capfd, "check", "--results", good, "--against", bad, words=words)
    fails(capfd, "leaderboard", "build", "--root", board.parent, words=words)


def test_missing_records(tmp_path, capfd):
    good = good_record(tmp_path / "good.json")
    fails(capfd, "report", tmp_path / "absent.json", words=["absent.json: no such record or directory"])
    (tmp_path / "empty").mkdir()
    fails(capfd, "report", tmp_path / "empty", words=["no result records found in", "empty"])
    fails(capfd, "check", "--results", good, "--against", tmp_path / "absent.json",
          words=["absent.json: cannot read (No such file or directory)"])
    fails(capfd, "leaderboard", "build", "--root", tmp_path / "nowhere", words=["no such record or directory"])


# ------------------------------------------------------------------------------------------------ disk full


def no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


def half_then_no_space(obj, f, **kwargs):
    f.write('{"suite": "tab')
    no_space()


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_disk_full_keeps_the_previous_record_and_leaves_no_temp_file(tmp_path, capfd, monkeypatch, where):
    root = make_folder(tmp_path / "val", {A: [1]})
    previous = good_record(tmp_path / "out" / "r.json")
    before = previous.read_bytes()
    if where == "fsync":
        monkeypatch.setattr(results.os, "fsync", no_space)
    else:
        monkeypatch.setattr(results.json, "dump", half_then_no_space)
    fails(capfd, *RUN, "--data", root, "--output", previous,
          words=[f"cannot write record {previous}: No space left on device"])
    monkeypatch.undo()
    assert previous.read_bytes() == before and list(read_record(previous).models) == ["resnet50"]
    assert sorted(p.name for p in previous.parent.iterdir()) == ["r.json"]  # no temp file, no resume file


# ------------------------------------------------------------------------------------------- options and models


def test_bad_devices_and_sizes(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    run = without(RUN, "--device")
    fails(capfd, *run, "--data", root, "--device", "gpu0", words=["--device 'gpu0' is not a device name"])
    if not torch.cuda.is_available():
        fails(capfd, *run, "--data", root, "--device", "cuda", words=["--device cuda: CUDA is not available"])
    else:
        count = torch.cuda.device_count()
        fails(capfd, *run, "--data", root, "--device", f"cuda:{count}", words=[f"this machine has {count} CUDA"])
    fails(capfd, *without(RUN, "--batch-size"), "--batch-size", "0", "--data", root,
          words=["--batch-size must be 1 to 4096 images, not 0"])
    fails(capfd, *without(RUN, "--batch-size"), "--batch-size", "100000000", "--data", root,
          words=["--batch-size must be 1 to 4096 images, not 100000000"])
    fails(capfd, *without(RUN, "--workers"), "--workers=-1", "--data", root, words=["--workers must not be negative"])
    fails(capfd, *RUN, "--limit", "0", "--data", root, words=["limit must be a positive number of images, got 0"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "cpu", "--batch-size", "-1",
          words=["--batch-size must be 1 to 4096 images, not -1"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "cpu", "--batch-size", "100000000",  # allocated at once
          words=["--batch-size must be 1 to 4096 images, not 100000000"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "cpu", "--iters", "0",
          words=["--batch-size and --iters must be at least 1, got 64 and 0"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "nonsense", "--iters", "1",
          words=["--device 'nonsense' is not a device name"])
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", root, "--split-classes",
          "--device", "gpu0", words=["--device 'gpu0' is not a device name"])
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", make_folder(tmp_path / "two",
                                                                                                   {A: [1, 2]}),
          "--condition", "rgb+50", "--device", "cpu", "--layers", "layer9", words=["--layers: layer9 not in the model"])
    fails(capfd, "stylize", "--style", "monet", "--weights", "random", "--data", root, "--out", root / "inside",
          "--device", "cpu", words=["--out", "must lie outside --data"])
    stylize = ["stylize", "--style", "monet", "--weights", "random", "--data", root, "--out", tmp_path / "styled",
               "--device", "cpu"]
    fails(capfd, *stylize, "--size", "100000", words=["--size must be 8 to 4096 pixels, got 100000"])
    fails(capfd, *stylize, "--workers=-1", words=["--workers must not be negative, got -1"])


def test_unknown_models(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    run = list(RUN)
    run[run.index("resnet18")] = "resnet5O"
    words = ["unknown model 'resnet5O'", "See `ibnbench models`"]
    fails(capfd, *run, "--data", root, words=words)
    fails(capfd, "bench", "--model", "resnet5O", "--device", "cpu", words=words)
    fails(capfd, "divergence", "--model", "resnet5O", "--data", root, "--split-classes", "--device", "cpu",
          words=words)


def test_models_and_suites_list_and_reject_an_unknown_format(capfd):
    assert "resnet50_ibn_a" in works(capfd, "models", "resnet50*")
    assert works(capfd, "models", "no-such-model-*").count("\n") <= 2  # header only
    assert "rgb+50" in works(capfd, "suites", "table1")
    for command in ("models", "suites"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--format", "nonsense"])
        assert exited.value.code == 2
        assert "argument --format: invalid choice: 'nonsense'" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------- a real process


def ibnbench_process(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "ibnbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The command line as a user runs it (a separate process, a decoding worker process): one error line."""
    root, bad = folder_with(tmp_path, "bad.JPEG", small_jpeg()[:400])
    done = ibnbench_process(*without(RUN, "--workers"), "--workers", "1", "--data", root,
                            "--output", tmp_path / "r.json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"ibnbench run: error: {bad}: cannot decode (Image is incomplete or truncated)"], done.stderr


def test_real_process_survives_corrupt_pngs(tmp_path):
    """Without the PNG check each of these kills the process (or its decoding worker) with SIGSEGV."""
    root = make_folder(tmp_path / "val", {A: [1]})
    for kind in CORRUPT_PNGS:
        (root / A / f"{kind}.png").write_bytes(corrupt_png(kind))
    done = ibnbench_process(*without(RUN, "--workers"), "--workers", "1", "--on-bad-image", "skip", "--data", root,
                            "--output", tmp_path / "r.json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    record = read_record(tmp_path / "r.json")
    assert sorted(record.dataset["skipped"]) == sorted(f"{A}/{kind}.png" for kind in CORRUPT_PNGS)
    assert record.result("resnet18", "origin")["n_images"] == 1


# ---------------------------------------------------- second round: never lose a run, never pass a wrong number


def run_args(root: Path, output: Path, *extra) -> list:
    return [*RUN, "--data", root, "--output", output, *extra]


OUTPUT_PROBLEMS = {  # name -> (make the bad --output under tmp_path, the words of the error)
    "parent-is-a-file": (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "r.json",
                         ["cannot write record", "file is a file, not a folder"]),
    "output-is-a-folder": (lambda tmp: (tmp / "folder").mkdir() or tmp / "folder", ["it is a folder"]),
    "read-only-folder": (lambda tmp: (tmp / "ro").mkdir(mode=0o555) or tmp / "ro" / "r.json",
                         ["cannot write record", "Permission denied"]),
}


@pytest.mark.parametrize("chunk", ["2048", "1"])
@pytest.mark.parametrize("kind", list(OUTPUT_PROBLEMS))
def test_output_problems_are_reported_before_any_image_is_decoded(tmp_path, capfd, monkeypatch, kind, chunk, decoded):
    if kind == "read-only-folder" and os.geteuid() == 0:
        pytest.skip("running as root: root writes into a mode 0555 folder, so it is not read-only")
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    make, words = OUTPUT_PROBLEMS[kind]
    output = make(tmp_path)
    monkeypatch.setattr("ibnbench.eval.plan.create_model", lambda *a, **k: pytest.fail("a model was built"))
    fails(capfd, *run_args(root, output, "--chunk-size", chunk), words=[str(output), *words])
    assert decoded == []  # workers 0: every decode happens in this process


def interrupt_on_batch(monkeypatch, number: int) -> None:
    """Ctrl-C while the engine evaluates its ``number``-th batch (counting from 1)."""
    from ibnbench.eval import engine

    real, calls = engine._evaluate_batch, []

    def evaluate_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_evaluate_batch", evaluate_batch)


def test_interrupted_run_keeps_its_checkpoint_until_resume_or_restart(tmp_path, capfd, monkeypatch):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3, 4]})
    output = tmp_path / "out" / "r.json"
    args = [*without(run_args(root, output), "--batch-size"), "--batch-size", "2"]
    checkpoint = output.with_name(".r.json.rank0.resume.pt")
    interrupt_on_batch(monkeypatch, 2)
    code, _out, err = cli(capfd, *args)
    assert code == 130 and err.strip().splitlines()[-1] == (
        f"ibnbench run: interrupted: progress saved in {checkpoint}; --resume continues it, --restart starts over")
    assert checkpoint.exists() and not output.exists()
    monkeypatch.undo()

    fails(capfd, *args, words=[(f"{checkpoint}: an interrupted run of this command left a checkpoint "
                                "(2 of 4 images done); --resume continues it, --restart starts over")])
    assert checkpoint.exists()  # a rerun without --resume no longer deletes finished work

    code, _out, err = cli(capfd, *args, "--resume")
    assert code == 0 and f"resuming from {checkpoint}: 2 of 4 images already done" in err, err
    resumed = read_record(output)
    assert not checkpoint.exists() and resumed.timing["images"] == 4

    interrupt_on_batch(monkeypatch, 2)
    assert cli(capfd, *args)[0] == 130 and checkpoint.exists()
    monkeypatch.undo()
    code, _out, err = cli(capfd, *args, "--restart")
    assert code == 0 and "resuming" not in err and not checkpoint.exists()
    assert read_record(output).results == resumed.results
    fails(capfd, *args, "--resume", "--restart", words=["--resume continues", "--restart deletes"])


def test_ctrl_c_before_anything_finished_says_nothing_was_saved(tmp_path, capfd, monkeypatch):
    root = make_folder(tmp_path / "val", {A: [1]})
    interrupt_on_batch(monkeypatch, 1)
    code, _out, err = cli(capfd, *run_args(root, tmp_path / "r.json"))
    assert code == 130 and "interrupted: no chunk finished, nothing saved; run the command again" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]


def test_skip_with_every_image_bad_is_an_error_and_writes_nothing(tmp_path, capfd):
    root = tmp_path / "val" / A
    root.mkdir(parents=True)
    for kind in ("empty", "not-an-image"):
        (root / f"{kind}.JPEG").write_bytes(BAD_IMAGES[kind][0]())
    fails(capfd, *run_args(tmp_path / "val", tmp_path / "r.json", "--on-bad-image", "skip"),
          words=["no image could be scored: all 2 image(s)", "unreadable and skipped", "nothing was written"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]  # no record, no checkpoint


def test_a_nan_record_is_refused_when_written_and_fails_check(tmp_path, capfd):
    from helpers.records import make_record

    good = good_record(tmp_path / "good.json")
    with pytest.raises(RecordError, match="resnet50 / origin: error is nan/7.0"):
        results.write_record(make_record({"resnet50": {"origin": (float("nan"), 7.0)}}), tmp_path / "nan.json")
    nan = json.loads(good.read_text())
    nan["results"][0]["top1_err"] = float("nan")  # as a NaN run used to be written
    (tmp_path / "nan.json").write_text(json.dumps(nan))
    code, out, _err = cli(capfd, "check", "--results", tmp_path / "nan.json", "--against", good)
    assert code == 1 and "INVALID" in out and "invalid: 1 result(s) are NaN or infinite" in out


def test_check_fails_when_the_new_record_lacks_pairs(tmp_path, capfd):
    from helpers.records import make_record

    old = results.write_record(make_record({"resnet50": {"origin": (24.0, 7.0), "rgb+50": (28.0, 9.0)}}),
                               tmp_path / "old.json")
    new = results.write_record(make_record({"resnet50": {"origin": (24.0, 7.0)}}), tmp_path / "new.json")
    code, out, _err = cli(capfd, "check", "--results", new, "--against", old)
    assert code == 1 and "MISSING" in out
    assert "missing: 1 result(s) of the recorded record are not in the new one (e.g. resnet50 / rgb+50)" in out
    assert cli(capfd, "check", "--results", old, "--against", new)[0] == 0  # extra new pairs are fine


def test_check_drop_without_origin_is_one_line(tmp_path, capfd):
    from helpers.records import make_record

    old = results.write_record(make_record({"resnet50": {"rgb+50": (28.0, 9.0)}}), tmp_path / "old.json")
    fails(capfd, "check", "--results", old, "--against", old, "--metric", "drop",
          words=[f"{old}: --metric drop needs the origin result of resnet50"])


def test_check_either_way_labels_an_improvement_as_such(tmp_path, capfd):
    from helpers.records import make_record

    old = results.write_record(make_record({"resnet50": {"origin": (24.0, 7.0)}}), tmp_path / "old.json")
    new = results.write_record(make_record({"resnet50": {"origin": (20.0, 7.0)}}), tmp_path / "new.json")
    code, out, _err = cli(capfd, "check", "--results", new, "--against", old, "--either-way")
    assert code == 1 and "IMPROVED" in out and "REGRESSION" not in out
    assert "change (--either-way): 1 of 1 result(s) beyond 0.5 points" in out


def test_the_same_model_twice_gives_two_columns(tmp_path, capfd, resnet18_checkpoint):
    root = make_folder(tmp_path / "val", {A: [1]})
    args = without(RUN, "--weights")
    out = works(capfd, *args, "--model", "resnet18", "--weights", "random", "--weights", resnet18_checkpoint,
                "--data", root, "--output", tmp_path / "r.json")
    record = read_record(tmp_path / "r.json")
    assert list(record.models) == ["resnet18[random]", "resnet18[resnet18.pth]"]
    assert [m["weights"] for m in record.models.values()] == ["random", str(resnet18_checkpoint)]
    assert "resnet18[resnet18.pth]" in out
    fails(capfd, *args, "--model", "resnet18", "--data", root, words=["--model resnet18 is given twice"])


def test_timm_weights_offline_fail_fast(tmp_path, capfd, monkeypatch):
    """No network and the opt-in probe (IBNBENCH_HUB_PROBE=1): huggingface_hub goes offline at once for timm's
    download instead of retrying for about a minute, and only for it."""
    pytest.importorskip("timm")
    from huggingface_hub import constants

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr("socket.create_connection", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setenv("IBNBENCH_HUB_PROBE", "1")
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *without(RUN, "--weights", "--model"), "--model", "timm:resnet18", "--data", root,
          words=["timm:resnet18: cannot fetch timm's pretrained weights", "--weights PATH"])
    assert not constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ  # the process is left as it was


@pytest.mark.parametrize("args, words", [
    (["--conditions", ","], ["no conditions selected from suite 'table1'"]),
    (["--chunk-size", "0"], ["--chunk-size must be at least 1 image, not 0"]),
    (["--preprocessing", "resize=274,crop"], ["--preprocessing 'resize=274,crop'", "KEY=VALUE"]),
    (["--preprocessing", "mean=0.5,std=0.5"], ["0..1 scale"]),
    (["--preprocessing", "a=1", "--preprocessing", "b=1"], ["--preprocessing: give one for all models or one per"]),
])
def test_bad_run_options(tmp_path, capfd, args, words):
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *without(RUN, "--conditions"), *(["--conditions", "origin"] if "--conditions" not in args else []),
          *args, "--data", root, words=words)


def test_weights_that_are_a_text_file(tmp_path, capfd):
    text = tmp_path / "weights.txt"
    text.write_text("a\nb\n")  # torch.load raised IndexError: pop from empty list on this
    root = make_folder(tmp_path / "val", {A: [1]})
    line = fails(capfd, *without(RUN, "--weights"), "--weights", text, "--data", root,
                 words=[f"{text}: not a readable PyTorch checkpoint (neither a zip archive nor a pickle"])
    assert "IndexError" not in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_suite_with_a_non_finite_number(tmp_path, capfd, value):
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[conditions]]\nid = "x"\nop = "contrast"\nfactor = {value}\n')
    fails(capfd, "suites", suite, words=[str(suite), "field 'factor': expected a finite number"])


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_records_and_checkpoints_follow_the_umask(tmp_path, capfd, monkeypatch, umask):
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    output = tmp_path / "r.json"
    old = os.umask(umask)
    try:
        interrupt_on_batch(monkeypatch, 2)
        assert cli(capfd, *[*without(run_args(root, output), "--batch-size"), "--batch-size", "1"])[0] == 130
        monkeypatch.undo()
        works(capfd, *run_args(root, output), "--resume")
    finally:
        os.umask(old)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not output.with_name(".r.json.rank0.resume.pt").exists()


def test_checkpoint_mode_follows_the_umask(tmp_path):
    from ibnbench.eval.checkpoint import Checkpoint
    from ibnbench.eval.engine import EvalState

    old = os.umask(0o002)
    try:
        checkpoint = Checkpoint(tmp_path / "c.pt", {})
        checkpoint.save(EvalState(2, [("m", "origin")], torch.device("cpu")), {})
    finally:
        os.umask(old)
    assert checkpoint.path.stat().st_mode & 0o777 == 0o664


def write_factory(folder: Path, declared: str | None = None) -> str:
    """A module ``tinyfactory`` with ``net()`` (resnet18), optionally declaring its preprocessing."""
    (folder / "tinyfactory.py").write_text(
        "import torchvision\n\n\ndef net():\n    return torchvision.models.resnet18()\n"
        + (f"\n\nnet.preprocessing = {declared!r}\n" if declared else ""))
    return "tinyfactory:net"


def test_preprocessing_assumed_declared_or_given(tmp_path, capfd, monkeypatch):
    root = make_folder(tmp_path / "val", {A: [1]})
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = write_factory(tmp_path)
    args = [*without(RUN, "--model"), "--model", spec, "--data", root]
    code, _out, err = cli(capfd, *args, "--output", tmp_path / "assumed.json")
    assert code == 0 and (f"note: {spec}: preprocessing assumed: torchvision's ImageNet default (resize 256, "
                          "crop 224, imagenet mean/std); pass --preprocessing") in err
    assert read_record(tmp_path / "assumed.json").models[spec]["preprocessing"]["source"] == "default (assumed)"

    code, _out, err = cli(capfd, *args, "--preprocessing", "resize=72,crop=64,mean=127,std=128,interpolation=bicubic",
                          "--output", tmp_path / "given.json")
    given = read_record(tmp_path / "given.json").models[spec]["preprocessing"]
    assert code == 0 and "note:" not in err
    assert given == {"resize": 72, "crop": 64, "mean": [127.0] * 3, "std": [128.0] * 3, "interpolation": "bicubic",
                     "convention": "(x-127)/128",
                     "source": "--preprocessing resize=72,crop=64,mean=127,std=128,interpolation=bicubic"}

    import sys as system

    system.modules.pop("tinyfactory", None)
    write_factory(tmp_path, declared="resize=80,crop=64")
    code, _out, err = cli(capfd, *args, "--output", tmp_path / "declared.json")
    declared = read_record(tmp_path / "declared.json").models[spec]["preprocessing"]
    assert code == 0 and "note:" not in err
    assert (declared["resize"], declared["crop"], declared["source"]) == (80, 64, f"declared by {spec}")
    system.modules.pop("tinyfactory", None)


def test_write_failure_after_the_run_still_prints_the_table(tmp_path, capfd, monkeypatch):
    root = make_folder(tmp_path / "val", {A: [1]})
    monkeypatch.setattr(results.os, "fsync", no_space)
    code, out, err = cli(capfd, *run_args(root, tmp_path / "r.json"))
    assert code == 2 and f"cannot write record {tmp_path / 'r.json'}: No space left on device" in err
    assert "| origin" in out and "resnet18" in out  # the numbers are not lost with the file


def test_a_piped_run_prints_progress_lines_and_images_per_second(tmp_path):
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    done = ibnbench_process(*run_args(root, tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert re.search(r"^evaluate: 2/2 images in \d\d:\d\d, [\d.]+ images/s$", done.stderr, re.MULTILINE), done.stderr
    summary = r"^2 images x 1 model\(s\) x 1 condition\(s\) in [\d.]+ s: [\d.]+ images/s$"
    assert re.search(summary, done.stdout, re.MULTILINE), done.stdout


def test_plain_progress_lines_when_not_a_terminal():
    from ibnbench.progress import Progress

    stream = io.StringIO()  # not a terminal, like a CI log
    with Progress(10, "evaluate", interval=0, stream=stream, initial=5) as progress:
        progress.update(4)
        progress.update(6)
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"evaluate: 9/15 images, [\d.]+ images/s, ETA \d\d:\d\d", lines[0]), lines
    assert re.fullmatch(r"evaluate: 15/15 images in \d\d:\d\d, [\d.]+ images/s", lines[-1]), lines
    assert len(lines) == 2  # the last update leaves the line to close()


BROKEN_MODEL = '''
import torch


class Broken(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x, "a string"])  # a bug: TypeError inside the forward


def build(**kwargs):
    return Broken()
'''


def test_a_bug_inside_a_model_reaches_the_user_with_its_traceback(tmp_path):
    """A TypeError raised inside a model's forward is a bug, not bad input: the CLI lets it through with its
    traceback (only ibnbench's own errors become one line)."""
    (tmp_path / "broken_model.py").write_text(BROKEN_MODEL)
    root = make_folder(tmp_path / "val", {A: [1]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "ibnbench.cli", *RUN[:1], "--model", "broken_model:build",
                           *RUN[3:], "--data", str(root), "--output", str(tmp_path / "r.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback (most recent call last)" in done.stderr and "TypeError" in done.stderr.splitlines()[-1]
    assert 'broken_model.py", line 7, in forward' in done.stderr  # the frame where the bug is
    assert "error:" not in done.stderr and not (tmp_path / "r.json").exists()


# -------------------------------------------------------- third round (issue 24): the run side, hostile input

ODD_MODELS = '''
import torch


class Net(torch.nn.Module):
    """Logits of the pixels' channel means: NaN from forward number ``nan_from`` on."""

    def __init__(self, nan_from):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls, self.nan_from = 0, nan_from

    def forward(self, x):
        self.calls += 1
        logits = x.mean(dim=(2, 3)).repeat(1, 334)[:, :1000] * self.scale
        return logits * float("nan") if self.calls >= self.nan_from else logits


def always_nan():
    return Net(1)


def nan_from_third():
    return Net(3)


def ten_classes():
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10))
'''


@pytest.fixture
def odd_models(tmp_path, monkeypatch):
    """``oddmodels:<factory>`` specs (``ODD_MODELS``) on the import path; returns the run arguments without a model."""
    (tmp_path / "oddmodels.py").write_text(ODD_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "oddmodels", raising=False)
    yield without(RUN, "--model")
    sys.modules.pop("oddmodels", None)


def test_nan_logits_stop_the_run_naming_model_and_condition(tmp_path, capfd, odd_models):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3]})
    fails(capfd, *odd_models, "--model", "oddmodels:always_nan", "--data", root, "--output", tmp_path / "r.json",
          words=["model oddmodels:always_nan: non-finite logits (NaN or inf) for 3 image(s) under condition origin"])
    assert not (tmp_path / "r.json").exists()


def test_nan_logits_late_keep_the_chunks_checkpointed_before(tmp_path, capfd, odd_models):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3, 4]})
    args = [*without(odd_models, "--batch-size"), "--batch-size", "1", "--chunk-size", "1"]
    fails(capfd, *args, "--model", "oddmodels:nan_from_third", "--data", root, "--output", tmp_path / "r.json",
          words=["model oddmodels:nan_from_third: non-finite logits (NaN or inf) for 1 image(s)"])
    saved = torch.load(tmp_path / ".r.json.rank0.resume.pt", weights_only=False)
    assert saved["state"]["done"].tolist() == [True, True, False, False] and not (tmp_path / "r.json").exists()


def test_logits_of_the_wrong_width_are_one_line_at_the_first_batch(tmp_path, capfd, odd_models):
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *odd_models, "--model", "oddmodels:ten_classes", "--data", root, "--output", tmp_path / "r.json",
          words=["model oddmodels:ten_classes: returned [1, 10] for a batch of 1 images; expected logits of shape "
                 "[N, 1000]"])
    assert not (tmp_path / "r.json").exists()  # a 10-class model used to be scored on its 10 logits, exit 0


class _Logits(torch.nn.Module):
    """Logits 0 with class 3 ahead; ``fp32`` / ``reduced``: what class 0 gets in full / reduced precision."""

    def __init__(self, fp32: float, reduced: float):
        super().__init__()
        self.fp32, self.reduced = fp32, reduced

    def forward(self, x):
        logits = torch.zeros(len(x), 1000)
        logits[:, 3] = 1.0
        logits[:, 0] = self.reduced if torch.is_autocast_enabled("cpu") else self.fp32
        return logits


def _faults(model: torch.nn.Module, amp: str = "off", refine: float = 0.0, classes=None) -> tuple[list[int], int]:
    """Per-image fault codes of 8 images and the close calls left."""
    from ibnbench.eval.options import RunOptions
    from ibnbench.eval.runner import ModelRunner
    from ibnbench.zoo.meta import Preprocessing

    runner = ModelRunner(model, Preprocessing(), torch.device("cpu"),
                         RunOptions(device="cpu", amp=amp, refine=refine), classes)
    scores = runner.score(torch.zeros(8, 3, 8, 8), torch.full((8,), 3))
    return scores.fault.tolist(), int(runner.close_calls_left)


def test_reduced_precision_overflow_is_a_close_call_and_fp32_nan_a_fault():
    from ibnbench.eval.runner import BAD_LOGITS, FINE

    inf, nan = float("inf"), float("nan")
    assert _faults(_Logits(0.0, inf), "fp16", refine=0.0) == ([FINE] * 8, 8)  # left unrefined: counted, not blamed
    assert _faults(_Logits(0.0, inf), "fp16", refine=1.0) == ([FINE] * 8, 0)  # fp32 is finite: the model is fine
    faults, _left = _faults(_Logits(nan, nan), "fp16", refine=0.25)
    assert sorted(faults) == [FINE] * 6 + [BAD_LOGITS] * 2  # the two re-scored in fp32 are still NaN
    assert _faults(_Logits(nan, nan)) == ([BAD_LOGITS] * 8, 0)
    assert _faults(_Logits(-inf, -inf)) == ([BAD_LOGITS] * 8, 0)


def test_class_subset_minus_inf_is_by_design_inside_it_a_fault():
    from ibnbench.data.classes import ClassSubset
    from ibnbench.eval.runner import BAD_LOGITS, FINE

    outside = ClassSubset((1, 2, 3), "test")
    assert _faults(_Logits(float("nan"), 0.0), classes=outside) == ([FINE] * 8, 0)  # class 0 is masked to -inf
    inside = ClassSubset((0, 3), "test")
    assert _faults(_Logits(float("-inf"), 0.0), classes=inside) == ([BAD_LOGITS] * 8, 0)


def test_suite_number_beyond_float32_is_refused_and_overflowing_pixels_stop_the_run(tmp_path, capfd):
    huge = tmp_path / "huge.toml"
    huge.write_text('[[conditions]]\nid = "x"\nop = "brightness"\ndelta = 1e39\n')
    fails(capfd, "suites", huge, words=[str(huge), "field 'delta'", "float32"])
    root = make_folder(tmp_path / "val", {A: [1, 2]})
    fails(capfd, *without(RUN, "--conditions"), "--suite", huge, "--data", root, words=[str(huge), "float32"])
    steep = tmp_path / "steep.toml"  # every number fits float32, the condition's result does not
    steep.write_text('[[conditions]]\nid = "steep"\nop = "contrast"\nfactor = 3e38\n')
    fails(capfd, *without(RUN, "--conditions"), "--suite", steep, "--data", root, "--output", tmp_path / "r.json",
          words=["condition steep: 2 image(s) got non-finite pixels (NaN or inf) from it"])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("spec, words", [
    ("std=1e-300", ["--preprocessing 'std=1e-300'", "overflow float32"]),
    ("mean=1e39", ["overflow float32"]),
    ("crop=100000", ["--preprocessing 'crop=100000'", "crop must be 1 to 4096 pixels, not 100000"]),
    ("resize=5000", ["resize must be 1 to 4096 pixels"]),
])
def test_preprocessing_that_float32_or_memory_cannot_hold(tmp_path, capfd, monkeypatch, spec, words):
    root = make_folder(tmp_path / "val", {A: [1]})
    monkeypatch.setattr("ibnbench.eval.plan.create_model", lambda *a, **k: pytest.fail("a model was built"))
    fails(capfd, *RUN, "--preprocessing", spec, "--data", root, words=words)


def test_file_name_that_is_not_utf8_is_named_before_any_decode(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    odd = os.fsencode(root / A) + b"/caf\xe9\xff.JPEG"
    with open(odd, "wb") as f:
        f.write(small_jpeg())
    fails(capfd, *RUN, "--data", root, "--output", tmp_path / "r.json",
          words=[f"{odd!r}: file name is not UTF-8; rename it"])
    assert not (tmp_path / "r.json").exists()


def test_cache_that_is_a_file_or_empty(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    plain = tmp_path / "plain"
    plain.write_text("x")
    fails(capfd, *RUN, "--data", root, "--cache", plain, words=[f"--cache {plain}: {plain} is a file, not a folder"])
    fails(capfd, *RUN, "--data", root, "--cache", plain / "sub", words=[f"{plain} is a file, not a folder"])
    fails(capfd, *RUN, "--data", root, "--cache", "", words=["--cache: give a folder or gpu"])
    if Path("/proc/self").is_dir():  # Linux: a file system that takes no folder (root writes anywhere else)
        fails(capfd, *RUN, "--data", root, "--cache", "/proc/ibnbench-cache",
              words=["--cache /proc/ibnbench-cache: cannot keep the crop cache there (No such file or directory)"])
    fails(capfd, "bench", "--model", "resnet18", "--cache", plain, "--pipeline", "--data", root,
          words=[f"--cache {plain}"])


def test_output_that_is_not_a_record_is_kept(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    fails(capfd, *run_args(root, notes), words=[f"--output {notes}: an existing file that is not an ibnbench record"])
    assert notes.read_text() == "my notes\n"
    works(capfd, *run_args(root, tmp_path / "r.json"))
    works(capfd, *run_args(root, tmp_path / "r.json"))  # a record is replaced, as a rerun does
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # like /dev/null: the record's rename would replace the node itself
    fails(capfd, *run_args(root, pipe), words=[f"--output {pipe}: not a regular file"])
    assert pipe.is_fifo()


def test_late_bad_image_says_what_was_saved_and_how_to_go_on(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1, 2, 3, 4, 5, 6]})
    bad = root / A / val_name(99)  # last in sorted order, alone in the fourth batch of two
    bad.write_bytes(small_jpeg()[:400])
    output = tmp_path / "r.json"
    args = [*without(run_args(root, output), "--batch-size"), "--batch-size", "2", "--chunk-size", "4"]
    checkpoint = tmp_path / ".r.json.rank0.resume.pt"
    fails(capfd, *args, words=[f"{bad}: cannot decode", f"the images done before it are saved in {checkpoint}: "
                               "--resume --on-bad-image skip continues and skips unreadable images"])
    code, _out, err = cli(capfd, *args, "--resume", "--on-bad-image", "skip")
    assert code == 0 and f"resuming from {checkpoint}: 6 of 7 images already done" in err, err
    record = read_record(output)
    assert record.dataset["skipped"] == [f"{A}/{bad.name}"] and record.result("resnet18", "origin")["n_images"] == 6


@pytest.mark.parametrize("flag", ["--output", "--data", "--results-dir", "--labels", "--suite"])
def test_empty_path_options_are_refused_not_read_as_the_current_folder(tmp_path, capfd, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)  # where an empty --output or --results-dir used to put the record
    root = make_folder(tmp_path / "val", {A: [1]})
    args = [*RUN, "--data", root] if flag != "--data" else list(RUN)
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in [*args, flag, ""]])
    assert exited.value.code == 2
    assert f"argument {flag}: expected a path, not an empty string" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]


@pytest.mark.parametrize("spec, words", [
    ("", ["--preprocessing ''", "KEY=VALUE"]),
    ("resize=8,crop=300", ["crop 300 is larger than resize 8"]),
])
def test_preprocessing_empty_or_cropping_beyond_the_image(tmp_path, capfd, spec, words):
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *RUN, "--preprocessing", spec, "--data", root, "--output", tmp_path / "r.json", words=words)
    assert not (tmp_path / "r.json").exists()


def test_style_weights_for_a_style_the_suite_lacks(tmp_path, capfd):
    root = make_folder(tmp_path / "val", {A: [1]})
    for given, name in (("monnet=random", "monnet"), ("=random", "")):
        fails(capfd, *RUN, "--style-weights", given, "--data", root, "--output", tmp_path / "r.json",
              words=[f"--style-weights {name}=...: no style condition uses style {name!r} (its styles: monet)"])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flag, what", [("--labels", "labels file"), ("--classes", "class-list file")])
def test_list_file_options_given_a_folder_say_so(tmp_path, capfd, flag, what):
    root = make_folder(tmp_path / "val", {A: [1]})
    fails(capfd, *RUN, "--data", root, flag, tmp_path, words=[f"{what} {tmp_path} is a folder"])


def test_output_cut_off_by_its_pipe_is_quiet():
    """``ibnbench models | head -1``: the reader closes the pipe early; no BrokenPipeError traceback, exit 141."""
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    listing = subprocess.run([sys.executable, "-m", "ibnbench.cli", "models"], stdout=reader.stdin,
                             stderr=subprocess.PIPE, text=True, check=False)
    reader.stdin.close()
    reader.wait()
    assert "Traceback" not in listing.stderr and "BrokenPipe" not in listing.stderr, listing.stderr
    assert listing.returncode in (0, 141)  # 0 only if the whole listing fitted in the pipe before head left


def test_summary_rate_of_a_slow_run_is_not_zero():
    """A run slower than one image a second (ImageNet-P's 31 frames per image on a CPU) prints its rate, not 0.0."""
    from ibnbench.cli.evaluate import _rate

    assert (_rate(0.0173), _rate(0.5), _rate(12.345)) == ("0.017", "0.5", "12.3")

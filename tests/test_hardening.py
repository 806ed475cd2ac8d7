"""Bad input through every command: each case exits 2 with one line naming the file/option and the reason
(no traceback), or exits 0 where the input is unusual but valid (CMYK, greyscale, 16-bit PNG, symlink loops).

The corpus is generated in tmp_path: tiny synthetic JPEGs/PNGs, hand-made headers, corrupt records and suites.
Runs use resnet18 with random weights, one condition, no worker processes and the CPU, so each case is fast.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibnbench import data, results
from ibnbench.cli import main
from ibnbench.models import create_model
from ibnbench.results import read_record
from test_data import A, make_folder, picture, val_name, write_image

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
    with pytest.raises(data.BadImageError, match="too large to decode"):
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
    from records import make_record

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
    fails(capfd, *without(RUN, "--batch-size"), "--batch-size", "0", "--data", root, words=["batch_size must be >= 1"])
    fails(capfd, *RUN, "--limit", "0", "--data", root, words=["limit must be a positive number of images, got 0"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "cpu", "--batch-size", "-1",
          words=["--batch-size and --iters must be at least 1, got -1"])
    fails(capfd, "bench", "--model", "resnet18", "--device", "nonsense", "--iters", "1",
          words=["--device 'nonsense' is not a device name"])
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", root, "--split-classes",
          "--device", "gpu0", words=["--device 'gpu0' is not a device name"])
    fails(capfd, "divergence", "--model", "resnet18", "--weights", "random", "--data", make_folder(tmp_path / "two", {A: [1, 2]}),
          "--condition", "rgb+50", "--device", "cpu", "--layers", "layer9", words=["--layers: layer9 not in the model"])
    fails(capfd, "stylize", "--style", "monet", "--weights", "random", "--data", root, "--out", root / "inside",
          "--device", "cpu", words=["--out", "must lie outside --data"])


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

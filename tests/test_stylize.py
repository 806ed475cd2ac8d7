"""``ibnbench stylize``: a stylised copy of a dataset, same layout, resumable, atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png, read_file, write_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import resize

from ibnbench import io as files
from ibnbench.cli import main
from ibnbench.conditions.style import stylize_batch
from ibnbench.io import write_atomic
from ibnbench.tools import stylize as stylize_tool
from ibnbench.tools.stylize import stylize
from ibnbench.zoo import generators
from ibnbench.zoo.generators import load_generator

SIZE = 32  # shorter side for the tests (256 by default): keeps the generator fast on CPU
MANIFEST = ["stylize.json"]  # sorts after the class folders
FILES = {"n01440764/a.JPEG": (40, 60), "n01440764/b.JPEG": (50, 50), "n01443537/c.JPEG": (64, 48),
         "n01443537/d.png": (36, 44)}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A small ImageFolder-style set of JPEGs and one PNG, in ``tmp_path/val``."""
    root = tmp_path / "val"
    generator = torch.Generator().manual_seed(0)
    for relative, (height, width) in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        encoded = encode_png(image) if relative.endswith(".png") else encode_jpeg(image, quality=95)
        write_file(str(root / relative), encoded)
    return root


def run(data: Path, out: Path, **kwargs) -> dict:
    return stylize("monet", data, out, weights="random", device="cpu", size=SIZE, workers=0, progress=False,
                   **kwargs)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cli_round_trip(dataset, tmp_path, capsys):
    out = tmp_path / "monet"
    argv = ["stylize", "--style", "monet", "--data", str(dataset), "--out", str(out), "--weights", "random",
            "--device", "cpu", "--size", str(SIZE), "--workers", "0"]
    assert main(argv) == 0
    assert "4 written, 0 already present, 4 in all" in capsys.readouterr().out
    assert files_under(out) == sorted(FILES) + MANIFEST
    generator = load_generator("monet", "random")
    for relative, (height, width) in FILES.items():
        source = decode_image(read_file(str(dataset / relative)), mode=ImageReadMode.RGB).float()
        expected = stylize_batch(generator, resize(source, [SIZE], antialias=True)[None])[0].round().to(torch.uint8)
        raw = (out / relative).read_bytes()
        if relative.endswith(".png"):
            assert raw.startswith(b"\x89PNG") and torch.equal(decode_image(read_file(str(out / relative))), expected)
        else:  # the same bytes as encoding the expected image at JPEG quality 95
            assert raw == encode_jpeg(expected, quality=95).numpy().tobytes()
        assert min(expected.shape[1:]) == SIZE
        assert round(expected.shape[2] / expected.shape[1], 1) == round(width / height, 1)  # aspect kept
    assert main(argv) == 0
    assert "0 written, 4 already present" in capsys.readouterr().out


def test_limit_then_resume_processes_only_the_rest(dataset, tmp_path, monkeypatch):
    out = tmp_path / "monet"
    calls = []

    def counting(generator, x):
        calls.append(x.shape)
        return stylize_batch(generator, x)

    monkeypatch.setattr(stylize_tool, "stylize_batch", counting)
    assert run(dataset, out, limit=2) == {"total": 2, "written": 2, "skipped": 0, "out": str(out)}
    assert files_under(out) == sorted(FILES)[:2] + MANIFEST and len(calls) == 2
    first = {p: (out / p).stat().st_mtime_ns for p in files_under(out) if p not in MANIFEST}
    assert run(dataset, out)["written"] == 2 and len(calls) == 4
    assert files_under(out) == sorted(FILES) + MANIFEST
    assert all((out / p).stat().st_mtime_ns == mtime for p, mtime in first.items())


def test_interrupted_run_leaves_no_partial_file_and_resumes(dataset, tmp_path, monkeypatch):
    out = tmp_path / "monet"
    encode = stylize_tool._encode
    encoded = []

    def interrupt_on_third(image, suffix):
        if len(encoded) == 2:
            raise KeyboardInterrupt
        encoded.append(suffix)
        return encode(image, suffix)

    monkeypatch.setattr(stylize_tool, "_encode", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, out)
    assert files_under(out) == sorted(FILES)[:2] + MANIFEST
    monkeypatch.setattr(stylize_tool, "_encode", encode)
    assert run(dataset, out) == {"total": 4, "written": 2, "skipped": 2, "out": str(out)}
    assert files_under(out) == sorted(FILES) + MANIFEST


def test_failed_rename_leaves_neither_target_nor_temporary(tmp_path, monkeypatch):
    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "x" / "a.JPEG", b"data")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("case, message", [
    ("missing data", r"--data .*absent is not a folder"),
    ("out inside data", r"--out .* must lie outside --data"),
    ("no images", r"--data .* holds no .jpg/.jpeg/.png images"),
])
def test_bad_arguments(tmp_path, dataset, case, message):
    data, out = {"missing data": (tmp_path / "absent", tmp_path / "o"),
                 "out inside data": (dataset, dataset / "monet"),
                 "no images": (tmp_path / "o", tmp_path / "p")}[case]
    if case == "no images":
        data.mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        run(data, out)


def test_cli_reports_unavailable_official_weights(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv(generators.WEIGHTS_DIR_ENV, raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    argv = ["stylize", "--style", "monet", "--data", str(dataset), "--out", str(tmp_path / "o"), "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ibnbench stylize: error: style 'monet': cannot download http://efrosgans.eecs.berkeley.edu/cyclegan/" \
           "pretrained_models/style_monet.pth" in err and "style_monet.pth, or pass --weights PATH" in err
    assert main([*argv[:2], "picasso", *argv[3:]]) == 2
    assert "unknown style 'picasso'" in capsys.readouterr().err


def test_square_resize_round_trips_and_is_recorded(dataset, tmp_path, capsys):
    """--resize square: SIZE x SIZE bicubic before the generator (the CycleGAN authors' test script); the folder's
    manifest and the record of a run reading it say so; another resize into the same folder is refused."""
    out = tmp_path / "square"
    argv = ["stylize", "--style", "monet", "--data", str(dataset), "--out", str(out), "--weights", "random",
            "--device", "cpu", "--size", str(SIZE), "--workers", "0", "--resize", "square"]
    assert main(argv) == 0
    generator = load_generator("monet", "random")
    for relative in FILES:
        source = decode_image(read_file(str(dataset / relative)), mode=ImageReadMode.RGB).float()
        square = resize(source, [SIZE, SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)
        expected = stylize_batch(generator, square[None])[0].round().to(torch.uint8)
        written = decode_image(read_file(str(out / relative)))
        assert written.shape == (3, SIZE, SIZE)
        if relative.endswith(".png"):
            assert torch.equal(written, expected)
        else:
            assert (out / relative).read_bytes() == encode_jpeg(expected, quality=95).numpy().tobytes()
    manifest = json.loads((out / "stylize.json").read_text())
    assert manifest == {"style": "monet", "weights": "random", "sha256": None, "resize": "square", "size": SIZE,
                        "interpolation": "bicubic"}
    capsys.readouterr()
    (out / "n01440764" / "a.JPEG").unlink()
    assert main([*argv[:-1], "shorter"]) == 2
    assert "was stylised with other settings (resize 'square', now 'shorter', interpolation 'bicubic', " \
           "now 'bilinear'); use another --out" in capsys.readouterr().err

    suite = tmp_path / "square.toml"
    suite.write_text(f'[[conditions]]\nid = "origin"\nop = "identity"\n\n'
                     f'[[conditions]]\nid = "monet-square"\nop = "dir"\nroot = "{out}"\n\n'
                     f'[[conditions]]\nid = "monet"\nop = "style"\nstyle = "monet"\nweights = "random"\n')
    assert main(["stylize", *argv[1:]]) == 0  # completes the folder with the same settings
    record_path = tmp_path / "r.json"
    assert main(["run", "--model", "resnet18", "--weights", "random", "--data", str(dataset), "--suite", str(suite),
                 "--device", "cpu", "--workers", "0", "--output", str(record_path)]) == 0
    conditions = {c["id"]: c for c in json.loads(record_path.read_text())["conditions"]}
    assert conditions["monet-square"]["stylized"]["resize"] == "square"
    assert conditions["monet"]["style_input"] == "the classifier's 224x224 centre crop as it is (no resize)"


def test_pre_rendered_crops_stand_in_for_the_generator(dataset, tmp_path, capsys):
    """Issue 25, build item 3: ``stylize --resize crop`` renders the classifier's crop once, losslessly, and
    ``run --style-dir monet=OUT`` reads it instead of running the generator: the images equal the generator's
    output on the loader's crops up to the storage rounding (half a grey level), the run's top-5 answers and
    probabilities equal those of the run with the generator (quantised condition: both rounded alike), the suite
    hash stays, and the record names the folder."""
    from ibnbench.conditions.style import Style
    from ibnbench.data.discovery import open_dataset
    from ibnbench.data.geometry import Geometry
    from ibnbench.data.loader import make_loader
    from ibnbench.results.predictions import for_record
    from ibnbench.results.record import read_record

    out = tmp_path / "rendered"
    assert main(["stylize", "--style", "monet", "--data", str(dataset), "--out", str(out), "--weights", "random",
                 "--device", "cpu", "--workers", "0", "--resize", "crop", "--size", "40", "--crop", "32"]) == 0
    assert files_under(out) == sorted(str(Path(f).with_suffix(".png")) for f in FILES) + MANIFEST
    assert json.loads((out / "stylize.json").read_text())["crop"] == 32

    val = open_dataset(dataset)
    on_the_fly = Style("monet", style="monet", weights="random", generators=generators)
    rendered = Style("monet", style="monet", weights="random", generators=generators, rendered=out)
    assert rendered.requires == [] and rendered.spec == on_the_fly.spec
    geometry = Geometry(40, 32)  # small crops: the generator is slow on a CPU
    (crops,) = make_loader(val, [geometry], batch_size=8, workers=0)
    (read,) = make_loader(rendered.source(val), [geometry], batch_size=8, workers=0)
    key = geometry.key
    expected, got = on_the_fly(crops["crops"][key].float()), rendered(read["crops"][key].float())
    assert (got - expected).abs().max() <= 0.5 + 1e-3 and (got - expected).abs().mean() > 0.1  # rounded, not equal

    suite = tmp_path / "monet.toml"
    suite.write_text('[[conditions]]\nid = "monet"\nop = "style"\nstyle = "monet"\nweights = "random"\n'
                     'quantize = true\n')
    records = {}
    for name, extra in (("generator", []), ("rendered", ["--style-dir", f"monet={out}"])):
        assert main(["run", "--model", "resnet18", "--weights", "random", "--data", str(dataset), "--suite",
                     str(suite), "--device", "cpu", "--workers", "0", "--output", str(tmp_path / f"{name}.json"),
                     "--preprocessing", "resize=40,crop=32", *extra]) == 0
        records[name] = read_record(tmp_path / f"{name}.json")
    generator_run, rendered_run = records["generator"], records["rendered"]
    assert generator_run.suite_hash == rendered_run.suite_hash
    assert rendered_run.conditions[0]["rendered"]["root"] == str(out)
    assert "rendered" not in generator_run.conditions[0]
    a, b = for_record(generator_run), for_record(rendered_run)
    assert np.array_equal(a.top5_index, b.top5_index)
    assert np.abs(a.top5_prob.astype(np.float64) - b.top5_prob.astype(np.float64)).max() <= 1e-3


def test_style_dir_is_refused_where_it_cannot_stand_for_the_condition(dataset, tmp_path, capsys):
    shorter = tmp_path / "shorter"
    run(dataset, shorter)
    common = ["run", "--model", "resnet18", "--weights", "random", "--data", str(dataset), "--conditions", "monet",
              "--style-weights", "monet=random", "--device", "cpu", "--workers", "0"]
    assert main([*common, "--style-dir", f"monet={shorter}"]) == 2
    assert "does not hold the classifier's crops stylised for condition 'monet'" in capsys.readouterr().err
    assert main([*common, "--style-dir", f"cezanne={shorter}"]) == 2
    assert "--style-dir cezanne=...: no style condition uses style 'cezanne'" in capsys.readouterr().err
    assert main([*common, "--style-dir", "monet"]) == 2
    assert "--style-dir takes STYLE=DIR" in capsys.readouterr().err
    crops = tmp_path / "crops"
    assert main(["stylize", "--style", "monet", "--data", str(dataset), "--out", str(crops), "--weights", "random",
                 "--device", "cpu", "--workers", "0", "--resize", "crop", "--size", "40", "--crop", "32"]) == 0
    capsys.readouterr()
    assert main([*common, "--style-dir", f"monet={crops}"]) == 2
    assert ("its images are the crops bilinear40-crop32, model resnet18 takes bilinear256-crop224"
            in capsys.readouterr().err)

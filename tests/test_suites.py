"""Suites as data: shipped suites, content hash, selection, clear errors, and lookup from installs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ibnbench
from ibnbench.cli import main
from ibnbench.conditions.suite import list_suites
from ibnbench.errors import SuiteError
from ibnbench.eval.plan import load_suite

ROOT = Path(__file__).resolve().parents[1]
# The definitions behind published numbers: a change here must be deliberate (and gives new results).
TABLE1_SHA256 = "e7f31e06882cff90f84baf9dce6ae234c0a329687ac10d5e2c20c872db4e3d49"

MINIMAL = """
description = "two conditions"
clip = true

[[conditions]]
id = "origin"
op = "identity"

[[conditions]]
id = "r+50"
label = "R+50"
op = "shift"
offsets = [50, 0, 0]
"""


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_suites_are_listed():
    assert {"table1", "table1-clipped", "sweep"} <= set(list_suites())


def test_table1_definitions():
    suite = load_suite("table1")
    assert suite.name == "table1" and suite.path.name == "table1.toml"
    assert suite.ids == ["origin", "rgb+50", "r+50", "std*1.5", "monet"]
    assert [c.spec for c in suite][1:4] == [
        {"id": "rgb+50", "op": "shift", "offsets": [50.0, 50.0, 50.0], "clip": False, "quantize": False},
        {"id": "r+50", "op": "shift", "offsets": [50.0, 0.0, 0.0], "clip": False, "quantize": False},
        {"id": "std*1.5", "op": "contrast", "factor": 1.5, "clip": False, "quantize": False}]
    assert suite["monet"].style == "monet" and suite["monet"].weights == "official"
    assert "not clipped" in suite.path.read_text().lower() and "0.00/0.00" in suite.path.read_text()
    assert suite.hash == TABLE1_SHA256


def test_table1_clipped_differs_only_by_clip():
    plain, clipped = load_suite("table1"), load_suite("table1-clipped")
    assert clipped.ids == plain.ids and clipped.hash != plain.hash
    assert [{**c.spec, "clip": False} for c in clipped] == [c.spec for c in plain]
    assert all(c.clip for c in clipped)


def test_sweep_grids():
    suite = load_suite("sweep")
    by_op: dict[str, list] = {}
    for c in suite:
        by_op.setdefault(c.op, []).append(c)
    assert sorted(c.delta for c in by_op["brightness"]) == [-100, -75, -50, -25, 25, 50, 75, 100]
    shifts = {tuple(c.offsets) for c in by_op["shift"]}
    for channel in range(3):
        for delta in (-100, -75, -50, 50, 75, 100):
            offsets = [0.0, 0.0, 0.0]
            offsets[channel] = float(delta)
            assert tuple(offsets) in shifts
    factors = sorted(c.factor for c in by_op["contrast"])
    assert factors[0] == 0.25 and factors[-1] == 2.0
    assert [c.style for c in by_op["style"]] == ["monet", "cezanne", "ukiyoe", "vangogh"]
    assert suite.ids[0] == "origin" and all(c.clip for c in suite)


def test_hash_covers_definitions_not_formatting(tmp_path):
    base = load_suite(write(tmp_path, MINIMAL))
    reformatted = MINIMAL.replace("[50, 0, 0]", "[50.0, 0.0, 0.0]").replace('label = "R+50"', 'label = "red +50"')
    assert load_suite(write(tmp_path, "# a comment\n" + reformatted, "b.toml")).hash == base.hash
    assert load_suite(write(tmp_path, MINIMAL.replace("[50, 0, 0]", "[51, 0, 0]"), "c.toml")).hash != base.hash
    assert load_suite(write(tmp_path, MINIMAL.replace("clip = true", "clip = false"), "d.toml")).hash != base.hash


def test_condition_overrides_suite_clip(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL.replace('offsets = [50, 0, 0]', 'offsets = [50, 0, 0]\nclip = false')))
    assert suite["origin"].clip is True and suite["r+50"].clip is False


def test_select_keeps_suite_order_and_hash():
    suite = load_suite("table1")
    selected = suite.select(["std*1.5", "origin"])
    assert selected.ids == ["origin", "std*1.5"] and selected.hash == suite.hash


def test_unknown_condition_lists_available():
    with pytest.raises(SuiteError, match=r"suite 'table1' has no condition 'rgb\+40'; available: origin, rgb\+50, "
                                         r"r\+50, std\*1.5, monet"):
        load_suite("table1").select(["origin", "rgb+40"])


def test_unknown_suite_lists_shipped():
    with pytest.raises(SuiteError, match=r"unknown suite 'table2'; shipped suites: .*table1, table1-clipped"):
        load_suite("table2")
    with pytest.raises(FileNotFoundError, match="suite file .*nowhere.toml does not exist"):
        load_suite("nowhere.toml")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('op = "shift"', 'op = "shift'), r"mine.toml: not valid TOML \(.*at line 12"),
    (lambda t: t.replace("offsets = [50, 0, 0]", "offset = [50, 0, 0]"),
     r"mine.toml: condition 'r\+50': field 'offset' is not known for op 'shift' \(expected: offsets, "),
    (lambda t: t.replace("offsets = [50, 0, 0]", "offsets = [50, 0]"),
     r"mine.toml: condition 'r\+50': field 'offsets': expected 3 numbers \[r, g, b\], got \[50, 0\]"),
    (lambda t: t.replace("offsets = [50, 0, 0]", ""), r"mine.toml: condition 'r\+50': field 'offsets' is required"),
    (lambda t: t.replace('op = "shift"', 'op = "tint"'),
     r"mine.toml: condition 'r\+50': field 'op': expected one of identity, shift, brightness, contrast, style, "
     r"dir, corruption, c-bar-corruption, perturbation, got 'tint'"),
    (lambda t: t.replace('id = "r+50"', 'id = "r+50,g"'), r"mine.toml: condition #2: field 'id': expected a name"),
    (lambda t: t.replace('id = "r+50"', 'id = "origin"'), r"mine.toml: condition 'origin': field 'id': used twice"),
    (lambda t: t.replace("clip = true", 'clip = "yes"'), r"mine.toml: field 'clip': expected true or false"),
    (lambda t: t.replace('offsets = [50, 0, 0]', 'offsets = [50, 0, 0]\nquantize = 1'),
     r"mine.toml: condition 'r\+50': field 'quantize': expected true or false, got 1$"),
    (lambda t: t.replace('label = "R+50"', "label = 3"), r"mine.toml: condition 'r\+50': field 'label': expected"),
    (lambda t: t.replace('description', 'title'), r"mine.toml: field 'title' is not known"),
    (lambda t: t.split("[[conditions]]")[0], r"mine.toml: field 'conditions': expected a non-empty"),
    (lambda t: t.replace('op = "identity"', 'op = "style"\nstyle = "picasso"'),
     r"mine.toml: condition 'origin': field 'style': unknown style 'picasso'"),
])
def test_malformed_suite_names_file_condition_and_field(tmp_path, edit, message):
    with pytest.raises(SuiteError, match=message) as error:
        load_suite(write(tmp_path, edit(MINIMAL)))
    assert str(error.value).count("mine.toml") == 1 and "\n" not in str(error.value)


def test_style_weights_override_is_part_of_the_definition():
    official, random = load_suite("table1"), load_suite("table1", style_weights={"monet": "random"})
    assert random["monet"].weights == "random" and random["monet"].requires == []
    assert random.hash != official.hash


def test_dir_root_is_relative_to_the_suite_file(tmp_path):
    (tmp_path / "monet-val").mkdir()
    text = 'description = "pre-stylised"\n[[conditions]]\nid = "monet"\nop = "dir"\nroot = "monet-val"\n'
    condition = load_suite(write(tmp_path, text))["monet"]
    assert condition.kind == "dir" and condition.root == tmp_path / "monet-val" and condition.requires == []


def test_cli_lists_suites_and_conditions(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for name in ("table1", "table1-clipped", "sweep"):
        assert f"{name}: " in out
    assert "std*1.5" in out and "contrast factor=1.5" in out and "Ukiyo-e" in out
    assert load_suite("table1").hash[:16] in out


def test_cli_reports_unknown_suite(capsys):
    assert main(["suites", "table9"]) == 2
    assert "ibnbench suites: error: unknown suite 'table9'; shipped suites:" in capsys.readouterr().err


def test_package_exports_load_suite():
    assert ibnbench.load_suite is load_suite


def _project_copy(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("ibnbench", "transforms", "datasets"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    return source


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *args],
                   check=True, capture_output=True)


PROBE = ("import ibnbench; s = ibnbench.load_suite('table1'); "
         "print(ibnbench.__file__); print(s.path); print(s.hash); "
         "from ibnbench.conditions.suite import list_suites; print(','.join(list_suites())); "
         "from ibnbench.conditions.dataset_suites import load_dataset_suite; print(load_dataset_suite('natural').path)")


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHONPATH (which may point at a source checkout)."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **extra}


def _check_probe(output: str, install: Path) -> None:
    package_file, suite_path, digest, names, natural = output.strip().splitlines()[-5:]
    assert package_file.startswith(str(install)) and suite_path.startswith(str(install))
    assert natural.startswith(str(install)) and natural.endswith("natural.toml")  # the dataset suites ship too
    assert digest == TABLE1_SHA256 and {"table1", "table1-clipped", "sweep"} <= set(names.split(","))


def test_suites_are_found_from_a_built_wheel(tmp_path):
    source = _project_copy(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, cwd=source)
    shutil.rmtree(source)  # nothing may come from the source tree
    (wheel,) = (tmp_path / "dist").glob("ibnbench-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    assert "ibnbench/results/templates/index.html" in shipped  # the leaderboard site's templates
    packages = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "ibnbench").rglob("__init__.py"))
    assert [p for p in packages if f"{p}/__init__.py" not in shipped] == []  # every package, the CLI's included
    _pip("--target", str(tmp_path / "site"), str(wheel))
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path,
                         env=_environment(PYTHONPATH=str(tmp_path / "site")))
    assert run.returncode == 0, run.stderr
    _check_probe(run.stdout, tmp_path / "site")


def test_suites_are_found_from_an_editable_install(tmp_path):
    source = _project_copy(tmp_path)
    _pip("--target", str(tmp_path / "site"), "-e", str(source))
    # Process the install's .pth (its import hook) before the running environment's own site-packages,
    # so that this editable install, not the one the tests run from, provides `ibnbench`.
    code = f"import site; site.addsitedir({str(tmp_path / 'site')!r}); site.main(); {PROBE}"
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=_environment())
    assert run.returncode == 0, run.stderr
    _check_probe(run.stdout, source)


def test_reading_a_suite_imports_neither_the_zoo_nor_the_data_package():
    """Style conditions get their generators handed in: reading `table1` (Monet included) loads no model code and
    no image decoder."""
    probe = ("import sys\nfrom ibnbench.conditions.suite import read_suite\nread_suite('table1')\n"
             "print(sorted(m for m in sys.modules if m.startswith(('ibnbench.zoo', 'ibnbench.data'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr

"""Hostile input on the results side (report, compare, check, robustness, leaderboard, serve, make-fake-val,
fetch): each case ends in a one-line error naming the file or option, never a traceback, a wrong number with exit
0, a file written outside the folder asked for, or a user's file lost."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from helpers.records import make_record
from test_hardening import cli, fails, works

from ibnbench.results.record import write_record

ERRORS = {"origin": (24.0, 7.0), "rgb+50": (28.0, 9.0)}


def records_folder(root: Path, models: tuple[str, ...] = ("resnet50",), **kwargs) -> Path:
    """``root/records/<model>.json``: one record per model; returns the folder."""
    for model in models:
        write_record(make_record({model: ERRORS}, **kwargs), root / "records" / f"{model}.json")
    return root / "records"


def edited(tmp_path: Path, name: str, edit) -> Path:
    """A valid record written to ``name``, its JSON then changed by ``edit(data)`` as a user editing by hand would."""
    path = write_record(make_record({"resnet50": ERRORS}), tmp_path / name)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------- leaderboard build --html


def test_site_build_keeps_the_users_files_and_still_replaces_its_own(tmp_path, capfd):
    records = records_folder(tmp_path, ("resnet50", "resnet50_ibn_a"))
    out = tmp_path / "site"
    user = {"models/my_resnet.pth": b"weights", "records/notes.json": b"{}", "notes.txt": b"mine"}
    for name, content in user.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    works(capfd, "leaderboard", "build", "--root", tmp_path, "--html", out)
    assert all((out / name).read_bytes() == content for name, content in user.items())
    assert (out / "models" / "resnet50_ibn_a.html").is_file()
    (records / "resnet50_ibn_a.json").unlink()
    works(capfd, "leaderboard", "build", "--root", tmp_path, "--html", out)
    assert not (out / "models" / "resnet50_ibn_a.html").exists()  # its own stale page goes
    assert not (out / "records" / "resnet50_ibn_a.json").exists()
    assert all((out / name).read_bytes() == content for name, content in user.items())


def test_site_build_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, capfd):
    records_folder(tmp_path)
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("my own page")
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", out,
          words=[f"{out / 'index.html'}: exists and was not written by `ibnbench leaderboard build`"])
    assert (out / "index.html").read_text() == "my own page"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # nothing else written, no staging left


def test_site_manifest_naming_files_outside_the_site_is_refused(tmp_path, capfd):
    records_folder(tmp_path)
    out = tmp_path / "site"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / ".ibnbench-site.json").write_text(json.dumps(["../victim.txt"]))
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", out, words=["not a site manifest"])
    assert victim.read_text() == "keep"


def test_site_inside_the_records_folder_is_refused(tmp_path, capfd):
    records = records_folder(tmp_path)
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", records / "site",
          words=[f"{records / 'site'}: the site folder lies inside the records folder {records}"])
    assert not (records / "site").exists()


def test_site_under_a_file_is_one_line(tmp_path, capfd):
    records_folder(tmp_path)
    (tmp_path / "file").write_text("x")
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", tmp_path / "file" / "site",
          words=["cannot write site folder", f"{tmp_path / 'file'} is a file, not a folder"])
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", tmp_path / "file",
          words=["cannot write site folder", f"{tmp_path / 'file'} is a file, not a folder"])


# ------------------------------------------------------------------------------- names from records, paths


@pytest.mark.parametrize("suite", ["../victim", "ABSOLUTE", "a/b", "..", ""])
def test_a_suite_name_never_becomes_a_path_outside_the_root(tmp_path, capfd, suite):
    root = tmp_path / "boards"
    suite = str(tmp_path / "victim") if suite == "ABSOLUTE" else suite
    path = edited(tmp_path, "r.json", lambda data: data.update(suite=suite))
    (root / "records").mkdir(parents=True)
    path.rename(root / "records" / "r.json")
    fails(capfd, "leaderboard", "build", "--root", root,
          words=[str(root / "records" / "r.json"), f"suite name {suite!r} cannot be a file name"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boards"]


def test_a_suite_named_paper_does_not_overwrite_the_papers_tables(tmp_path, capfd):
    path = edited(tmp_path / "records", "r.json", lambda data: data.update(suite="paper"))
    fails(capfd, "leaderboard", "build", "--root", tmp_path,
          words=[str(path), "suite name 'paper' would overwrite the paper's tables (paper.md)"])


def test_an_empty_record_path_is_not_the_current_folder(tmp_path, monkeypatch):
    from ibnbench.errors import RecordError
    from ibnbench.results.loading import load_records

    monkeypatch.chdir(tmp_path)
    write_record(make_record({"resnet50": ERRORS}), tmp_path / "r.json")
    with pytest.raises(RecordError, match="an empty path is not a record or directory"):
        load_records([""])


def test_site_pages_of_hostile_names_stay_inside_the_site(tmp_path, capfd):
    write_record(make_record({"../../escaped": ERRORS}), tmp_path / "records" / "r.json")
    out = tmp_path / "site"
    works(capfd, "leaderboard", "build", "--root", tmp_path, "--html", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records", "site"]
    assert (out / "models" / "escaped.html").is_file()


@pytest.mark.parametrize("file", ["../elsewhere.predictions.npz", "/etc/passwd", ""])
def test_a_predictions_file_from_the_record_is_a_name_beside_it(tmp_path, capfd, file):
    path = edited(tmp_path, "r.json", lambda data: data.update(predictions={"file": file, "sha256": "0" * 64}))
    fails(capfd, "report", path, "--reliability", tmp_path / "r.png",
          words=[str(path), f"predictions file {file!r} cannot be a file name"])


# ---------------------------------------------------------------------------------- report: merging records


def test_report_refuses_one_model_from_two_datasets(tmp_path, capfd):
    small = write_record(make_record({"resnet50": {"origin": (20.0, 5.0)}}, n_images=8, dataset_sha="a" * 64),
                         tmp_path / "small.json")
    large = write_record(make_record({"resnet50": {"rgb+50": (30.0, 9.0)}}, n_images=100), tmp_path / "large.json")
    line = fails(capfd, "report", small, large, words=[str(small), str(large), "both hold resnet50",
                                                       "datasets differ"])
    assert "report them apart" in line
    fails(capfd, "report", small, large, "--plot", tmp_path / "p.png", words=["both hold resnet50"])
    assert not (tmp_path / "p.png").exists()
    other = write_record(make_record({"resnet50_ibn_a": {"origin": (21.0, 6.0)}}, dataset_sha="a" * 64),
                         tmp_path / "other.json")
    assert "resnet50_ibn_a" in works(capfd, "report", small, other)  # different models: columns side by side


# ------------------------------------------------------------------------------------------- numeric flags


@pytest.mark.parametrize("args, words", [
    (["--tolerance", "nan"], ["argument --tolerance: expected a finite number, not 'nan'"]),
    (["--tolerance", "inf"], ["argument --tolerance: expected a finite number, not 'inf'"]),
    (["--tolerance", "-1"], ["argument --tolerance: must not be negative, not '-1'"]),
    (["--tolerance", ""], ["argument --tolerance: expected a number, not ''"]),
    (["--tolerance", "half"], ["argument --tolerance: expected a number, not 'half'"]),
    (["--test", "mcnemar", "--alpha", "0"], ["argument --alpha: must lie strictly between 0 and 1, not '0'"]),
    (["--test", "mcnemar", "--alpha", "1.5"], ["argument --alpha: must lie strictly between 0 and 1"]),
    (["--test", "mcnemar", "--alpha", "nan"], ["argument --alpha: expected a finite number, not 'nan'"]),
])
def test_check_refuses_meaningless_numbers(tmp_path, capfd, args, words):
    new = write_record(make_record({"resnet50": {"origin": (34.0, 7.0)}}), tmp_path / "new.json")
    old = write_record(make_record({"resnet50": {"origin": (24.0, 7.0)}}), tmp_path / "old.json")
    with pytest.raises(SystemExit) as exited:
        cli(capfd, "check", "--results", new, "--against", old, *args)
    err = capfd.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert all(word in err.splitlines()[-1] for word in words), err


def test_check_library_refuses_a_nan_tolerance(tmp_path):
    from ibnbench.errors import UsageError
    from ibnbench.results.check import check

    record = make_record({"resnet50": {"origin": (24.0, 7.0)}})
    with pytest.raises(UsageError, match="--tolerance must be a finite number of points"):
        check(record, record, tolerance=float("nan"))


@pytest.mark.parametrize("args, words", [
    (["leaderboard", "serve", "site", "--port", "99999"], ["argument --port: a port lies between 0"]),
    (["leaderboard", "serve", "site", "--port", "-1"], ["argument --port: a port lies between 0"]),
    (["make-fake-val", "--out", "x", "--n", "0"], ["argument --n: must be at least 1, not '0'"]),
    (["make-fake-val", "--out", "x", "--n", "-5"], ["argument --n: must be at least 1"]),
    (["make-fake-val", "--out", "x", "--workers", "0"], ["argument --workers: must be at least 1"]),
    (["make-fake-val", "--out", "x", "--seed", "-1"], ["argument --seed: a seed lies between 0 and 4294967295"]),
    (["make-fake-val", "--out", "x", "--n", "1e3"], ["argument --n: expected an integer, not '1e3'"]),
    (["make-fake-val", "--out", ""], ["argument --out: expected a path, not an empty string"]),
    (["report", ""], ["argument RECORD: expected a path, not an empty string"]),
    (["report", "r.json", "--output", ""], ["argument --output: expected a path"]),
    (["report", "r.json", "--plot", ""], ["argument --plot: expected a path"]),
    (["leaderboard", "build", "--html", ""], ["argument --html: expected a path"]),
    (["check", "--results", "", "--against", "r.json"], ["argument --results: expected a path"]),
])
def test_option_values_out_of_range_stop_at_parsing(tmp_path, capfd, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli(capfd, *args)
    err = capfd.readouterr().err
    assert exited.value.code == 2 and all(word in err.splitlines()[-1] for word in words), err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ files in the way


def test_report_plot_under_a_file_or_of_an_unknown_kind(tmp_path, capfd):
    record = write_record(make_record({"resnet50": ERRORS}), tmp_path / "r.json")
    (tmp_path / "file").write_text("x")
    fails(capfd, "report", record, "--plot", tmp_path / "file" / "p.png",
          words=["cannot write figure", f"{tmp_path / 'file'} is a file, not a folder"])
    fails(capfd, "report", record, "--plot", tmp_path / "p.xyz", words=[str(tmp_path / "p.xyz"), "cannot write .xyz"])
    fails(capfd, "report", record, "--plot", tmp_path, words=["cannot write figure", str(tmp_path)])
    works(capfd, "report", record, "--plot", tmp_path / "p.svg")
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_serve_on_a_busy_port_is_one_line(tmp_path, capfd):
    (tmp_path / "index.html").write_text("<html></html>")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fails(capfd, "leaderboard", "serve", tmp_path, "--port", port,
              words=[f"--port {port}: cannot serve on 127.0.0.1:{port}", "choose another port"])


def test_make_fake_val_of_a_typo_sized_set_writes_nothing(tmp_path, capfd):
    fails(capfd, "make-fake-val", "--out", tmp_path / "fake", "--n", "99999999999999999999",
          words=["--n must be 1 to 10,000,000 images, not 99999999999999999999"])
    assert not (tmp_path / "fake").exists()


def test_make_fake_val_into_a_file(tmp_path, capfd):
    (tmp_path / "file").write_text("x")
    fails(capfd, "make-fake-val", "--out", tmp_path / "file", "--n", "1", "--workers", "1",
          words=["cannot write fake val folder", f"{tmp_path / 'file'} is a file, not a folder"])
    assert (tmp_path / "file").read_text() == "x"


def test_fetch_frost_offline_says_what_fetch_accepts(tmp_path, capfd, monkeypatch):
    from ibnbench.conditions.frost import FROST_DIR_ENV, FROST_URL_ENV

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(FROST_URL_ENV, "http://127.0.0.1:9")  # the discard port: nothing listens
    line = fails(capfd, "fetch", "frost", words=["cannot download", f"${FROST_DIR_ENV}", f"${FROST_URL_ENV}"])
    assert "--weights" not in line


# ------------------------------------------------------------------------------- records edited by hand


def _nan(data):
    data["results"][0]["top1_err"] = float("nan")


def _strings(data):
    data["results"][0]["top1_err"] = "24.0"


def _negative(data):
    data["results"][0]["n_images"] = -3


def _fraction(data):
    data["results"][0]["n_images"] = 99.5


def _over_100(data):
    data["results"][1]["top1_err"] = 150.0


def _conditions(data):
    data["conditions"] = "origin"


def _short_answers(data):
    data["per_image"] = {"files": ["a.JPEG", "b.JPEG"], "top1": {"resnet50": {"origin": "1"}}}


def _answer_letters(data):
    data["per_image"] = {"files": ["a.JPEG"], "top1": {"resnet50": {"origin": "x"}}}


def _no_results(data):
    data["results"] = []


def _huge_count(data):
    data["results"][0]["n_images"] = 10 ** 30


def _ghost_model(data):
    data["results"][0]["model"] = "ghost"


def _twice(data):
    data["results"].append(dict(data["results"][0]))


def _predictions_without_file(data):
    data["predictions"] = {"sha256": "0" * 64}


HAND_EDITS = {  # edit -> the words of the error line of `report`
    _nan: ["invalid result(s): resnet50 / origin: error is nan/7.0"],
    _over_100: ["invalid result(s): resnet50 / rgb+50: error is 150.0/9.0"],
    _strings: ["results[0] has a wrong type in top1_err"],
    _negative: ["results[0] has n_images -3 (a count"],
    _fraction: ["results[0] has a wrong type in n_images", "n_images an integer"],
    _conditions: ["wrong type: conditions (expected an array)"],
    _short_answers: ["per_image.top1 of resnet50 / origin must be a string of 2 characters"],
    _answer_letters: ["per_image.top1 of resnet50 / origin must be a string of 1 characters"],
    _predictions_without_file: ["predictions must name a sidecar 'file'"],
    _no_results: ["holds no results"],
    _huge_count: ["results[0] has n_images 1000000000000000000000000000000 (a count, 0 to 9007199254740992)"],
    _ghost_model: ["results name model 'ghost', which models does not describe"],
    _twice: ["results hold resnet50 / origin twice"],
}


@pytest.mark.parametrize("edit", list(HAND_EDITS), ids=lambda f: f.__name__.strip("_"))
def test_a_record_edited_by_hand_is_one_line_in_report_and_leaderboard(tmp_path, capfd, edit):
    path = edited(tmp_path / "records", "r.json", edit)
    fails(capfd, "report", path, "--ci", words=[str(path), *HAND_EDITS[edit]])
    fails(capfd, "leaderboard", "build", "--root", tmp_path, words=[str(path), *HAND_EDITS[edit]])
    fails(capfd, "leaderboard", "build", "--root", tmp_path, "--html", tmp_path / "site",
          words=[str(path), *HAND_EDITS[edit]])
    assert not (tmp_path / "site").exists() and not (tmp_path / "table1.md").exists()


def test_check_marks_an_out_of_range_error_invalid(tmp_path, capfd):
    old = write_record(make_record({"resnet50": ERRORS}), tmp_path / "old.json")
    new = edited(tmp_path, "new.json", _over_100)
    code, out, _err = cli(capfd, "check", "--results", new, "--against", old)
    assert code == 1 and "INVALID" in out and "outside 0..100 %" in out
    code, out, _err = cli(capfd, "check", "--results", old, "--against", new, "--metric", "drop")
    assert code == 1 and "INVALID" in out


def test_compare_with_answers_of_the_wrong_length_is_one_line(tmp_path, capfd):
    from helpers.records import answer_record

    a = write_record(answer_record({"resnet50": {"origin": "0110"}}), tmp_path / "a.json")
    b = edited(tmp_path, "b.json", lambda data: data.update(answer_record({"resnet50_ibn_a": {"origin": "0110"}})
                                                              .to_dict()))
    data = json.loads(b.read_text())
    data["per_image"]["top1"]["resnet50_ibn_a"]["origin"] = "011"
    b.write_text(json.dumps(data))
    fails(capfd, "compare", a, b, words=[str(b), "per_image.top1 of resnet50_ibn_a / origin", "4 characters"])


def test_predictions_sidecar_missing_or_altered(tmp_path, capfd):
    path = edited(tmp_path, "r.json", lambda data: data.update(
        predictions={"file": "r.predictions.npz", "sha256": "0" * 64}))
    fails(capfd, "report", path, "--reliability", tmp_path / "rel.png",
          words=["r.predictions.npz: stored predictions are missing"])
    (tmp_path / "r.predictions.npz").write_bytes(b"not the sidecar")
    fails(capfd, "report", path, "--reliability", tmp_path / "rel.png",
          words=["r.predictions.npz: stored predictions do not match their record (sha256 differs)"])


def test_compare_and_mcnemar_check_refuse_an_out_of_range_error(tmp_path, capfd):
    from helpers.records import answer_record

    a = write_record(answer_record({"resnet50": {"origin": "0110"}}), tmp_path / "a.json")
    b = write_record(answer_record({"resnet50_ibn_a": {"origin": "0111"}}), tmp_path / "b.json")
    data = json.loads(a.read_text())
    data["results"][0]["top1_err"] = 150.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    fails(capfd, "compare", bad, b, words=[str(bad), "invalid result(s): resnet50 / origin: error is 150.0/50.0"])
    code, out, _err = cli(capfd, "check", "--results", bad, "--against", a, "--test", "mcnemar")
    assert code == 1 and "INVALID" in out and "invalid: 1 result(s)" in out

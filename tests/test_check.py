"""`ibnbench check`: identical passes, a 5-point regression fails, incomparable records explain why."""
from __future__ import annotations

import pytest

from ibnbench.check import check
from ibnbench.cli import main
from ibnbench.results import write_record
from records import make_record

BASE = {"resnet50": {"origin": (24.0, 7.0), "rgb+50": (28.0, 9.0), "std*1.5": (40.0, 19.0)}}


def test_identical_results_pass(tmp_path, capsys):
    a = write_record(make_record(BASE), tmp_path / "a.json")
    b = write_record(make_record(BASE), tmp_path / "b.json")
    assert main(["check", "--results", str(a), "--against", str(b)]) == 0
    assert "ok: 3 result(s) within 0.5 points" in capsys.readouterr().out


def test_five_point_regression_fails(tmp_path, capsys):
    worse = {"resnet50": {**BASE["resnet50"], "std*1.5": (45.0, 21.0)}}
    new = write_record(make_record(worse), tmp_path / "new.json")
    old = write_record(make_record(BASE), tmp_path / "old.json")
    assert main(["check", "--results", str(new), "--against", str(old), "--tolerance", "1"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "resnet50 / std*1.5: +5.00" in out
    assert check(new, old, tolerance=1, metric="drop").exit_code == 1
    assert check(old, new, tolerance=1).exit_code == 0  # an improvement is not a regression...
    assert check(old, new, tolerance=1, either_way=True).exit_code == 1  # ...unless any move counts


@pytest.mark.parametrize("kwargs, reason", [({"suite_hash": "x" * 64}, "suite definitions differ"),
                                            ({"dataset_sha": "e" * 64}, "datasets differ")])
def test_incomparable_inputs_exit_2(tmp_path, capsys, kwargs, reason):
    new = write_record(make_record(BASE, **kwargs), tmp_path / "new.json")
    old = write_record(make_record(BASE), tmp_path / "old.json")
    assert main(["check", "--results", str(new), "--against", str(old)]) == 2
    assert reason in capsys.readouterr().out

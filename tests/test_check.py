"""`ibnbench check`: identical passes, a 5-point regression fails, incomparable records explain why."""
from __future__ import annotations

import pytest
from helpers.records import make_record

from ibnbench.cli import main
from ibnbench.results.check import check
from ibnbench.results.record import write_record

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


def test_plugin_assertion_helper_fails_only_on_a_significant_change(tmp_path):
    from helpers.records import answer_record

    from ibnbench.pytest_plugin import assert_no_regression
    from ibnbench.results.stats import tango_interval

    recorded = answer_record({"resnet50": {"origin": "1" * 70 + "0" * 30}})
    noise = answer_record({"resnet50": {"origin": "1" * 67 + "0" * 33}})  # 3 newly wrong: p = 0.25
    change = answer_record({"resnet50": {"origin": "1" * 50 + "0" * 50}})  # 20 newly wrong: p = 1.9e-6
    assert_no_regression(noise, recorded, alpha=0.01)
    with pytest.raises(pytest.fail.Exception, match="tolerance|beyond 0.5 points"):
        assert_no_regression(noise, recorded, test="tolerance")
    with pytest.raises(pytest.fail.Exception, match="changed significantly") as failure:
        assert_no_regression(change, recorded, alpha=0.01)
    lo, hi = (100 * float(v) for v in tango_interval(20, 0, 100))
    assert (f"resnet50 / origin: +20.00 points [{lo:.2f}, {hi:.2f}] (Tango), 20 newly wrong, 0 newly right"
            in str(failure.value))


def test_mcnemar_check_needs_per_image_answers(tmp_path):
    plain = make_record(BASE)  # no per-image answers
    outcome = check(plain, plain, test="mcnemar")
    assert outcome.exit_code == 2 and "holds no per-image answers" in outcome.render()
    with pytest.raises(ValueError, match="--test mcnemar compares per-image answers"):
        check(plain, plain, test="mcnemar", metric="drop")

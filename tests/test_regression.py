"""Regression: the committed leaderboard records must be reproduced exactly. Any change that moves a number
(or which images are right) fails here: same top-1/top-5 per (model, condition) at tolerance 0 either way,
and the same per-image correctness strings. The evaluation is the session's one (``real_records`` in
conftest.py), shared with test_real_accuracy.py.

The records were made with ``ibnbench run --model efficientnet_lite0 --data ../shared/data/imagenet-val-100/val
--suite SUITE --skip-missing --workers 2 --batch-size 50 --device cpu`` (SUITE: table1, table1-clipped)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from helpers.shared import REAL_CONDITIONS, REAL_SUITES
from scipy.stats import binomtest

from ibnbench.results.check import EXIT_OK, EXIT_REGRESSION, check
from ibnbench.results.record import Record, read_record

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboards" / "records"
MODEL = "efficientnet_lite0"


def committed(suite: str) -> Record:
    return read_record(COMMITTED / f"{suite}-{MODEL}-val100.json")


@pytest.mark.parametrize("suite", REAL_SUITES)
def test_errors_equal_the_committed_record(real_records, suite):
    for metric in ("top1", "top5"):
        outcome = check(real_records[suite], committed(suite), tolerance=0, metric=metric, either_way=True)
        assert outcome.exit_code == EXIT_OK, outcome.render()
        assert sorted(outcome.table.condition) == sorted(REAL_CONDITIONS)  # every condition was compared


@pytest.mark.parametrize("suite", REAL_SUITES)
def test_per_image_correctness_equals_the_committed_record(real_records, suite):
    new, old = real_records[suite], committed(suite)
    assert new.per_image["files"] == old.per_image["files"]
    for metric in ("top1", "top5"):
        for condition in REAL_CONDITIONS:
            assert new.per_image[metric][MODEL][condition] == old.per_image[metric][MODEL][condition], \
                (metric, condition)


def test_one_image_moving_is_a_regression_at_tolerance_zero():
    """The check above is sharp: one of the 100 images changing its answer (1 point) fails it, either way."""
    old = committed("table1")
    for step in (+1.0, -1.0):
        moved = copy.deepcopy(old)
        moved.result(MODEL, "rgb+50")["top1_err"] += step
        outcome = check(moved, old, tolerance=0, either_way=True)
        assert outcome.exit_code == EXIT_REGRESSION and f"{MODEL} / rgb+50: {step:+.2f}" in outcome.render()


@pytest.mark.parametrize("suite", REAL_SUITES)
def test_mcnemar_check_passes_a_rerun_of_the_committed_record(real_records, suite):
    outcome = check(real_records[suite], committed(suite), test="mcnemar", alpha=0.01, either_way=True)
    assert outcome.exit_code == EXIT_OK, outcome.render()


def changed(record: Record, condition: str, newly_wrong: int, newly_right: int) -> Record:
    """``record`` as if a changed model turned ``newly_wrong`` right top-1 answers under ``condition`` wrong and
    ``newly_right`` wrong ones right (spread over the images)."""
    moved = copy.deepcopy(record)
    answers = list(moved.per_image["top1"][MODEL][condition])
    right = [i for i, a in enumerate(answers) if a == "1"]
    wrong = [i for i, a in enumerate(answers) if a == "0"]
    for i in right[::3][:newly_wrong]:
        answers[i] = "0"
    for i in wrong[::3][:newly_right]:
        answers[i] = "1"
    moved.per_image["top1"][MODEL][condition] = "".join(answers)
    moved.result(MODEL, condition)["top1_err"] += newly_wrong - newly_right
    return moved


def test_mcnemar_check_fails_many_flips_and_passes_noise_that_the_tolerance_fails(tmp_path, capsys):
    from ibnbench.cli import main
    from ibnbench.results.record import write_record

    old = committed("table1")
    recorded = write_record(old, tmp_path / "recorded.json")
    model_change = write_record(changed(old, "std*1.5", 16, 1), tmp_path / "change.json")
    noise = write_record(changed(old, "rgb+50", 3, 1), tmp_path / "noise.json")
    args = ["--against", str(recorded), "--test", "mcnemar", "--alpha", "0.01"]
    assert main(["check", "--results", str(model_change), *args]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "efficientnet_lite0 / std*1.5: +15.00 points [" in out
    assert "(Tango), 16 newly wrong, 1 newly right, p Holm 0.001" in out
    table = check(model_change, recorded, test="mcnemar").table.set_index("condition")
    assert table.loc["std*1.5", "p"] == f"{binomtest(16, 17).pvalue:.2g}" == f"{2 * 18 / 2 ** 17:.2g}"
    assert main(["check", "--results", str(noise), *args]) == EXIT_OK
    assert "ok: no significant change" in capsys.readouterr().out
    assert main(["check", "--results", str(noise), "--against", str(recorded), "--tolerance", "0.5"]) == EXIT_REGRESSION

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

from conftest import REAL_CONDITIONS, REAL_SUITES
from ibnbench.check import EXIT_OK, EXIT_REGRESSION, check
from ibnbench.results import Record, read_record

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

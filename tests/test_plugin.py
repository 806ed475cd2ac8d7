"""The pytest plugin as a user meets it: the sample test of docs/regression-checks.md run by pytester against the
committed record (passes), against a tampered copy of it (fails), without ``--ibnbench-data`` (skips, saying
why), with one evaluation shared by every test of the session."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ibnbench.eval import api
from ibnbench.pytest_plugin import SKIP_REASON

pytest_plugins = ["pytester"]

RECORD = Path(__file__).resolve().parents[1] / "leaderboards" / "records" / "table1-efficientnet_lite0-val100.json"

# The sample of docs/regression-checks.md, verbatim: a user's regression test against a record committed beside it.
SAMPLE = '''\
from pathlib import Path

import pytest

from ibnbench import read_record

RECORDED = read_record(Path(__file__).with_name("recorded.json"))  # from `ibnbench run ... --output recorded.json`
CONDITIONS = ["origin", "rgb+50"]


@pytest.mark.ibnbench
def test_top1_error_is_unchanged(ibnbench_run):
    record = ibnbench_run("efficientnet_lite0", conditions=CONDITIONS)
    for condition in CONDITIONS:
        assert record.top1_err(condition) == pytest.approx(RECORDED.top1_err(condition), abs=0.5)


@pytest.mark.ibnbench
def test_rgb50_drop_is_unchanged(ibnbench_run):
    record = ibnbench_run("efficientnet_lite0", conditions=CONDITIONS)  # the same evaluation, not a second one
    assert record.drop("rgb+50") == pytest.approx(RECORDED.drop("rgb+50"), abs=0.5)
'''
INNER_OPTIONS = ["--import-mode=importlib", "-p", "no:cacheprovider", "-rs"]


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The sample twice: ``good/`` beside the committed record, ``tampered/`` beside a copy whose origin
    top-1 error was edited by +5 points."""
    recorded = json.loads(RECORD.read_text())
    tampered = json.loads(RECORD.read_text())
    origin = next(row for row in tampered["results"] if row["condition"] == "origin")
    origin["top1_err"] += 5
    for folder, record in (("good", recorded), ("tampered", tampered)):
        (pytester.path / folder).mkdir()
        (pytester.path / folder / "test_robustness.py").write_text(SAMPLE)
        (pytester.path / folder / "recorded.json").write_text(json.dumps(record))
    return pytester


@pytest.fixture
def engine_runs(monkeypatch) -> list[dict]:
    """Every call of ``ibnbench.eval.api.run`` (:func:`ibnbench.run`) made by the in-process pytest runs below."""
    calls: list[dict] = []
    real_run = api.run

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(api, "run", counted)
    return calls


def outcomes_by_folder(result: pytest.RunResult) -> dict[str, set[str]]:
    passed, skipped, failed = result.reprec.listoutcomes()
    def folder(nodeid: str) -> str:  # the sample's folder, wherever pytest put its rootdir
        return next(part for part in nodeid.split("::")[0].split("/") if part in ("good", "tampered"))

    return {name: {folder(report.nodeid) for report in reports}
            for name, reports in (("passed", passed), ("skipped", skipped), ("failed", failed))}


def test_sample_passes_on_the_record_fails_on_a_tampered_one_and_evaluates_once(user_project, engine_runs, val100):
    pytest.importorskip("efficientnet_lite_pytorch")
    result = user_project.runpytest_inprocess("--ibnbench-data", str(val100), "--ibnbench-device", "cpu",
                                              "--ibnbench-workers", "0", *INNER_OPTIONS)
    result.assert_outcomes(passed=2, failed=2)
    assert outcomes_by_folder(result) == {"passed": {"good"}, "skipped": set(), "failed": {"tampered"}}
    result.stdout.fnmatch_lines(["*assert 28.0 == 33.0 *", "*assert 1.0 == -4.0 *"])  # new vs tampered, drop too
    assert len(engine_runs) == 1  # four tests in two modules, one evaluation
    assert engine_runs[0]["conditions"] == ["origin", "rgb+50"] and engine_runs[0]["options"].device == "cpu"
    assert engine_runs[0]["options"].workers == 0


def test_marked_and_fixture_tests_skip_with_the_reason_without_data(user_project, engine_runs):
    user_project.makepyfile(
        test_unmarked="def test_uses_the_fixture_only(ibnbench_run):\n    ibnbench_run('resnet18')\n")
    result = user_project.runpytest_inprocess(*INNER_OPTIONS)
    result.assert_outcomes(skipped=5)
    reason = re.escape(SKIP_REASON)  # each skip reported at the user's test, not inside the plugin
    files = ["good/test_robustness.py"] * 2 + ["tampered/test_robustness.py"] * 2 + ["test_unmarked.py"]
    result.stdout.re_match_lines([rf"SKIPPED \[1\] {re.escape(f)}:\d+: {reason}" for f in files], consecutive=True)
    assert engine_runs == []


def test_bad_data_fails_once_with_the_one_line_message(pytester, engine_runs, tmp_path):
    pytester.makepyfile(test_twice="""
        def test_first(ibnbench_run):
            ibnbench_run("resnet18", weights="random")

        def test_second(ibnbench_run):
            ibnbench_run("resnet18", weights="random")
        """)
    (tmp_path / "val").mkdir()
    result = pytester.runpytest_inprocess("--ibnbench-data", str(tmp_path / "val"), *INNER_OPTIONS)
    result.assert_outcomes(failed=2)
    empty = f"ibnbench_run('resnet18', suite='table1'): dataset folder {tmp_path / 'val'} is empty"
    result.stdout.fnmatch_lines([empty, f"{empty} (failed earlier in this session)"])
    assert "Traceback" not in result.stdout.str() and "another exception" not in result.stdout.str()
    assert len(engine_runs) == 1


def test_a_bug_keeps_its_traceback(pytester, monkeypatch, tmp_path):
    """Only ibnbench's own errors (the user's input) become the one-line failure; a ValueError from a bug does not."""
    def buggy_run(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(api, "run", buggy_run)
    pytester.makepyfile(test_bug="""
        def test_it(ibnbench_run):
            ibnbench_run("resnet18", weights="random")
        """)
    (tmp_path / "val").mkdir()
    result = pytester.runpytest_inprocess("--ibnbench-data", str(tmp_path / "val"), *INNER_OPTIONS)
    result.assert_outcomes(errors=0, failed=1)
    result.stdout.fnmatch_lines(["*ValueError: a bug, not bad input*"])
    assert "ibnbench_run('resnet18'" not in result.stdout.str()


def test_ini_key_resolves_against_the_ini_file(pytester, monkeypatch):
    (pytester.path / "val").mkdir()
    pytester.makeini("[pytest]\nibnbench_data = val\n")
    pytester.makepyfile(test_ini="""
        import pytest

        @pytest.mark.ibnbench
        def test_data(ibnbench_data):
            assert ibnbench_data.is_dir() and ibnbench_data.name == "val"
        """)
    monkeypatch.chdir(pytester.mkdir("elsewhere"))  # a path relative to the working directory would not exist
    result = pytester.runpytest_inprocess(str(pytester.path), *INNER_OPTIONS)
    result.assert_outcomes(passed=1)


def test_the_sample_is_the_docs_s():
    """What the tests above run is what docs/regression-checks.md shows (its import paths included)."""
    assert SAMPLE in (Path(__file__).resolve().parents[1] / "docs/regression-checks.md").read_text()

"""Baseline constants from a file (``report --baseline-constants``): the loader's checks, and ImageNet-C-bar's
CE-bar / mCE-bar normalised by them against a hand computation."""
from __future__ import annotations

import pytest
from helpers.records import graded_record

from ibnbench.conditions.c_bar import C_BAR_LABELS, C_BAR_NAMES
from ibnbench.errors import MissingFileError, UsageError
from ibnbench.results.baselines import read_baseline_constants
from ibnbench.results.record import write_record
from ibnbench.results.report import report

TABLES = {"errors": ("a", "b")}


def write(tmp_path, text: str, name: str = "constants.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_constants_read_means_and_per_severity_lists(tmp_path):
    path = write(tmp_path, 'suite = "s"\nmodel = "base"\n[errors]\na = 50\nb = [10, 20, 30.5, 40, 50]\n')
    constants = read_baseline_constants(path, ("s",), TABLES)
    assert constants.suite == "s" and constants.label == "base"
    assert constants.tables == {"errors": {"a": 50.0, "b": pytest.approx(30.1)}}


@pytest.mark.parametrize("text, message", [
    ('[errors]\na = 1\n', "top-level 'suite' must name"),
    ('suite = "other"\n[errors]\na = 1\n', "'s'.*got 'other'"),
    ('suite = "s"\n[errors]\nz = 1\n', r"\[errors\] names 'z'"),
    ('suite = "s"\n[errors]\na = 0\n', "a number above 0"),
    ('suite = "s"\n[errors]\na = nan\n', "a number above 0"),
    ('suite = "s"\n[errors]\na = [1, "x"]\n', "a number above 0"),
    ('suite = "s"\n[errors]\na = []\n', "a number above 0"),
    ('suite = "s"\n[flips]\na = 1\n', "unknown key 'flips'"),
    ('suite = "s"\nerrors = 3\n', r"\[errors\] must be a table"),
    ('suite = "s"\n', "no constants"),
    ('suite = "s"\nmodel = 3\n[errors]\na = 1\n', "'model' must be a string"),
    ('suite = \n', "not TOML"),
])
def test_bad_constants_are_refused_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=message) as info:
        read_baseline_constants(path, ("s",), TABLES)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_constants_file(tmp_path):
    with pytest.raises(MissingFileError, match="--baseline-constants .*absent.toml: no such file"):
        read_baseline_constants(tmp_path / "absent.toml", ("s",), TABLES)


def c_bar_errors(scale: float) -> dict[str, float]:
    """Corruption i at severity s: ``scale * (40 + i + s)``."""
    return {"origin": 20.0, **{f"{n}-{s}": scale * (40.0 + i + s) for i, n in enumerate(C_BAR_NAMES)
                               for s in range(1, 6)}}


def rows_of(text: str, model: str) -> dict[str, list[str]]:
    table = next(s for s in text.split("### ") if s.startswith(model))
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ")}


def test_mce_bar_normalised_by_constants_matches_a_hand_computation(tmp_path):
    """CE-bar = 100 x the model's errors summed over severities / (5 x the constant); given per severity, the
    constant is their mean; mCE-bar the mean over the 10 corruptions."""
    record = write_record(graded_record({"model": c_bar_errors(0.5)}, "imagenet-c-bar", C_BAR_LABELS),
                          tmp_path / "bar.json")
    # the model's mean error on corruption i is 0.5 x (43 + i); the constants: 43 + i (half of them as lists)
    lines = ['suite = "imagenet-c-bar"', 'model = "my baseline"', "[errors]"]
    for i, name in enumerate(C_BAR_NAMES):
        lines.append(f"{name} = {43 + i}" if i % 2 else f"{name} = {[41 + i + k for k in range(5)]}")
    constants = write(tmp_path, "\n".join(lines) + "\n")
    text = report([record], baseline_constants=str(constants))
    rows = rows_of(text, "model")
    assert rows["corruption (top-1 error %)"][-1] == "CE-bar"
    assert all(rows[C_BAR_LABELS[n]][-1] == "50.00" for n in C_BAR_NAMES)
    assert rows["mCE-bar (normalised by the baseline, %)"][5] == "50.00"
    assert f"CE-bar normalised by the constants of {constants} (my baseline)" in text
    # one corruption left out of the file: its CE-bar is '-', and mCE-bar is not given
    partial = write(tmp_path, "\n".join(lines[:-1]) + "\n", "partial.toml")
    rows = rows_of(report([record], baseline_constants=str(partial)), "model")
    assert rows[C_BAR_LABELS[C_BAR_NAMES[-1]]][-1] == "-" and rows["mCE-bar (normalised by the baseline, %)"][5] == "-"


def test_constants_refused_with_a_baseline_model_or_for_other_records(tmp_path):
    bar = write_record(graded_record({"m": c_bar_errors(0.5)}, "imagenet-c-bar", C_BAR_LABELS), tmp_path / "bar.json")
    constants = write(tmp_path, 'suite = "imagenet-c-bar"\n[errors]\nsparkles = 50\n')
    with pytest.raises(UsageError, match="not both"):
        report([bar], baseline="m", baseline_constants=str(constants))
    imagenet_c = write_record(graded_record({"m": {"origin": 20.0, "fog-1": 30.0}}), tmp_path / "c.json")
    with pytest.raises(UsageError, match="--baseline-constants normalises ImageNet-C-bar records"):
        report([imagenet_c], baseline_constants=str(constants))
    p_constants = write(tmp_path, 'suite = "imagenet-p"\n[errors]\nsparkles = 50\n', "p.toml")
    with pytest.raises(UsageError, match="'imagenet-c-bar'.*got 'imagenet-p'"):
        report([bar], baseline_constants=str(p_constants))


def board_rows(board: str, models: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    lines = board.splitlines()
    header = [h.strip() for h in next(line for line in lines if line.startswith("| model")).split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines if line.split("|")[1:2] and
            line.split("|")[1].strip() in models]
    return header, rows


def test_leaderboard_ranks_imagenet_c_bar_by_mean_error_then_by_mce_bar_with_constants(tmp_path):
    """Without baseline constants the C-bar board ranks by the unnormalised mean error and shows the mean per
    corruption; with ``baselines/imagenet-c-bar.toml`` it ranks by mCE-bar (computed here by hand)."""
    from ibnbench.results import leaderboard

    records = tmp_path / "board" / "records"
    records.mkdir(parents=True)
    low, high = c_bar_errors(0.5), c_bar_errors(0.6)  # mean error 0.5 x 47.5 = 23.75 and 0.6 x 47.5 = 28.5
    write_record(graded_record({"high": high, "low": low}, "imagenet-c-bar", C_BAR_LABELS), records / "bar.json")
    leaderboard.build(tmp_path / "board")
    board = (tmp_path / "board" / "imagenet-c-bar.md").read_text()
    header, rows = board_rows(board, ("high", "low"))
    assert "ranked by the unnormalised mean error" in board and [r[1] for r in rows] == ["low", "high"]
    assert [r[header.index("mean top-1 error over the C-bar corruptions run (unnormalised, %)")] for r in rows] == [
        "23.75", "28.50"]
    assert rows[0][header.index("Sparkles (mean)")] == f"{0.5 * (40 + 9 + 3):.2f}"
    assert "mCE-bar (normalised by the baseline, %)" not in header
    baselines = tmp_path / "board" / "baselines"
    baselines.mkdir()
    # constants: the low model's mean error per corruption x 0.5, so CE-bar is 200 for low and 240 for high
    (baselines / "imagenet-c-bar.toml").write_text('suite = "imagenet-c-bar"\n[errors]\n' + "".join(
        f"{n} = {0.25 * (43 + i)}\n" for i, n in enumerate(C_BAR_NAMES)))
    leaderboard.build(tmp_path / "board")
    board = (tmp_path / "board" / "imagenet-c-bar.md").read_text()
    header, rows = board_rows(board, ("high", "low"))
    assert "ranked by mCE-bar" in board and [r[1] for r in rows] == ["low", "high"]
    assert [r[header.index("mCE-bar (normalised by the baseline, %)")] for r in rows] == ["200.00", "240.00"]
    assert rows[1][header.index("CE-bar Plasma Noise")] == "240.00"

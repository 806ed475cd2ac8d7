"""Result plots: the drop chart of a real record, and robustness curves of a synthetic sweep record."""
from __future__ import annotations

import pytest
from helpers.images import assert_png
from helpers.records import LITE0_RECORD, sweep_record

import ibnbench
from ibnbench.cli import main
from ibnbench.errors import RecordError
from ibnbench.results.plots import drops_frame, plot_report, severity, sweep_frame
from ibnbench.results.record import write_record
from ibnbench.results.report import load_records


def test_report_plot_of_the_committed_lite0_record(tmp_path, capsys):
    png = tmp_path / "drops.png"
    assert main(["report", str(LITE0_RECORD), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| std x1.5" in out and f"wrote {png}" in out  # the table is still printed
    assert_png(png)
    records = load_records([LITE0_RECORD])
    top1, top5 = drops_frame(records, "top1"), drops_frame(records, "top5")
    assert list(top1.index) == ["RGB+50", "R+50", "std x1.5"]  # origin and the not-run Monet left out
    assert top1["efficientnet_lite0"].tolist() == pytest.approx([1.0, 2.0, 5.0])
    assert top5["efficientnet_lite0"].tolist() == pytest.approx([-1.0, 0.0, 2.0])


def test_severities_come_from_the_suite_definitions():
    sweep, table1 = ibnbench.load_suite("sweep"), ibnbench.load_suite("table1")
    got = {c: severity(sweep[c]) for c in ("rgb-75", "g+50", "b-100", "std*0.25", "monet")}
    assert [(s.family, s.series, s.value) for s in got.values()] == [
        ("brightness", "RGB", -75.0), ("shift", "G", 50.0), ("shift", "B", -100.0), ("contrast", "", 0.25),
        ("style", "Monet", None)]
    assert severity(sweep["origin"]) is None
    rgb = severity(table1["rgb+50"])  # a shift of all three channels alike is a brightness change
    assert (rgb.family, rgb.value) == ("brightness", 50.0)


def test_sweep_frame_puts_the_origin_on_every_curve():
    frame = sweep_frame([sweep_record()])
    ibn = frame[frame.model == "resnet50_ibn_b"]
    origin = ibn[ibn.condition == "origin"]
    assert sorted(zip(origin.family, origin.series, origin.value.fillna(-1))) == [
        ("brightness", "RGB", 0.0), ("contrast", "", 1.0), ("shift", "B", 0.0), ("shift", "G", 0.0),
        ("shift", "R", 0.0), ("style", "origin", -1)]
    red = ibn[(ibn.family == "shift") & (ibn.series == "R")].sort_values("value")
    assert red.value.tolist() == [-100, -75, -50, 0, 50, 75, 100]
    assert red.top1_err.tolist() == pytest.approx([24 + 0.3 * abs(v) / 8 for v in red.value])


def test_sweep_curves_and_both_kinds_at_once(tmp_path):
    sweep = write_record(sweep_record(), tmp_path / "sweep.json")
    assert plot_report([sweep], tmp_path / "curves.png") == [tmp_path / "curves.png"]
    assert_png(tmp_path / "curves.png", (1000, 700))
    written = plot_report([sweep, LITE0_RECORD], tmp_path / "all.png")
    assert written == [tmp_path / "all.png", tmp_path / "all-sweep.png"]
    for path in written:
        assert_png(path)


def test_sweep_record_with_other_definitions_is_refused(tmp_path, capsys):
    stale = write_record(sweep_record(suite_hash="0" * 64), tmp_path / "stale.json")
    with pytest.raises(RecordError, match="severities cannot be read"):
        plot_report([stale], tmp_path / "x.png")
    assert main(["report", str(stale), "--plot", str(tmp_path / "x.png")]) == 2
    assert "ibnbench report: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_drop_bars_carry_the_paired_tango_interval():
    from ibnbench.results.plots import drop_errors
    from ibnbench.results.stats import tango_interval

    records = load_records([LITE0_RECORD])
    table = drops_frame(records, "top1")
    below, above = drop_errors(records, table, "top1")["efficientnet_lite0"]
    lo, hi = (100 * float(v) for v in tango_interval(7, 2, 100))  # std x1.5: 7 images newly wrong, 2 newly right
    assert (below[2], above[2]) == pytest.approx((5.0 - lo, hi - 5.0))
    assert hi - lo > 9  # wider than the old construction could ever be (9 of 100 images discordant)

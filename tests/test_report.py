"""Table-1 reports and leaderboards from records."""
from __future__ import annotations

import builtins
import collections
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.records import answer_record, make_record, schema_1_copy
from scipy.stats import binomtest

from ibnbench.cli import main
from ibnbench.cli.records import REPORT_FORMATS
from ibnbench.results import leaderboard, stats
from ibnbench.results.loading import load_records
from ibnbench.results.pairs import statistics
from ibnbench.results.predictions import Predictions, sidecar_path, write_predictions
from ibnbench.results.record import write_record
from ibnbench.results.report import FORMATS, build_report, report


@pytest.fixture()
def record_path(tmp_path):
    record = make_record({
        "resnet50": {"origin": (24.27, 7.08), "rgb+50": (28.0, 9.0), "std*1.5": (40.01, 19.08)},
        "resnet50_ibn_b": {"origin": (23.64, 6.86), "rgb+50": (23.8, 7.0), "std*1.5": (23.64, 6.86)},
    })
    return write_record(record, tmp_path / "run.json")


def test_table1_layout_with_drops(record_path):
    text = report([record_path])
    lines = text.splitlines()
    assert [h.strip() for h in lines[0].split("|")[1:-1]] == ["condition", "resnet50", "resnet50_ibn_b"]
    std_row = next(line for line in lines if line.startswith("| std x1.5"))
    assert "40.01/19.08 (15.74/12.00)" in std_row
    assert "23.64/6.86 (0.00/0.00)" in std_row
    origin_row = next(line for line in lines if line.startswith("| origin"))
    assert "24.27/7.08" in origin_row and "(" not in origin_row


def test_vs_paper_shows_differences(record_path):
    text = report([record_path], vs="paper")
    assert "ResNet50 (paper Table 1: resnet50)" in text and "IBN-Net50-b (paper Table 1: resnet50_ibn_b)" in text
    std_row = next(line for line in text.splitlines() if line.startswith("| std x1.5"))
    assert "+0.00/+0.00" in std_row  # our synthetic numbers equal the paper's std x1.5 cells


@pytest.mark.parametrize("fmt, marker", [("latex", "\\toprule"), ("html", "<table>")])
def test_formats(record_path, fmt, marker):
    assert marker in report([record_path], format=fmt)


def test_csv_and_json_hold_numbers_not_display_strings(record_path):
    rows = list(csv.DictReader(io.StringIO(report([record_path], format="csv", vs="paper"))))
    std = next(r for r in rows if r["model"] == "resnet50" and r["condition"] == "std*1.5")
    assert float(std["top1_err"]) == 40.01 and float(std["drop_top1"]) == pytest.approx(15.74)
    assert float(std["paper_top1_err"]) == pytest.approx(40.01) and float(std["diff_top1"]) == pytest.approx(0)
    assert [r["condition"] for r in rows[:3]] == ["origin", "rgb+50", "std*1.5"]  # Table-1 order
    records = json.loads(report([record_path], format="json"))["sections"][0]["rows"]
    origin = next(r for r in records if r["model"] == "resnet50_ibn_b" and r["condition"] == "origin")
    assert origin["top1_err"] == 23.64 and origin["top5_err"] == 6.86 and origin["n_images"] == 100


def test_vs_paper_warns_about_random_weights_and_subsets(tmp_path, capfd):
    record = make_record({"resnet50": {"origin": (99.9, 99.5)}})
    record.models["resnet50"]["weights"] = "random"
    path = write_record(record, tmp_path / "random.json")
    assert main(["report", str(path), "--vs", "paper", "--format", "csv"]) == 0
    err = capfd.readouterr().err
    assert "warning: random.json: resnet50 has random weights" in err
    assert "warning: random.json was run on 100 images, the paper on the full 50,000" in err
    assert main(["report", str(path)]) == 0 and "warning" not in capfd.readouterr().err  # only beside the paper


def test_leaderboard_build(tmp_path, record_path):
    records = tmp_path / "board" / "records"
    records.mkdir(parents=True)
    record_path.rename(records / "run.json")
    written = leaderboard.build(tmp_path / "board")
    board = (tmp_path / "board" / "table1.md").read_text()
    assert [p.name for p in written] == ["table1.md", "paper.md"]
    rows = [line for line in board.splitlines() if line.startswith("| resnet50")]
    assert [r.split("|")[1].strip() for r in rows] == ["resnet50_ibn_b", "resnet50"]  # most robust first
    assert "| yes " in rows[0]  # 100 images: marked as subset
    reference = (tmp_path / "board" / "paper.md").read_text()
    assert "24.27/7.08" in reference and "## Table 5: ratio of IN channels" in reference



LITE0 = Path(__file__).resolve().parents[1] / "leaderboards" / "records" / "table1-efficientnet_lite0-val100.json"


def test_ci_report_of_a_schema_1_record_shows_intervals_and_paired_tests(tmp_path):
    """The committed record as schema 1 wrote it: each cell's Clopper-Pearson interval and each drop's discordant
    counts and McNemar p, recomputed here from the record's per-image strings with scipy."""
    raw = json.loads(schema_1_copy(LITE0, tmp_path / "old.json").read_text())
    assert raw["schema"] == 1 and "predictions" not in raw
    text = report([tmp_path / "old.json"], ci=True)
    answers = raw["per_image"]["top1"]["efficientnet_lite0"]
    top1_section = text.split("### top1")[1].split("### top5")[0]
    lines = {line.split("|")[2].strip(): line for line in top1_section.splitlines()
             if line.startswith("| efficientnet_lite0") and line.count("|") > 8}
    for condition, label in (("origin", "origin"), ("std*1.5", "std x1.5")):
        wrong = answers[condition].count("0")
        ci = binomtest(wrong, 100).proportion_ci(method="exact")
        assert f"[{100 * ci.low:.2f}, {100 * ci.high:.2f}]" in lines[label]
    b = sum(o == "1" and c == "0" for o, c in zip(answers["origin"], answers["std*1.5"]))
    c = sum(o == "0" and c == "1" for o, c in zip(answers["origin"], answers["std*1.5"]))
    assert f"| {b}/{c} " in lines["std x1.5"] and f"| {binomtest(b, b + c).pvalue:.3f} " in lines["std x1.5"]
    assert "Clopper-Pearson" in text and "ECE" in text


def _record_with_confidences(tmp_path: Path, confidence: np.ndarray, correct: np.ndarray, model: str = "m",
                             name: str = "run.json") -> Path:
    """A one-model record on ``len(confidence)`` images whose sidecar holds these top-1 confidences and answers."""
    n = len(confidence)
    answers = "".join("1" if c else "0" for c in correct)
    record = answer_record({model: {"origin": answers, "rgb+50": answers}})
    top5_index = np.tile(np.arange(1, 6, dtype=np.uint16), (1, 2, n, 1))
    top5_index[0, :, correct, 0] = 0  # label 0 first where right
    top5_prob = np.zeros((1, 2, n, 5), np.float16)
    top5_prob[..., 0] = confidence
    stored = Predictions(models=[model], conditions=["origin", "rgb+50"], label=np.zeros(n, np.uint16),
                         valid=np.ones(n, bool), top5_index=top5_index, top5_prob=top5_prob,
                         label_prob=np.zeros((1, 2, n), np.float16))
    path = tmp_path / name
    record.predictions = write_predictions(stored, sidecar_path(path))
    return write_record(record, path)


def test_ci_report_shows_the_ece_with_its_bootstrap_interval_and_the_calibrated_expectation(tmp_path):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 100).astype(np.float16)
    correct = rng.random(100) < confidence - 0.1
    table = statistics(load_records([_record_with_confidences(tmp_path, confidence, correct)]))
    found = stats.ece_uncertainty(confidence.astype(float), correct)
    row = table.set_index("condition").loc["origin"]
    assert row["ECE %"] == f"{100 * found.ece:.2f}"
    assert row["ECE 95% CI"] == f"[{100 * found.interval[0]:.2f}, {100 * found.interval[1]:.2f}]"
    low, high = found.calibrated_range
    assert row["ECE if calibrated"] == f"{100 * found.calibrated_mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    assert 0 < low < found.calibrated_mean < high  # a spread, not a point
    assert "ECE if calibrated" not in statistics(load_records([tmp_path / "run.json"]), "top5")
    assert "ECE if calibrated: the mean [95% range]" in report([tmp_path / "run.json"], ci=True)


def test_ece_of_identical_images_has_a_degenerate_interval_and_schema_1_shows_none(tmp_path):
    table = statistics(load_records([_record_with_confidences(tmp_path, np.full(50, 0.75), np.ones(50, bool))]))
    assert table["ECE %"].tolist() == ["25.00"] * 2 and table["ECE 95% CI"].tolist() == ["[25.00, 25.00]"] * 2
    assert set(statistics(load_records([schema_1_copy(LITE0, tmp_path / "old.json")]))["ECE 95% CI"]) == {"-"}


def test_reliability_legend_gives_the_ece_interval_and_the_calibrated_range(tmp_path, monkeypatch):
    from ibnbench.results import plots

    legends = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: legends.extend(
        t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()) or path)
    plots.plot_reliability(load_records([_record_with_confidences(tmp_path, np.full(50, 0.75), np.ones(50, bool))]),
                           tmp_path / "r.png")
    calibrated = stats.ece_uncertainty(np.full(50, 0.75), np.ones(50, bool)).calibrated_range
    assert legends[1] == (f"origin (ECE 25.00% [25.00, 25.00]; if calibrated {100 * calibrated[0]:.2f}-"
                          f"{100 * calibrated[1]:.2f})")


def test_pairs_report_tests_models_against_each_other_with_holm_and_kappa(tmp_path):
    a, b = "1111111111" + "0" * 10, "0000000000" + "1" * 10  # every image discordant, 10 each way
    c = "1111111111" + "1" * 8 + "00"
    record = answer_record({"m1": {"origin": a}, "m2": {"origin": b}, "m3": {"origin": c}})
    path = write_record(record, tmp_path / "r.json")
    text = report([path], pairs=True)
    rows = [line for line in text.splitlines() if line.startswith("| origin      | m")]
    assert len(rows) == 3  # m1-m2, m1-m3, m2-m3
    p13 = binomtest(0, 8).pvalue  # m1 right where m3 is wrong: 0 images; the reverse: 8
    assert f"| {p13:.3f} " in rows[1] and f"| {3 * p13:.3f} " in rows[1]  # Holm: the smallest of 3, times 3
    kappa = pd.read_csv(io.StringIO(report([path], pairs=True, format="csv").split("\n\n")[-1]), index_col=0)
    assert kappa.loc["m1", "m2"] == pytest.approx(-1.0) and kappa.loc["m1", "m1"] == pytest.approx(1.0)
    # m1 vs m3: agree on 12 of 20 images, accuracies 0.5 and 0.9 -> expected agreement 0.5, kappa 0.1 / 0.5
    assert kappa.loc["m1", "m3"] == pytest.approx(0.2)


def test_compare_two_records_pairs_their_models_on_the_same_images(tmp_path, capsys):
    old = write_record(answer_record({"resnet50": {"origin": "1" * 30 + "0" * 10}}), tmp_path / "a.json")
    new = write_record(answer_record({"resnet50_ibn_b": {"origin": "1" * 30 + "1" * 10}}), tmp_path / "b.json")
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "resnet50_ibn_b" in out and "-25.00" in out and f"{binomtest(0, 10).pvalue:.2g}" in out
    other = write_record(answer_record({"resnet50": {"origin": "1" * 40}}, dataset_sha="e" * 64), tmp_path / "c.json")
    assert main(["compare", str(old), str(other)]) == 2
    err = capsys.readouterr().err
    assert "cannot compare" in err and "datasets differ" in err and len(err.strip().splitlines()) == 1


def test_one_report_command_reads_each_record_file_once(tmp_path, monkeypatch, capsys):
    """Acceptance of issue 26: the table, --ci, --pairs, --vs paper, --plot and --reliability of one `ibnbench report`
    all work from records read once."""
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 40).astype(np.float16)
    paths = [_record_with_confidences(tmp_path, confidence, rng.random(40) < confidence, model, f"{model}.json")
             for model in ("resnet50", "resnet50_ibn_a")]
    reads: collections.Counter[Path] = collections.Counter()
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            reads[Path(file).resolve()] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)  # Path.read_text opens through io.open
    monkeypatch.setattr(builtins, "open", counting_open)
    figures = tmp_path / "drops.png", tmp_path / "rel.png"
    assert main(["report", *map(str, paths), "--ci", "--pairs", "--vs", "paper", "--plot", str(figures[0]),
                 "--reliability", str(figures[1])]) == 0
    monkeypatch.undo()
    assert {path: reads[path.resolve()] for path in paths} == {path: 1 for path in paths}
    sidecars = [sidecar_path(path) for path in paths]  # --ci and --reliability both use the stored confidences
    assert {path: reads[path.resolve()] for path in sidecars} == {path: 1 for path in sidecars}
    out = capsys.readouterr().out
    assert "### top1 model vs model under each condition" in out and "ECE if calibrated" in out
    assert all(f"wrote {figure}" in out and figure.stat().st_size > 0 for figure in figures)


@pytest.fixture()
def answers_path(tmp_path):
    """Two models with per-image answers on the same 20 images, under origin and rgb+50."""
    record = answer_record({"resnet50": {"origin": "1" * 14 + "0" * 6, "rgb+50": "1" * 10 + "0" * 10},
                            "resnet50_ibn_b": {"origin": "1" * 15 + "0" * 5, "rgb+50": "1" * 14 + "0" * 6}})
    return write_record(record, tmp_path / "answers.json")


def _table_lines(text: str, title: str) -> list[str]:
    """The lines of the markdown section headed ``### title`` (up to the next heading)."""
    return text.split(f"### {title}\n")[1].split("###")[0].splitlines()


def test_json_report_is_one_document_holding_the_numbers_of_the_text(answers_path):
    built = build_report(load_records([answers_path]), ci=True, pairs=True)
    document, markdown = json.loads(built.render("json")), built.render("markdown")
    titles = [s["title"] for s in document["sections"]]
    assert titles == [s.title for s in built.sections] and len(titles) == 1 + 2 + 1 + 2
    main_lines = markdown.split("\n\n")[0].splitlines()
    for row in document["sections"][0]["rows"]:  # the main table: numbers, one row per (model, condition)
        line = next(line for line in main_lines if line.startswith(f"| {row['label']} "))
        assert f"{row['top1_err']:.2f}/{row['top5_err']:.2f}" in line
    ci = document["sections"][1]
    assert ci["title"] == "top1 error with 95% intervals and paired tests against origin" and len(ci["rows"]) == 4
    lines = _table_lines(markdown, ci["title"])
    for row in ci["rows"]:
        line = next(line for line in lines if line.startswith(f"| {row['model']} ") and f" {row['condition']} " in line)
        assert all(f" {row[column]} " in line for column in ("top1 err %", "95% CI (CP)", "p McNemar", "p Holm"))
    pairs = document["sections"][3]
    assert [r["n"] for r in pairs["rows"]] == [20, 20] and pairs["note"].startswith("diff: B's error minus A's")
    kappa = document["sections"][-1]
    assert kappa["rows"][0]["model"] == "resnet50" and kappa["rows"][0]["resnet50"] == 1.0
    assert kappa["note"].startswith("Error consistency")


def test_markdown_text_html_and_latex_reports_hold_the_tables_titles_and_notes(answers_path):
    built = build_report(load_records([answers_path]), ci=True)
    markdown = built.render("markdown")
    assert markdown.splitlines()[0].split("|")[1].strip() == "condition"
    assert "|:-" in markdown.splitlines()[1] or "|--" in markdown.splitlines()[1]
    assert "### top5 error with 95% intervals and paired tests against origin" in markdown
    assert markdown.rstrip().endswith(built.sections[-1].note)  # the CI note under the last table
    text = built.render("text")
    assert "|" not in text and text.splitlines()[0].split()[:3] == ["condition", "resnet50", "resnet50_ibn_b"]
    assert "top1 error with 95% intervals and paired tests against origin\n=====" in text
    assert "Cells: top-1/top-5 error % (drop against origin)." in text
    page = built.render("html")
    assert page.count("<table>") == 3 and page.count("<h3>") == 2 and "Tango&#x27;s score interval" in page
    assert built.render("latex").count("\\toprule") == 3


def test_the_cli_offers_every_report_format(answers_path, capsys):
    assert REPORT_FORMATS == FORMATS
    for fmt in FORMATS:
        assert main(["report", str(answers_path), "--format", fmt]) == 0
        assert capsys.readouterr().out == build_report(load_records([answers_path])).render(fmt) + "\n"


def test_compare_in_json_is_one_document_with_its_note(tmp_path, capsys):
    old = write_record(answer_record({"resnet50": {"origin": "1" * 30 + "0" * 10}}), tmp_path / "a.json")
    new = write_record(answer_record({"resnet50_ibn_b": {"origin": "1" * 40}}), tmp_path / "b.json")
    assert main(["compare", str(old), str(new), "--format", "json"]) == 0
    (section,) = json.loads(capsys.readouterr().out)["sections"]
    assert section["rows"][0]["diff"] == "-25.00" and section["rows"][0]["A wrong, B right"] == 10
    assert section["note"].startswith(f"A: {old}, B: {new}. diff: B's error minus A's")

"""Segmentation records on the leaderboard, the website and in ``report --vs paper``: the board's cells against
mIoU and pixel accuracy computed here in numpy from the records' confusion matrices (a tiny model run on synthetic
Cityscapes and GTA5 folders), the published cells against the data file read here, and the pages well-formed."""
from __future__ import annotations

import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers.records import make_record
from helpers.segmentation import TINY, make_cityscapes, register_tiny, unregister

from ibnbench.cli import main
from ibnbench.eval.options import RunOptions
from ibnbench.eval.segmentation_runs import run_segmentation
from ibnbench.results.record import write_record
from ibnbench.results.segmentation_record import read_segmentation_record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAPER = Path(__file__).resolve().parents[1] / "ibnbench" / "reference" / "segmentation_paper.toml"
CONDITIONS = ["origin", "fog-1", "gaussian_noise-2"]


def miou_and_accuracy(confusion: list) -> tuple[float, float]:
    """Percent mIoU over the classes present in ground truth or predictions, and pixel accuracy, in numpy."""
    matrix = np.asarray(confusion, dtype=np.float64)
    intersection, truth, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    union = truth + predicted - intersection
    present = union > 0
    return 100 * float(np.mean(intersection[present] / union[present])), 100 * matrix.trace() / matrix.sum()


def make_gta5(root: Path, seed: int) -> Path:
    """RobustNet's GTA5 layout (``images/valid/<folder>``, grey label ids) from a synthetic Cityscapes folder."""
    source = make_cityscapes(root.with_name(root.name + "-source"), n=3, seed=seed)
    for kind, folder, pattern in (("images", "leftImg8bit", "*_leftImg8bit.png"),
                                  ("labels", "gtFine", "*_labelIds.png")):
        (root / kind / "valid" / "01").mkdir(parents=True)
        for i, path in enumerate(sorted((source / folder / "val").rglob(pattern))):
            shutil.copy(path, root / kind / "valid" / "01" / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A leaderboard folder holding one segmentation record: the tiny model on Cityscapes and GTA5 under two
    corruptions, and a second record of the same rows renamed to ACDC conditions."""
    register_tiny()
    data = tmp_path_factory.mktemp("data")
    root = tmp_path_factory.mktemp("board")
    try:
        record = run_segmentation([TINY], {"cityscapes": str(make_cityscapes(data / "cityscapes", n=3)),
                                           "gta5": str(make_gta5(data / "gta5", seed=1))},
                                  suite="imagenet-c", conditions=CONDITIONS, weights=["random"],
                                  options=RunOptions(device="cpu", workers=0, batch_size=2, progress=False),
                                  output=root / "records" / "tiny.json")
    finally:
        unregister(TINY)
    acdc = json.loads(Path(record.path).read_text())
    renamed = {"cityscapes": "acdc/fog", "gta5": "acdc/night"}
    acdc["results"] = [{**row, "dataset": renamed[row["dataset"]]} for row in acdc["results"]]
    acdc["datasets"] = {renamed[k]: v for k, v in acdc["datasets"].items()}
    (root / "records" / "weather.json").write_text(json.dumps(acdc))
    return root


def _expected(board: Path) -> dict[tuple[str, str], tuple[float, float]]:
    record = read_segmentation_record(board / "records" / "tiny.json")
    return {(row["condition"], row["dataset"]): miou_and_accuracy(row["confusion"]) for row in record.results}


def _markdown_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``## heading...`` by first cell."""
    block = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("|")]
    return {row[0]: row[1:] for row in rows[2:]} | {"header": rows[0][1:]}


def test_board_cells_equal_scores_of_the_confusion_matrices(board):
    assert main(["leaderboard", "build", "--root", str(board)]) == 0
    text = (board / "segmentation.md").read_text()
    expected = _expected(board)
    targets = _markdown_rows(text, "Target datasets: mIoU")
    assert targets["header"] == ["cityscapes", "gta5", "acdc/fog", "acdc/night", "mean"]
    miou = [expected["origin", d][0] for d in ("cityscapes", "gta5")]
    assert targets[TINY] == [f"{v:.2f}" for v in [*miou, *miou, np.mean(miou)]]
    accuracy = _markdown_rows(text, "Target datasets: pixel accuracy")[TINY]
    assert accuracy[:2] == [f"{expected['origin', d][1]:.2f}" for d in ("cityscapes", "gta5")]
    acdc = _markdown_rows(text, "ACDC per condition")
    assert acdc["header"] == ["fog", "night", "mean"] and acdc[TINY][:2] == [f"{v:.2f}" for v in miou]
    fog = _markdown_rows(text, f"{TINY} on gta5: mIoU % per corruption")["Fog"]
    clean = round(expected["origin", "gta5"][0], 4)
    assert fog == [f"{expected['fog-1', 'gta5'][0]:.2f}", "-", f"{expected['fog-1', 'gta5'][0]:.2f}",
                   f"{round(expected['fog-1', 'gta5'][0], 4) / clean:.2f}"]
    assert "robustnet_r101_os8_isw" in text and "shachoi/RobustNet" in text


def test_report_vs_paper_shows_the_data_files_cells_and_names_rows_without_one(board, tmp_path, capsys):
    record = json.loads((board / "records" / "tiny.json").read_text())
    published = tomllib.loads(PAPER.read_text())["tables"]["robustnet-readme-r101-os8"]["cells"]
    isw = {c["dataset"]: c["miou"] for c in published if c["model"] == "robustnet_r101_os8_isw"}
    record["results"] = [{**row, "model": "robustnet_r101_os8_isw"} for row in record["results"]]
    record["models"] = {"robustnet_r101_os8_isw": {"weights": "random"}}
    (tmp_path / "isw.json").write_text(json.dumps(record))
    shutil.copy(board / "records" / "tiny.statistics.npz", tmp_path / "tiny.statistics.npz")
    assert main(["report", str(tmp_path / "isw.json"), str(board / "records" / "weather.json"), "--vs", "paper",
                 "--format", "json"]) == 0
    out, err = capsys.readouterr()
    section = next(s for s in json.loads(out)["sections"] if s["title"].startswith("Beside the published"))
    rows = {(r["model"], r["dataset"]): r for r in section["rows"]}
    expected = _expected(board)
    for dataset in ("cityscapes", "gta5"):
        row = rows["robustnet_r101_os8_isw", dataset]
        assert row["paper mIoU"] == isw[dataset]
        assert row["mIoU - paper"] == pytest.approx(expected["origin", dataset][0] - isw[dataset], abs=1e-3)
        assert row["paper pixel acc"] is None
    assert rows[TINY, "acdc/fog"]["paper mIoU"] is None
    assert f"No published number for: {TINY} / acdc/fog, {TINY} / acdc/night" in section["note"]
    assert "random weights" in err


def test_report_refuses_classification_options_and_mixed_records(board, tmp_path, capsys):
    assert main(["report", str(board / "records"), "--ci"]) == 2
    assert "--ci applies to classification records" in capsys.readouterr().err
    write_record(make_record({"resnet50": {"origin": (24.0, 7.0)}}), tmp_path / "classification.json")
    assert main(["report", str(board / "records" / "tiny.json"), str(tmp_path / "classification.json")]) == 2
    assert "classification record among segmentation records" in capsys.readouterr().err
    assert main(["compare", str(board / "records" / "tiny.json"), str(tmp_path / "classification.json")]) == 2


def test_site_has_a_segmentation_page_and_model_page(board, tmp_path):
    out = tmp_path / "html"
    assert main(["leaderboard", "build", "--root", str(board), "--html", str(out)]) == 0
    pages = {p.relative_to(out).as_posix(): ET.fromstring(p.read_text(encoding="utf-8")) for p in out.rglob("*.html")}
    assert {"index.html", "segmentation.html", f"models/{TINY}.html"} <= set(pages)
    tables = [t for t in pages["segmentation.html"].iter("table") if "segmentation" in t.get("class", "").split()]
    first = [["".join(c.itertext()).strip() for c in row] for row in tables[0].find("tbody")]
    expected = _expected(board)
    assert first[0][:3] == [TINY, *(f"{expected['origin', d][0]:.2f}" for d in ("cityscapes", "gta5"))]
    index = ET.tostring(pages["index.html"], encoding="unicode")
    assert "segmentation.html" in index and f"models/{TINY}.html" in index
    assert (out / "records" / "tiny.json").is_file()


def test_a_dataset_name_measured_on_other_data_is_kept_apart(board):
    from ibnbench.results.segmentation_board import sections

    first = read_segmentation_record(board / "records" / "tiny.json")
    second = read_segmentation_record(board / "records" / "tiny.json")
    second.datasets = {**second.datasets, "gta5": {**second.datasets["gta5"], "sha256": "f" * 64}}
    targets = sections([first, second])[0][1]
    assert list(targets.columns) == ["cityscapes", "gta5 @" + first.datasets["gta5"]["sha256"][:8], "gta5 @ffffffff",
                                     "mean"]


def test_a_classification_suite_named_segmentation_does_not_overwrite_the_board(tmp_path, capsys):
    record = make_record({"resnet50": {"origin": (24.0, 7.0)}})
    record.suite = "segmentation"
    write_record(record, tmp_path / "records" / "r.json")
    assert main(["leaderboard", "build", "--root", str(tmp_path)]) == 2
    assert "would overwrite the segmentation board (segmentation.md)" in capsys.readouterr().err

"""The paper's tables as data: every cell equals ../shared/paper/ibn-net-tables.md (parsed here, independently),
every published metric in the registry equals the paper or the IBN-Net README, and `report --vs paper` puts
each cell beside the right model, naming the implementation it comes from."""
from __future__ import annotations

import math
import re

import pytest
from helpers.shared import SHARED, need

import ibnbench
from ibnbench.results import paper
from ibnbench.results.record import Record, write_record
from ibnbench.results.report import report

TABLES_MD = SHARED / "paper" / "ibn-net-tables.md"
NUMBER = r"(\d+\.\d+|-)"
CELL = re.compile(rf"^{NUMBER}/{NUMBER}(?: \({NUMBER}/{NUMBER}\))?")


def _float(text: str | None) -> float | None:
    return None if text is None else math.nan if text == "-" else float(text)


def markdown_sections() -> dict[str, list[list[str]]]:
    """``{heading: rows}`` of the shared markdown file, each row its cells as strings."""
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in need(TABLES_MD).read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif current is not None and line.startswith("|") and not line.startswith("|---"):
            current.append([c.strip() for c in line.strip("|").split("|")])
    return sections


def section(prefix: str) -> list[list[str]]:
    return next(rows for heading, rows in markdown_sections().items() if heading.startswith(prefix))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("number", [1, 2, 3])
def test_grid_tables_equal_the_shared_transcription(number):
    header, *rows = section(f"Table {number}:")
    header = [re.sub(r" \((gain|drop)\)$", "", h) for h in header]  # "IBN-Net-a (gain)": the delta's meaning
    by_row = {r[0]: r for r in rows}
    cells = paper.cells(number)
    assert len(cells) == sum(len(r) - 1 for r in rows)  # every printed cell is transcribed, once
    for cell in cells:
        top1, top5, d1, d5 = CELL.match(by_row[cell.row][header.index(cell.column)]).groups()
        assert same(cell.top1, _float(top1)) and same(cell.top5, _float(top5)), cell
        assert cell.delta == (None if d1 is None else (_float(d1), _float(d5))), cell


@pytest.mark.parametrize("number", [4, 5])
def test_setting_tables_equal_the_shared_transcription(number):
    header, top1_row, top5_row = section(f"Table {number}:")
    cells = paper.cells(number)
    assert [c.row for c in cells] == header[1:]
    for cell in cells:
        i = header.index(cell.row)
        assert (cell.top1, cell.top5) == (float(top1_row[i]), float(top5_row[i])), cell


def test_every_cell_names_a_registered_implementation_and_a_suite_condition():
    conditions = {c.id for name in ("table1", "sweep") for c in ibnbench.load_suite(name)}
    for cell in paper.cells():
        assert cell.model == "" or cell.model in ibnbench.list_models(), cell
        assert cell.condition in conditions, cell
    assert {c.model for c in paper.cells(1) if c.column == "IBN-Net50-a"} == {"resnet50_ibn_a_old"}
    assert paper.implementation("resnet50_ibn_a") == "resnet50_ibn_a_old"
    assert paper.implementation("resnet50_ibn_b") == "resnet50_ibn_b"


def readme_metrics() -> dict[str, dict[str, tuple[float, float]]]:
    """``{release file stem: {source: (top1, top5)}}`` from the README section of the shared file."""
    text = need(TABLES_MD).read_text()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for top1, top5, stem in re.findall(r"(\d+\.\d+)/(\d+\.\d+) \((\w+)-[0-9a-f]+\.pth\)", text):
        out.setdefault(stem, {})["IBN-Net README"] = (float(top1), float(top5))
    for top1, top5, net in re.findall(r"(\d+\.\d+)/(\d+\.\d+) \(ResNet-(\d+)\)", text):
        out[f"resnet{net}_ibn_a"]["IBN-Net README at tag v1.0"] = (float(top1), float(top5))
    return out


def test_registry_metrics_equal_their_published_source():
    published = readme_metrics()
    assert len(published) == 8
    for stem, by_source in published.items():
        metrics = {m.source: (m.top1_err, m.top5_err) for m in ibnbench.zoo.model_info(stem).weights.metrics}
        assert metrics == by_source, stem
    table2 = {c.model: (c.top1, c.top5) for c in paper.cells(2) if c.column == "IBN-Net-a"}
    for name in ("resnet50_ibn_a_old", "resnet101_ibn_a_old"):
        (metric,) = ibnbench.zoo.model_info(name).weights.metrics
        assert metric.source == "paper Table 2" and (metric.top1_err, metric.top5_err) == table2[name]


def run_record(models_errors: dict[str, dict[str, tuple[float, float]]], conditions: list[str]) -> Record:
    suite = {c.id: c.label for c in ibnbench.load_suite("table1")}
    return Record(
        suite="table1", suite_hash="0" * 64, conditions=[{"id": c, "label": suite[c]} for c in conditions],
        dataset={"sha256": "d" * 64, "n_images": 50000, "subset": False, "layout": "imagefolder"},
        models={m: {"weights": "official", "sha256": "f" * 64} for m in models_errors},
        environment={"device": "cpu", "dtype": "float32"}, timing={"seconds": 1.0},
        results=[{"model": m, "condition": c, "top1_err": e[0], "top5_err": e[1], "n_images": 50000}
                 for m, by_cond in models_errors.items() for c, e in by_cond.items()],
        created="2026-12-02T00:00:00+00:00")


TABLE1_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5", "monet"]


def test_vs_paper_shows_all_fifteen_table1_cells_with_their_implementation(tmp_path):
    ours = {m: {c: (30.0, 10.0) for c in TABLE1_CONDITIONS} for m in ("resnet50", "resnet50_ibn_a", "resnet50_ibn_b")}
    text = report([write_record(run_record(ours, TABLE1_CONDITIONS), tmp_path / "t1.json")], vs="paper")
    header = [h.strip() for h in text.splitlines()[0].split("|")[1:-1]]
    assert header == ["condition", "resnet50", "resnet50_ibn_a", "resnet50_ibn_b",
                      "ResNet50 (paper Table 1: resnet50)", "IBN-Net50-a (paper Table 1: resnet50_ibn_a_old)",
                      "IBN-Net50-b (paper Table 1: resnet50_ibn_b)", "resnet50 - paper (top1/top5)",
                      "resnet50_ibn_a - paper, other implementation: resnet50_ibn_a_old (top1/top5)",
                      "resnet50_ibn_b - paper (top1/top5)"]
    printed = [c.text(with_delta=c.condition != "origin") for c in paper.cells(1)]
    assert len(printed) == 15 and all(p in text for p in printed)
    monet = next(line for line in text.splitlines() if line.startswith("| Monet"))
    assert "54.51/29.32 (30.24/22.24)" in monet and "-24.51/-19.32" in monet  # ours 30/10 - paper ResNet50


def test_vs_paper_finds_variant_and_ablation_cells(tmp_path):
    ours = {"resnet50_ibn_c": {"origin": (23.0, 6.5), "monet": (52.0, 27.0)},
            "resnet50_ibn_a_stages1": {"origin": (23.58, 6.72)}}
    text = report([write_record(run_record(ours, ["origin", "monet"]), tmp_path / "t3.json")], vs="paper")
    assert "IBN-Net50-c (paper Table 3: resnet50_ibn_c)" in text and "51.83/27.09 (29.05/20.77)" in text
    assert "IBN-Net50-a, IN in groups 1 (paper Table 4: resnet50_ibn_a_stages1)" in text
    origin = next(line for line in text.splitlines() if line.startswith("| origin"))
    assert "+0.22/+0.18" in origin and "+0.00/+0.00" in origin

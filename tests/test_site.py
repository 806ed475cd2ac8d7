"""The leaderboard website: built from the committed records, well-formed, self-contained, and working in a real
browser (headless Chromium from file://)."""
from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers.browser import Chromium, find_chromium
from helpers.records import make_record, sweep_record

from ibnbench.cli import main
from ibnbench.results.record import write_record
from ibnbench.results.site import build_site, make_server

LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
COMMITTED = {p.name: json.loads(p.read_text()) for p in sorted((LEADERBOARDS / "records").glob("*.json"))}


def _pages(site: Path) -> dict[str, ET.Element]:
    """Every HTML page of the site parsed as XML: a page that is not well-formed fails here."""
    pages = {}
    for path in sorted(site.rglob("*.html")):
        try:
            pages[str(path.relative_to(site))] = ET.fromstring(path.read_text(encoding="utf-8"))
        except ET.ParseError as exc:
            pytest.fail(f"{path.relative_to(site)} is not well-formed: {exc}")
    return pages


def _rows(page: ET.Element, table_class: str) -> list[list[str]]:
    return [["".join(cell.itertext()).strip() for cell in row]
            for table in page.iter("table") if table_class in table.get("class", "").split()
            for row in table.find("tbody")]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by the CLI from the committed records."""
    out = tmp_path_factory.mktemp("site") / "html"
    assert main(["leaderboard", "build", "--root", str(LEADERBOARDS), "--html", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def synthetic_site(tmp_path_factory) -> Path:
    """Three models on a 100-image subset, resnet50 on a full 50,000-image set and
    under the sweep suite."""
    records = tmp_path_factory.mktemp("records")
    subset = make_record({"resnet50": {"origin": (24.27, 7.08), "rgb+50": (28.0, 9.0), "std*1.5": (40.01, 19.08)},
                          "resnet50_ibn_b": {"origin": (23.64, 6.86), "rgb+50": (23.8, 7.0), "std*1.5": (23.64, 6.86)},
                          "efficientnet_lite0": {"origin": (28.0, 12.0), "rgb+50": (29.0, 11.0),
                                                 "std*1.5": (33.0, 14.0)}})
    write_record(subset, records / "subset.json")
    full = make_record({"resnet50": {"origin": (24.0, 7.0), "rgb+50": (25.0, 7.5), "std*1.5": (39.0, 19.0)}},
                       dataset_sha="e" * 64, n_images=50000)
    write_record(full, records / "full.json")
    write_record(sweep_record(models=("resnet50",)), records / "sweep.json")
    out = tmp_path_factory.mktemp("synthetic") / "html"
    build_site(records, out)
    return out


def test_pages_are_well_formed_and_reference_only_local_files(site):
    pages = _pages(site)
    assert {"index.html", "paper.html", "suites/table1.html", "suites/table1-clipped.html",
            "models/efficientnet_lite0.html"} <= set(pages)
    for name, page in pages.items():
        text = (site / name).read_text(encoding="utf-8")
        assert not re.search(r"https?:|//[a-z]", text.replace("//<![CDATA[", "").replace("//]]>", ""),
                             re.IGNORECASE), name
        assert page.get("lang") == "en" and page.find("head/title").text
        for element in page.iter():
            for attribute in ("href", "src"):
                link = element.get(attribute)
                if link:  # every link and image resolves to a file of the site
                    assert (site / name).parent.joinpath(link.split("#")[0]).resolve().is_file(), (name, link)
            if element.tag == "img":
                assert element.get("alt"), name
            if element.tag == "table":
                assert element.find("caption") is not None and element.find("thead/tr/th").get("scope") == "col"
    for figure in site.rglob("*.svg"):  # matplotlib's SVGs name namespaces by URL but link nothing outside
        assert not re.search(r'href="(?!#)', figure.read_text()), figure


def test_site_holds_the_committed_records_and_the_papers_table(site):
    pages = _pages(site)
    results = _rows(pages["index.html"], "results")
    expected = sorted((d["suite"], m) for d in COMMITTED.values() for m in d["models"])
    assert sorted((row[0], row[1]) for row in results) == expected
    for name, data in COMMITTED.items():
        suite_page = pages[f"suites/{data['suite']}.html"]
        full = [t for s in suite_page.iter("section") if s.get("class") == "full" for t in s.iter("table")]
        assert not full  # 100 images: listed under subsets only
        if data["suite"].startswith("table1"):
            (row,) = [row for row in _rows(suite_page, "board") if row[0] in data["models"]]
            for result in data["results"]:  # each error with its Clopper-Pearson interval (issue 16's board cells)
                assert any(re.fullmatch(rf"{result['top1_err']:.2f} \[[\d.]+, [\d.]+\] / "
                                        rf"{result['top5_err']:.2f} \[[\d.]+, [\d.]+\]", cell)
                           for cell in row), (result, row)
        assert (site / "records" / name).read_bytes() == (LEADERBOARDS / "records" / name).read_bytes()
        for model, described in data["models"].items():
            model_page = (site / "models" / f"{model}.html").read_text()
            assert f'href="../records/{name}"' in model_page
            assert described["sha256"] in model_page and data["dataset"]["sha256"] in model_page
            assert data["created"] in model_page and data["environment"]["torch"] in model_page
    paper = _rows(pages["paper.html"], "paper")
    assert paper[0] == ["origin", "24.27/7.08", "22.54/6.32", "23.64/6.86"]  # Pan et al. 2018, Table 1
    assert paper[[r[0] for r in paper].index("std x1.5")][1] == "40.01/19.08 (15.74/12.00)"
    assert len(list(pages["paper.html"].iter("table"))) == 5  # Tables 1-5


def test_model_page_puts_the_papers_cells_next_to_ours(synthetic_site):
    page = _pages(synthetic_site)["models/resnet50.html"]
    tables = [t for t in page.iter("table") if "numbers" in t.get("class", "")]
    header = ["".join(th.itertext()) for th in tables[0].find("thead/tr")]
    assert header[:3] == ["condition", "resnet50", "ResNet50 (paper Table 1: resnet50)"]
    rows = {r[0]: r for r in _rows(page, "numbers")}
    assert rows["std x1.5"][2] == "40.01/19.08 (15.74/12.00)"


def test_model_page_draws_drops_as_bars_and_sweeps_as_curves(synthetic_site):
    page = _pages(synthetic_site)["models/resnet50.html"]
    images = [(img.get("src"), img.get("alt")) for img in page.iter("img")]
    assert sorted(src.rsplit("-", 1)[1] for src, _ in images) == ["curves.svg", "drops.svg", "drops.svg"]
    for src, alt in images:
        assert ET.parse(synthetic_site / "models" / src).getroot().tag.endswith("svg") and "resnet50" in alt


def test_full_set_and_subsets_are_separate_and_families_marked(synthetic_site):
    pages = _pages(synthetic_site)
    suite = pages["suites/table1.html"]
    sections = {s.get("class"): s for s in suite.iter("section")}
    full, subsets = (_rows(sections[k], "board") for k in ("full", "subsets"))
    assert [r[0] for r in full] == ["resnet50"] and "(50000)" in full[0][2]
    assert [r[0] for r in subsets] == ["resnet50_ibn_b", "efficientnet_lite0", "resnet50"]  # by mean drop
    families = {r.get("data-family") for s in sections.values() for t in s.iter("tbody") for r in t}
    assert families == {"resnet", "resnet ibn-b", "efficientnet"}


def test_rebuild_drops_stale_pages_and_refuses_the_records_folder(tmp_path):
    records = tmp_path / "records"
    for model in ("resnet50", "resnet50_ibn_a"):
        write_record(make_record({model: {"origin": (24.0, 7.0)}}), records / f"{model}.json")
    out = tmp_path / "site"
    build_site(records, out)
    assert "no drops figure" in (out / "models" / "resnet50.html").read_text()  # origin only: nothing to draw
    (records / "resnet50_ibn_a.json").unlink()
    build_site(records, out)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["resnet50.html"]
    assert sorted(p.name for p in (out / "records").iterdir()) == ["resnet50.json"]
    with pytest.raises(ValueError, match="holds the records"):
        build_site(records, tmp_path)


def test_serve_answers_on_localhost_only(site):
    with make_server(site, port=0) as server:
        host, port = server.server_address
        assert host == "127.0.0.1"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as reply:
                assert reply.read() == (site / "index.html").read_bytes()
        finally:
            server.shutdown()


def test_build_without_records_is_a_one_line_error(tmp_path, capsys):
    assert main(["leaderboard", "build", "--root", str(tmp_path), "--html", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "records" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("IBNBENCH_REQUIRE_CHROMIUM"):
            pytest.fail("IBNBENCH_REQUIRE_CHROMIUM is set but no chromium is on PATH")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    with Chromium(binary) as chromium:
        yield chromium


def _not_blank(path: Path) -> None:
    from PIL import Image, ImageStat

    image = Image.open(path).convert("L")
    assert image.width >= 800 and image.height >= 400
    assert ImageStat.Stat(image).stddev[0] > 15  # a blank (single-colour) page has none
    inked = sum(image.point(lambda v: v < 128).histogram()[1:])
    assert inked > 0.01 * image.width * image.height  # text and tables, not a few stray pixels


ROWS = ("Array.from(document.querySelectorAll('{} tbody tr')).filter(r => !r.hidden)"
        ".map(r => Array.from(r.cells, c => c.textContent.trim()))")


@pytest.mark.slow
def test_index_and_model_page_in_chromium(site, browser, tmp_path):
    browser.open((site / "index.html").as_uri())
    before = browser.evaluate(ROWS.format("table.results"))
    assert sorted((r[0], r[1]) for r in before) == sorted((d["suite"],
                                                           m) for d in COMMITTED.values() for m in d["models"])
    header = "table.results thead th:nth-child(6)"
    assert browser.evaluate(f"document.querySelector('{header}').textContent.trim()") == "mean drop top1"
    browser.click(f"{header} button")
    after = browser.evaluate(ROWS.format("table.results"))
    assert after != before and sorted(after) == sorted(before)
    assert [float(r[5]) for r in after] == sorted(float(r[5]) for r in before)
    assert browser.evaluate(f"document.querySelector('{header}').getAttribute('aria-sort')") == "ascending"
    browser.click(f"{header} button")
    assert [float(r[5]) for r in browser.evaluate(ROWS.format("table.results"))] == sorted(
        (float(r[5]) for r in before), reverse=True)
    _not_blank(browser.screenshot(tmp_path / "index.png"))

    browser.open((site / "models" / "efficientnet_lite0.html").as_uri())
    images = browser.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
    with_lite0 = [d for d in COMMITTED.values() if "efficientnet_lite0" in d["models"]]
    assert len(images) == len(with_lite0) and all(done and width > 0 for done, width in images)
    rows = browser.evaluate(ROWS.format("table.numbers"))
    assert ["origin", "28.00/12.00", "24.27/7.08", "22.54/6.32", "23.64/6.86"] in rows  # ours, then the paper's
    _not_blank(browser.screenshot(tmp_path / "model.png"))
    assert all(url.startswith("file://") for url in browser.requested_urls()), browser.requested_urls()


@pytest.mark.slow
def test_suite_table_sorts_and_filters_in_chromium(synthetic_site, browser):
    browser.open((synthetic_site / "suites" / "table1.html").as_uri())
    table = "section.subsets table.board"
    assert [r[0] for r in browser.evaluate(ROWS.format(table))] == ["resnet50_ibn_b", "efficientnet_lite0", "resnet50"]
    browser.click(f"{table} thead th:nth-child(1) button")
    assert [r[0] for r in browser.evaluate(ROWS.format(table))] == ["efficientnet_lite0", "resnet50", "resnet50_ibn_b"]
    browser.evaluate("(() => { const s = document.querySelector('select.family-filter'); s.value = 'resnet'; "
                     "s.dispatchEvent(new Event('change')); })()")
    assert [r[0] for r in browser.evaluate(ROWS.format("table.board"))] == ["resnet50", "resnet50"]


def test_c_bar_suite_page_ranks_by_mce_bar_with_the_boards_baseline_constants(tmp_path):
    """An ImageNet-C-bar suite page shows the scores table (mean error per corruption), ranked by mCE-bar when the
    leaderboard folder holds baselines/imagenet-c-bar.toml, as the markdown board is."""
    from helpers.records import graded_record

    from ibnbench.conditions.c_bar import C_BAR_LABELS, C_BAR_NAMES

    def errors(scale: float) -> dict[str, float]:
        return {"origin": 20.0, **{f"{n}-{s}": scale * (40.0 + i + s) for i, n in enumerate(C_BAR_NAMES)
                                   for s in range(1, 6)}}

    (tmp_path / "board" / "records").mkdir(parents=True)
    (tmp_path / "board" / "baselines").mkdir()
    write_record(graded_record({"resnet50": errors(0.6), "resnet50_ibn_b": errors(0.5)}, "imagenet-c-bar",
                               C_BAR_LABELS), tmp_path / "board" / "records" / "bar.json")
    constants = "".join(f"{n} = {0.25 * (43 + i)}\n" for i, n in enumerate(C_BAR_NAMES))
    baseline = tmp_path / "board" / "baselines" / "imagenet-c-bar.toml"
    baseline.write_text(f'suite = "imagenet-c-bar"\n[errors]\n{constants}')
    build_site(tmp_path / "board" / "records", tmp_path / "html")
    page = _pages(tmp_path / "html")["suites/imagenet-c-bar.html"]
    scores = next(s for s in page.iter("section") if s.get("class") == "scores")
    header = ["".join(th.itertext()).strip() for th in next(scores.iter("thead")).iter("th")]
    rows = _rows(scores, "board")
    assert [r[0] for r in rows] == ["resnet50_ibn_b", "resnet50"]
    assert [r[header.index("mCE-bar (normalised by the baseline, %)")] for r in rows] == ["200.00", "240.00"]
    assert rows[0][header.index("Sparkles (mean)")] == "26.00"

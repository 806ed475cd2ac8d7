"""ImageNet-P on the leaderboard, the site and in plots: boards per difficulty with mean FP and T5D, FP per
perturbation and, with the leaderboard's baseline constants, FR, mFR and mT5D ranked by mFR; the FP bars of
`report --plot`. Every number is checked against the transcription of ImageNet-P test.py
(tests/helpers/imagenet_p_reference.py) on the frames the sidecar stores, and the intervals against scipy."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.imagenet_p_reference import flip_prob, ranking_dist
from scipy import stats

from ibnbench.cli import main
from ibnbench.conditions.perturbations import LABELS, TEST_PERTURBATIONS, is_noise
from ibnbench.results import leaderboard
from ibnbench.results.predictions import for_record
from ibnbench.results.record import read_record

TINY, OTHER = "helpers.tiny:tiny_classifier", "helpers.tiny:other_tiny_classifier"
MODELS = (TINY, OTHER)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A leaderboard folder with two imagenet-p records of the two tiny models on 2 images (64-pixel crops): every
    test perturbation at difficulty 1, and rotate at difficulty 2."""
    from helpers.images import make_folder

    from ibnbench.data.classes import imagenet_wnids

    root = tmp_path_factory.mktemp("p-board")
    wnids = imagenet_wnids()
    val = make_folder(root / "val", {wnids[1]: [1], wnids[400]: [4]})
    for name, extra in (("d1", []), ("d2", ["--conditions", "origin,rotate", "--difficulty", "2"])):
        assert main(["run", "--model", TINY, "--model", OTHER, "--weights", "random", "--data", str(val),
                     "--suite", "imagenet-p", "--limit", "2", "--preprocessing", "resize=64,crop=64", "--device",
                     "cpu", "--workers", "0", "--no-progress", "--output",
                     str(root / "board" / "records" / f"{name}.json"), *extra]) == 0
    return root / "board"


def expected(record_path, difficulty: int) -> dict[str, dict[str, tuple[float, float, int, int]]]:
    """Per model and perturbation of the record: (FP, T5D, flipped pairs, pairs) from its sidecar's frames, by the
    transcription of test.py (flips counted here as it compares frames)."""
    record = read_record(record_path)
    sequences = for_record(record)
    out = {}
    for model in MODELS:
        for name in sequences.sequences.perturbations:
            top5 = sequences.sequence(model, name)
            noise = is_noise(name)
            step = 1 if noise else difficulty
            first = np.zeros(top5.shape[1] - 1, int) if noise else np.arange(top5.shape[1] - step)
            second = np.arange(1, top5.shape[1]) if noise else first + step
            flips = int((top5[:, first, 0] != top5[:, second, 0]).sum())
            out.setdefault(model, {})[name] = (flip_prob(top5[..., 0], difficulty, noise),
                                               ranking_dist(top5, difficulty, noise), flips, top5.shape[0] * len(first))
    return out


def tables(board_text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The markdown tables of a board: (header, rows) each."""
    found = []
    for block in board_text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
            found.append((cells[0], cells[2:]))
    return found


def column(table, name: str) -> list[str]:
    header, rows = table
    return [row[header.index(name)] for row in rows]


def test_board_per_difficulty_ranked_by_mean_fp_then_by_mfr_with_the_constants(board):
    scores, rotate_2 = expected(board / "records" / "d1.json", 1), expected(board / "records" / "d2.json", 2)
    mean_fp = {m: np.mean([100 * scores[m][p][0] for p in TEST_PERTURBATIONS]) for m in MODELS}
    mean_t5d = {m: np.mean([scores[m][p][1] for p in TEST_PERTURBATIONS]) for m in MODELS}
    leaderboard.build(board)
    text = (board / "imagenet-p.md").read_text()
    assert "One table per difficulty" in text
    assert "no mFR (put baseline constants in `baselines/imagenet-p.toml`)" in text
    first, second = tables(text)
    ranked = sorted(MODELS, key=lambda m: (round(mean_fp[m], 2), m))
    assert column(first, "model") == ranked and column(first, "difficulty") == ["1", "1"]
    assert column(first, "mean FP %") == [f"{mean_fp[m]:.2f}" for m in ranked]
    assert column(first, "mean T5D") == [f"{mean_t5d[m]:.2f}" for m in ranked]
    assert column(first, "FP Shot Noise") == [f"{100 * scores[m]['shot_noise'][0]:.2f}" for m in ranked]
    assert "mFR %" not in first[0] and "FR Rotate" not in first[0]
    assert column(second, "difficulty") == ["2", "2"] and "FP Shot Noise" not in second[0]  # never merged
    assert sorted(column(second, "FP Rotate")) == sorted(f"{100 * rotate_2[m]['rotate'][0]:.2f}" for m in MODELS)

    # constants at difficulty 1: FP 0.5 (FR = 200 x FP) and T5D 2 (ratio = 50 x T5D) for every test perturbation
    (board / "baselines").mkdir(exist_ok=True)
    (board / "baselines" / "imagenet-p.toml").write_text(
        'suite = "imagenet-p"\nmodel = "half"\ndifficulty = 1\n' + "".join(
            f"[{table}]\n" + "".join(f"{p} = {value}\n" for p in TEST_PERTURBATIONS)
            for table, value in (("fp", 0.5), ("t5d", 2.0))))
    leaderboard.build(board)
    text = (board / "imagenet-p.md").read_text()
    first, second = tables(text)
    mfr = {m: np.mean([200 * scores[m][p][0] for p in TEST_PERTURBATIONS]) for m in MODELS}
    ranked = sorted(MODELS, key=lambda m: (round(mfr[m], 2), m))
    assert "ranked by mFR" in text and first[0][5:8] == ["difficulty", "mFR %", "mT5D %"]
    assert column(first, "model") == ranked
    assert column(first, "mFR %") == [f"{mfr[m]:.2f}" for m in ranked]
    assert column(first, "mT5D %") == [f"{np.mean([50 * scores[m][p][1] for p in TEST_PERTURBATIONS]):.2f}"
                                       for m in ranked]
    assert column(first, "FR Tilt") == [f"{200 * scores[m]['tilt'][0]:.2f}" for m in ranked]
    assert "mFR %" not in second[0]  # the constants are at difficulty 1, this table at 2
    constants = board / "baselines" / "imagenet-p.toml"
    constants.write_text(constants.read_text().replace("difficulty = 1\n", ""))  # constants for any difficulty
    leaderboard.build(board)
    second = tables((board / "imagenet-p.md").read_text())[1]
    ranked = sorted(MODELS, key=lambda m: (round(200 * rotate_2[m]["rotate"][0], 2), m))
    assert column(second, "mFR %") == ["-", "-"]  # not all 10 test perturbations ran
    assert column(second, "FR Rotate") == [f"{200 * rotate_2[m]['rotate'][0]:.2f}" for m in ranked]


def test_site_suite_page_shows_the_boards_scores_and_model_pages_the_fp_figure(board, tmp_path):
    from test_site import _pages, _rows

    from ibnbench.results.site import build_site, slug

    scores = expected(board / "records" / "d1.json", 1)
    mean_fp = {m: f"{np.mean([100 * scores[m][p][0] for p in TEST_PERTURBATIONS]):.2f}" for m in MODELS}
    build_site(board / "records", tmp_path / "html")
    pages = _pages(tmp_path / "html")
    section = next(s for s in pages["suites/imagenet-p.html"].iter("section") if s.get("class") == "scores")
    assert "".join(next(section.iter("h2")).itertext()) == "ImageNet-P scores"
    header = ["".join(th.itertext()).strip() for th in next(section.iter("thead")).iter("th")]
    rows = _rows(section, "board")
    assert len(rows) == 4 and {r[header.index("difficulty")] for r in rows} == {"1", "2"}
    first = {r[0]: r for r in rows if r[header.index("difficulty")] == "1"}
    assert {m: first[m][header.index("mean FP %")] for m in MODELS} == mean_fp
    model_page = pages[f"models/{slug(TINY)}.html"]
    figures = [img.get("src") for img in model_page.iter("img")]
    assert len(figures) == 2 and all(f.endswith("-fp.svg") for f in figures)
    assert all((tmp_path / "html" / "models" / f).read_text().lstrip().startswith("<?xml") for f in figures)
    tables = [t for t in model_page.iter("table") if "flip probability" in "".join(next(t.iter("caption")).itertext())]
    assert len(tables) == 2  # one per record (difficulty 1 and 2): FP and T5D, not frame 0's top-1 error
    shown = {"".join(tr.find("th").itertext()).strip(): "".join(tr.find("td").itertext()).strip()
             for tr in tables[0].iter("tr") if tr.find("th") is not None and tr.find("td") is not None}
    assert {LABELS[p]: f"{100 * scores[TINY][p][0]:.2f}" for p in TEST_PERTURBATIONS}.items() <= shown.items()


def test_fp_bars_per_perturbation_with_clopper_pearson_error_bars(board, tmp_path, capsys):
    """The bars' heights are FP (%) per test perturbation and model, their error bars the Clopper-Pearson 95%
    interval of the flipped pairs (scipy's beta quantiles); `report --plot` writes the figure."""
    import matplotlib.pyplot as plt

    from ibnbench.results.plots import fp_figure

    scores = expected(board / "records" / "d1.json", 1)
    fig = fp_figure([read_record(board / "records" / "d1.json")])
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == [LABELS[p] for p in TEST_PERTURBATIONS]
        bars = [c for c in ax.containers if hasattr(c, "errorbar")]
        assert [b.get_label() for b in bars] == list(MODELS)
        for model, container in zip(MODELS, bars):
            heights = [patch.get_height() for patch in container.patches]
            assert heights == pytest.approx([100 * scores[model][p][0] for p in TEST_PERTURBATIONS], abs=1e-9)
            segments = container.errorbar.lines[2][0].get_segments()
            for p, segment in zip(TEST_PERTURBATIONS, segments):
                flips, pairs = scores[model][p][2:]
                low = stats.beta.ppf(0.025, flips, pairs - flips + 1) if flips else 0.0
                high = stats.beta.ppf(0.975, flips + 1, pairs - flips) if flips < pairs else 1.0
                assert [segment[0][1], segment[1][1]] == pytest.approx([100 * low, 100 * high], abs=1e-6)
    finally:
        plt.close(fig)
    out = tmp_path / "fp.png"
    assert main(["report", str(board / "records" / "d1.json"), "--plot", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

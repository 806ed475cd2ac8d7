"""``ibnbench bench --imagenet-p / --c-bar`` on CPU: the shape of their output (a row per perturbation or
corruption, ms per image each side, ratios, totals, geometric mean), a reference loaded from a file inside a package,
and the references in benchmarks/references/ giving what the bench expects of them."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from helpers.images import make_folder

from benchmarks.references import c_bar as c_bar_reference
from benchmarks.references import imagenet_p as p_reference
from ibnbench.cli import main
from ibnbench.conditions import perturbations as P
from ibnbench.conditions.c_bar import C_BAR_NAMES
from ibnbench.data.classes import imagenet_wnids
from ibnbench.errors import UsageError
from ibnbench.tools import bench, generation_speed


@pytest.fixture()
def two_images(tmp_path):
    return make_folder(tmp_path / "val", {imagenet_wnids()[5]: [1, 2]})


def check_summary(out: dict, count: str) -> None:
    """Ratios are reference / ours per row; the total row sums the rows; the geometric mean is of the rows."""
    for row in out["rows"]:
        assert row["ours_ms"] > 0 and row["ratio"] == row["reference_ms"] / row["ours_ms"]
    total = out["total"]
    assert total["ours_ms"] == pytest.approx(sum(r["ours_ms"] for r in out["rows"]))
    assert total["reference_ms"] == pytest.approx(sum(r["reference_ms"] for r in out["rows"]))
    assert total["ratio"] == total["reference_ms"] / total["ours_ms"]
    assert out["geometric_mean"] == pytest.approx(math.exp(np.mean([math.log(r["ratio"]) for r in out["rows"]])))
    table = generation_speed.speed_table(out).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["op", count, "ours_ms", "reference_ms", "ratio"]
    assert len(table) == 2 + len(out["rows"]) + 1 + 2 and table[-1].endswith(f"{out['total']['ratio']:.2f}x")


def test_imagenet_p_rows_side_by_side_with_a_reference_file(two_images, tmp_path):
    """The reference, a file in a package importing its sibling, gets each 256 x 256 uint8 crop once per repeat
    with the perturbation and the difficulty; ours makes every frame of the batch."""
    package = tmp_path / "refs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "log.py").write_text("SEEN = []\n")
    (package / "stand_in.py").write_text(
        "import time\nfrom refs.log import SEEN\n\n\ndef sequence(image, name, difficulty):\n"
        "    SEEN.append((name, difficulty, image.shape, str(image.dtype)))\n    time.sleep(0.002)\n")
    out = generation_speed.imagenet_p(two_images, limit=2, batch_size=3, perturbations=["brightness", "translate"],
                                      difficulty=2, reference=f"{package / 'stand_in.py'}:sequence", repeat=2,
                                      threads=1)
    from refs.log import SEEN

    assert [(r["op"], r["frames"]) for r in out["rows"]] == [("brightness", 31), ("translate", 41)]
    assert sorted(SEEN) == sorted((n, 2, (256, 256, 3), "uint8") for n in ("brightness", "translate")
                                  for _ in range(2 * 2))
    assert all(r["reference_ms"] >= 2 for r in out["rows"])  # it slept 2 ms per image
    assert (out["n_images"], out["batch_size"], out["repeat"], out["threads"], out["difficulty"]) == (2, 3, 2, 1, 2)
    check_summary(out, "frames")


def test_c_bar_sums_the_five_severities_per_corruption(two_images, monkeypatch):
    seen = []

    def stand_in(image, severity, corruption_name):
        seen.append((corruption_name, severity, image.shape))
        time.sleep(0.001 * severity)

    monkeypatch.setattr(bench, "load_reference", lambda spec: stand_in)
    names = ["checkerboard_cutout", "single_frequency_greyscale"]
    out = generation_speed.c_bar(two_images, limit=1, batch_size=2, names=names, reference="stand-in", repeat=1)
    assert [(r["op"], r["severities"]) for r in out["rows"]] == [(n, 5) for n in names]
    assert sorted(seen) == sorted((n, s, (224, 224, 3)) for n in names for s in range(1, 6))
    assert all(r["reference_ms"] >= 15 for r in out["rows"])  # 1 + 2 + ... + 5 ms slept per image
    check_summary(out, "severities")


def test_without_a_reference_ours_alone_from_the_command_line(two_images, capsys):
    assert main(["bench", "--imagenet-p", "--data", str(two_images), "--conditions", "rotate", "--limit", "1",
                 "--batch-size", "1", "--repeat", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "| rotate " in text and "reference_ms" not in text and "no --reference: ours alone" in text
    assert main(["bench", "--imagenet-p", "--data", str(two_images), "--conditions", "frost"]) == 2
    assert "frost not ImageNet-P perturbation(s)" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--difficulty"):
        generation_speed.imagenet_p(two_images, difficulty=4)


def test_the_references_give_what_the_bench_times():
    """benchmarks/references: ImageNet-P's ``sequence`` gives every frame (the clean crop first for noise) as
    uint8 224 crops; C-bar's ``corrupt`` draws its own parameters for every corruption (64-pixel images here)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for name in ("shot_noise", "speckle_noise", "gaussian_noise", "translate", "zoom_blur"):
        frames = p_reference.sequence(image, name, 2, rng)
        assert frames.shape == (P.frame_count(name), 224, 224, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], image[16:240, 16:240])
    clean = torch.from_numpy(image[16:240, 16:240]).permute(2, 0, 1)[None].float()
    ours = P.frames(torch.from_numpy(image).permute(2, 0, 1)[None].float(), torch.arange(1), "translate")
    assert np.array_equal(p_reference.sequence(image, "translate")[20], clean[0].permute(1, 2, 0).numpy())
    assert torch.equal(ours[20], clean)
    small = image[:64, :64]
    for name in C_BAR_NAMES:
        out = c_bar_reference.corrupt(small, 3, name, rng)
        assert out.shape == small.shape and out.dtype == np.uint8 and not np.array_equal(out, small), name

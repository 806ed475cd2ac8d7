"""``--subset FILE``: only the listed images are evaluated (RobustBench's ``<wnid>/<file>`` ids or plain file names),
unknown entries are refused naming the file, and the record names the list so check refuses other subsets."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ibnbench.cli import main
from ibnbench.data.classes import imagenet_wnids
from ibnbench.data.discovery import open_dataset
from ibnbench.data.image_list import select_images
from ibnbench.errors import DatasetError, MissingFileError, UsageError
from ibnbench.eval.options import RunOptions
from ibnbench.results.check import EXIT_INCOMPARABLE, check
from ibnbench.results.record import read_record


@pytest.fixture
def val(tmp_path):
    """Six images in two class folders (wnids 0 and 1), three each, tiny PNGs."""
    from PIL import Image

    gen = np.random.default_rng(0)
    for wnid in imagenet_wnids()[:2]:
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(gen.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "val" / wnid / f"ILSVRC2012_val_0000{wnid[-1]}{i}.png")
    return tmp_path / "val"


def test_robustbench_ids_and_plain_names_select_those_images(val, tmp_path):
    first, second = imagenet_wnids()[:2]
    ids = tmp_path / "imagenet_test_image_ids.txt"  # as RobustBench's file: <wnid>/<file>, one a line
    text = f"{second}/ILSVRC2012_val_0000{second[-1]}2.png\n{first}/ILSVRC2012_val_0000{first[-1]}0.png\n"
    ids.write_text(text)
    chosen = select_images(open_dataset(val), ids)
    assert chosen.files == (f"{first}/ILSVRC2012_val_0000{first[-1]}0.png",
                            f"{second}/ILSVRC2012_val_0000{second[-1]}2.png")
    assert chosen.labels.tolist() == [0, 1]
    assert chosen.fingerprint()["image_list"] == {"file": ids.name, "n": 2,
                                                  "sha256": hashlib.sha256(text.encode()).hexdigest()}
    names = tmp_path / "names.txt"
    names.write_text(f"# two by file name\nILSVRC2012_val_0000{second[-1]}1.png\n\n"
                     f"ILSVRC2012_val_0000{first[-1]}1.png\n")
    assert [f.split("/")[1] for f in select_images(open_dataset(val), names).files] == [
        f"ILSVRC2012_val_0000{first[-1]}1.png", f"ILSVRC2012_val_0000{second[-1]}1.png"]


def test_unknown_entries_are_refused_naming_the_file_and_the_first_ones(val, tmp_path):
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(["n00000000/a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG"]) + "\n")
    with pytest.raises(DatasetError) as info:
        select_images(open_dataset(val), listed)
    assert str(info.value) == (f"--subset {listed}: 4 listed image(s) are not in {val} (first: n00000000/a.JPEG, "
                               "b.JPEG, c.JPEG)")
    with pytest.raises(MissingFileError, match="--subset .*absent.txt: no such file"):
        select_images(open_dataset(val), tmp_path / "absent.txt")
    with pytest.raises(UsageError, match="--subset .*absent.txt: no such file"):
        RunOptions(subset=str(tmp_path / "absent.txt"))
    listed.write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match="lists no image"):
        select_images(open_dataset(val), listed)


def test_run_with_subset_names_it_and_check_refuses_another_subset(val, tmp_path, capsys):
    names = sorted(p.name for p in val.rglob("*.png"))
    common = ["run", "--model", "resnet18", "--weights", "random", "--data", str(val), "--conditions", "origin",
              "--device", "cpu", "--workers", "0", "--no-progress"]
    for stem, chosen in (("a", names[:3]), ("b", names[1:4])):
        (tmp_path / f"{stem}.txt").write_text("\n".join(chosen) + "\n")
        assert main([*common, "--subset", str(tmp_path / f"{stem}.txt"), "--limit", "2",
                     "--output", str(tmp_path / f"{stem}.json")]) == 0
    a = read_record(tmp_path / "a.json")
    assert [f.split("/")[1] for f in a.per_image["files"]] == names[:2]  # --limit after the list
    assert a.dataset["image_list"]["file"] == "a.txt" and a.dataset["image_list"]["n"] == 3
    assert a.results[0]["n_images"] == 2
    outcome = check(tmp_path / "a.json", tmp_path / "b.json")
    assert outcome.exit_code == EXIT_INCOMPARABLE
    assert "image lists differ (a.txt: 3 images" in outcome.render() and "b.txt: 3 images" in outcome.render()

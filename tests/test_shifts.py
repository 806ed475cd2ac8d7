"""Natural distribution shifts: their layouts (ImageNetV2's numeric folders, wnid folders of ImageNet-R/-A/-Sketch),
class-subset scoring (the logits outside the subset masked before the top-k), on synthetic folders."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.images import make_folder, write_image

from ibnbench.data import classes as data
from ibnbench.data.classes import read_class_list
from ibnbench.data.discovery import class_subset, open_dataset
from ibnbench.data.loader import make_loader
from ibnbench.errors import DatasetError
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite
from ibnbench.zoo import create_model

WNIDS = data.imagenet_wnids()
R_LIKE = [3 + 5 * k for k in range(200)]  # 200 classes spread over the 1000, not the first 200


def test_v2_numeric_folders_are_class_indices(tmp_path):
    for folder, seed in (("0", 1), ("17", 2), ("999", 3), ("100", 4)):
        write_image(tmp_path / "v2" / folder / f"{seed:040x}.jpeg", seed=seed, height=16, width=16)
    ds = open_dataset(tmp_path / "v2")
    assert ds.layout == "numeric"
    # sorted relative paths: "0/" < "100/" < "17/" < "999/"; labels are the folder numbers themselves
    assert [f.split("/")[0] for f in ds.files] == ["0", "100", "17", "999"]
    assert ds.labels.tolist() == [0, 100, 17, 999]
    assert ds.folder_classes == (0, 17, 100, 999)
    assert class_subset(ds) is None  # never masked unless asked
    subset = class_subset(ds, from_folders=True)
    assert subset.indices == (0, 17, 100, 999) and subset.source == "from folders"
    assert subset.mask().nonzero().flatten().tolist() == [0, 17, 100, 999]
    assert ds.fingerprint()["layout"] == "numeric"


@pytest.mark.parametrize("folders", [["0", "n01440764"], ["007"], ["1000"]])
def test_numeric_folders_mixed_or_out_of_range_are_refused(tmp_path, folders):
    for i, folder in enumerate(folders):
        write_image(tmp_path / "v2" / folder / f"{i}.jpeg", seed=i, height=16, width=16)
    with pytest.raises(DatasetError, match="not ImageNet wnids"):
        open_dataset(tmp_path / "v2")


def test_r_like_200_classes_give_their_true_labels_and_mask(tmp_path):
    root = tmp_path / "imagenet-r"
    for k, index in enumerate(R_LIKE):
        write_image(root / WNIDS[index] / f"art_{k}.jpg", seed=k, height=16, width=16)
    ds = open_dataset(root)
    assert ds.layout == "imagefolder" and len(ds) == 200
    assert ds.labels.tolist() == R_LIKE  # folder order is wnid order is class order
    assert class_subset(ds) is None
    subset = class_subset(ds, from_folders=True)
    mask = subset.mask()
    assert mask.dtype == torch.bool and mask.shape == (1000,) and int(mask.sum()) == 200
    assert all(mask[i] == (i % 5 == 3) for i in range(1000))
    assert subset.as_dict() == {"n": 200, "mask": "from folders", "indices": R_LIKE}


def test_class_list_file_of_wnids_or_indices(tmp_path):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# ImageNet-R-like\n{WNIDS[8]} goldfinch\n3\n\n{WNIDS[13]}\n")
    assert read_class_list(listing) == (3, 8, 13)
    root = make_folder(tmp_path / "val", {WNIDS[3]: [1], WNIDS[13]: [2]})
    subset = class_subset(open_dataset(root), classes=listing)
    assert subset.indices == (3, 8, 13) and subset.source == f"from {listing}"
    listing.write_text("3\n")  # an image of class 13 outside the subset
    with pytest.raises(DatasetError, match="outside the class subset"):
        class_subset(open_dataset(root), classes=listing)
    listing.write_text("n99999999\n")
    with pytest.raises(DatasetError, match="classes.txt:1: 'n99999999' is neither"):
        read_class_list(listing)


def test_a_1000_class_dataset_is_not_masked(tmp_path):
    image = write_image(tmp_path / "one.jpeg", height=8, width=8)
    for i in range(1000):  # the same tiny image in all 1000 numeric class folders
        (tmp_path / "v2" / str(i)).mkdir(parents=True)
        (tmp_path / "v2" / str(i) / "a.jpeg").symlink_to(image)
    ds = open_dataset(tmp_path / "v2")
    assert ds.layout == "numeric" and len(ds.folder_classes) == 1000
    assert class_subset(ds, from_folders=True) is None


def test_class_subset_run_equals_a_masked_argmax_on_stored_logits(tiny_val):
    torch.manual_seed(0)
    model = create_model("resnet18")
    with torch.no_grad():  # unmasked, every answer would be class 7 (outside the subset)
        model.fc.bias[7] = 1e3
    dataset = open_dataset(tiny_val)
    subset = class_subset(dataset, from_folders=True)
    assert subset.indices == (1, 400, 999)
    options = RunOptions(workers=0, batch_size=4, device="cpu", progress=False)
    origin = load_suite("table1").select(["origin"]).conditions
    masked = evaluate({"m": model}, origin, dataset, options, classes=subset)
    plain = evaluate({"m": model}, origin, dataset, options)

    logits, labels = [], []  # the stored logits of every image, masked by hand
    pre = model.ibnbench_info.preprocessing
    with torch.no_grad():
        for batch in make_loader(dataset, [pre], batch_size=4, workers=0):
            logits.append(model(pre.normalize(next(iter(batch["crops"].values())).float())))
            labels.append(batch["label"])
    logits, labels = torch.cat(logits), torch.cat(labels)
    allowed = torch.tensor([i in subset.indices for i in range(1000)])
    by_hand = logits.masked_fill(~allowed, float("-inf"))
    top1 = "".join("1" if h else "0" for h in (by_hand.argmax(dim=1) == labels).tolist())
    assert masked.per_image["top1"]["m"]["origin"] == top1
    assert masked.per_image["top5"]["m"]["origin"] == "1" * 9  # three classes: the label is always in the top 5
    assert plain.per_image["top1"]["m"]["origin"] == "0" * 9 and (logits.argmax(dim=1) == 7).all()
    assert masked.results[0]["top1_err"] == pytest.approx(100 * top1.count("0") / 9, abs=1e-3)


COMMITTED = Path(__file__).resolve().parents[1] / "leaderboards" / "records" / "table1-efficientnet_lite0-val100.json"


@pytest.mark.slow
def test_real_images_relaid_as_v2_numeric_folders_give_the_val_numbers(val100, tmp_path, capsys):
    """The 100 shared val images as ImageNetV2 lays them out (<class index>/<file>): the same hits, image by
    image, as the committed val-layout record; with --classes-from-folders (86 classes) the error is lower or
    equal."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from ibnbench import RunOptions, run
    from ibnbench.cli import main
    from ibnbench.results.record import read_record

    v2 = tmp_path / "v2"
    for image in sorted(val100.rglob("*.JPEG")):
        folder = v2 / str(WNIDS.index(image.parent.name))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image.name).symlink_to(image)
    common = {"options": RunOptions(device="cpu", workers=0, batch_size=50, progress=False), "conditions": ["origin"]}
    plain = run(["efficientnet_lite0"], v2, output=tmp_path / "plain.json", **common)
    assert plain.dataset["layout"] == "numeric" and "classes" not in plain.dataset
    committed = read_record(COMMITTED)
    assert (plain.top1_err("origin"), plain.top5_err("origin")) == (28.0, 12.0)
    assert (committed.top1_err("origin"), committed.top5_err("origin")) == (28.0, 12.0)
    for metric in ("top1", "top5"):
        ours = dict(zip((Path(f).name for f in plain.per_image["files"]),
                        plain.per_image[metric]["efficientnet_lite0"]["origin"]))
        theirs = dict(zip((Path(f).name for f in committed.per_image["files"]),
                          committed.per_image[metric]["efficientnet_lite0"]["origin"]))
        assert ours == theirs

    assert main(["run", "--model", "efficientnet_lite0", "--data", str(v2), "--device", "cpu", "--workers", "0",
                 "--batch-size", "50", "--conditions", "origin", "--classes-from-folders",
                 "--output", str(tmp_path / "masked.json")]) == 0
    masked = read_record(tmp_path / "masked.json")
    assert masked.dataset["classes"]["n"] == 86 and masked.dataset["classes"]["mask"] == "from folders"
    print(f"\nV2 layout, efficientnet_lite0 top1/top5 err: 1000-way {plain.top1_err('origin')}/"
          f"{plain.top5_err('origin')}, 86 classes {masked.top1_err('origin')}/{masked.top5_err('origin')}")
    assert masked.top1_err("origin") <= plain.top1_err("origin")
    assert masked.top5_err("origin") <= plain.top5_err("origin")
    assert masked.comparable_with(plain) and "class subsets differ" in masked.comparable_with(plain)[-1]


def always_400(path):
    """A resnet18 checkpoint that answers class 400 for every image (then 1, then the rest)."""
    torch.manual_seed(0)
    model = create_model("resnet18")
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[400] = 2.0
        model.fc.bias[1] = 1.0
    torch.save(model.state_dict(), path)
    return path


def natural_like(tmp_path):
    """A dataset suite file: an R-like set scored on its 2 folder classes, a V2-like 1000-way set, one missing."""
    make_folder(tmp_path / "data" / "r-like", {WNIDS[1]: [11, 12], WNIDS[400]: [13]})
    for folder, ids in (("400", [21, 22]), ("1", [23, 24])):
        for i in ids:
            write_image(tmp_path / "data" / "v2-like" / folder / f"{i}.jpeg", seed=i)
    suite = tmp_path / "mini.toml"
    suite.write_text('description = "mini"\n'
                     '[[datasets]]\nid = "r-like"\nlabel = "R-like"\npath = "$IBNBENCH_DATA/r-like"\n'
                     'classes = "folders"\n'
                     '[[datasets]]\nid = "v2-like"\npath = "$IBNBENCH_DATA/v2-like"\nenv = "MINI_V2"\n'
                     '[[datasets]]\nid = "absent"\npath = "$IBNBENCH_DATA/absent"\n')
    return suite


def test_dataset_suite_rows_and_gaps_on_the_same_class_subset(tiny_val, tmp_path, monkeypatch, capsys):
    from ibnbench.cli import main
    from ibnbench.results import stats
    from ibnbench.results.check import check
    from ibnbench.results.leaderboard import build
    from ibnbench.results.predictions import for_record
    from ibnbench.results.record import read_record
    from ibnbench.results.report import table1

    monkeypatch.setenv("IBNBENCH_DATA", str(tmp_path / "data"))
    suite, weights = natural_like(tmp_path), always_400(tmp_path / "w.pth")
    args = ["run", "--model", "resnet18", "--weights", str(weights), "--data", str(tiny_val), "--suite", str(suite),
            "--device", "cpu", "--workers", "0", "--batch-size", "4", "--output", str(tmp_path / "n.json")]
    assert main(args) == 2
    assert "missing dataset(s) absent: no folder" in capsys.readouterr().err
    assert main([*args, "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "missing dataset absent: no folder" in out
    record = read_record(tmp_path / "n.json")
    assert not list(tmp_path.glob(".n.json.*"))  # the single-dataset parts are gone once the record is written
    # by hand: tiny_val holds 3 images each of classes 1, 400, 999; the model answers 400, or 1 when 400 is masked
    errors = {r["condition"]: (round(r["top1_err"], 2), r["n_images"]) for r in record.results}
    assert errors == {"origin": (66.67, 9),            # 1000-way: right on the 3 images of class 400
                      "origin@r-like": (50.0, 6),      # val's images of classes 1 and 400, scored on those two
                      "r-like": (66.67, 3),            # 2 of class 1, 1 of class 400
                      "v2-like": (50.0, 4)}            # numeric folders 400 and 1, 1000-way
    assert record.drop("r-like") == pytest.approx(66.67 - 50.0, abs=0.01)  # the gap on the same 2 classes
    assert record.drop("v2-like") == pytest.approx(50.0 - 66.67, abs=0.01)
    assert [c["id"] for c in record.conditions] == ["origin", "origin@r-like", "r-like", "v2-like", "absent"]
    assert record.conditions[-1]["not_run"] and "absent" in record.conditions[-1]["missing"]
    ds = record.dataset["datasets"]
    assert ds["r-like"]["classes"] == {"n": 2, "mask": "from folders", "indices": [1, 400]}
    assert ds["origin@r-like"]["classes"]["indices"] == [1, 400] and "classes" not in ds["v2-like"]
    assert ds["v2-like"]["layout"] == "numeric" and len(record.per_image["files"]["origin@r-like"]) == 6
    table = table1([record])
    assert table.loc["R-like", "resnet18"] == "66.67/0.00 (16.67/0.00)"
    assert table.loc["absent", "resnet18"] == "not run"
    assert check(tmp_path / "n.json", tmp_path / "n.json", metric="drop").exit_code == 0
    # the statistics of the stored predictions: one sidecar per dataset beside the record, read per row
    stored = for_record(record)
    assert sorted(p.name for p in tmp_path.glob("n.*.predictions.npz")) == sorted(
        f"n.{d}.predictions.npz" for d in ("origin", "origin@r-like", "r-like", "v2-like"))
    for row in record.results:
        correct = stored.correct("resnet18", row["condition"])
        assert len(correct) == row["n_images"] and 100 * (1 - correct.mean()) == pytest.approx(row["top1_err"])
        confidence = stored.confidence("resnet18", row["condition"])
        assert 100 * stats.ece(confidence, correct) == pytest.approx(row["ece"], abs=1e-4)
    assert main(["report", str(tmp_path / "n.json"), "--reliability", str(tmp_path / "rel.png")]) == 0
    assert (tmp_path / "rel.png").stat().st_size > 10_000
    (tmp_path / "lb" / "records").mkdir(parents=True)
    (tmp_path / "lb" / "records" / "n.json").write_text((tmp_path / "n.json").read_text())
    board = build(tmp_path / "lb")[0].read_text()
    assert "R-like" in board and "66.67 [" in board

    # comparable only when every dataset fingerprint matches: one more image in the V2-like set
    monkeypatch.setenv("MINI_V2", str(tmp_path / "data" / "v2-like"))
    write_image(tmp_path / "data" / "v2-like" / "1" / "25.jpeg", seed=25)
    assert main([*args, "--skip-missing", "--output", str(tmp_path / "m.json"), "--conditions", "v2-like"]) == 0
    other = read_record(tmp_path / "m.json")
    assert other.result("resnet18", "v2-like")["n_images"] == 5
    reasons = [r for r in other.comparable_with(record) if r.startswith("datasets differ")]
    assert reasons[0].startswith("datasets differ in origin@r-like, r-like, v2-like (")  # val itself is the same
    assert record.comparable_with(read_record(tmp_path / "n.json")) == []


def test_shipped_natural_suite_reports_every_absent_dataset(tiny_val, tmp_path, monkeypatch):
    from ibnbench import RunOptions, run
    from ibnbench.conditions.dataset_suites import load_dataset_suite

    monkeypatch.delenv("IBNBENCH_DATA", raising=False)
    suite = load_dataset_suite("natural")
    assert [d.id for d in suite.datasets] == ["v2-matched-frequency", "v2-threshold0.7", "v2-top-images", "sketch",
                                              "imagenet-r", "imagenet-a", "stylized"]
    assert [d.id for d in suite.datasets if d.classes == "folders"] == ["imagenet-r", "imagenet-a"]
    with pytest.raises(ValueError, match=r"imagenet-r: \$IBNBENCH_DATA is not set \(or set \$IBNBENCH_IMAGENET_R"):
        run(["resnet18"], tiny_val, suite="natural", weights=["random"], output=tmp_path / "x.json",
            options=RunOptions(device="cpu", workers=0))


def constructed_records() -> list:
    """Two records of a dataset suite (models split across runs) with chosen accuracies: val on ImageNet-R's
    classes (``origin@imagenet-r``) and ImageNet-R itself."""
    from ibnbench.results.record import Record

    acc = {"resnet18": (70.0, 30.0), "resnet34": (74.0, 33.0), "resnet50": (78.0, 37.5), "resnet101": (80.0, 38.0),
           "resnet50_ibn_b": (78.5, 45.0), "other": (76.0, 30.0)}
    conditions = [{"id": "origin", "label": "val"}, {"id": "origin@imagenet-r", "label": "val R", "baseline": None},
                  {"id": "imagenet-r", "label": "ImageNet-R", "baseline": "origin@imagenet-r"}]
    prints = {c["id"]: {"sha256": c["id"]} for c in conditions}
    records = []
    for models in (list(acc)[:3], list(acc)[3:]):
        results = [{"model": m, "condition": c, "n_images": 100, "top1_err": 100 - a, "top5_err": 0.0}
                   for m in models for c, a in (("origin", acc[m][0] - 2), ("origin@imagenet-r", acc[m][0]),
                                                ("imagenet-r", acc[m][1]))]
        records.append(Record("natural", "h", conditions, {"sha256": "d", "datasets": {k: dict(v) for k,
                                                                                       v in prints.items()}},
                              {m: {} for m in models}, {}, {}, results))
    return records, acc


def test_effective_robustness_is_the_distance_from_the_closed_form_logit_fit(tmp_path):
    import numpy as np

    from ibnbench.results.robustness import effective_robustness, plot_effective_robustness

    records, acc = constructed_records()
    baseline = ["resnet18", "resnet34", "resnet50", "resnet101"]
    table, fit = effective_robustness(records, "imagenet-r", baseline)

    def lg(p):
        return np.log(p / (100 - p))

    x = lg(np.array([acc[m][0] for m in baseline]))  # val on R's classes, not the full val row
    y = lg(np.array([acc[m][1] for m in baseline]))
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()  # closed-form least squares
    intercept = y.mean() - slope * x.mean()
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept), rel=1e-9)
    for model, (val, shift) in acc.items():
        predicted = 100 / (1 + np.exp(-(slope * lg(val) + intercept)))
        assert table.loc[model, "effective_robustness"] == pytest.approx(shift - predicted, abs=1e-9)
        assert table.loc[model, "logit_residual"] == pytest.approx(lg(shift) - slope * lg(val) - intercept, abs=1e-9)
    assert table.index[0] == "resnet50_ibn_b" and table.loc["resnet50_ibn_b", "effective_robustness"] > 5
    assert abs(table.loc[baseline, "logit_residual"].sum()) < 1e-9  # residuals of a least-squares fit sum to 0
    assert table.baseline.tolist().count(True) == 4

    png = plot_effective_robustness(table, fit, tmp_path / "er.png", shift="ImageNet-R")
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert image.size[0] > 300 and len(np.unique(pixels, axis=0)) > 20
    with pytest.raises(ValueError, match="at least two models"):
        effective_robustness(records, "imagenet-r", ["resnet18"])
    records[1].dataset["datasets"]["imagenet-r"] = {"sha256": "another"}
    with pytest.raises(ValueError, match="ran 'imagenet-r' on different data"):
        effective_robustness(records, "imagenet-r", baseline)


def line_records(rng, n: int = 2000) -> list:
    """One record of six baseline models exactly on ``logit(shift) = 1.1 logit(val) - 0.9``, a model ``on`` that
    line too and a model ``off`` 15 points above it, each image of each row right with the model's probability."""
    from scipy.special import expit, logit

    from ibnbench.results.record import Record

    val = {f"b{i}": v for i, v in enumerate((0.6, 0.65, 0.7, 0.75, 0.8, 0.85))} | {"on": 0.72, "off": 0.72}
    shift = {m: expit(1.1 * logit(v) - 0.9) + (0.15 if m == "off" else 0.0) for m, v in val.items()}
    conditions = [{"id": "origin@imagenet-r", "label": "val R", "baseline": None},
                  {"id": "imagenet-r", "label": "ImageNet-R", "baseline": "origin@imagenet-r"}]
    answers = {m: {c: "".join("1" if right else "0" for right in rng.random(n) < p[m])
                   for c, p in (("origin@imagenet-r", val), ("imagenet-r", shift))} for m in val}
    results = [{"model": m, "condition": c, "n_images": n, "top1_err": 100 * a.count("0") / n, "top5_err": 0.0}
               for m, by_condition in answers.items() for c, a in by_condition.items()]
    return [Record("natural", "h", conditions, {"sha256": "d", "datasets": {c["id"]: {"sha256": c["id"]}
                                                                             for c in conditions}},
                   {m: {} for m in val}, {}, {}, results, per_image={"top1": answers})]


def test_effective_robustness_intervals_cover_the_truth_and_resample_the_images(monkeypatch):
    from ibnbench.results import plots
    from ibnbench.results.robustness import effective_robustness, plot_effective_robustness

    rng = np.random.default_rng(7)
    baseline = [f"b{i}" for i in range(6)]
    on_covered, off_excluded = [], []
    for seed in range(20):
        records = line_records(rng)
        table, fit = effective_robustness(records, "imagenet-r", baseline, draws=300, seed=seed)
        assert fit.bootstrap.models_only == "" and "baseline models and images" in fit.bootstrap.describe()
        on_covered.append(table.loc["on", "er_low"] <= 0 <= table.loc["on", "er_high"])
        off_excluded.append(table.loc["off", "er_low"] > 0)
    assert np.mean(on_covered) >= 0.85 and all(off_excluded)
    figure = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figure.append(fig) or path)
    plot_effective_robustness(table, fit, "er.png")
    (ax,) = figure[0].axes
    assert len(ax.containers) == 2  # error bars for the baseline models and for the others
    assert "95% bootstrap band of the fit" in [t.get_text() for t in ax.get_legend().get_texts()]
    # without per-image answers only the baseline models are resampled: narrower, and the output says why
    records[0].per_image = {}
    bare, bare_fit = effective_robustness(records, "imagenet-r", baseline, draws=300, seed=19)
    assert "baseline models only (no per-image answers for b0, b1" in bare_fit.bootstrap.describe()
    width = (table.er_high - table.er_low)["on"], (bare.er_high - bare.er_low)["on"]
    assert width[0] > width[1] > 0
    # the bootstrap leaves the point estimates as they were
    plain, plain_fit = effective_robustness(records, "imagenet-r", baseline, draws=0)
    assert plain_fit == dataclasses.replace(bare_fit, bootstrap=None)
    pd.testing.assert_frame_equal(plain, bare.drop(columns=["er_low", "er_high"]))


def test_effective_robustness_intervals_of_models_exactly_on_a_line_are_points():
    """Without per-image answers, and every baseline model on one logit line, every replicate refits that line:
    each interval is the point estimate."""
    from scipy.special import expit, logit

    from ibnbench.results.robustness import effective_robustness

    records = line_records(np.random.default_rng(0))
    val = {"b0": 60.0, "b1": 70.0, "b2": 80.0, "b3": 90.0, "on": 75.0, "off": 75.0}
    shift = {m: 100 * expit(1.1 * logit(v / 100) - 0.9) + (10.0 if m == "off" else 0.0) for m, v in val.items()}
    records[0].per_image = {}
    records[0].results = [{"model": m, "condition": c, "n_images": 400, "top1_err": 100 - a[m], "top5_err": 0.0}
                          for m in val for c, a in (("origin@imagenet-r", val), ("imagenet-r", shift))]
    table, fit = effective_robustness(records, "imagenet-r", ["b0", "b1", "b2", "b3"], draws=200)
    assert fit.bootstrap.interval(fit.bootstrap.slope) == pytest.approx((1.1, 1.1))
    assert table.loc["off", "effective_robustness"] == pytest.approx(10.0)
    for column in ("er_low", "er_high"):
        assert table[column].to_numpy() == pytest.approx(table.effective_robustness.to_numpy(), abs=1e-9)


def test_robustness_cli_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    from ibnbench.cli import main
    from ibnbench.results.record import write_record

    records, _ = constructed_records()
    paths = [str(write_record(r, tmp_path / f"r{i}.json")) for i, r in enumerate(records)]
    assert main(["robustness", *paths, "--shift", "imagenet-r", "--baseline", "resnet18,resnet34",
                 "--baseline", "resnet50", "--plot", str(tmp_path / "er.png")]) == 0
    out = capsys.readouterr().out
    assert "resnet50_ibn_b" in out and "over 3 baseline models" in out and (tmp_path / "er.png").stat().st_size
    assert "er_high" in out and "bootstrap over baseline models only (no per-image answers for" in out
    assert main(["robustness", *paths, "--shift", "imagenet-x", "--baseline", "resnet18,resnet34"]) == 2
    assert "no record holds the shift 'imagenet-x'" in capsys.readouterr().err


def test_interrupted_dataset_suite_resumes_with_the_next_dataset(tiny_val, tmp_path, monkeypatch):
    from ibnbench import RunOptions, run
    from ibnbench.eval import natural_runs

    monkeypatch.setenv("IBNBENCH_DATA", str(tmp_path / "data"))
    suite, weights = natural_like(tmp_path), always_400(tmp_path / "w.pth")
    calls, real_run = [], natural_runs.run_condition_suite

    def interrupted(request, options):
        calls.append(request.output.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(request, options)

    monkeypatch.setattr(natural_runs, "run_condition_suite", interrupted)
    kwargs = {"suite": suite, "weights": [str(weights)], "output": tmp_path / "n.json", "skip_missing": True,
              "options": RunOptions(device="cpu", workers=0, batch_size=4, progress=False)}
    with pytest.raises(KeyboardInterrupt):
        run(["resnet18"], tiny_val, **kwargs)
    assert calls == [".n.json.origin.json", ".n.json.origin@r-like.json", ".n.json.r-like.json"]
    calls.clear()
    record = run(["resnet18"], tiny_val, resume=True, **kwargs)
    assert calls == [".n.json.r-like.json", ".n.json.v2-like.json"]  # the two finished datasets were kept
    assert round(record.result("resnet18", "origin@r-like")["top1_err"], 2) == 50.0
    assert not list(tmp_path.glob(".n.json.*"))


def test_suites_command_lists_the_natural_datasets_and_where_they_are(tmp_path, monkeypatch, capsys):
    from ibnbench.cli import main

    (tmp_path / "imagenet-r").mkdir()
    monkeypatch.setenv("IBNBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("IBNBENCH_IMAGENET_A", str(tmp_path / "elsewhere"))
    assert main(["suites", "natural"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    assert rows["imagenet-r"].endswith(str(tmp_path / "imagenet-r")) and "from folders" in rows["imagenet-r"]
    assert rows["imagenet-a"].endswith(f"missing: no folder {tmp_path / 'elsewhere'} (or set $IBNBENCH_IMAGENET_A)")
    assert "all 1000" in rows["sketch"] and "missing: no folder" in rows["sketch"]


@pytest.mark.gpu
def test_class_subset_hits_on_cuda_make_no_host_sync_and_match_the_cpu():
    """The mask is applied on the device in the forward's pass: no synchronising call, the CPU's answers."""
    from ibnbench.eval.runner import ModelRunner

    torch.manual_seed(0)
    model = create_model("resnet18")
    subset = data.ClassSubset(tuple(R_LIKE), "from folders")
    x = torch.rand(8, 3, 64, 64) * 255
    label = torch.tensor(R_LIKE[:8])
    answers = {}
    for device in ("cpu", "cuda"):
        dev = torch.device(device, 0) if device == "cuda" else torch.device(device)
        runner = ModelRunner(model, model.ibnbench_info.preprocessing, dev,
                             RunOptions(device=device, amp="off"), subset)
        xs, ys = x.to(dev), label.to(dev)
        runner.hits(xs, ys)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            answers[device] = runner.hits(xs, ys)
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(answers["cuda"].cpu(), answers["cpu"])

"""Stored predictions: computed in the evaluation pass, written as a sidecar the record names by sha256,
small enough for the full val set, and read back for ECE and reliability diagrams."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers.images import assert_png
from helpers.records import LITE0_RECORD, schema_1_copy

from ibnbench.cli import main
from ibnbench.data import discovery as data
from ibnbench.errors import RecordError
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite
from ibnbench.results import record as results
from ibnbench.results import stats
from ibnbench.results.predictions import Predictions, for_record, read_predictions, sidecar_path, write_predictions
from ibnbench.results.record import read_record
from ibnbench.zoo import create_model


def test_predictions_come_from_the_same_pass_with_closed_form_probabilities(tiny_val):
    """A model whose logits are its bias (class 400 one above the rest): every image's top class is 400 with
    softmax probability e / (e + 999), every other class 1 / (e + 999)."""
    model = create_model("resnet18")
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[400] = 1.0
    out = evaluate({"resnet18": model}, load_suite("table1").select(["origin", "rgb+50"]).conditions,
                   data.open_dataset(tiny_val), RunOptions(workers=0, batch_size=4, device="cpu", progress=False))
    stored: Predictions = out.predictions
    top, other = math.e / (math.e + 999), 1 / (math.e + 999)
    assert stored.models == ["resnet18"] and stored.conditions == ["origin", "rgb+50"]
    assert stored.top5_index.dtype == np.uint16 and stored.top5_prob.dtype == np.float16
    assert stored.label.tolist() == [1] * 3 + [400] * 3 + [999] * 3 and stored.valid.all()
    assert (stored.top5_index[..., 0] == 400).all()
    np.testing.assert_allclose(stored.top5_prob[..., 0], top, rtol=1e-3)
    np.testing.assert_allclose(stored.top5_prob[..., 1:], other, rtol=1e-3)
    np.testing.assert_allclose(stored.label_prob[0, 0], [other] * 3 + [top] * 3 + [other] * 3, rtol=1e-3)
    for condition in ("origin", "rgb+50"):  # the stored top-1 answers are the per-image hits
        hits = "".join("1" if c else "0" for c in stored.correct("resnet18", condition))
        assert hits == out.per_image["top1"]["resnet18"][condition] == "000111000"
        assert stats.ece(stored.confidence("resnet18", condition), stored.correct("resnet18", condition)) \
            == pytest.approx(1 / 3 - top, rel=1e-3)  # one bin: 3 of 9 right at confidence ~0.003


def test_run_writes_the_sidecar_named_by_sha256_and_report_uses_it(tiny_val, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    run = ["run", "--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--device", "cpu",
           "--conditions", "origin,std*1.5", "--workers", "0", "--output", str(out)]
    assert main(run) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert sorted(before) == ["r.json", "r.predictions.npz"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.json, "dump", disk_full)  # the record cannot be written: the old pair stays
    assert main(run[:-2] + ["--output", str(out), "--conditions", "origin"]) == 2
    monkeypatch.undo()
    assert f"cannot write record {out}: No space left on device" in capsys.readouterr().err
    # no temporary file left, the old sidecar untouched
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    record = read_record(out)
    assert record.schema == 2 and record.predictions["file"] == sidecar_path(out).name == "r.predictions.npz"
    stored = for_record(record)
    for row in record.results:
        model, condition = row["model"], row["condition"]
        for k, metric in ((1, "top1"), (5, "top5")):
            assert "".join("1" if c else "0" for c in stored.correct(model, condition, k)) \
                == record.per_image[metric][model][condition]
        assert row["ece"] == pytest.approx(100 * stats.ece(stored.confidence(model, condition),
                                                           stored.correct(model, condition)), abs=1e-4)
    capsys.readouterr()
    png = tmp_path / "reliability.png"
    assert main(["report", str(out), "--ci", "--reliability", str(png)]) == 0
    text = capsys.readouterr().out
    assert f"{record.result('resnet18', 'origin')['ece']:.2f}" in text and f"wrote {png}" in text
    assert_png(png, (400, 400))

    sidecar_path(out).write_bytes(sidecar_path(out).read_bytes() + b"x")  # altered after the run
    with pytest.raises(RecordError, match="do not match their record"):
        for_record(read_record(out))
    sidecar_path(out).unlink()
    assert main(["report", str(out), "--reliability", str(png)]) == 2
    assert "stored predictions are missing" in capsys.readouterr().err


def test_a_schema_1_record_has_no_confidences_and_says_so(tmp_path, capsys):
    old = schema_1_copy(LITE0_RECORD, tmp_path / "old.json")
    assert main(["report", str(old), "--reliability", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "holds no stored predictions (schema 1 record)" in err and len(err.strip().splitlines()) == 1


def test_sidecar_for_50k_images_3_models_5_conditions_stays_under_24_bytes_per_image_and_pair(tmp_path):
    n, models, conditions = 50_000, 3, 5
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((models, conditions, n, 5)).astype(np.float32)
    probs = np.sort(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) * 0.9, axis=-1)[..., ::-1]
    stored = Predictions(models=[f"model{i}" for i in range(models)], conditions=[f"c{i}" for i in range(conditions)],
                         label=rng.integers(0, 1000, n).astype(np.uint16), valid=np.ones(n, bool),
                         top5_index=rng.integers(0, 1000, (models, conditions, n, 5)).astype(np.uint16),
                         top5_prob=probs.astype(np.float16),
                         label_prob=rng.random((models, conditions, n)).astype(np.float16))
    path = tmp_path / "big.predictions.npz"
    reference = write_predictions(stored, path)
    assert reference["bytes"] == path.stat().st_size <= 24 * n * models * conditions
    back = read_predictions(path, reference["sha256"])
    np.testing.assert_array_equal(back.top5_index, stored.top5_index)
    np.testing.assert_array_equal(back.top5_prob, stored.top5_prob)
    assert json.dumps(reference)  # the record's reference is plain JSON

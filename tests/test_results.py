"""Records: atomic writes, validation, lookups, comparability."""
from __future__ import annotations

import json
import os

import pytest
from helpers.records import make_record

from ibnbench.errors import RecordError
from ibnbench.results.record import Record, read_record, write_record


def sample() -> Record:
    return make_record({"resnet50": {"origin": (24.0, 7.0), "rgb+50": (28.0, 9.5), "std*1.5": (40.0, 19.0)}})


def test_round_trip_and_lookups(tmp_path):
    path = write_record(sample(), tmp_path / "r.json")
    record = read_record(path)
    assert record == sample()
    assert record.top1_err("rgb+50") == 28.0
    assert record.drop("std*1.5") == pytest.approx(16.0)
    assert record.drop("std*1.5", metric="top5_err") == pytest.approx(12.0)
    frame = record.to_frame()
    assert frame.set_index("condition").loc["rgb+50", "drop_top1"] == pytest.approx(4.0)


def test_failed_write_keeps_previous_record(tmp_path, monkeypatch):
    path = write_record(sample(), tmp_path / "r.json")
    before = path.read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RecordError, match="No space left on device"):
        write_record(make_record({"x": {"origin": (1.0, 1.0)}}), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


@pytest.mark.parametrize("content, message", [
    ('{"suite": "table1"', "corrupt record"),
    ('[1, 2]', "not a result record"),
    ('{"suite": "t"}', "missing suite_hash"),
])
def test_bad_records_are_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=message) as info:
        read_record(path)
    assert str(path) in str(info.value)


def test_incomparable_records_say_why():
    a = sample()
    b = make_record({"resnet50": {"origin": (24.0, 7.0)}}, suite_hash="other" * 10, dataset_sha="e" * 64)
    reasons = a.comparable_with(b)
    assert any("suite definitions differ" in r for r in reasons)
    assert any("datasets differ" in r for r in reasons)
    assert a.comparable_with(sample()) == []


def test_record_json_is_self_describing(tmp_path):
    data = json.loads(write_record(sample(), tmp_path / "r.json").read_text())
    assert {"suite", "suite_hash", "dataset", "models", "environment", "timing", "results"} <= set(data)
    assert data["results"][0] == {"model": "resnet50", "condition": "origin", "top1_err": 24.0, "top5_err": 7.0,
                                  "n_images": 100}

"""Segmentation report tables from records written here: Table-6 shape drops, targets with their mean, ACDC per
condition, the Cityscapes-C table relative to clean."""
from __future__ import annotations

import pytest

from ibnbench.results.segmentation_record import SegmentationRecord
from ibnbench.results.segmentation_report import acdc_table, corruption_tables, table6, targets_table


def _record(rows: list[tuple[str, str, str, float]]) -> SegmentationRecord:
    results = [{"model": m, "condition": c, "dataset": d, "n_images": 1, "miou": v, "miou_ci": [v - 1, v + 1],
                "pixel_accuracy": v + 40, "iou": [], "confusion": []} for m, c, d, v in rows]
    return SegmentationRecord(suite="s", suite_hash="h", conditions=[], datasets={}, models={}, inference={},
                              environment={}, timing={}, results=results)


def test_report_tables():
    record = _record([("a", "origin", "cityscapes", 60.0), ("a", "origin", "gta5", 30.0),
                      ("a", "origin", "acdc/fog", 40.0), ("a", "origin", "acdc/night", 20.0),
                      ("a", "fog-1", "cityscapes", 50.0), ("a", "fog-3", "cityscapes", 40.0),
                      ("a", "gaussian_noise-2", "cityscapes", 30.0)])
    t6 = table6([record], {"a": "cityscapes"}).set_index("test")
    assert t6.loc["gta5", "drop"] == 30.0 and t6.loc["cityscapes", "drop"] == 0.0
    assert t6.loc["gta5", "pixel acc"] == 70.0 and t6.loc["gta5", "train"] == "cityscapes"
    assert targets_table([record]).loc["a", "mean"] == pytest.approx((60 + 30 + 40 + 20) / 4)
    acdc = acdc_table([record])
    assert list(acdc.columns) == ["fog", "night", "mean"] and acdc.loc["a", "mean"] == 30.0
    c = corruption_tables([record])["a", "cityscapes"]
    assert c.loc["Fog", 1] == 50.0 and c.loc["Fog", "mean"] == 45.0 and c.loc["Fog", "relative"] == 0.75
    assert c.loc["Gaussian Noise", "relative"] == 0.5

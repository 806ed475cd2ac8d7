"""``ibnbench export``: ImageNet-C / C-bar records as RobustBench's unaggregated_results.csv (one row per model,
header rows corruption and severity, top-1 accuracy as a fraction), against a CSV written by hand."""
from __future__ import annotations

import pandas as pd
import pytest
from helpers.records import graded_record

from ibnbench.cli import main
from ibnbench.conditions.c_bar import C_BAR_LABELS
from ibnbench.errors import UsageError
from ibnbench.results.record import write_record
from ibnbench.results.robustbench import robustbench_csv


def test_imagenet_c_records_export_as_robustbench_writes_them(tmp_path, capsys):
    # 100 images: a 30 % error is 70 right, accuracy 0.7; origin is not part of RobustBench's file
    errors = {"origin": 20.0, **{f"gaussian_noise-{s}": 30.0 + s for s in range(1, 6)},
              **{f"fog-{s}": 50.0 + 2 * s for s in range(1, 6)}}
    other = {**{c: e + 1 for c, e in errors.items()}}
    del other["fog-5"]  # not run: an empty cell
    record = write_record(graded_record({"resnet50": errors, "resnet50_ibn_a": other}), tmp_path / "c.json")
    expected = (
        ",gaussian_noise,gaussian_noise,gaussian_noise,gaussian_noise,gaussian_noise,fog,fog,fog,fog,fog\n"
        ",1,2,3,4,5,1,2,3,4,5\n"
        "resnet50,0.69,0.68,0.67,0.66,0.65,0.48,0.46,0.44,0.42,0.4\n"
        "resnet50_ibn_a,0.68,0.67,0.66,0.65,0.64,0.47,0.45,0.43,0.41,\n")
    assert robustbench_csv([record]) == expected
    out = tmp_path / "unaggregated_results.csv"
    assert main(["export", str(record), "--output", str(out)]) == 0
    assert out.read_text() == expected
    table = pd.read_csv(out, header=[0, 1], index_col=0)  # as robustbench.eval reads it back
    assert table.loc["resnet50", ("fog", "3")] == pytest.approx(0.44) and table.shape == (2, 10)
    capsys.readouterr()
    assert main(["export", str(record)]) == 0 and capsys.readouterr().out == expected


def test_c_bar_records_export_and_other_records_are_refused(tmp_path):
    bar = graded_record({"m": {"origin": 10.0, "sparkles-1": 25.0, "sparkles-2": 12.5}}, "imagenet-c-bar",
                        C_BAR_LABELS)
    bar.results = [{**row, "n_images": 8} for row in bar.results]  # 25 % of 8 images: 6 right
    path = write_record(bar, tmp_path / "bar.json")
    assert robustbench_csv([path]) == ",sparkles,sparkles,sparkles,sparkles,sparkles\n,1,2,3,4,5\nm,0.75,0.875,,,\n"
    table1 = graded_record({"m": {"origin": 10.0, "rgb+50": 20.0}})
    with pytest.raises(UsageError, match="ImageNet-C records or ImageNet-C-bar records"):
        robustbench_csv([table1])
    with pytest.raises(UsageError, match="ImageNet-C records or ImageNet-C-bar records"):
        robustbench_csv([path, graded_record({"n": {"origin": 10.0, "fog-1": 20.0}})])

"""The public API: every public name importable from ``ibnbench`` itself, one ``ibnbench.run`` for condition and
dataset suites that does what ``ibnbench run`` does, options checked before any weight is loaded."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers.shared import need_extra

import ibnbench
from ibnbench.data.classes import imagenet_wnids
from ibnbench.errors import RecordWriteError, UsageError

INIT = Path(ibnbench.__file__)


def test_dir_lists_every_public_name_and_each_resolves():
    names = set(dir(ibnbench))
    assert set(ibnbench.__all__) <= names and "__version__" in names
    for name in ("run", "RunOptions", "Record", "read_record", "load_suite", "assert_no_regression",
                 "predictions_for", "create_model", "RecordWriteError"):
        assert name in ibnbench.__all__, name
    for name in ibnbench.__all__:
        assert getattr(ibnbench, name) is not None, name
    from ibnbench.eval.api import run
    from ibnbench.results.predictions import for_record

    assert ibnbench.run is run and ibnbench.predictions_for is for_record
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ibnbench.nothing  # noqa: B018


def test_type_checkers_see_the_same_names_as_the_lazy_imports():
    """The ``if TYPE_CHECKING:`` imports of ``ibnbench/__init__.py`` name exactly ``__all__``, from the modules the
    lazy imports use."""
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {alias.asname or alias.name: (node.module.removeprefix("ibnbench."), alias.name)
            for node in block.body for alias in node.names}
    assert seen == ibnbench._LAZY and sorted(seen) == ibnbench.__all__


def v2_copy(val: Path, root: Path) -> Path:
    """The val images laid out as ImageNetV2 is (``<class index>/<file>``), as links."""
    wnids = imagenet_wnids()
    for image in sorted(val.rglob("*.JPEG")):
        folder = root / str(wnids.index(image.parent.name))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image.name).symlink_to(image)
    return root


def same_content(a: ibnbench.Record, b: ibnbench.Record) -> None:
    """Equal records but for when they were made, how long it took and their files' names."""
    skip = {"created", "timing", "predictions", "path"}
    for field in dataclasses.fields(a):
        if field.name not in skip:
            assert getattr(a, field.name) == getattr(b, field.name), field.name
    ours, theirs = ibnbench.predictions_for(a), ibnbench.predictions_for(b)
    assert sorted(ours.parts) == sorted(theirs.parts)
    for part in ours.parts:
        for name, array in ours.parts[part].arrays().items():
            np.testing.assert_array_equal(array, theirs.parts[part].arrays()[name], err_msg=f"{part} {name}")


def test_run_natural_suite_from_python_gives_the_cli_record(val100, tmp_path, monkeypatch, capsys):
    """``ibnbench.run(..., suite="natural")`` on val and a V2-style copy of it: the record ``ibnbench run --suite
    natural`` writes on the same input, with a row per dataset and its gap measured against val."""
    need_extra("efficientnet_lite_pytorch")
    from ibnbench.cli import main

    monkeypatch.setenv("IBNBENCH_IMAGENET_V2_MF", str(v2_copy(val100, tmp_path / "v2")))
    options = ibnbench.RunOptions(device="cpu", workers=0, batch_size=8, limit=8, progress=False)
    record = ibnbench.run(["efficientnet_lite0"], val100, suite="natural", conditions=["v2-matched-frequency"],
                          options=options, output=tmp_path / "api.json")
    assert record.path == str(tmp_path / "api.json")
    assert [c["id"] for c in record.conditions] == ["origin", "v2-matched-frequency"]
    assert record.conditions[1]["baseline"] == "origin" and record.dataset["datasets"]["v2-matched-frequency"][
        "layout"] == "numeric"
    assert [row["n_images"] for row in record.results] == [8, 8]

    assert main(["run", "--model", "efficientnet_lite0", "--data", str(val100), "--suite", "natural",
                 "--conditions", "v2-matched-frequency", "--device", "cpu", "--workers", "0", "--batch-size", "8",
                 "--limit", "8", "--no-progress", "--output", str(tmp_path / "cli.json")]) == 0
    assert f"record: {tmp_path / 'cli.json'}" in capsys.readouterr().out
    written = ibnbench.read_record(tmp_path / "api.json")
    assert written.results == record.results and written.per_image == record.per_image
    same_content(written, ibnbench.read_record(tmp_path / "cli.json"))


def test_dataset_suite_refuses_the_options_of_condition_suites(tiny_val, tmp_path):
    for given, flag in (({"classes_from_folders": True}, "--classes-from-folders"),
                        ({"style_weights": {"monet": "random"}}, "--style-weights"),
                        ({"options": ibnbench.RunOptions(style_dir=["monet=/x"])}, "--style-dir")):
        with pytest.raises(UsageError, match=f"{flag} does not apply to dataset suite natural"):
            ibnbench.run(["resnet18"], tiny_val, suite="natural", output=tmp_path / "r.json", **given)


@pytest.fixture
def weight_loads(monkeypatch) -> list[str]:
    """The models built (weights loaded) by runs in the test."""
    from ibnbench.eval import plan

    loads, real = [], plan.create_model

    def counted(name, *args, **kwargs):
        loads.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(plan, "create_model", counted)
    return loads


BAD_OPTIONS = {"batch_size": (0, "--batch-size must be 1 to 4096 images, not 0"),
               "workers": (-1, "--workers must not be negative"),
               "chunk_size": (0, "--chunk-size must be at least 1 image"),
               "limit": (0, "--limit must be a positive number of images, got 0"),
               "amp": ("fp8", "--amp must be one of auto, bf16, fp16, off, not 'fp8'"),
               "decoder": ("gpu", "--decoder must be one of auto, cpu, nvjpeg"),
               "on_bad_image": ("ignore", "--on-bad-image must be one of fail, skip"),
               "refine": (2.0, "--refine must be a share of the batch between 0 and 1"),
               "style_dir": (["monet"], "--style-dir takes STYLE=DIR"),
               "device": ("tpu:9", "--device 'tpu:9' is not a device name"),
               "cache": ("", "--cache: give a folder or gpu")}


@pytest.mark.parametrize("field", list(BAD_OPTIONS))
def test_every_option_is_checked_before_any_weight_is_loaded(field, tiny_val, tmp_path, weight_loads):
    value, message = BAD_OPTIONS[field]
    with pytest.raises(UsageError, match=message):
        ibnbench.RunOptions(**{field: value})
    options = ibnbench.RunOptions(device="cpu", workers=0)
    setattr(options, field, value)  # changed after it was checked: run() checks again
    with pytest.raises(UsageError, match=message):
        ibnbench.run(["resnet18"], tiny_val, weights=["random"], options=options, output=tmp_path / "r.json")
    assert weight_loads == [] and not (tmp_path / "r.json").exists()


def test_batch_size_0_on_the_command_line_loads_no_weights(tiny_val, tmp_path, weight_loads, capsys):
    from ibnbench.cli import main

    args = ["run", "--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--device", "cpu",
            "--workers", "0", "--conditions", "origin", "--limit", "2", "--output", str(tmp_path / "r.json")]
    assert main([*args, "--batch-size", "0"]) == 2
    assert "--batch-size must be 1 to 4096 images, not 0" in capsys.readouterr().err and weight_loads == []
    assert main(args) == 0 and weight_loads == ["resnet18"]  # the count sees a load when there is one


def test_an_unwritable_record_travels_in_its_typed_error(tiny_val, tmp_path, monkeypatch):
    from ibnbench.results import record as results

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.json, "dump", disk_full)
    with pytest.raises(RecordWriteError, match="cannot write record .*r.json: No space left on device") as info:
        ibnbench.run(["resnet18"], tiny_val, conditions=["origin"], weights=["random"], output=tmp_path / "r.json",
                     options=ibnbench.RunOptions(device="cpu", workers=0, limit=2, progress=False))
    assert info.value.record.result("resnet18", "origin")["n_images"] == 2 and not (tmp_path / "r.json").exists()

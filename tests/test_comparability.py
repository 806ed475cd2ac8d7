"""Records name their benchmark generator, and `check`, `compare` and `report` refuse to mix records whose
generators differ (on the fly vs released files, JPEG vs not, another reference) unless
``--allow-generator-mismatch`` is given, which prints a warning line."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.records import answer_record, graded_record

from ibnbench.cli import main
from ibnbench.errors import RecordError
from ibnbench.results.check import EXIT_INCOMPARABLE, EXIT_OK, check
from ibnbench.results.record import read_record, write_record
from ibnbench.results.report import report

C_REFERENCE = "imagecorruptions 1.1.2 (the constants of hendrycks/robustness make_imagenet_c.py)"
ON_THE_FLY = {"benchmark": "imagenet-c", "ibnbench": "0.1.0", "reference": C_REFERENCE, "source": "on-the-fly",
              "jpeg": None}
RELEASED = {**ON_THE_FLY, "source": "released-files", "jpeg": 85,
            "reference": "the released ImageNet-C files (hendrycks/robustness, JPEG quality 85)"}
ERRORS = {"m": {"origin": 20.0, "fog-1": 30.0, "fog-2": 35.0}}


def records(tmp_path, ours: dict | None, theirs: dict | None, errors=ERRORS, other_errors=None):
    """Two ImageNet-C records (new, recorded) naming the generators ``ours`` and ``theirs`` (None: none)."""
    new = write_record(graded_record(errors, generator={"imagenet-c": ours} if ours else {}), tmp_path / "new.json")
    old = write_record(graded_record(other_errors or errors, generator={"imagenet-c": theirs} if theirs else {}),
                       tmp_path / "old.json")
    return new, old


@pytest.mark.parametrize("theirs, shown", [
    (RELEASED, "imagenet-c released-files, JPEG q85 (the released ImageNet-C files"),
    ({**ON_THE_FLY, "jpeg": 85}, "imagenet-c on-the-fly, JPEG q85 (imagecorruptions 1.1.2"),
    ({**ON_THE_FLY, "reference": "imagecorruptions 1.1.3"}, "imagenet-c on-the-fly, no JPEG (imagecorruptions 1.1.3)"),
])
def test_check_refuses_records_whose_generators_differ(tmp_path, capsys, theirs, shown):
    new, old = records(tmp_path, ON_THE_FLY, theirs)
    assert main(["check", "--results", str(new), "--against", str(old)]) == EXIT_INCOMPARABLE
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and out.startswith("incomparable: generators differ: imagenet-c on-the-fly, no JPEG")
    assert shown in out and "pass --allow-generator-mismatch to compare them anyway" in out
    assert main(["check", "--results", str(new), "--against", str(old), "--allow-generator-mismatch"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    warning = next(line for line in lines if line.startswith("warning: generators differ"))
    assert shown in warning and "compared anyway (--allow-generator-mismatch)" in warning
    assert any(line.startswith("ok: 3 result(s)") for line in lines)


def test_same_generator_or_other_version_compares_silently_and_unknown_gets_a_note(tmp_path):
    new, old = records(tmp_path, ON_THE_FLY, {**ON_THE_FLY, "ibnbench": "0.0.9"})
    outcome = check(new, old)
    assert outcome.exit_code == EXIT_OK and outcome.warnings == []
    new, old = records(tmp_path, ON_THE_FLY, None)  # an old record: no generator named
    outcome = check(new, old)
    assert outcome.exit_code == EXIT_OK
    assert outcome.warnings == [f"note: {old} names no generator (written before records named them): its images "
                                "are taken to be made as the other's"]
    assert read_record(old).generator == {}


def test_allowed_mismatch_still_needs_the_same_images_and_real_regressions_fail(tmp_path):
    worse = {"m": {**ERRORS["m"], "fog-2": 45.0}}
    new, old = records(tmp_path, ON_THE_FLY, RELEASED, errors=worse, other_errors=ERRORS)
    outcome = check(new, old, allow_generator_mismatch=True)
    assert outcome.exit_code == 1 and "worst m / fog-2: +10.00" in outcome.render()
    other = graded_record(ERRORS, generator={"imagenet-c": RELEASED})
    other.dataset["labels_sha256"] = "f" * 64
    outcome = check(new, write_record(other, tmp_path / "other.json"), allow_generator_mismatch=True)
    assert outcome.exit_code == EXIT_INCOMPARABLE
    assert "incomparable: the records' images differ (by name and label)" in outcome.render()


def test_compare_refuses_then_warns(tmp_path, capsys):
    answers = {"m": {"origin": "1100110011", "fog-1": "1000100010"}}
    a = answer_record(answers)
    b = answer_record({"n": answers["m"]})
    a.generator, b.generator = {"imagenet-c": ON_THE_FLY}, {"imagenet-c": {**ON_THE_FLY, "jpeg": 85}}
    a_path, b_path = write_record(a, tmp_path / "a.json"), write_record(b, tmp_path / "b.json")
    assert main(["compare", str(a_path), str(b_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "generators differ: imagenet-c on-the-fly, no JPEG" in err
    assert main(["compare", str(a_path), str(b_path), "--allow-generator-mismatch"]) == 0
    out, err = capsys.readouterr()
    assert "| m " in out and "warning: generators differ" in out and err.startswith("warning: generators differ")


def test_report_refuses_to_put_records_of_different_generators_side_by_side(tmp_path):
    a = write_record(graded_record(ERRORS, generator={"imagenet-c": ON_THE_FLY}), tmp_path / "a.json")
    b = write_record(graded_record({"n": ERRORS["m"]}, generator={"imagenet-c": RELEASED}), tmp_path / "b.json")
    with pytest.raises(RecordError, match="cannot be merged: generators differ: imagenet-c on-the-fly"):
        report([a, b])
    text = report([a, b], allow_generator_mismatch=True)
    assert "### m" in text and "### n" in text and "warning: generators differ" in text


def test_released_and_on_the_fly_runs_name_their_generators(tmp_path, capsys):
    """A run on the released tree and one on the fly on the same images: each record names its generator, check
    refuses to compare them, and with --allow-generator-mismatch compares them by image name."""
    from PIL import Image

    from ibnbench import RunOptions, run
    from ibnbench.data.classes import imagenet_wnids

    wnid, gen = imagenet_wnids()[5], np.random.default_rng(0)
    for folder in (tmp_path / "ImageNet-C" / "contrast" / "1" / wnid, tmp_path / "val" / wnid):
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(gen.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"v{i}.JPEG")
    options = RunOptions(device="cpu", workers=0, batch_size=2, progress=False)
    released = run(["resnet18"], tmp_path / "ImageNet-C", suite="imagenet-c", conditions=["contrast-1"],
                   weights=["random"], output=tmp_path / "released.json", options=options)
    fly = run(["resnet18"], tmp_path / "val", suite="imagenet-c", conditions=["origin", "contrast-1"],
              weights=["random"], output=tmp_path / "fly.json", options=options)
    assert released.generator["imagenet-c"]["source"] == "released-files"
    assert released.generator["imagenet-c"]["jpeg"] == 85
    assert fly.generator["imagenet-c"]["source"] == "on-the-fly" and fly.generator["imagenet-c"]["jpeg"] is None
    assert fly.generator["imagenet-c"]["reference"] == C_REFERENCE
    outcome = check(tmp_path / "released.json", tmp_path / "fly.json")
    assert outcome.exit_code == EXIT_INCOMPARABLE and "generators differ" in outcome.render()
    outcome = check(tmp_path / "released.json", tmp_path / "fly.json", allow_generator_mismatch=True,
                    tolerance=100)
    assert outcome.exit_code == 1 and list(outcome.table.status) == ["MISSING", "ok"]  # the tree has no origin

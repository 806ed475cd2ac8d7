"""ImageNet-P in runs: the suites and their condition class, --difficulty, every frame scored into the predictions
sidecar (independent of batch size and resume point), and the report's FP, T5D, FR, mFR and mT5D checked against a
numpy transcription of ImageNet-P test.py's flip_prob and ranking_dist written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.imagenet_p_reference import flip_prob, ranking_dist
from helpers.tiny import tiny_classifier

import ibnbench
from ibnbench.cli import main
from ibnbench.conditions import perturbations
from ibnbench.conditions.benchmark_generator import ON_THE_FLY, BenchmarkGenerator
from ibnbench.conditions.imagenet_p import Perturbation
from ibnbench.conditions.imaging import condition_key
from ibnbench.data.discovery import open_dataset
from ibnbench.errors import SuiteError, UsageError
from ibnbench.eval.checkpoint import Checkpoint
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import Classifier
from ibnbench.results.predictions import for_record, read_predictions, write_predictions
from ibnbench.results.record import read_record
from ibnbench.zoo.meta import Preprocessing

TINY, OTHER = "helpers.tiny:tiny_classifier", "helpers.tiny:other_tiny_classifier"


def test_the_suites_list_one_perturbation_condition_each():
    test, extra = ibnbench.load_suite("imagenet-p"), ibnbench.load_suite("imagenet-p-extra")
    assert test.ids == ["origin", *perturbations.TEST_PERTURBATIONS]
    assert extra.ids == ["origin", *perturbations.EXTRA_PERTURBATIONS]
    assert all(isinstance(c, Perturbation) and c.perturbation == c.id for c in list(test)[1:] + list(extra)[1:])


@pytest.mark.parametrize("name", ["shot_noise", "translate", "spatter"])
def test_the_condition_gives_the_frames_of_the_pure_op(name):
    """(frames, N, C, H, W) of a float 0..255 batch, keyed by seed and perturbation; frame 0 as a plain condition."""
    condition = Perturbation("p", perturbation=name, seed=3)
    x = torch.rand(2, 3, 64, 64) * 255
    index = torch.tensor([5, 9])
    frames = condition.frames(x, index, difficulty=2)
    assert frames.shape == (perturbations.frame_count(name), 2, 3, 64, 64)
    expected = perturbations.frames(x, index, name, 2, condition_key(3, f"imagenet-p/{name}"), size=64)
    assert torch.equal(frames, expected) and torch.equal(condition(x, index), expected[0])
    assert condition.benchmark_generator() == BenchmarkGenerator("imagenet-p", ON_THE_FLY, None)


def test_bad_fields_and_difficulties_are_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[conditions]]\nid = "x"\nop = "perturbation"\nperturbation = "fog"\n')
    with pytest.raises(SuiteError, match="field 'perturbation': expected one of gaussian_noise"):
        ibnbench.load_suite(path)
    for bad in (0, 4, True, 1.0):
        with pytest.raises(UsageError, match="--difficulty"):
            RunOptions(difficulty=bad)


@pytest.fixture()
def three_val(tmp_path):
    """3 small synthetic JPEGs in 3 ImageNet classes (each image costs 31 frames per perturbation)."""
    from helpers.images import make_folder

    from ibnbench.data.classes import imagenet_wnids

    wnids = imagenet_wnids()
    return make_folder(tmp_path / "val", {wnids[1]: [1], wnids[400]: [4], wnids[999]: [7]})


def _evaluate(val, conditions, **options):
    models = {"tiny": Classifier(tiny_classifier(), Preprocessing())}
    return evaluate(models, conditions, open_dataset(val),
                    RunOptions(workers=0, device="cpu", progress=False, **options))


def test_frames_do_not_depend_on_batch_size_or_resume_point(three_val, tmp_path):
    """The sidecar's frame arrays of a noise and a stateful sequence: batches of 3 and 2, and a run stopped after 2
    images and resumed, give the same arrays."""
    conditions = [c for c in ibnbench.load_suite("imagenet-p") if c.id in ("shot_noise", "zoom_blur")]
    whole = _evaluate(three_val, conditions, batch_size=3).predictions.sequences
    split = _evaluate(three_val, conditions, batch_size=2).predictions.sequences
    checkpoint = Checkpoint(tmp_path / "resume.pt", {"run": "p"})
    models = {"tiny": Classifier(tiny_classifier(), Preprocessing())}
    options = RunOptions(workers=0, device="cpu", progress=False, batch_size=1, chunk_size=1)

    def stop(seen: int) -> None:
        if seen >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(models, conditions, open_dataset(three_val), options, checkpoint, on_batch=stop)
    assert int(torch.load(checkpoint.path, weights_only=False)["state"]["done"].sum()) == 2
    resumed = evaluate(models, conditions, open_dataset(three_val), options, checkpoint).predictions.sequences
    assert whole.top5.shape == (1, 2, 3, 31, 5) and whole.top5.any()
    for other in (split, resumed):
        assert np.array_equal(other.top5, whole.top5) and np.array_equal(other.flips, whole.flips)


def test_sidecar_flips_are_the_stored_frames_changes_at_difficulty_2(three_val):
    conditions = [c for c in ibnbench.load_suite("imagenet-p") if c.id in ("gaussian_noise", "rotate")]
    sequences = _evaluate(three_val, conditions, batch_size=3, difficulty=2).predictions.sequences
    assert sequences.difficulty == 2 and sequences.perturbations == ["gaussian_noise", "rotate"]
    noise, rotate = sequences.top5[0, 0, ..., 0], sequences.top5[0, 1, ..., 0]
    assert np.array_equal(sequences.flips[0, 0], (noise[:, 1:] != noise[:, :1]).sum(axis=1))
    assert np.array_equal(sequences.flips[0, 1], (rotate[:, 2:] != rotate[:, :-2]).sum(axis=1))


def test_old_sidecars_read_and_new_ones_round_trip(three_val, tmp_path):
    predictions = _evaluate(three_val, [ibnbench.load_suite("imagenet-p")["translate"]], batch_size=3).predictions
    write_predictions(predictions, tmp_path / "new.npz")
    again = read_predictions(tmp_path / "new.npz")
    assert np.array_equal(again.sequence("tiny", "translate"), predictions.sequences.top5[0, 0])
    assert again.sequences.frames.tolist() == [41]
    predictions.sequences = None  # a sidecar as written before sequences
    write_predictions(predictions, tmp_path / "old.npz")
    assert read_predictions(tmp_path / "old.npz").sequences is None


def _run(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    assert main(["run", "--model", TINY, "--model", OTHER, "--weights", "random", "--data", str(tmp_path / "val"),
                 "--suite", "imagenet-p", "--limit", "1", "--device", "cpu", "--workers", "0", "--no-progress",
                 "--output", str(out), *extra]) == 0
    return out


def _report_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``### title``."""
    block = text.split(f"### {title}\n")[1].strip().split("\n\n")[0]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in block.splitlines()[2:]}


def test_run_and_report_fp_t5d_and_mfr_against_a_baseline(three_val, tmp_path, capsys):
    """`ibnbench run --suite imagenet-p` with two models, then `report --baseline` and `--baseline-constants`: FP and
    T5D per perturbation equal the transcription of test.py on the sidecar's frames, FR and mFR their ratios."""
    out = _run(tmp_path, "p")
    record = read_record(out)
    assert {c.get("difficulty") for c in record.conditions[1:]} == {1}
    assert record.generator["imagenet-p"]["source"] == ON_THE_FLY  # what check/compare/report compare records by
    sequences = for_record(record)
    fp = {m: {p: flip_prob(sequences.sequence(m, p)[..., 0], 1, "noise" in p) for p in
              perturbations.TEST_PERTURBATIONS} for m in (TINY, OTHER)}
    t5d = {m: {p: ranking_dist(sequences.sequence(m, p), 1, "noise" in p) for p in perturbations.TEST_PERTURBATIONS}
           for m in (TINY, OTHER)}
    capsys.readouterr()
    assert main(["report", str(out), "--baseline", OTHER]) == 0
    text = capsys.readouterr().out
    rows = _report_rows(text, TINY)
    for p in perturbations.TEST_PERTURBATIONS:  # a baseline that never flips on one image gives no FR ("-")
        fr = f"{100 * fp[TINY][p] / fp[OTHER][p]:.2f}" if fp[OTHER][p] else "-"
        assert rows[perturbations.LABELS[p]][:4] == [f"{100 * fp[TINY][p]:.2f}", rows[perturbations.LABELS[p]][1],
                                                      f"{t5d[TINY][p]:.3f}", fr]
    summary = _report_rows(text, f"ImageNet-P at difficulty 1, normalised by model {OTHER}")
    mt5d = np.mean([100 * t5d[TINY][p] / t5d[OTHER][p] for p in perturbations.TEST_PERTURBATIONS]
                   ) if all(t5d[OTHER].values()) else None  # one image: the baseline may keep its top-5 order
    assert summary[TINY][0] == f"{np.mean([100 * v for v in fp[TINY].values()]):.2f}"
    assert summary[TINY][3] == ("-" if mt5d is None else f"{mt5d:.2f}")
    constants = tmp_path / "alexnet.toml"
    tables = [f"[{table}]\n" + "".join(f"{p} = {value}\n" for p in perturbations.TEST_PERTURBATIONS)
              for table, value in (("fp", 0.5), ("t5d", 2.0))]
    constants.write_text('suite = "imagenet-p"\ndifficulty = 1\n' + "".join(tables))
    assert main(["report", str(out), "--baseline-constants", str(constants)]) == 0
    summary = _report_rows(capsys.readouterr().out, "ImageNet-P at difficulty 1, normalised by constants alexnet.toml")
    for model in (TINY, OTHER):
        assert summary[model][2:] == [f"{np.mean([200 * v for v in fp[model].values()]):.2f}",
                                      f"{np.mean([50 * v for v in t5d[model].values()]):.2f}"]


def test_report_refuses_an_absent_baseline_and_mixed_difficulties(three_val, tmp_path, capsys):
    first = _run(tmp_path, "d1", "--conditions", "origin,rotate")
    second = _run(tmp_path, "d2", "--conditions", "origin,rotate", "--difficulty", "2")
    capsys.readouterr()
    assert main(["report", str(first), "--baseline", "alexnet"]) == 2
    assert "--baseline alexnet: no such model in the records" in capsys.readouterr().err
    assert main(["report", str(first), str(second)]) == 2
    assert "different difficulties (1 in" in capsys.readouterr().err
    constants = tmp_path / "c.toml"
    constants.write_text('suite = "imagenet-p"\ndifficulty = 2\n[fp]\nrotate = 0.1\n[t5d]\nrotate = 1.0\n')
    assert main(["report", str(first), "--baseline-constants", str(constants)]) == 2
    assert "made at difficulty 2, the records at 1" in capsys.readouterr().err
    constants.write_text('suite = "imagenet-p"\n[fp]\nrotate = [0.1, 0.2]\n')  # no severities in ImageNet-P
    assert main(["report", str(first), "--baseline-constants", str(constants)]) == 2
    assert "[fp] rotate must be a number above 0, not [0.1, 0.2]" in capsys.readouterr().err
    constants.write_text('suite = "imagenet-c-bar"\n[errors]\nsparkles = 50.0\n')
    assert main(["report", str(first), "--baseline-constants", str(constants)]) == 2
    assert "top-level 'suite' must name the benchmark" in capsys.readouterr().err
    assert main(["run", "--model", TINY, "--weights", "random", "--data", str(three_val), "--conditions", "origin",
                 "--difficulty", "2", "--device", "cpu", "--output", str(tmp_path / "t.json")]) == 2
    assert "has no ImageNet-P perturbation" in capsys.readouterr().err

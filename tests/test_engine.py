"""The engine: decode once and fan out, resume after an interruption, bad input never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.runs import CONDITIONS, inverted_copy_suite, small_models
from helpers.syncs import HostSyncProbe

from ibnbench import run
from ibnbench.cli import main
from ibnbench.data.discovery import open_dataset
from ibnbench.data.geometry import Geometry
from ibnbench.data.loader import make_loader
from ibnbench.eval import condition_runs, engine
from ibnbench.eval import runner as eval_runner
from ibnbench.eval.checkpoint import Checkpoint
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import Classifier, load_suite
from ibnbench.zoo import create_model


def test_three_models_four_conditions_decode_each_image_once(tiny_val, decoded):
    suite = load_suite("table1").select(CONDITIONS)
    out = evaluate(small_models(), suite.conditions, open_dataset(tiny_val),
                   RunOptions(workers=0, batch_size=4, device="cpu", progress=False))
    assert sorted(Path(p).name for p in decoded) == sorted(p.name for p in tiny_val.rglob("*.JPEG"))  # 9 for 12 pairs
    assert out.timing["decoded"] == 9  # and the engine's own count says so
    assert len(out.results) == 12
    assert {r["n_images"] for r in out.results} == {9}


def test_fanout_and_baseline_give_identical_counts(tiny_val):
    models = small_models(("resnet18", "resnet18_ibn_b"))
    suite = load_suite("table1-clipped").select(["origin", "rgb+50"])
    dataset = open_dataset(tiny_val)
    fast = evaluate(models, suite.conditions, dataset, RunOptions(workers=0, batch_size=4, device="cpu",
                                                                  progress=False))
    slow = evaluate(models, suite.conditions, dataset,
                    RunOptions(workers=0, batch_size=4, device="cpu", progress=False, fanout=False))
    assert fast.results == slow.results and fast.per_image == slow.per_image
    assert slow.timing["passes"] == 4 and fast.timing["passes"] == 1


def test_per_image_hits_agree_with_the_summary(tiny_val):
    models = {"resnet18": create_model("resnet18")}
    with torch.no_grad():  # make the model always answer class 400: 3 of the 9 images are right
        models["resnet18"].fc.weight.zero_()
        models["resnet18"].fc.bias.zero_()
        models["resnet18"].fc.bias[400] = 1.0
    out = evaluate(models, load_suite("table1").select(["origin"]).conditions, open_dataset(tiny_val),
                   RunOptions(workers=0, batch_size=4, device="cpu", progress=False))
    assert out.per_image["top1"]["resnet18"]["origin"] == "000111000"
    assert out.results[0]["top1_err"] == pytest.approx(100 * 6 / 9, abs=1e-3)


def test_interrupted_run_resumes_to_identical_results(tiny_val, tmp_path):
    suite = load_suite("table1").select(CONDITIONS)
    dataset = open_dataset(tiny_val)
    opts = RunOptions(workers=0, batch_size=2, chunk_size=2, device="cpu", progress=False)
    full = evaluate(small_models(), suite.conditions, dataset, opts)

    checkpoint = Checkpoint(tmp_path / "resume.pt", {"run": "x"})

    def stop_after_six(seen: int) -> None:
        if seen >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(small_models(), suite.conditions, dataset, opts, checkpoint, on_batch=stop_after_six)
    saved = torch.load(checkpoint.path, weights_only=False)
    assert int(saved["state"]["done"].sum()) == 6  # Ctrl-C saves every finished image, not only whole chunks
    evaluated = []
    resumed = evaluate(small_models(), suite.conditions, dataset, opts, checkpoint, on_batch=evaluated.append)
    assert evaluated[-1] == 3  # only the 3 images after the checkpoint were evaluated again
    assert resumed.results == full.results and resumed.per_image == full.per_image
    with pytest.raises(ValueError, match="different run"):
        Checkpoint(checkpoint.path, {"run": "y"}).load()


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize("setup, message", [
    (lambda root: root / "absent", "does not exist"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "empty"),
])
def test_bad_data_directory_is_one_clear_line(tmp_path, capsys, setup, message):
    code, err = run_cli(capsys, "--model", "resnet18", "--weights", "random", "--data", str(setup(tmp_path)),
                        "--conditions", "origin", "--device", "cpu", "--output", str(tmp_path / "r.json"))
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_unknown_model_and_condition(tiny_val, tmp_path, capsys):
    code, err = run_cli(capsys, "--model", "resnet5O", "--data", str(tiny_val), "--device", "cpu")
    assert code == 2 and "unknown model 'resnet5O'" in err
    code, err = run_cli(capsys, "--model", "resnet18", "--weights", "random", "--data", str(tiny_val),
                        "--conditions", "origin,blur", "--device", "cpu")
    assert code == 2 and "no condition 'blur'" in err


def test_corrupt_jpeg_fails_clearly_or_is_skipped_and_counted(tiny_val, tmp_path, capsys):
    bad = next(tiny_val.rglob("*.JPEG"))
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    args = ["--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--conditions", "origin",
            "--device", "cpu", "--workers", "0", "--output", str(tmp_path / "r.json")]
    code, err = run_cli(capsys, *args)
    assert code == 2 and bad.name in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
    assert main(["run", *args, "--on-bad-image", "skip"]) == 0
    assert "1 unreadable image(s) skipped" in capsys.readouterr().out
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["dataset"]["n_skipped"] == 1 and record["results"][0]["n_images"] == 8
    position = record["per_image"]["files"].index(str(bad.relative_to(tiny_val)))
    assert record["per_image"]["top1"]["resnet18"]["origin"][position] == "-"


def test_missing_style_weights_stop_before_work(tiny_val, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("IBNBENCH_STYLE_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(condition_runs, "evaluate", lambda *a, **k: pytest.fail("work started"))
    code, err = run_cli(capsys, "--model", "resnet18", "--weights", "random", "--data", str(tiny_val),
                        "--device", "cpu", "--output", str(tmp_path / "r.json"))
    assert code == 2 and "monet" in err and "style_monet.pth" in err and "--skip-missing" in err


def test_skip_missing_reports_conditions_as_not_run(tiny_val, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("IBNBENCH_STYLE_WEIGHTS_DIR", raising=False)
    code = main(["run", "--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--device", "cpu",
                 "--workers", "0", "--skip-missing", "--output", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "not run (missing assets): monet" in out
    record = json.loads((tmp_path / "r.json").read_text())
    assert [r["condition"] for r in record["results"]] == ["origin", "rgb+50", "r+50", "std*1.5"]
    assert {"id": "monet", "label": "Monet", "not_run": True} in record["conditions"]


def test_killed_cli_run_resumes_to_identical_results(tiny_val, tmp_path):
    """SIGKILL mid-run (a real crash): no record is left, and --resume finishes with the same numbers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def args(output: Path) -> list[str]:
        return [sys.executable, "-m", "ibnbench.cli", "run", "--model", "resnet18_ibn_b", "--weights", "random",
                "--data", str(tiny_val), "--conditions", ",".join(CONDITIONS), "--device", "cpu", "--workers", "0",
                "--batch-size", "1", "--chunk-size", "1", "--output", str(output)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference.json"
    subprocess.run(args(reference), check=True, env=env, capture_output=True, timeout=300)
    killed = tmp_path / "killed.json"
    resume_file = tmp_path / ".killed.json.rank0.resume.pt"
    job = subprocess.Popen(args(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not resume_file.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert resume_file.exists() and not killed.exists(), "the run was not caught mid-way"
    done = subprocess.run(args(killed) + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = json.loads(reference.read_text()), json.loads(killed.read_text())
    assert a["results"] == b["results"] and a["per_image"] == b["per_image"]
    assert not resume_file.exists()  # cleaned up after a complete run


def test_resume_with_another_world_size_is_refused(tiny_val, tmp_path, capsys):
    for rank in (0, 1):
        (tmp_path / f".r.json.rank{rank}.resume.pt").write_bytes(b"")
    code, err = run_cli(capsys, "--model", "resnet18", "--weights", "random", "--data", str(tiny_val),
                        "--conditions", "origin", "--device", "cpu", "--output", str(tmp_path / "r.json"), "--resume")
    assert code == 2 and "2 process(es)" in err and "same world size" in err


def test_dir_condition_reads_the_prestylised_copy(tiny_val, tmp_path):
    """A `dir` condition scores the same images read from another folder (matched by relative path):
    its numbers equal an `origin` run on that folder itself."""
    conditions, styled = inverted_copy_suite(tiny_val, tmp_path)
    seen = []
    inverted = conditions[1]
    inverted.apply = lambda x, index: seen.append(float(x.sum())) or x  # spy on what the condition receives
    opts = RunOptions(workers=0, batch_size=4, device="cpu", progress=False)
    evaluate(small_models(("resnet18",)), conditions, open_dataset(tiny_val), opts)

    def total(root: Path) -> float:
        loader = make_loader(open_dataset(root), [Geometry()], batch_size=4, workers=0)
        return sum(float(b["crops"][Geometry().key].float().sum()) for b in loader)

    assert sum(seen) == pytest.approx(total(styled), rel=1e-6)
    assert sum(seen) != pytest.approx(total(tiny_val), rel=1e-3)


def test_style_condition_runs_with_a_random_generator(tiny_val, tmp_path, capsys):
    code = main(["run", "--model", "resnet18", "--weights", "random", "--style-weights", "monet=random",
                 "--data", str(tiny_val), "--conditions", "origin,monet", "--device", "cpu", "--workers", "0",
                 "--output", str(tmp_path / "r.json")])
    assert code == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert [r["condition"] for r in record["results"]] == ["origin", "monet"]
    assert main(["run", "--model", "resnet18", "--style-weights", "monet", "--data", str(tiny_val)]) == 2
    assert "STYLE=SPEC" in capsys.readouterr().err


def test_decision_gap_is_the_distance_to_the_nearest_top1_or_top5_change():
    logits = torch.tensor([[5.0, 4.9, 1.0, 0.5, 0.2, 0.1, -3.0],   # label 0: 0.1 above the best other
                           [9.0, 8.0, 7.0, 6.0, 5.0, 4.5, 4.75]])  # label 6: 0.25 below the fifth-best
    gap = eval_runner.decision_gap(logits, torch.tensor([0, 6]))
    assert gap.tolist() == pytest.approx([0.1, 0.25], abs=1e-6)


class _Rounding(torch.nn.Module):
    """Label 3 wins by a wide margin, except for near ties (bright inputs), which reduced precision flips."""

    def forward(self, x):
        tie = x[:, 0, 0, 0] > 0
        logits = torch.zeros(len(x), 1000)  # an ImageNet-1k head: the shape every scored model returns
        logits[:, 3] = 1.0
        logits[:, 4] = torch.where(tie, 1.01 if torch.is_autocast_enabled("cpu") else 0.99, 0.0)
        return logits


def _hits(ties: list[int], refine: float) -> tuple[torch.Tensor, int]:
    """Top-1 hits of 16 samples (label 3) and the close calls left, with ``ties`` the near-tie samples."""
    from ibnbench.zoo.meta import Preprocessing

    runner = eval_runner.ModelRunner(_Rounding(), Preprocessing(), torch.device("cpu"),
                                RunOptions(device="cpu", amp="bf16", refine=refine))
    x = torch.zeros(16, 3, 8, 8)
    x[ties] = 255.0
    hits = runner.hits(x, torch.full((16,), 3))
    return hits[:, 0], int(runner.close_calls_left)


def test_refine_rescores_near_ties_in_full_precision():
    hits, left = _hits([2, 9], refine=0.125)  # 2 of 16 samples re-scored: both near ties
    assert hits.all() and left == 0
    hits, left = _hits([2, 9], refine=0.0)  # plain autocast: both flip, both counted
    assert hits.tolist() == [i not in (2, 9) for i in range(16)] and left == 2
    hits, left = _hits([2, 5, 9], refine=0.125)  # three near ties, room for two: one is left and counted
    assert int((~hits).sum()) == 1 and left == 1


def test_refine_share_outside_0_1_is_refused(tiny_val, tmp_path, capsys):
    code = main(["run", "--model", "resnet18", "--weights", "random", "--data", str(tiny_val), "--device", "cpu",
                 "--amp", "bf16", "--refine", "2", "--output", str(tmp_path / "r.json")])
    assert code == 2 and "--refine must be a share of the batch between 0 and 1" in capsys.readouterr().err


def _linear_scores(refine: float, amp: str = "bf16") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear classifier's stored top-5 probabilities on 16 random inputs under CPU autocast, with the fp32 and
    the autocast softmax of its logits gathered at the same classes."""
    from ibnbench.zoo.meta import Preprocessing

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
    x, label = torch.rand(16, 3, 8, 8) * 255, torch.randint(0, 1000, (16,))
    runner = eval_runner.ModelRunner(model, Preprocessing(), torch.device("cpu"),
                                     RunOptions(device="cpu", amp=amp, refine=refine))
    scores = runner.score(x, label)
    normalized = Preprocessing().normalize(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = model(normalized).float().softmax(dim=1)
    with torch.no_grad():
        full = model(normalized).softmax(dim=1)
    return scores.top5_prob, full.gather(1, scores.top5_index), reduced.gather(1, scores.top5_index)


def test_refined_rows_store_the_softmax_of_their_fp32_logits():
    stored, full, reduced = _linear_scores(refine=0.25)  # 4 of 16 rows re-scored in fp32
    as_fp32 = (stored - full).abs().amax(dim=1) < 1e-6
    assert int(as_fp32.sum()) == 4  # the refined rows, and only they: bf16 logits move the others' probabilities
    assert torch.allclose(stored[~as_fp32], reduced[~as_fp32], atol=1e-6)
    stored, full, _ = _linear_scores(refine=1.0)
    assert torch.allclose(stored, full, atol=1e-6)
    stored, full, reduced = _linear_scores(refine=0.0)
    assert torch.allclose(stored, reduced, atol=1e-6) and (stored - full).abs().amax() > 1e-4


@pytest.mark.parametrize("amp, refine", [("off", 0.0), ("bf16", 1.0)])
def test_fp32_forwards_stay_fp32_under_a_callers_autocast(amp, refine):
    """Fault 7 (issue 25): a full-precision run, and the refine re-score, turn autocast off rather than inherit the
    caller's: inside an outer bf16 autocast they still store the softmax of plain fp32 logits."""
    from ibnbench.zoo.meta import Preprocessing

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
    x, label = torch.rand(16, 3, 8, 8) * 255, torch.randint(0, 1000, (16,))
    runner = eval_runner.ModelRunner(model, Preprocessing(), torch.device("cpu"),
                                     RunOptions(device="cpu", amp=amp, refine=refine))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = runner.score(x, label)
    with torch.no_grad():
        full = model(Preprocessing().normalize(x)).softmax(dim=1)
    torch.testing.assert_close(scores.top5_prob, full.gather(1, scores.top5_index), atol=1e-6, rtol=0)
    torch.testing.assert_close(scores.top5_index, full.topk(5, dim=1).indices)


@pytest.mark.parametrize("amp, refine, made", [("off", 0.125, "fp32"), ("bf16", 0.0, "bf16 logits"),
                                               ("bf16", 0.125, "bf16 logits (refined rows fp32)"),
                                               ("fp16", 0.5, "fp16 logits (refined rows fp32)")])
def test_record_says_which_logits_the_probabilities_come_from(amp, refine, made):
    env = engine.environment(torch.device("cpu"), RunOptions(device="cpu", amp=amp, refine=refine))
    assert env["probabilities"] == made


class _OutOfMemory(_Rounding):
    """:class:`_Rounding` that runs out of memory on the calls numbered in ``fail`` (1 = the first)."""

    def __init__(self, fail: set[int]):
        super().__init__()
        self.fail, self.calls = fail, 0

    def forward(self, x):
        self.calls += 1
        if self.calls in self.fail:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_retry_counts_each_close_call_once():
    """16 samples: the whole batch runs out of memory, then the second half-batch does, after the first half
    (holding near tie 2) had been scored; the retry in quarters counts near ties 2 and 9 once each."""
    from ibnbench.zoo.meta import Preprocessing

    runner = eval_runner.ModelRunner(_OutOfMemory({1, 3}), Preprocessing(), torch.device("cpu"),
                                RunOptions(device="cpu", amp="bf16", refine=0.0))
    x = torch.zeros(16, 3, 8, 8)
    x[[2, 9]] = 255.0
    hits = runner.hits(x, torch.full((16,), 3))
    assert runner.micro_batch == 4 and runner.model.calls == 7
    assert hits[:, 0].tolist() == [i not in (2, 9) for i in range(16)] and int(runner.close_calls_left) == 2


class _Overflow(torch.nn.Module):
    """Label 3 wins, but under fp16 autocast the logits of bright samples overflow (inf, or NaN)."""

    def forward(self, x):
        bright = x[:, 0, 0, 0] > 0
        logits = torch.zeros(len(x), 1000)  # an ImageNet-1k head: the shape every scored model returns
        logits[:, 3] = 1.0
        if torch.is_autocast_enabled("cpu"):
            logits[bright, 4] = float("inf")
            logits[bright & (x[:, 1, 0, 0] > 0), 3] = float("nan")
        return logits


@pytest.mark.parametrize("refine, left, wrong", [(0.125, 0, 0), (0.0, 2, 2)])
def test_fp16_overflow_rows_are_rescored_or_counted(refine, left, wrong):
    """A row with a non-finite logit is the closest of calls: re-scored in fp32 first, else counted as left.
    (Left unrefined, both come out wrong: sample 4's inf rival wins, and sample 11's NaN label logit, which carries
    no information, ranks last.)"""
    from ibnbench.zoo.meta import Preprocessing

    runner = eval_runner.ModelRunner(_Overflow(), Preprocessing(), torch.device("cpu"),
                                RunOptions(device="cpu", amp="fp16", refine=refine))
    x = torch.zeros(16, 3, 8, 8)
    x[[4, 11], 0] = 255.0  # sample 4: an inf logit; sample 11: an inf and a NaN
    x[11, 1] = 255.0
    hits = runner.hits(x, torch.full((16,), 3))
    assert int((~hits[:, 0]).sum()) == wrong and int(runner.close_calls_left) == left


class _TiesAndOverflow(torch.nn.Module):
    """Label 3 wins by 1 in fp32; under autocast, samples bright in channel 1 are exact ties with class 4 (gap 0)
    and samples bright in channel 0 overflow (class 4 inf, and NaN for class 5)."""

    def forward(self, x):
        logits = torch.zeros(len(x), 1000)
        logits[:, 3] = 1.0
        if torch.is_autocast_enabled("cpu"):
            logits[:, 4] = torch.where(x[:, 1, 0, 0] > 0, 1.0, 0.0)
            logits[x[:, 0, 0, 0] > 0, 4] = float("inf")
            logits[x[:, 0, 0, 0] > 0, 5] = float("nan")
        return logits


def _ties_and_overflow(refine: float) -> tuple[eval_runner.Scores, int]:
    """16 samples of label 3: samples 0-7 exact ties under fp16, sample 12 an overflow."""
    from ibnbench.zoo.meta import Preprocessing

    runner = eval_runner.ModelRunner(_TiesAndOverflow(), Preprocessing(), torch.device("cpu"),
                                     RunOptions(device="cpu", amp="fp16", refine=refine))
    x = torch.zeros(16, 3, 8, 8)
    x[:8, 1] = 255.0
    x[12, 0] = 255.0
    return runner.score(x, torch.full((16,), 3)), int(runner.close_calls_left)


def test_overflow_rows_come_before_exact_ties_in_the_refine_share():
    """Fault 15 (issue 25): one refine slot, eight exact ties (gap 0) and one overflow row: the overflow row takes the
    slot (it has no gap at all), and its fp32 answer is right; the ties are counted as left."""
    scores, left = _ties_and_overflow(refine=1 / 16)
    assert bool(scores.hits(torch.full((16,), 3))[12, 0]) and left == 8
    assert scores.fault.tolist() == [eval_runner.FINE] * 16


def test_overflow_rows_left_unrefined_store_no_nan_probability():
    """Fault 15 (issue 25): an overflow row the share cannot take is counted as left, scored from its logits bounded
    to fp16's range (inf as the largest, NaN as the lowest), and stores finite probabilities (a NaN one made the
    ECE NaN)."""
    scores, left = _ties_and_overflow(refine=0.0)
    assert left == 9 and scores.fault.tolist() == [eval_runner.FINE] * 16
    assert bool(scores.top5_prob.isfinite().all()) and bool(scores.label_prob.isfinite().all())
    assert int(scores.top5_index[12, 0]) == 4 and float(scores.top5_prob[12, 0]) == 1.0  # the overflowed class
    assert 5 not in scores.top5_index[12].tolist()  # the NaN logit carries nothing: ranked last


def test_normalize_builds_its_constants_once_per_device_and_dtype():
    """After the first call, normalising is two element-wise ops: no tensor is made from Python numbers (on CUDA
    that is a copy to the device and a host sync per forward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ibnbench.zoo.meta import Preprocessing

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x = torch.rand(2, 3, 4, 4) * 255
    mean, std = (torch.tensor(v)[:, None, None] for v in (Preprocessing().mean, Preprocessing().std))
    expected = (x - mean) / std
    Preprocessing().normalize(x)
    with Ops() as ops:
        out = Preprocessing().normalize(x)
    assert ops.names == ["sub", "mul"]
    torch.testing.assert_close(out, expected)
    assert Preprocessing().normalize(x.double()).dtype == torch.float64


class _PrecisionSpy(torch.nn.Module):
    """Notes the float32 convolution/matmul precision torch is set to when the model runs."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x):
        backends = torch.backends
        self.seen.add((backends.cudnn.allow_tf32, backends.cudnn.conv.fp32_precision,
                       backends.cuda.matmul.fp32_precision, backends.mkldnn.conv.fp32_precision))
        return torch.zeros(len(x), 1000)  # an ImageNet-1k head: the shape every scored model returns


FULL_FP32 = (False, "ieee", "ieee", "ieee")
"""(legacy cuDNN TF32 switch, cuDNN conv precision, cuBLAS matmul, oneDNN conv) in full fp32"""


def test_full_precision_forwards_are_ieee_fp32_and_the_record_says_so(tiny_val, tmp_path, monkeypatch):
    """torch defaults cuDNN fp32 convolutions to TF32: the engine's forwards (refine re-score too) and the style
    generators run in IEEE fp32, the caller's settings come back afterwards, and the record names the choice."""
    from ibnbench.conditions import style
    from ibnbench.zoo.meta import Preprocessing

    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # torch's default, which the engine must not use
    for amp, refine in (("off", 0.0), ("bf16", 1.0)):
        spy = _PrecisionSpy()
        runner = eval_runner.ModelRunner(spy, Preprocessing(), torch.device("cpu"), RunOptions(amp=amp, refine=refine))
        runner.hits(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
        assert spy.seen == {FULL_FP32}
    spy = _PrecisionSpy()
    style.stylize_batch(lambda x: (spy(x), x)[1], torch.zeros(1, 3, 8, 8))
    assert spy.seen == {FULL_FP32}
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cuda.matmul.fp32_precision == "none"
    record = run(["resnet18"], tiny_val, conditions=["origin"], weights=["random"], output=tmp_path / "r.json",
                 options=RunOptions(device="cpu", workers=0, progress=False))
    env = json.loads((tmp_path / "r.json").read_text())["environment"]
    assert env == record.environment and env["fp32_conv"] == "ieee" and env["dtype"] == "float32"
    assert env["decoder"] == "cpu" and env["cache"] is None and env["cpu_capability"]


class _ClearWinner(torch.nn.Module):
    """1000 logits: the sample's own class 10 ahead of everything else (no near tie anywhere)."""

    def forward(self, x):
        logits = torch.zeros(len(x), 1000)
        logits[:, 7] = 10.0
        return logits


def test_a_class_subset_under_autocast_counts_no_false_close_calls():
    """Logits outside a class subset are -inf by design, not an fp16/bf16 overflow: they must not make every row
    the closest of calls (which would spend the refine share on clear answers and count them as left)."""
    from ibnbench.data.classes import ClassSubset
    from ibnbench.zoo.meta import Preprocessing

    runner = eval_runner.ModelRunner(_ClearWinner(), Preprocessing(), torch.device("cpu"),
                                RunOptions(device="cpu", amp="bf16", refine=0.0),
                                classes=ClassSubset((3, 7, 11, 20, 30, 40, 50), "from folders"))
    hits = runner.hits(torch.zeros(8, 3, 8, 8), torch.full((8,), 7))
    assert hits.all() and int(runner.close_calls_left) == 0


def _pooled_linear() -> Classifier:
    """A small classifier on 64-pixel crops: 2x2 average colours into 1000 logits."""
    from ibnbench.zoo.meta import Preprocessing

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 1000))
    return Classifier(module, Preprocessing(resize=73, crop=64))


@pytest.mark.parametrize("with_file", [False, True])
def test_close_calls_are_read_from_the_device_only_when_a_checkpoint_is_written(tiny_val, tmp_path, with_file):
    """Fault 13 (issue 25): without a checkpoint file no chunk reads the close-call counter (a host sync per chunk
    on CUDA); with one, every chunk does, for the file."""
    checkpoint = Checkpoint(tmp_path / "resume.pt" if with_file else None, {"run": "x"})
    options = RunOptions(workers=0, batch_size=2, chunk_size=2, device="cpu", amp="bf16", refine=0.5, progress=False)
    with HostSyncProbe() as probe:
        evaluate({"m": _pooled_linear()}, load_suite("table1").select(["origin"]).conditions,
                 open_dataset(tiny_val), options, checkpoint)
    reads = [e for e in probe.events if e.kind == "item" and e.functions[0] == "save_checkpoint"]
    assert len(reads) == (4 if with_file else 0)  # 9 images in chunks of 2: 4 full chunks


class _TightCondition:
    """``inner`` that runs out of memory on more than ``limit`` images at once, noting each size it was given."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.id, self.sizes = inner, limit, inner.id, []

    def source(self, dataset):
        return None

    def __call__(self, x, index=None):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x, index)


def test_a_condition_out_of_memory_is_halved_and_remembered_with_identical_results(tiny_val):
    """Fault 10 (issue 25): a condition that fits one image at a time (batches of 4, 4, 1) is run in halves, then
    quarters, and at that size from the second batch on; the results equal a run where memory sufficed."""
    noise = load_suite("imagenet-c").select(["origin", "gaussian_noise-3"]).conditions
    tight = _TightCondition(noise[1], limit=1)
    options = RunOptions(workers=0, batch_size=4, device="cpu", progress=False)
    dataset = open_dataset(tiny_val)
    plain = evaluate({"m": _pooled_linear()}, noise, dataset, options)
    halved = evaluate({"m": _pooled_linear()}, [noise[0], tight], dataset, options)
    assert tight.sizes == [4, 2, 1, 1, 1, 1] + [1] * 4 + [1]
    assert halved.results == plain.results and halved.per_image == plain.per_image
    assert (halved.predictions.top5_prob == plain.predictions.top5_prob).all()


def test_out_of_memory_empties_the_cache_after_leaving_the_except_block(monkeypatch):
    """Fault 10 (issue 25): inside ``except`` the traceback still holds the failed attempt's tensors, so
    ``empty_cache`` there frees little: it runs after the block, with no exception in flight."""
    import sys

    in_flight = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: in_flight.append(sys.exc_info()[0]))

    def attempt(size: int) -> int:
        if size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return size

    assert eval_runner.halve_on_oom(attempt, 8, torch.device("cuda")) == (2, 2)
    assert in_flight == [None, None]


class _SlowFirstCall:
    """``inner`` that sleeps ``seconds`` on its first call (a warm-up: worker start-up, cuDNN autotuning)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.id, self.calls = inner, seconds, inner.id, 0

    def source(self, dataset):
        return None

    def __call__(self, x, index=None):
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)
        return self.inner(x, index)


def test_warm_timing_leaves_out_each_passs_first_batch(tiny_val):
    """Fault 12 (issue 25): ``timing["warm"]`` counts the images after the first batch (9 in batches of 4, 4, 1: 5)
    and their time only, so a slow first batch (a 0.5 s warm-up here) is not in it; one batch: None."""
    origin = load_suite("table1").select(["origin"]).conditions[0]
    dataset = open_dataset(tiny_val)
    out = evaluate({"m": _pooled_linear()}, [_SlowFirstCall(origin, 0.5)], dataset,
                   RunOptions(workers=0, batch_size=4, device="cpu", progress=False))
    warm = out.timing["warm"]
    assert set(warm) == {"seconds", "images", "images_per_s"} and warm["images"] == 5
    assert warm["seconds"] < out.timing["seconds"] - 0.5
    assert warm["images_per_s"] == pytest.approx(5 / warm["seconds"], rel=0.15)  # seconds rounded to 1 ms
    one = evaluate({"m": _pooled_linear()}, [origin], dataset,
                   RunOptions(workers=0, batch_size=16, device="cpu", progress=False))
    assert one.timing["warm"] is None


def test_warm_clock_on_cuda_records_events_and_waits_once(monkeypatch):
    """On CUDA the marks are events on the device's stream: recorded per pass, no wait per batch, one wait when the
    result is read (a fake event and stream stand in for CUDA's)."""
    from ibnbench.eval.timing import WarmClock

    recorded, waits = [], []

    class Event:
        def __init__(self, enable_timing: bool):
            assert enable_timing

        def record(self, stream):
            self.at = len(recorded)
            recorded.append(stream)

        def elapsed_time(self, end) -> float:  # milliseconds, as CUDA's
            return 250.0 * (end.at - self.at)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: waits.append(device))
    clock = WarmClock(torch.device("cuda", 1))
    for n in (8, 8, 8, 3):
        clock.batch_done(n)
    clock.pass_done()
    clock.batch_done(8)  # a pass of one batch adds nothing
    clock.pass_done()
    assert waits == [] and recorded == ["stream of cuda:1"] * 3
    assert clock.result() == {"seconds": 0.25, "images": 19, "images_per_s": 76.0} and len(waits) == 1

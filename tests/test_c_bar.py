"""ImageNet-C-bar's ops against numpy transcriptions of facebookresearch/augmentation-corruption's
``imagenet_c_bar/corrupt.py`` (``benchmarks/references/c_bar.py``: its per-pixel kernels vectorised over the image,
its own steps kept), fed the same per-image draws, at every severity of ``imagenet_c_bar.csv``; and draws that do not
depend on the batch. The ``imagenet-c-bar`` suite: its conditions give :func:`corrupt_bar`'s pixels, and
``ibnbench run`` / ``report`` on real images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.shared import VAL100, need, need_extra
from helpers.syncs import HostSyncProbe

import ibnbench
from benchmarks.references.c_bar import LEVELS, REFERENCES, SIZE, grid
from ibnbench.conditions import c_bar, corruptions
from ibnbench.conditions.base import CBarCorruption
from ibnbench.conditions.benchmark_generator import record_generator
from ibnbench.conditions.imaging import Draws, condition_key, jpeg_round_trip
from ibnbench.conditions.suite import list_suites
from ibnbench.errors import SuiteError, UsageError
from ibnbench.results.record import read_record

# Tolerances on |ours - reference| of the uint8 results, in grey levels: (largest mean over the image, largest share
# of values more than 1 apart). Ours computes in float32, the transcription in float64: a value near an integer
# truncates to either side (1 grey level, rarely), and the ops with a hard edge (a cut-out or mask threshold, a
# modulo's wrap, a ray refracted or not at 1e-3 from vertical) can flip a pixel lying within float32 rounding of it.
# Measured at 224 (2 images, severities 1-5): at most 0.0073 mean and 3e-5 beyond 1 (caustic refraction), the others
# below 0.001 mean and none beyond 1.
TOLERANCES = {"blue_noise_sample": (0.01, 1e-3), "brownish_noise": (0.01, 0.0), "caustic_refraction": (0.02, 2e-4),
              "checkerboard_cutout": (0.01, 1e-3), "cocentric_sine_waves": (0.01, 1e-3),
              "inverse_sparkles": (0.01, 0.0), "perlin_noise": (0.01, 0.0), "plasma_noise": (0.01, 0.0),
              "single_frequency_greyscale": (0.01, 0.0), "sparkles": (0.01, 0.0)}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two 224 crops (uint8 NHWC): uniform noise (every refraction or cut moves whole grey levels) and a smooth
    scene (gradients and a disc)."""
    state = np.random.RandomState(0)
    y, x = grid(SIZE)
    smooth = np.stack([x, y, 255 - (x + y) / 2], axis=2) + 80 * ((x - 90) ** 2 + (y - 120) ** 2 < 50 ** 2)[..., None]
    return np.stack([state.randint(0, 256, (SIZE, SIZE, 3)), np.clip(smooth, 0, 255)]).astype(np.uint8)


def to_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def compare(name: str, images: np.ndarray, severity: int, size: int = SIZE) -> tuple[float, float]:
    """Our op at ``severity`` on ``images`` against the transcription fed the same draws: (mean, share > 1)."""
    draws = c_bar.C_BAR_SAMPLERS[name](Draws(condition_key(0, f"{name}-{severity}"), torch.arange(len(images))), size)
    ours = c_bar.C_BAR_OPS[name](to_batch(images), *c_bar.c_bar_parameters(name, severity, size), **draws)
    ours = ours.clamp(0, 255).floor().permute(0, 2, 3, 1).numpy()
    theirs = np.stack([REFERENCES[name](image, LEVELS[name][severity - 1],
                                        **{k: v[n].double().numpy() if v.is_floating_point() else v[n].numpy()
                                           for k, v in draws.items()})
                       for n, image in enumerate(images)])
    diff = np.abs(ours - theirs.astype(np.float64))
    return float(diff.mean()), float((diff > 1).mean())


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(LEVELS))
def test_each_op_equals_the_reference_formulas(images, name, severity):
    mean, beyond_one = compare(name, images, severity)
    assert mean <= TOLERANCES[name][0] and beyond_one <= TOLERANCES[name][1], (mean, beyond_one)


@pytest.mark.parametrize("name", list(LEVELS))
def test_each_op_equals_the_reference_at_an_odd_size(images, name):
    """33 x 33 (odd: the spectra's middle column of draws), severity 5, the parameters scaled by size as the
    reference's (``im_size``)."""
    mean, beyond_one = compare(name, np.ascontiguousarray(images[:, 40:73, 60:93]), 5, size=33)
    assert mean <= 2 * TOLERANCES[name][0] and beyond_one <= 5 * TOLERANCES[name][1], (mean, beyond_one)


def test_the_severity_table_is_the_csv():
    """The levels are ``imagenet_c_bar.csv``'s; the table holds their parameters at 224."""
    assert c_bar.C_BAR_LEVELS == {name: tuple(levels) for name, levels in LEVELS.items()}
    assert set(c_bar.C_BAR_OPS) == set(c_bar.C_BAR_SAMPLERS) == set(c_bar.C_BAR_SEVERITIES) == set(LEVELS)
    for name in LEVELS:
        assert c_bar.C_BAR_SEVERITIES[name] == tuple(c_bar.c_bar_parameters(name, s, SIZE) for s in range(1, 6))
    assert c_bar.C_BAR_SEVERITIES["caustic_refraction"][0] == (2.35 * 112 / 10, 2.35 * 2.0 / 10)
    assert c_bar.C_BAR_SEVERITIES["blue_noise_sample"][4] == (5.6 * 3.0 / 10 - 2.5,)


def test_perlin_tables_are_a_permutation_and_unit_gradients():
    drawn = c_bar.C_BAR_SAMPLERS["perlin_noise"](Draws(5, torch.arange(3)), SIZE)
    assert torch.equal(drawn["permutation"].sort(dim=1).values, torch.arange(256).expand(3, -1))
    torch.testing.assert_close(drawn["gradients"].norm(dim=-1), torch.ones(3, 256))


@pytest.mark.parametrize("name", list(LEVELS))
def test_an_image_gets_the_same_corruption_in_any_batch(name):
    """The draws depend on (key, image index, element) only: image 7 alone or 4th in a batch of 4 is corrupted
    identically; another index or key changes it."""
    batch = torch.randint(0, 256, (4, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    index, key = torch.tensor([3, 11, 2, 7]), condition_key(0, f"{name}-3")
    together = c_bar.corrupt_bar(batch, index, name, 3, key)
    alone = [c_bar.corrupt_bar(batch[n:n + 1], index[n:n + 1], name, 3, key) for n in range(4)]
    assert torch.equal(together, torch.cat(alone))
    assert not torch.equal(c_bar.corrupt_bar(batch[3:], torch.tensor([8]), name, 3, key), alone[3])
    assert not torch.equal(c_bar.corrupt_bar(batch[3:], index[3:], name, 3, key + 1), alone[3])


def test_corrupting_makes_no_host_sync():
    """All ten ops through :func:`corrupt_bar`, after a first batch has built the cached constants."""
    batch, index = torch.rand(2, 3, 32, 32) * 255, torch.arange(2)
    for name in LEVELS:
        c_bar.corrupt_bar(batch, index, name, 2, 1)
    with HostSyncProbe() as probe:
        for name in LEVELS:
            c_bar.corrupt_bar(batch, index, name, 2, 1)
    assert probe.unexpected == []


def test_non_square_images_are_refused():
    with pytest.raises(UsageError, match="square"):
        c_bar.corrupt_bar(torch.zeros(1, 3, 32, 48), torch.arange(1), "sparkles", 1, 0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(LEVELS))
def test_cuda_gives_the_cpu_result(name):
    batch = torch.randint(0, 256, (3, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(2)).float()
    index = torch.tensor([5, 0, 99])
    cpu = c_bar.corrupt_bar(batch, index, name, 4, 7)
    cuda = c_bar.corrupt_bar(batch.cuda(), index.cuda(), name, 4, 7).cpu()
    diff = (cpu - cuda).abs()
    assert float(diff.mean()) <= TOLERANCES[name][0] and float((diff > 1).float().mean()) <= TOLERANCES[name][1]


def test_the_suite_lists_every_corruption_at_every_severity():
    suite = ibnbench.load_suite("imagenet-c-bar")
    assert suite.ids == ["origin"] + [f"{name}-{s}" for name in c_bar.C_BAR_NAMES for s in range(1, 6)]
    assert set(c_bar.C_BAR_NAMES) == set(LEVELS)
    assert len(suite) == 1 + 10 * 5 and "imagenet-c-bar" in list_suites()
    bar = suite.conditions[1:]
    assert all(isinstance(c, CBarCorruption) and c.id == f"{c.corruption}-{c.severity}" for c in bar)
    assert {(c.seed, c.jpeg) for c in bar} == {(0, None)}
    assert suite["cocentric_sine_waves-4"].label == "Cocentric Sine Waves"


def test_the_condition_gives_corrupt_bar_pixels_in_any_batch_size():
    """Through the suite's condition: :func:`corrupt_bar` with the condition's key, on the dataset indices; 9
    images (more than the CPU's slice of 4) in one batch or in batches of 2 and 1 give the same pixels."""
    condition = ibnbench.load_suite("imagenet-c-bar")["sparkles-3"]
    batch = torch.randint(0, 256, (9, 3, 48, 48), generator=torch.Generator().manual_seed(1)).float()
    index = torch.arange(20, 29)
    whole = condition(batch, index)
    assert len(batch) > corruptions.CPU_SLICE
    assert torch.equal(whole, c_bar.corrupt_bar(batch, index, "sparkles", 3, condition_key(0, "sparkles-3")))
    parts = torch.cat([condition(batch[i:i + 2], index[i:i + 2]) for i in range(0, 9, 2)])
    assert torch.equal(whole, parts) and not torch.equal(whole, batch)
    assert torch.equal(condition(batch[:3]), condition(batch[:3], torch.arange(3)))


def test_the_suite_file_sets_seed_and_jpeg_and_refuses_bad_fields(tmp_path):
    path = tmp_path / "bar.toml"
    path.write_text('seed = 3\njpeg = 85\n[[conditions]]\nid = "p"\nop = "c-bar-corruption"\n'
                    'corruption = "plasma_noise"\nseverity = 2\n')
    condition = ibnbench.load_suite(path)["p"]
    assert (condition.seed, condition.jpeg, condition.key) == (3, 85, condition_key(3, "p"))
    assert record_generator([condition]) == {"imagenet-c-bar": {
        "benchmark": "imagenet-c-bar", "ibnbench": ibnbench.__version__, "source": "on-the-fly", "jpeg": 85,
        "reference": "facebookresearch/augmentation-corruption imagenet_c_bar/corrupt.py at the levels of "
                     "imagenet_c_bar.csv"}}
    x = torch.linspace(0, 255, 64)[None, None, None, :].expand(2, 3, 64, 64)
    finished, raw = condition(x), c_bar.corrupt_bar(x, torch.arange(2), "plasma_noise", 2, condition.key)
    assert torch.equal(finished, jpeg_round_trip(raw, 85)) and not torch.equal(finished, raw)
    for fields, message in (('corruption = "fog"\nseverity = 1', "field 'corruption': expected one of blue_noise"),
                            ('corruption = "sparkles"\nseverity = 6', "field 'severity': expected an integer 1-5")):
        path.write_text(f'[[conditions]]\nid = "x"\nop = "c-bar-corruption"\n{fields}\n')
        with pytest.raises(SuiteError, match=message):
            ibnbench.load_suite(path)


def test_run_and_report_imagenet_c_bar_on_real_images(tmp_path, capsys):
    """`ibnbench run --suite imagenet-c-bar` on 4 shared images (the CPU, slices and all), then `ibnbench report`:
    the corruption x severity table; the record names the generator."""
    need_extra("efficientnet_lite_pytorch")
    val = need(VAL100 / "val")
    from ibnbench.cli import main

    ids = ["origin", "caustic_refraction-2", "checkerboard_cutout-5", "sparkles-3"]
    out = tmp_path / "bar.json"
    assert main(["run", "--model", "efficientnet_lite0", "--data", str(val), "--suite", "imagenet-c-bar",
                 "--conditions", ",".join(ids), "--limit", "4", "--device", "cpu", "--workers", "0",
                 "--no-progress", "--output", str(out)]) == 0
    record = read_record(out)
    assert [row["condition"] for row in record.results] == ids and {r["n_images"] for r in record.results} == {4}
    assert record.generator["imagenet-c-bar"]["source"] == "on-the-fly"
    assert record.generator["imagenet-c-bar"]["jpeg"] is None and list(record.generator) == ["imagenet-c-bar"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["corruption (top-1 error %)"] == ["1", "2", "3", "4", "5", "mean"]
    errors = {row["condition"]: row["top1_err"] for row in record.results}
    cutout = f"{errors['checkerboard_cutout-5']:.2f}"
    assert rows["Checkerboard Cutout"] == ["-", "-", "-", "-", cutout, cutout]
    assert rows["clean top-1 error (%)"][-1] == f"{errors['origin']:.2f}" and "mCE-bar only with --baseline" in text

"""ImageNet-C on the fly: our batched ops against the reference package `imagecorruptions` itself on real 224 crops
(deterministic corruptions to within a grey level, random ones in distribution), randomness that does not depend
on the batch, and the suites."""
from __future__ import annotations

import importlib.util
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.corruption_reference import (
    assert_agrees_in_distribution,
    assert_equals_reference,
    imagecorruptions,
    imagenet_c_crops,
)
from helpers.shared import VAL100, need

import ibnbench
from ibnbench import CORRUPTIONS, SEVERITY_PARAMETERS, fog, gaussian_noise, motion_blur  # the public ops
from ibnbench.conditions import corruptions
from ibnbench.conditions.base import Corruption
from ibnbench.conditions.frost import FROST_DIR_ENV, missing_frost
from ibnbench.conditions.imaging import Draws
from ibnbench.errors import SuiteError, UsageError
from ibnbench.io import cache_dir, sha256_of

DETERMINISTIC = ["brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate",
                 "jpeg_compression"]
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur", "snow", "frost", "fog",
          "elastic_transform", "spatter", "glass_blur"]



@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    imagecorruptions()
    return imagenet_c_crops(need(VAL100 / "val"), 6)


def skip_without_frost_textures(name: str) -> None:
    """Frost without its textures is a missing asset (a suite says so): skip, saying how to get them."""
    if name == "frost" and missing_frost():
        pytest.skip(missing_frost())


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_equal_the_reference(crops, name, severity):
    assert_equals_reference(crops[:3], name, severity)


@pytest.mark.slow  # the reference takes seconds per corruption (glass blur ~2 s per image)
@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_agree_with_the_reference_in_distribution(crops, name):
    # per-pixel draws average over ~10^5 per image; one-per-image draws (frost, fog) need more images
    images = crops[:2] if name.endswith("_noise") or name == "glass_blur" else crops if name in ("frost", "fog") \
        else crops[:4]
    for severity in corruptions.SEVERITIES:
        assert_agrees_in_distribution(images, name, severity)


def test_fog_fractal_has_the_reference_statistics():
    """imagecorruptions' plasma fractal against our batched one over 48 maps: level, spread and roughness."""
    module = imagecorruptions()
    import sys

    plasma = sys.modules["imagecorruptions.corruptions"].plasma_fractal
    for decay in (2.0, 1.4):
        np.random.seed(0)
        theirs = torch.from_numpy(np.stack([plasma(256, decay) for _ in range(48)]))
        mine = corruptions.plasma_fractal(Draws(7, torch.arange(48)), 256, decay)
        for statistic in (lambda m: m.mean(), lambda m: m.std(dim=(1, 2)).mean(),
                          lambda m: (m[:, 1:] - m[:, :-1]).abs().mean()):
            assert float(statistic(mine)) == pytest.approx(float(statistic(theirs)), rel=0.1)
    assert module.get_corruption_names("all")[9] == "fog"


@pytest.mark.parametrize("name", RANDOM)
def test_an_image_gets_the_same_corruption_in_any_batch(name):
    """The draws depend on (seed, condition, image index, element) only: image 7 alone, or 4th in a batch of 5
    whose other members differ, is corrupted identically; another index or seed changes it."""
    skip_without_frost_textures(name)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (5, 3, 64, 64), generator=gen).float()
    index = torch.tensor([3, 11, 2, 7, 40])
    condition = Corruption(f"{name}-3", corruption=name, severity=3)
    together = condition(batch, index)
    alone = condition(batch[3:4], index[3:4])
    assert torch.equal(together[3], alone[0])
    if name not in ("frost",):  # frost draws one of five textures: two images may share one by chance
        assert not torch.equal(condition(batch[3:4], torch.tensor([8])), alone)
    reseeded = Corruption(f"{name}-3", corruption=name, severity=3, seed=1)(batch[3:4], index[3:4])
    assert not torch.equal(reseeded, alone)


def test_suites_name_every_corruption_and_severity():
    names = imagecorruptions().get_corruption_names("all")
    common, extra = ibnbench.load_suite("imagenet-c"), ibnbench.load_suite("imagenet-c-extra")
    assert common.ids == ["origin"] + [f"{n}-{s}" for n in names[:15] for s in range(1, 6)]
    assert extra.ids == ["origin"] + [f"{n}-{s}" for n in names[15:] for s in range(1, 6)]
    assert common["gaussian_noise-3"].label == "Gaussian Noise" and common["jpeg_compression-1"].label == "JPEG"
    assert {c.seed for c in common.conditions[1:]} == {0} and common["frost-2"].jpeg is None


def test_suite_file_sets_seed_and_jpeg_finish(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 5\njpeg = 85\n[[conditions]]\nid = "contrast-2"\nop = "corruption"\n'
                    'corruption = "contrast"\nseverity = 2\n\n[[conditions]]\nid = "raw"\nop = "corruption"\n'
                    'corruption = "contrast"\nseverity = 2\njpeg = 100\n')
    suite = ibnbench.load_suite(path)
    assert (suite["contrast-2"].seed, suite["contrast-2"].jpeg, suite["raw"].jpeg) == (5, 85, 100)
    ramp = torch.linspace(0, 255, 64)
    x = torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), 255 - ramp[None, :].expand(64, 64)])
    x = x[None].expand(2, -1, -1, -1)  # smooth images: what JPEG keeps
    plain = Corruption("c", corruption="contrast", severity=2)(x)
    finished = suite["contrast-2"](x)
    assert torch.equal(finished, finished.round()) and not torch.equal(finished, plain)
    assert float((finished - plain).abs().mean()) < 3  # a quality-85 round trip moves little
    bad = tmp_path / "bad.toml"
    bad.write_text('[[conditions]]\nid = "x"\nop = "corruption"\ncorruption = "rain"\nseverity = 2\n')
    with pytest.raises(SuiteError, match="field 'corruption': expected one of gaussian_noise"):
        ibnbench.load_suite(bad)
    bad.write_text('[[conditions]]\nid = "x"\nop = "corruption"\ncorruption = "fog"\nseverity = 6\n')
    with pytest.raises(SuiteError, match="field 'severity': expected an integer 1-5"):
        ibnbench.load_suite(bad)


def test_missing_frost_textures_are_a_missing_asset(tmp_path, monkeypatch):
    monkeypatch.setenv(FROST_DIR_ENV, str(tmp_path))
    suite = ibnbench.load_suite("imagenet-c")
    assert [c.id for c in suite if c.requires] == [f"frost-{s}" for s in range(1, 6)]
    assert "frost textures frost1.png" in suite["frost-1"].requires[0] and str(tmp_path) in suite["frost-1"].requires[0]
    assert suite["fog-1"].requires == []
    assert "ibnbench fetch frost" in suite["frost-1"].requires[0]


def test_fetch_frost_downloads_into_the_hub_cache_and_checks_every_file(tmp_path, monkeypatch, http_root, capsys):
    """`ibnbench fetch frost` from a mirror (the repository's URL here, without network, served from the installed
    package's files): six files into torch hub's cache, found there afterwards; a file that differs is refused."""
    from ibnbench.cli import main
    from ibnbench.conditions import frost

    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None:
        pytest.skip("the frost files come from the reference package `imagecorruptions` (pip install -e .[test])")
    served, url = http_root
    for name in frost.FROST_FILES:
        shutil.copy(Path(spec.origin).parent / "frost" / name, served / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(frost.FROST_URL_ENV, url)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # as without the package
    monkeypatch.delenv(FROST_DIR_ENV, raising=False)
    assert frost.missing_frost() is not None
    assert main(["fetch", "frost"]) == 0
    folder = cache_dir() / frost.FROST_CACHE
    assert sorted(p.name for p in folder.iterdir()) == sorted(frost.FROST_FILES)
    assert all(sha256_of(folder / name) == digest for name, digest in frost.FROST_SHA256.items())
    assert frost.frost_dir() == folder and frost.missing_frost() is None
    assert str(folder) in capsys.readouterr().out

    (folder / "frost6.jpg").unlink()
    (served / "frost6.jpg").write_bytes(b"not the texture")
    assert main(["fetch", "frost"]) == 2
    assert "does not match sha256" in capsys.readouterr().err and not (folder / "frost6.jpg").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("name", corruptions.COMMON + corruptions.EXTRA)
def test_cuda_gives_the_cpu_result(name):
    skip_without_frost_textures(name)
    batch = torch.randint(0, 256, (3, 3, 224, 224), generator=torch.Generator().manual_seed(2)).float()
    index = torch.tensor([5, 0, 99])
    condition = Corruption(f"{name}-4", corruption=name, severity=4)
    cpu, cuda = condition(batch, index), condition(batch.cuda(), index.cuda()).cpu()
    assert float((cpu - cuda).abs().mean()) < 0.05 and float((cpu - cuda).abs().max()) <= 2  # JPEG: host libjpeg


@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_glass_blur_sweep_is_the_reference_loop(delta):
    """One shuffle sweep equals the reference's loop written out here, numpy's tuple "swap" of two pixel views
    included (it copies one way: ``x[h, w] = x[h + dy, w + dx]``, and copies chain through pixels already visited)."""
    from ibnbench.conditions.corruptions import sweep_copies

    rng = np.random.default_rng(delta)
    h, w = 23, 19
    dy, dx = (torch.from_numpy(rng.integers(-delta, delta, (2, h, w))) for _ in range(2))
    for image in range(2):
        x = np.arange(h * w).reshape(h, w, 1).repeat(3, axis=2)
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                r, c = row + int(dy[image, row, col]), col + int(dx[image, row, col])
                x[row, col], x[r, c] = x[r, c], x[row, col]
        assert np.array_equal(sweep_copies(dy, dx, delta)[image].view(h, w).numpy(), x[..., 0])
        assert (x[..., 0] != np.arange(h * w).reshape(h, w)).sum() > h * w // 4  # pixels did move


def test_gaussian_noise_with_explicit_sigma():
    """The public op on a user's tensor: sigma 0 is the input itself; otherwise the change has mean 0 and standard
    deviation sigma, and is the same with the default draws as with images numbered 0..N-1 under key 0."""
    x = torch.full((4, 3, 64, 64), 0.5)
    assert torch.equal(gaussian_noise(x, sigma=0.0), x)
    y = gaussian_noise(x, sigma=0.1)
    change = y - x
    assert float(change.mean()) == pytest.approx(0.0, abs=2e-3)
    assert float(change.std()) == pytest.approx(0.1, rel=0.02)
    assert torch.equal(y, gaussian_noise(x, 0.1, Draws(0, torch.arange(4))))
    assert not torch.equal(y, gaussian_noise(x, 0.1, Draws(0, torch.arange(4) + 1)))  # the draws follow the index


def _horizontal_motion_blur(x: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Motion blur along 0 degrees written out: tap ``i`` (weight ``exp(-i^2 / 2 sigma^2)``, normalised) takes the
    pixel ``i`` columns to the right, the last column repeated past the edge."""
    weights = torch.exp(-torch.arange(2 * radius + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    weights = weights / weights.sum()
    columns = torch.arange(x.shape[-1])
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights.tolist()):
        out += weight * x[..., (columns + i).clamp(max=x.shape[-1] - 1)]
    return out


def test_motion_blur_with_explicit_radius_and_angle():
    """Radius 0 is the identity; along 0 degrees it is the hand-written sum of shifted copies; along 90 degrees the
    same on the transposed image; one angle per image gives each image its own."""
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(3)) * 255
    assert torch.equal(motion_blur(x, radius=0, sigma=1.0, angle=30.0), x)
    across = motion_blur(x, radius=4, sigma=2.0, angle=0.0)
    torch.testing.assert_close(across, _horizontal_motion_blur(x, 4, 2.0), rtol=0, atol=1e-4)
    down = motion_blur(x, radius=4, sigma=2.0, angle=90.0)
    torch.testing.assert_close(down, _horizontal_motion_blur(x.transpose(-1, -2), 4, 2.0).transpose(-1, -2),
                               rtol=0, atol=1e-4)
    both = motion_blur(x, radius=4, sigma=2.0, angle=torch.tensor([0.0, 90.0]))
    assert torch.equal(both[0], across[0]) and torch.equal(both[1], down[1])


def test_severity_table_drives_corrupt():
    """Every op takes its five parameter sets; a condition at a severity is the op at that row's parameters,
    clipped and truncated as the uint8 files were."""
    for name, op in CORRUPTIONS.items():
        assert len(SEVERITY_PARAMETERS[name]) == 5, name
        for parameters in SEVERITY_PARAMETERS[name]:
            inspect.signature(op).bind(torch.zeros(1, 3, 8, 8), **parameters, **(
                {"textures": None} if name == "frost" else {}))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 255
    index = torch.tensor([4, 0, 9])
    condition = Corruption("noise", corruption="gaussian_noise", severity=3, seed=2)
    by_hand = gaussian_noise(x / 255, sigma=0.18, draws=Draws(condition.key, index)).clamp(0, 1) * 255
    assert torch.equal(condition(x, index), by_hand.floor())
    assert torch.equal(condition(x), condition(x, torch.arange(3)))  # without an index: images 0..N-1


def test_fog_refuses_a_map_smaller_than_the_image():
    x = torch.rand(1, 3, 40, 40)
    assert fog(x, thickness=1.5, decay=2.0, mapsize=64).shape == x.shape
    with pytest.raises(UsageError, match="mapsize must be a power of two of at least 40"):
        fog(x, thickness=1.5, decay=2.0, mapsize=32)


def test_frost_textures_are_found_once_per_device(monkeypatch):
    """The condition reads its assets in ``prepare`` on its first batch, not on every batch."""
    skip_without_frost_textures("frost")
    from ibnbench.conditions import frost

    looked_up = []
    monkeypatch.setattr(frost, "frost_dir", lambda _find=frost.frost_dir: looked_up.append(1) or _find())
    condition = Corruption("frost-2", corruption="frost", severity=2)
    x = torch.rand(2, 3, 32, 32) * 255
    first = condition(x)
    for _ in range(3):
        assert torch.equal(condition(x), first)
    assert len(looked_up) == 1

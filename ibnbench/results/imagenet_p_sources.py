"""ImageNet-P from its two sources side by side: for one model, the flip probability of each perturbation generated
on the fly and read from the released videos (whose H.264 loss the on-the-fly frames do not have). The records
must agree on the model (name and weights), the difficulty and the images (by file stem)."""
from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from ibnbench.conditions.benchmark_generator import RELEASED
from ibnbench.errors import RecordError
from ibnbench.results.perturbation_metrics import Stability, stability
from ibnbench.results.predictions import for_record
from ibnbench.results.record import Record


def sequence_entries(record: Record) -> dict[str, dict]:
    """The record's ImageNet-P conditions that ran, by id (entries with a ``difficulty``)."""
    return {c["id"]: c for c in record.conditions if "difficulty" in c and not c.get("not_run")}


def is_released(record: Record) -> bool:
    """Whether the record's ImageNet-P frames were read from the released videos."""
    return record.generator.get("imagenet-p", {}).get("source") == RELEASED


def record_stability(record: Record, model: str) -> dict[str, Stability]:
    """FP and T5D of ``model`` per ImageNet-P condition, from the frames' top-5 in the predictions sidecar."""
    predictions = for_record(record)
    return {cid: stability(predictions.sequence(model, cid), entry.get("perturbation", cid), entry["difficulty"])
            for cid, entry in sequence_entries(record).items()}


def _check_comparable(on_the_fly: Record, released: Record, model: str) -> None:
    for record, released_expected in ((on_the_fly, False), (released, True)):
        if not sequence_entries(record):
            raise RecordError(f"{record.path or 'record'}: no ImageNet-P condition")
        if is_released(record) != released_expected:
            kind = "released-file" if released_expected else "on-the-fly"
            raise RecordError(f"{record.path or 'record'}: expected {kind} ImageNet-P frames")
        if model not in record.models:
            raise RecordError(f"{record.path or 'record'} has no model {model!r} (it has {sorted(record.models)})")
    a, b = on_the_fly.models[model], released.models[model]
    if (a.get("model"), a.get("sha256"), a.get("preprocessing")) != (b.get("model"), b.get("sha256"),
                                                                     b.get("preprocessing")):
        raise RecordError(f"model {model!r} differs between the records (architecture, weights or preprocessing)")
    difficulties = {r.path or name: sorted({c["difficulty"] for c in sequence_entries(r).values()})
                    for name, r in (("on the fly", on_the_fly), ("released", released))}
    if len({tuple(d) for d in difficulties.values()}) > 1:
        raise RecordError(f"the records' ImageNet-P difficulties differ: {difficulties}")
    stems = [[PurePosixPath(f).with_suffix("").as_posix() for f in r.per_image.get("files", [])]
             for r in (on_the_fly, released)]
    if stems[0] != stems[1]:
        raise RecordError(f"the records hold different images ({len(stems[0])} and {len(stems[1])}); run both on "
                          "the same images (e.g. the same --limit)")


def released_vs_on_the_fly(on_the_fly: Record, released: Record, model: str | None = None) -> pd.DataFrame:
    """One row per perturbation both records ran: FP (percent) on the fly, from the released files, and their
    difference; refuses (:class:`RecordError`) records of other models, difficulties or images."""
    model = model or on_the_fly._model(None)
    _check_comparable(on_the_fly, released, model)
    ours, theirs = record_stability(on_the_fly, model), record_stability(released, model)
    rows = [{"perturbation": cid, "FP on the fly": 100 * ours[cid].fp, "FP released": 100 * theirs[cid].fp,
             "difference": 100 * (ours[cid].fp - theirs[cid].fp)} for cid in ours if cid in theirs]
    if not rows:
        raise RecordError("the records share no ImageNet-P perturbation")
    return pd.DataFrame(rows).set_index("perturbation")

"""Sequence conditions in the engine: ImageNet-P's perturbations, each image a sequence of frames that every model
scores. The frames are made one at a time from the batch's crops (:meth:`Perturbation.stream`) and scored as they
come, so memory holds one frame of the batch besides the sequence's own state, whatever its length: for a batch of 64
crops of 224 pixels a frame is 38.5 MB in float32, and streaming all 14 whole sequences took at most 606 MB above the
input on the CPU (``benchmarks/bench_imagenet_p.py``); the models' own memory comes on top."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ibnbench.conditions.imagenet_p import Perturbation
from ibnbench.conditions.imagenet_p_release import ReleasedSequence
from ibnbench.eval.runner import ModelRunner
from ibnbench.eval.state import EvalState


def sequence_conditions(conditions: Sequence) -> dict[str, tuple[str, int]]:
    """The sequence conditions among ``conditions`` (generated, or read from the released videos), by id: their
    perturbation and frames per image."""
    return {c.id: (c.perturbation, c.frame_count) for c in conditions
            if isinstance(c, (Perturbation, ReleasedSequence))}


def score_sequence(condition: Perturbation | ReleasedSequence, crop: torch.Tensor, index: torch.Tensor,
                   label: torch.Tensor, runners: Mapping[str, ModelRunner], geometry: tuple, state: EvalState,
                   difficulty: int) -> None:
    """Every frame of ``condition``'s sequence of the batch ``crop`` (float 0..255, the crops of ``geometry``; for a
    released condition the uint8 videos ``[N, frames, 3, c, c]``, each frame made float as it is scored),
    made one at a time and scored by every runner of that geometry: each frame's top-5 go to the state, and frame 0's
    hits and predictions are the condition's (its error in the results table)."""
    models = [(name, runner) for name, runner in runners.items() if runner.geometry == geometry]
    if not models:
        return
    for frame, x in enumerate(condition.stream(crop, index, difficulty)):
        for name, runner in models:
            scores = runner.score(x, label)
            if frame == 0:
                state.store(name, condition.id, index, label, scores)
            state.store_frame(name, condition.id, index, frame, scores)

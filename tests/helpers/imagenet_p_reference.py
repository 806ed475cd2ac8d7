"""A numpy transcription of hendrycks/robustness ``ImageNet-P/test.py``'s ``flip_prob`` and ``ranking_dist``, the
independent reference ImageNet-P's scores are checked against."""
from __future__ import annotations

import numpy as np


def flip_prob(top1: np.ndarray, difficulty: int, noise: bool) -> float:
    """test.py's flip_prob, transcribed: per sequence, the mean of the top-1 changes against frame 0 (noise) or
    between frames `difficulty` apart; the mean over sequences."""
    result = 0.0
    for vid in top1:
        if noise:
            result += np.mean(vid[1:] != vid[0])
        else:
            result += np.mean([vid[i] != vid[i - difficulty] for i in range(difficulty, len(vid))])
    return result / len(top1)


def ranking_dist(top5: np.ndarray, difficulty: int, noise: bool) -> float:
    """test.py's ranking_dist(mode='top5'), transcribed with the same pairs as flip_prob."""
    result = 0.0
    for vid in top5:
        pairs = [(0, i) for i in range(1, len(vid))] if noise else [(i - difficulty, i)
                                                                    for i in range(difficulty, len(vid))]
        distances = []
        for a, b in pairs:
            after = list(vid[b])
            distances.append(sum(abs(k - (after.index(c) if c in after else 5)) for k, c in enumerate(vid[a])))
        result += np.mean(distances)
    return result / len(top5)

"""ImageNet-C's reference for ``ibnbench bench --corruptions``: ``imagecorruptions.corrupt`` with its shims."""
from __future__ import annotations

import numpy as np

from benchmarks.references.imagecorruptions_package import load


def corrupt(image: np.ndarray, severity: int, corruption_name: str) -> np.ndarray:
    """``imagecorruptions.corrupt`` of one HxWx3 uint8 image (numpy's global generator)."""
    return load().corrupt(image, severity=severity, corruption_name=corruption_name)

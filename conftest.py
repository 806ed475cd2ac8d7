"""Shared by tests/ and benchmarks/: the ``gpu`` marker (pyproject.toml) skips its tests where CUDA is absent,
here and nowhere else."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    needs_cuda = pytest.mark.skip(reason="gpu-marked: needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(needs_cuda)

"""Benchmarks (``bench_*.py``, collected through ``python_files`` in pyproject.toml) run on 2 CPU threads."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def two_cpu_threads():
    """Every benchmark runs on 2 intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)

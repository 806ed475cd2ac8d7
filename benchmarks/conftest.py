"""Benchmarks: collect ``bench_*.py`` files and run on 2 CPU threads."""
from __future__ import annotations

import pytest
import torch


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(autouse=True)
def two_cpu_threads():
    """Every benchmark runs on 2 intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)

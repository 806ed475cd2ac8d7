"""Throughput of the photometric conditions on a CPU batch (``pytest benchmarks/bench_conditions.py``)."""
from __future__ import annotations

import pytest
import torch

import ibnbench

BATCH = (32, 3, 224, 224)
PHOTOMETRIC = [(suite, c.id) for suite in ("table1", "table1-clipped")
               for c in ibnbench.load_suite(suite) if c.kind == "photometric"]


@pytest.mark.parametrize("suite_name, condition_id", PHOTOMETRIC)
def test_photometric_condition(benchmark, suite_name, condition_id):
    condition = ibnbench.load_suite(suite_name)[condition_id]
    x = torch.rand(BATCH, generator=torch.Generator().manual_seed(0)) * 255
    out = benchmark(condition, x)
    assert out.shape == x.shape
    benchmark.extra_info["images_per_call"] = BATCH[0]

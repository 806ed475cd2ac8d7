"""The command line's allocator setting (cli/allocator.py): a large tensor freed and allocated again reuses its pages
instead of faulting in fresh ones. Measured with the kernel's minor page fault count in a fresh interpreter."""
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys, torch
from ibnbench.cli.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    batch = torch.empty(64, 3, 224, 224)  # 38.5 MB, a float batch of 64 crops
    batch.fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del batch
print(json.dumps({"took": took, "faults": faults}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc setting is Linux-only")
def test_kept_memory_is_reused_without_page_faults():
    pages = 64 * 3 * 224 * 224 * 4 // 4096
    default = _probe("default")
    kept = _probe("keep")
    assert kept["took"] is True
    assert min(default["faults"][1:]) > pages // 2  # each new batch maps fresh pages and faults them all in
    assert max(kept["faults"][-4:]) < pages // 20  # once the heap has grown (a few batches), freed pages are reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc setting is Linux-only")
@pytest.mark.parametrize("env, took", [({"IBNBENCH_SYSTEM_MALLOC": "1"}, False),
                                       ({"MALLOC_ARENA_MAX": "2"}, True),  # another setting: the thresholds are ours
                                       ({"MALLOC_TRIM_THRESHOLD_": "1000"}, False),
                                       ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, False)])
def test_user_settings_win(env, took):
    probe = "from ibnbench.cli.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    assert out.stdout.strip() == str(took)

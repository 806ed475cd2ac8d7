"""torchrun: 2 CPU ranks (gloo) give the single-process results, uneven shards count once, a dead rank ends the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ibnbench.distributed import DistContext
from runs import run_args, torchrun


def test_sharding_covers_each_index_once():
    shards = [DistContext(rank, 2).shard(range(7)) for rank in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(sum(shards, [])) == list(range(7))


@pytest.mark.slow
def test_two_ranks_match_single_process(val100, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from ibnbench.cli import main

    single, double = tmp_path / "single.json", tmp_path / "double.json"
    assert main(run_args(val100, single)) == 0
    done = torchrun(2, run_args(val100, double), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert b["timing"]["world_size"] == 2
    assert [(r["model"], r["condition"], r["top1_err"], r["top5_err"], r["n_images"]) for r in a["results"]] == \
           [(r["model"], r["condition"], r["top1_err"], r["top5_err"], r["n_images"]) for r in b["results"]]
    assert a["per_image"] == b["per_image"]


@pytest.mark.slow
def test_uneven_shards_count_each_image_once(val100, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path / "seven.json"
    done = torchrun(2, run_args(val100, out, limit=7), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert {r["n_images"] for r in record["results"]} == {7}
    assert all(len(s) == 7 and "-" not in s for s in record["per_image"]["top1"]["efficientnet_lite0"].values())


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
def test_dead_rank_ends_job_with_clear_error(val100, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path / "dead.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ibnbench.cli", *run_args(val100, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IBNBENCH_DIST_TIMEOUT": "30"}
    job = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(_children(job.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(4)  # let both ranks get into the evaluation
    workers = _children(job.pid)
    assert len(workers) == 2, "torchrun did not start two workers"
    os.kill(max(workers), signal.SIGKILL)
    start = time.monotonic()
    output, _ = job.communicate(timeout=120)
    assert time.monotonic() - start < 90
    assert job.returncode != 0
    assert "SIGKILL" in output or "Signal 9" in output or "exitcode" in output
    assert not out.exists()  # never a partial record presented as complete

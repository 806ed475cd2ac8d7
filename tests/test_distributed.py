"""torchrun: 2 CPU ranks (gloo) give the single-process results, uneven shards count once, a dead rank ends the job."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.runs import run_args, torchrun

from ibnbench.eval.distributed import DistContext


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


# Run by torchrun in place of ``-m ibnbench.cli``: rank 1 SIGKILLs itself in its first batch, once rank 0 has said
# (a marker file) that it is evaluating too. No sleep: the kill lands while both ranks are in the evaluation.
DYING_RANK = """
import os, signal, sys, time
from pathlib import Path
from ibnbench.eval import engine

rank, here = os.environ["RANK"], Path.cwd()
(here / f"rank{rank}.pid").write_text(str(os.getpid()))
real = engine._evaluate_batch

def first_batch(*args, **kwargs):
    if rank == "0":
        (here / "rank0.evaluating").touch()
        return real(*args, **kwargs)
    deadline = time.monotonic() + 120
    while not (here / "rank0.evaluating").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (here / "rank1.killed").touch()
    os.kill(os.getpid(), signal.SIGKILL)

engine._evaluate_batch = first_batch
from ibnbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_dead_rank_ends_job_with_clear_error(val100, tmp_path):
    """A rank that dies ends the job: torchrun stops the surviving rank (long before the collectives' timeout),
    exits non-zero naming the dead rank and its signal, and no record (nor its predictions) is written."""
    pytest.importorskip("efficientnet_lite_pytorch")
    (tmp_path / "dying_rank.py").write_text(DYING_RANK)
    out = tmp_path / "results" / "dead.json"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "dying_rank.py"), *run_args(val100, out)]
    timeout_s = 300  # the collectives would wait this long: the job must end by torchrun stopping rank 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IBNBENCH_DIST_TIMEOUT": str(timeout_s)}
    start = time.monotonic()
    job = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    output = job.stdout + job.stderr
    assert (tmp_path / "rank0.evaluating").exists() and (tmp_path / "rank1.killed").exists(), output[-3000:]
    assert time.monotonic() - start < timeout_s / 2, "the surviving rank waited for the collectives' timeout"
    assert job.returncode != 0
    assert "ChildFailedError" in output
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", output), output[-3000:]
    assert "Signal 9 (SIGKILL)" in output
    survivor = int((tmp_path / "rank0.pid").read_text())
    assert not Path(f"/proc/{survivor}").exists(), "rank 0 outlived the job"
    # never a partial record presented as complete, nor its predictions sidecar; no checkpoint either, as no
    # chunk (2048 images) was finished
    assert list(out.parent.iterdir()) == []

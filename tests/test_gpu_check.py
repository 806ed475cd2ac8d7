"""benchmarks/gpu_check.sh end to end on the CPU (--dry-run: toy sizes, no install), and what a step cut short
leaves behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "pytest_gpu", "fake_val", "pipeline", "table1", "fanout", "throughput", "real100", "cache_gpu",
         "imagenet_c"]


def gpu_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--skip-install", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work"), *args], env=env, capture_output=True, text=True,
                          check=False, timeout=1200)
    summary = tmp_path / "out" / "summary.json"
    return done, json.loads(summary.read_text()) if summary.exists() else {}


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_summary(tmp_path):
    done, summary = gpu_check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    steps = summary["steps"]
    assert list(steps) == STEPS and summary["dry_run"]
    failed = {name: (s["status"], (tmp_path / "out" / "logs" / f"{name}.log").read_text()[-1500:])
              for name, s in steps.items() if s["status"] != "ok"}
    assert not failed
    assert all(s["complete"] for name, s in steps.items() if name != "pytest_gpu")
    result = {name: s["result"] for name, s in steps.items()}
    assert result["env"]["device"] == "cpu" and result["pytest_gpu"]["failures"] == 0
    assert result["pytest_gpu"]["tests"] == result["pytest_gpu"]["skipped"] > 0  # no CUDA here
    assert [r["n_images"] for r in result["table1"]["rounds"]] == [2, 4]
    assert result["table1"]["conditions"] == ["origin", "std*1.5"]
    assert result["fanout"]["identical_counts"] and result["fanout"]["n_images"] == 2
    assert [r["model"] for r in result["throughput"]["rows"]] == ["resnet18", "resnet18_ibn_a"]
    assert result["cache_gpu"]["second_from_cache"] == 2 and result["cache_gpu"]["identical_answers"]
    assert any(s["stage"].startswith("loader, from the crop cache") for s in result["pipeline"]["stages"])
    if "skipped" not in result["real100"]:
        assert result["real100"]["n_images"] == 2 and result["real100"]["answers_differing"] == 0
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert markdown.startswith("# GPU check -- DRY RUN on the CPU") and "| table1 | ok |" in markdown


def test_a_step_cut_short_is_marked_and_the_others_kept(tmp_path):
    done, summary = gpu_check(tmp_path, "--only", "fake_val,table1", "--timeout", "table1=1")
    assert done.returncode == 0
    assert summary["steps"]["fake_val"]["status"] == "ok" and summary["steps"]["fake_val"]["complete"]
    assert summary["steps"]["table1"]["status"] == "timed out"
    assert "| table1 | timed out" in (tmp_path / "out" / "summary.md").read_text()
    assert len(list((tmp_path / "work" / "fakeval").rglob("*.JPEG"))) == 4

"""benchmarks/gpu_check.sh on the CPU: the dry run builds the carried folder and runs every step's stand-in, leaving
three files in $OUT; the script never calls pip with network access; what a step cut short leaves behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PACKAGE = REPO / "benchmarks" / "gpu_check"


def python(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=REPO, capture_output=True,
                          text=True, check=True, **kwargs)


def plan() -> dict[str, int]:
    return {name: int(limit) for name, limit in (row.split() for row in python("plan").stdout.splitlines())}


def script_commands() -> list[str]:
    """gpu_check.sh's lines with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", SCRIPT.read_text())
    return [line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#")]


@pytest.mark.slow  # ~2 minutes on a shared 2-core CPU
def test_dry_run_builds_the_carry_and_runs_every_step_leaving_three_files(tmp_path):
    built = python("carry")  # network pip here; never on the device
    mib = float(re.search(r": ([\d.]+) MiB", built.stdout).group(1))
    assert 10 < mib < 56 and (REPO / ".gpu-carry" / "frost" / "frost1.png").is_file()
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--work", str(tmp_path / "work")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=False, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["dry_run"] and list(steps) == ["install", *plan()]
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {name: tar.extractfile(f"logs/{name}.log").read().decode()[-1500:] for name in steps}
    assert {name: logs[name] for name, entry in steps.items() if entry["status"] != "ok"} == {}
    assert all(entry["complete"] for name, entry in steps.items() if name != "install")
    printed = [line.split(":")[0] for line in done.stdout.splitlines() if ": ok, " in line]
    assert printed == list(steps)  # each step's one line on stdout, as it finishes
    result = {name: entry.get("result") for name, entry in steps.items()}
    assert not [name for name, v in result["preflight"]["imports"].items() if v.startswith("MISSING")]
    assert result["preflight"]["precision"]["full_fp32_is_ieee"]
    assert [row["run"] for row in result["table1"]["rows"]] == ["resnet18_ibn_b x 5", "3 models x 5",
                                                                "3 models x 4 (Monet off)"]
    assert result["real100"]["answers_differing"] == 0 and result["real100"]["cache_gpu"]["identical_answers"]
    assert result["real100"]["cache_gpu"]["second_from_cache"] == result["real100"]["images"] == 4
    assert result["nvjpeg_race"]["cpu_stand_in_agrees"]
    assert result["pytest_gpu"]["tests"] == result["pytest_gpu"]["skipped"] > 0  # no CUDA here
    assert len(result["imagenet_c"]["batch_seconds"]) == 16 and "frost-3" in result["imagenet_c"]["lite0_top1_err"]
    assert result["syncs"]["table1"] and result["syncs"]["imagenet-c"]
    assert (out / "summary.md").read_text().startswith("# GPU check -- DRY RUN on the CPU")


def test_the_script_never_calls_pip_with_network_access():
    pip_calls = [line for line in script_commands() if re.search(r"\bpip\b", line)]
    assert pip_calls and all("--no-index" in line for line in pip_calls), pip_calls
    assert not [line for line in script_commands() if re.search(r"gpu_check\s+carry", line)
                and not line.lstrip().startswith("echo")]  # the one command that downloads is never run there
    assert [p.name for p in sorted(PACKAGE.glob("*.py")) if "pip" in p.read_text()] == ["carry.py"]


def test_step_limits_sum_to_420_seconds_with_the_install():
    install = int(re.search(r"^INSTALL_LIMIT=(\d+)$", SCRIPT.read_text(), re.M).group(1))
    assert sum(plan().values()) + install == 420
    assert list(plan()) == ["preflight", "throughput", "table1", "real100", "syncs", "nvjpeg_race", "pytest_gpu",
                            "imagenet_c"]


def test_a_step_cut_short_is_marked_and_keeps_its_rounds(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "steps").mkdir(parents=True)
    (work / "logs").mkdir()
    (work / "logs" / "table1.log").write_text("two rounds done\n")
    (work / "steps" / "table1.json").write_text(json.dumps({"step": "table1", "complete": False, "dry_run": False,
                                                            "seconds": 95, "result": {"rows": [{"run": "a"}]}}))
    (work / "steps" / "table1.status").write_text("124 95.2 95\n")
    printed = python("summarize", "--work", str(work), "--out", str(out), "--step", "table1").stdout
    assert printed.startswith("table1: timed out (partial), 95.2 s of 95.0: ")
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps["table1"]["status"] == "timed out" and steps["table1"]["result"]["rows"] == [{"run": "a"}]
    assert "| table1 | timed out (partial) | 95.2 | 95.0 |" in (out / "summary.md").read_text()
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert tar.extractfile("logs/table1.log").read() == b"two rounds done\n"


def test_syncs_stand_in_counts_each_would_be_sync_with_its_place():
    """On the CPU the syncs step counts what tests/helpers/syncs.py's probe records; on a GPU, torch's sync warnings,
    each at the innermost ibnbench frame (here: this test's lines, outside ibnbench)."""
    from benchmarks.gpu_check.sync_sites import call_site, count_syncs

    x = torch.arange(6.0)
    with count_syncs(torch.device("cpu")) as sites:
        x.sum().item()
        x.nonzero()
    assert [site.split(" in ")[0] for site in sites] == ["item", "nonzero"]
    assert all("test_syncs_stand_in" in site for site in sites), sites
    assert call_site().startswith("tests/test_gpu_check.py:")

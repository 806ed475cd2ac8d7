"""Start-up of the command line: ``ibnbench --help`` and a bad ``--output`` answer before torch is even needed.

Each runs as a user runs it, a fresh Python process; ``python -c "import torch"`` is timed beside them as the
cost the lazy imports avoid. Numbers: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_help(benchmark):
    done = benchmark.pedantic(python, args=("-m", "ibnbench.cli", "--help"), rounds=5, iterations=1)
    assert done.returncode == 0 and "run" in done.stdout


def test_import_torch_for_comparison(benchmark):
    done = benchmark.pedantic(python, args=("-c", "import torch"), rounds=5, iterations=1)
    assert done.returncode == 0


def test_help_and_every_subcommand_help_load_no_torch():
    """Why ``--help`` is fast: parsing the command line imports neither torch nor the model zoo."""
    script = ("import sys\nfrom ibnbench.cli import build_parser\nparser = build_parser()\n"
              "for command in ('run', 'report', 'check', 'divergence', 'bench', 'models', 'suites', 'stylize'):\n"
              "    try:\n        parser.parse_args([command, '--help'])\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('ibnbench.zoo')))")
    done = python("-c", script)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_bad_output_is_reported_before_any_work(benchmark, tmp_path):
    """``run --output`` under a file: the one error line, without building a model or decoding an image."""
    val = Path(os.environ.get("IBNBENCH_SHARED", ROOT.parent / "shared")) / "data" / "imagenet-val-100" / "val"
    if not val.exists():
        pytest.skip(f"{val} is absent: this benchmark needs ../shared beside the checkout (or $IBNBENCH_SHARED)")
    (tmp_path / "file").write_text("x")
    done = benchmark.pedantic(python, args=("-m", "ibnbench.cli", "run", "--model", "resnet50", "--data", str(val),
                                            "--output", str(tmp_path / "file" / "r.json")), rounds=3, iterations=1)
    assert done.returncode == 2 and "file is a file, not a folder" in done.stderr

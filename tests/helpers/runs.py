"""Helpers shared by the engine, cache, distributed and GPU tests (not a test module itself): small random
models, a `dir`-condition suite, and torchrun invocations of the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from ibnbench.eval.plan import load_suite
from ibnbench.zoo import create_model

CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]


def small_models(names=("resnet18", "resnet18_ibn_a", "resnet18_ibn_b")) -> dict:
    torch.manual_seed(0)
    return {n: create_model(n) for n in names}


def inverted_copy_suite(root: Path, tmp_path: Path) -> tuple[list, Path]:
    """Conditions ``origin`` and ``inverted`` (a `dir` condition reading an inverted copy of ``root``), and the copy."""
    from PIL import Image, ImageOps

    styled = tmp_path / "styled"
    for path in root.rglob("*.JPEG"):
        target = styled / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(Image.open(path).convert("RGB")).save(target, format="JPEG", quality=95)
    suite = tmp_path / "styled.toml"
    suite.write_text(f'[[conditions]]\nid = "origin"\nop = "identity"\n\n'
                     f'[[conditions]]\nid = "inverted"\nop = "dir"\nroot = "{styled}"\n')
    return load_suite(suite).conditions, styled


TORCHRUN_CONDITIONS = "origin,rgb+50,std*1.5"


def torchrun(nproc: int, args: list[str], tmp_path: Path, env: dict | None = None, timeout: float = 300,
             module: str = "ibnbench.cli"):
    """``torchrun --nproc_per_node=nproc -m module args`` in ``tmp_path`` (``module``: the CLI by default)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_args(data: Path, output: Path, limit: int | None = None) -> list[str]:
    args = ["run", "--model", "efficientnet_lite0", "--data", str(data), "--conditions", TORCHRUN_CONDITIONS,
            "--output", str(output), "--workers", "0", "--batch-size", "16", "--device", "cpu"]
    return args + (["--limit", str(limit)] if limit else [])

"""Shared fixtures: where ../shared lives, and skips that say why."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(os.environ.get("IBNBENCH_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
PARITY = SHARED / "parity"
VAL100 = SHARED / "data" / "imagenet-val-100"


def need(path: Path) -> Path:
    """Skip (saying which path is absent) unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs ../shared beside the checkout (or $IBNBENCH_SHARED)")
    return path


@pytest.fixture(scope="session")
def parity_rule():
    need(PARITY / "rule.py")
    sys.path.insert(0, str(PARITY))
    try:
        import rule
    finally:
        sys.path.remove(str(PARITY))
    return rule


def load_fixture(name: str) -> dict:
    return json.loads((need(PARITY / f"{name}.json")).read_text())


@pytest.fixture(scope="session")
def val100() -> Path:
    return need(VAL100 / "val")

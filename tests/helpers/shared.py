"""Where ../shared lives (``$IBNBENCH_SHARED`` elsewhere), and skips that say which path or extra is absent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("IBNBENCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
PARITY = SHARED / "parity"
VAL100 = SHARED / "data" / "imagenet-val-100"
REAL_SUITES = ("table1", "table1-clipped")
REAL_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]


def need_extra(module: str) -> None:
    """Skip unless the optional extra that provides ``module`` is installed (for tests that reach it through the
    CLI, where the error becomes an exit code)."""
    pytest.importorskip(module, reason=f"optional extra absent: {module} (pip install -e '.[lite]')")


def need(path: Path) -> Path:
    """Skip (saying which path is absent) unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs ../shared beside the checkout (or $IBNBENCH_SHARED)")
    return path


def load_fixture(name: str) -> dict:
    """A parity fixture by model name, from ../shared/parity or its ``pending/`` folder."""
    pending = PARITY / "pending" / f"{name}.json"
    return json.loads(need(pending if pending.is_file() else PARITY / f"{name}.json").read_text())

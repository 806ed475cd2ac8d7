"""pytest plugin (entry point ``pytest11``): robustness regression checks in a user's test suite.

Options ``--ibnbench-data DIR`` and ``--ibnbench-device DEV``; the fixture ``ibnbench_run`` evaluates
``(model, suite, conditions, weights)`` once per session and returns the :class:`ibnbench.results.Record`;
tests marked ``@pytest.mark.ibnbench`` skip, saying why, when no data folder is given.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import pytest

SKIP_REASON = "ibnbench: no validation data given (pass --ibnbench-data DIR or set ibnbench_data in the ini file)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ibnbench", "robustness regression checks")
    group.addoption("--ibnbench-data", metavar="DIR", help="ImageNet val folder for ibnbench_run")
    group.addoption("--ibnbench-device", metavar="DEV", help="device for ibnbench_run (default: cuda if available)")
    parser.addini("ibnbench_data", "ImageNet val folder for ibnbench_run", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ibnbench: needs --ibnbench-data; skipped with a clear reason without it")


def _data_dir(config: pytest.Config) -> str | None:
    return config.getoption("--ibnbench-data") or config.getini("ibnbench_data") or None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ibnbench") and not _data_dir(item.config):
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def ibnbench_data(pytestconfig: pytest.Config) -> Path:
    """The validation folder given with ``--ibnbench-data`` (skips without it)."""
    data = _data_dir(pytestconfig)
    if not data:
        pytest.skip(SKIP_REASON)
    return Path(data)


@pytest.fixture(scope="session")
def ibnbench_run(pytestconfig: pytest.Config, ibnbench_data: Path) -> Callable:
    """``ibnbench_run(model, suite="table1", conditions=None, weights=None)`` -> Record, cached per session."""
    from .engine import run

    cache: dict[tuple, object] = {}
    workdir = Path(tempfile.mkdtemp(prefix="ibnbench-pytest-"))

    def evaluate(model: str, suite: str = "table1", conditions: Sequence[str] | None = None,
                 weights: str | None = None):
        key = (model, suite, tuple(conditions or ()), weights)
        if key not in cache:
            cache[key] = run([model], ibnbench_data, suite=suite, conditions=list(conditions) if conditions else None,
                             weights=[weights] if weights else None, output=workdir / f"run{len(cache)}.json",
                             device=pytestconfig.getoption("--ibnbench-device"), workers=0, progress=False)
        return cache[key]

    return evaluate

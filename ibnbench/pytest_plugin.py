"""pytest plugin (entry point ``pytest11``): robustness regression checks in a user's test suite.

Options ``--ibnbench-data DIR``, ``--ibnbench-device DEV`` and ``--ibnbench-workers N`` (or the ini keys
``ibnbench_data`` and ``ibnbench_device``). The fixture ``ibnbench_run(model, suite="table1", conditions=None,
weights=None)`` evaluates once per session for each distinct argument set and returns the
:class:`ibnbench.Record`, so several tests share one evaluation. Tests marked ``@pytest.mark.ibnbench``
(and any test using ``ibnbench_run``) skip, saying why, when no data folder is given.
:func:`assert_no_regression` fails a test on a significant change against a recorded run (``ibnbench check``).

This module is imported by every pytest run in an environment where ibnbench is installed: it imports
nothing heavy (torch, the engine) until a test asks for an evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pytest

if TYPE_CHECKING:
    from ibnbench.results.record import Record

SKIP_REASON = "ibnbench: no validation data given (pass --ibnbench-data DIR or set ibnbench_data in the ini file)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ibnbench", "robustness regression checks (ibnbench_run fixture)")
    group.addoption("--ibnbench-data", metavar="DIR", help="ImageNet val folder for ibnbench_run")
    group.addoption("--ibnbench-device", metavar="DEV", help="device for ibnbench_run (default: cuda if available)")
    group.addoption("--ibnbench-workers", metavar="N", type=int,
                    help="decoding worker processes for ibnbench_run (default: ibnbench run's default)")
    parser.addini("ibnbench_data", "ImageNet val folder for ibnbench_run (relative to the ini file)", default="")
    parser.addini("ibnbench_device", "device for ibnbench_run", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ibnbench: needs --ibnbench-data; skipped with a clear reason without it")


def _data_dir(config: pytest.Config) -> Path | None:
    """``--ibnbench-data`` (relative to the working directory) or the ini key (relative to the ini file)."""
    if config.getoption("--ibnbench-data"):
        return Path(config.getoption("--ibnbench-data"))
    ini = config.getini("ibnbench_data")
    if not ini:
        return None
    return Path(ini) if Path(ini).is_absolute() or config.inipath is None else config.inipath.parent / ini


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without data, marked tests skip (reported at the test's own line, not this plugin's)."""
    if _data_dir(config) is None:
        for item in items:
            if item.get_closest_marker("ibnbench"):
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def ibnbench_data(pytestconfig: pytest.Config) -> Path:
    """The validation folder given with ``--ibnbench-data`` or the ini key (skips without it)."""
    data = _data_dir(pytestconfig)
    if data is None:
        pytest.skip(SKIP_REASON)
    return data


@pytest.fixture(scope="session")
def ibnbench_run(pytestconfig: pytest.Config, ibnbench_data: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Record]:
    """``ibnbench_run(model, suite="table1", conditions=None, weights=None)`` -> Record, evaluated once per
    session for each distinct (model, suite, set of conditions, weights); records go to pytest's temporary
    folder. Without ``conditions``, the suite's conditions whose assets are missing (CycleGAN weights) are
    left out as not run; named ones must be runnable. Bad input (a missing folder, an unknown model, ...)
    fails the test with ibnbench's one-line message; a failed evaluation is not retried by later tests."""
    from ibnbench.errors import IbnbenchError
    options = {"device": pytestconfig.getoption("--ibnbench-device") or pytestconfig.getini("ibnbench_device") or None,
               "progress": False}
    if pytestconfig.getoption("--ibnbench-workers") is not None:
        options["workers"] = pytestconfig.getoption("--ibnbench-workers")
    outcomes: dict[tuple, Record | str] = {}
    folder = tmp_path_factory.mktemp("ibnbench")

    def evaluate(model: str, suite: str = "table1", conditions: Sequence[str] | None = None,
                 weights: str | None = None) -> Record:
        from ibnbench.eval import engine

        key = (model, str(suite), tuple(sorted(set(conditions))) if conditions else None, weights)
        if key in outcomes:
            if isinstance(outcomes[key], str):
                pytest.fail(f"{outcomes[key]} (failed earlier in this session)", pytrace=False)
            return outcomes[key]
        try:
            outcomes[key] = engine.run([model], ibnbench_data, suite=suite,
                                       conditions=list(conditions) if conditions else None,
                                       weights=[weights] if weights else None, skip_missing=not conditions,
                                       output=folder / f"record{len(outcomes)}.json", **options)
        except IbnbenchError as exc:  # the user's input: one line; anything else is a bug and keeps its traceback
            outcomes[key] = f"ibnbench_run({model!r}, suite={suite!r}): {exc}"
        if isinstance(outcomes[key], str):  # failed outside the except block: no chained traceback
            pytest.fail(outcomes[key], pytrace=False)
        return outcomes[key]

    return evaluate


def assert_no_regression(results: Record | str | Path, against: Record | str | Path, test: str = "mcnemar",
                         alpha: float = 0.01, tolerance: float = 0.5, metric: str = "top1",
                         either_way: bool = False) -> None:
    """Fail the calling test, printing the per-cell table, unless ``ibnbench check`` passes ``results`` (new)
    against ``against`` (recorded). Default: McNemar's exact test on the per-image answers, Holm-adjusted over
    the shared cells, at ``alpha``; ``test="tolerance"`` is the fixed ``tolerance`` in points. Incomparable
    records fail too."""
    from ibnbench.results.check import EXIT_OK, check

    outcome = check(results, against, tolerance=tolerance, metric=metric, either_way=either_way, test=test,
                    alpha=alpha)
    if outcome.exit_code != EXIT_OK:
        pytest.fail(outcome.render(), pytrace=False)

"""Shared fixtures: where ../shared lives, and skips that say why."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import torch

from ibnbench.errors import MissingExtraError

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(os.environ.get("IBNBENCH_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
PARITY = SHARED / "parity"
VAL100 = SHARED / "data" / "imagenet-val-100"
REAL_SUITES = ("table1", "table1-clipped")
REAL_CONDITIONS = ["origin", "rgb+50", "r+50", "std*1.5"]


@contextlib.contextmanager
def _skip_if_extra_absent():
    """A test (or its fixture) that reaches an absent optional extra (e.g. ``[lite]``) skips, saying which."""
    try:
        yield
    except MissingExtraError as exc:
        pytest.skip(f"optional extra absent: {exc}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _skip_if_extra_absent():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _skip_if_extra_absent():
        return (yield)


def need_extra(module: str) -> None:
    """Skip unless the optional extra that provides ``module`` is installed (for tests that reach it through the
    CLI, where the error becomes an exit code)."""
    pytest.importorskip(module, reason=f"optional extra absent: {module} (pip install -e '.[lite]')")


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
    """A parity fixture by model name, from ../shared/parity or its ``pending/`` folder."""
    pending = PARITY / "pending" / f"{name}.json"
    return json.loads(need(pending if pending.is_file() else PARITY / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def val100() -> Path:
    return need(VAL100 / "val")


@pytest.fixture(scope="session")
def real_records(val100, tmp_path_factory) -> dict:
    """EfficientNet-Lite0 on the 100 shared images under both Table-1 suites (four conditions), evaluated once
    per session as the committed leaderboard records were made (CPU, batches of 50); shared by
    test_real_accuracy.py and test_regression.py."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from ibnbench import RunOptions, run

    out = tmp_path_factory.mktemp("real")
    return {suite: run(["efficientnet_lite0"], val100, suite=suite, conditions=REAL_CONDITIONS,
                       output=out / f"{suite}.json",
                       options=RunOptions(device="cpu", workers=0, batch_size=50, progress=False))
            for suite in REAL_SUITES}


@pytest.fixture()
def tiny_val(tmp_path) -> Path:
    """9 small synthetic JPEGs in 3 true ImageNet classes."""
    from images import make_folder

    from ibnbench.data import classes as data

    wnids = data.imagenet_wnids()
    return make_folder(tmp_path / "val", {wnids[1]: [1, 2, 3], wnids[400]: [4, 5, 6], wnids[999]: [7, 8, 9]})


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The files the loader decodes on the CPU in this process from now on, in order (with ``workers=0`` that is
    every CPU decode: worker processes decode in their own copies)."""
    from ibnbench.data import loader

    seen: list[str] = []
    decode = loader.decode_file
    monkeypatch.setattr(loader, "decode_file", lambda path: seen.append(str(path)) or decode(path))
    return seen


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    """A folder served over HTTP on 127.0.0.1 from a background thread; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()

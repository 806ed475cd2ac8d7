"""Shared fixtures (paths and skips: :mod:`helpers.shared`; test helpers: the :mod:`helpers` package)."""
from __future__ import annotations

import contextlib
import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers.shared import PARITY, REAL_CONDITIONS, REAL_SUITES, VAL100, need

from ibnbench.errors import MissingExtraError

torch.set_num_threads(min(2, torch.get_num_threads()))


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


@pytest.fixture(scope="session")
def parity_rule():
    need(PARITY / "rule.py")
    sys.path.insert(0, str(PARITY))
    try:
        import rule
    finally:
        sys.path.remove(str(PARITY))
    return rule


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
    from helpers.images import make_folder

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

"""Shared fixtures: dnsd servers on port 0, stopped after each test."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, run_dnsd
from support.nsd import nsd_upstream

# The files source's parse cache (dnsd/sources/parsecache.py) of the servers the tests start: a directory of this
# run, never the user's ~/.cache (a test that checks the cache passes its own directory).
os.environ.setdefault("DNSD_CACHE_DIR", tempfile.mkdtemp(prefix="dnsd-test-cache-"))


@pytest.fixture
def dnsd_factory() -> Iterator[Callable[..., DnsdHandle]]:
    """dnsd_factory(manifests=DIR, **cluster_options) or dnsd_factory(config={...}) -> running server."""
    started: list[DnsdHandle] = []

    def make(
        manifests: str | Path | None = None,
        *,
        config: dict[str, Any] | None = None,
        **cluster: Any,
    ) -> DnsdHandle:
        if config is None:
            config = base_config(manifests if manifests is not None else FIXTURE_CLUSTER, **cluster)
        handle = run_dnsd(config)
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.stop()


@pytest.fixture(scope="module")
def fixture_server() -> Iterator[DnsdHandle]:
    """One server over tests/data/cluster with default options, shared by a module."""
    handle = run_dnsd(base_config(FIXTURE_CLUSTER))
    yield handle
    handle.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty manifest directory for a test to fill (a module may override it)."""
    d = tmp_path / "manifests"
    d.mkdir()
    return d


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog at INFO for every logger: the reports a test expects from the server."""
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """NSD serving example.test on 127.0.0.1 (a free port), shared by a module; yields 'ip:port'."""
    with nsd_upstream(tmp_path_factory.mktemp("nsd")) as addr:
        yield addr

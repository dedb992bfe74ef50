"""Shared fixtures: dnsd servers on port 0, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, run_dnsd


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

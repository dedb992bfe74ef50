"""The fuzz tests' marker and the shared fuzz target (one engine for the module)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_target import Target, build_target


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: a bounded fuzzing pass (about 10 s); `make fuzz` runs a longer one")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = build_target()
    yield t
    t.close()

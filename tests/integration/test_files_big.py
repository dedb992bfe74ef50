"""A manifest file bigger than PARSE_APART_BYTES (issue 5 section 3.4), through a real server: it is parsed in
a child process and its objects arrive whole (one batch), its changes too, and a child that fails is the file's
error with the last good objects serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from support import DnsdHandle, a_answer, a_ok, wait_until

from dnsd.sources.files import PARSE_APART_BYTES

N_SERVICES = 600
TIMEOUT = 30.0


def service_list(first_ip: str) -> str:
    """A `kind: List` of N_SERVICES services, padded with an annotation to pass PARSE_APART_BYTES."""
    pad = "x" * (PARSE_APART_BYTES // N_SERVICES + 1)
    items = ["- {apiVersion: v1, kind: Namespace, metadata: {name: default}}"]
    for i in range(N_SERVICES):
        ip = first_ip if i == 0 else f"10.96.{i // 250}.{i % 250 + 1}"
        items.append(
            f"- {{apiVersion: v1, kind: Service, metadata: {{name: s{i}, namespace: default, "
            f"annotations: {{pad: {pad}}}}}, spec: {{clusterIP: {ip}}}}}"
        )
    text = "apiVersion: v1\nkind: List\nitems:\n" + "\n".join(items) + "\n"
    assert len(text) > PARSE_APART_BYTES
    return text


@pytest.mark.parametrize("change", ["rewrite", "break"])
def test_big_list_is_parsed_apart(
    dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    big = root / "all.yaml"
    big.write_text(service_list("10.97.0.1"))
    h = dnsd_factory(root)
    last = N_SERVICES - 1
    assert a_answer(h, f"s{last}") == a_ok(f"s{last}", f"10.96.{last // 250}.{last % 250 + 1}")
    assert a_answer(h, "s0") == a_ok("s0", "10.97.0.1")
    assert h.app.source.reads_apart == 1
    if change == "rewrite":
        big.write_text(service_list("10.97.0.2"))
        wait_until(lambda: a_answer(h, "s0") == a_ok("s0", "10.97.0.2"), TIMEOUT)
        assert h.app.source.reads_apart == 2
    else:
        caplog.set_level(logging.ERROR, logger="dnsd")
        big.write_text(service_list("10.97.0.2")[: PARSE_APART_BYTES + 10] + "\n  - [")
        wait_until(lambda: [r for r in caplog.records if str(big) in r.getMessage()], TIMEOUT)
        assert a_answer(h, "s0") == a_ok("s0", "10.97.0.1")
    assert a_answer(h, f"s{last}") == a_ok(f"s{last}", f"10.96.{last // 250}.{last % 250 + 1}")

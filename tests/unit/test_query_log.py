"""The query log line (Engine._log): its text, the structured fields the JSON formatter reads, and log.sample."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dns.message
import pytest

from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import ClusterConfig
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.store.model import Namespace, Service, ServicePort
from dnsd.store.store import Store


def _engine(sample: float) -> Engine:
    store = Store()
    svc = Service("default", "web", "ClusterIP", ("10.96.0.20",), False, (ServicePort("http", 80, "tcp"),), "", False)
    store.apply([Namespace("default"), svc], [])
    store.mark_synced()
    return Engine(Chain([ClusterHandler(ClusterRecords(ClusterConfig(), store))]), store, log_queries=True,
                  log_sample=sample)  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    rcode: str
    link: str


CASES = [
    Case("web.default.svc.cluster.local.", "NOERROR", "cluster"),
    Case("nope.default.svc.cluster.local.", "NXDOMAIN", "cluster"),
    Case("www.example.org.", "REFUSED", "terminal"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rcode)
def test_line_and_fields(caplog: pytest.LogCaptureFixture, case: Case) -> None:
    caplog.set_level(logging.INFO, logger="dnsd.query")
    engine = _engine(1.0)
    engine.handle(dns.message.make_query(case.name, "A").to_wire(), False, ("192.0.2.7", 5353))
    (record,) = [r for r in caplog.records if r.name == "dnsd.query"]
    fields = record.query  # type: ignore[attr-defined]
    assert fields["client"] == "192.0.2.7" and fields["port"] == 5353 and fields["proto"] == "udp"
    assert (fields["qname"], fields["qtype"], fields["rcode"], fields["link"]) == (
        case.name,
        "A",
        case.rcode,
        case.link,
    )
    assert fields["size"] > 12 and fields["duration_us"] >= 0
    assert record.getMessage().startswith(f"192.0.2.7#5353 udp {case.name} A {case.rcode} {case.link} ")


@pytest.mark.parametrize(("sample", "low", "high"), [(0.0, 0, 0), (1.0, 400, 400), (0.25, 50, 150)])
def test_sample(caplog: pytest.LogCaptureFixture, sample: float, low: int, high: int) -> None:
    """log.sample keeps that fraction of the lines (400 queries; 0.25 keeps 100 on average, 50..150 is over 5
    standard deviations wide)."""
    caplog.set_level(logging.INFO, logger="dnsd.query")
    engine = _engine(sample)
    wire = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
    for _ in range(400):
        engine.handle(wire, False, ("192.0.2.7", 5353))
    kept = sum(1 for r in caplog.records if r.name == "dnsd.query")
    assert low <= kept <= high

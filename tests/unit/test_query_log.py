"""The query log line (Engine._log): its text and the structured fields the JSON formatter reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest

from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import ClusterConfig
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.store.model import Namespace, Service, ServicePort
from dnsd.store.store import Store


def _engine() -> Engine:
    store = Store()
    svc = Service("default", "web", "ClusterIP", ("10.96.0.20",), False, (ServicePort("http", 80, "tcp"),), "", False)
    store.apply([Namespace("default"), svc], [])
    store.mark_synced()
    return Engine(Chain([ClusterHandler(ClusterRecords(ClusterConfig(), store))]), store, log_queries=True)


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
    engine = _engine()
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


@pytest.mark.parametrize(("waiting", "rcode"), [(True, "SERVFAIL"), (False, "REFUSED")])
def test_name_outside_our_zones_before_the_tail_joins(
    caplog: pytest.LogCaptureFixture, waiting: bool, rcode: str
) -> None:
    """While forwarding or recursion is configured but not attached yet (the zone files still loading), a name
    outside our zones gets SERVFAIL ("not yet"), not REFUSED ("never"); with no tail configured, REFUSED."""
    caplog.set_level(logging.INFO, logger="dnsd.query")
    engine = _engine()
    engine.chain.waiting = waiting
    reply = dns.message.from_wire(engine.handle(dns.message.make_query("www.example.org.", "A").to_wire()))  # type: ignore[arg-type]
    assert dns.rcode.to_text(reply.rcode()) == rcode

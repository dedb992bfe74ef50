"""recursion: iterative against broken servers and with the resolver's own shortcuts: QNAME-minimisation fallback
(RFC 9156 3) at a scripted server that answers NXDOMAIN, FORMERR, NOTIMP or nothing for empty non-terminals,
NXDOMAIN cuts (RFC 8020) and root priming (RFC 8109), each seen in the hierarchy's query logs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import pytest
from support import DnsdHandle, assert_section, query, rcode_text, rr_lines
from support.hierarchy import (
    BROKEN_IP,
    LEAF_IP,
    ROOT2_IP,
    ROOT_IP,
    V6_IP,
    Hierarchy,
    can_bind_53,
    iterative_config,
    unbound,
)

pytestmark = pytest.mark.skipif(can_bind_53() is not None, reason=can_bind_53() or "")


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    with Hierarchy(tmp_path_factory.mktemp("hierarchy")) as h:
        yield h


@pytest.fixture
def resolver(hierarchy: Hierarchy, dnsd_factory: Callable[..., DnsdHandle]) -> DnsdHandle:
    h = dnsd_factory(config=iterative_config(hierarchy))
    hierarchy.clear()
    return h


def _resolve(h: DnsdHandle, name: str, rdtype: str) -> Any:
    """The recurse link's own answer (the answer cache in front of it is not asked)."""
    from dnsd.engine.context import UDP, QueryContext
    from dnsd.proto.wire import parse_query

    q = parse_query(dns.message.make_query(name, rdtype).to_wire())
    ctx = QueryContext(("127.0.0.1", 5353), UDP, 0.0, q)
    return asyncio.run_coroutine_threadsafe(h.app.recursor.resolve(q, ctx), h.loop).result(6)


# ---------------------------------------------------------------- QNAME minimisation at broken servers


@dataclass(frozen=True)
class Broken:
    name: str
    qname: str
    minimised: str  # what the broken server is asked first (an empty non-terminal)
    answer: str
    unbound: bool = True  # Unbound resolves it too (it does not after silence: it times out)


BROKEN = [
    Broken("nxdomain-for-ent", "www.a.b.nxent.test.", "b.nxent.test.", "www.a.b.nxent.test. 3600 IN A 192.0.2.51"),
    Broken(
        "nxdomain-above-a-cut",
        "www.deep.x.nxent.test.",
        "x.nxent.test.",
        "www.deep.x.nxent.test. 3600 IN A 192.0.2.52",
    ),
    Broken("formerr-for-a", "www.a.b.formerr.test.", "b.formerr.test.", "www.a.b.formerr.test. 3600 IN A 192.0.2.53"),
    Broken("notimp-for-a", "www.a.b.notimp.test.", "b.notimp.test.", "www.a.b.notimp.test. 3600 IN A 192.0.2.54"),
    Broken("no-reply", "www.a.b.drop.test.", "b.drop.test.", "www.a.b.drop.test. 3600 IN A 192.0.2.55", False),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_minimisation_falls_back_at_broken_servers(resolver: DnsdHandle, hierarchy: Hierarchy, case: Broken) -> None:
    """The minimised query for the empty non-terminal fails; the full name, asked next, is answered."""
    reply = query(resolver, case.qname, "A", timeout=6)
    assert rcode_text(reply) == "NOERROR"
    assert_section(reply.answer, case.answer, "answer")
    asked = [(q.qname, q.qtype) for q in hierarchy.queries(BROKEN_IP)]
    assert asked[:2] == [(case.minimised, "A"), (case.qname, "A")]  # then the full name, not one label more
    assert resolver.app.recursor.stats.minimise_fallbacks == 1


@pytest.mark.parametrize("case", [c for c in BROKEN if c.unbound], ids=lambda c: c.name)
def test_broken_servers_same_as_unbound(
    resolver: DnsdHandle, hierarchy: Hierarchy, tmp_path: Path, case: Broken
) -> None:
    with unbound(tmp_path / "unbound", hierarchy.root_hints) as reference:
        theirs = query(reference, case.qname, "A", timeout=10)
    ours = query(resolver, case.qname, "A", timeout=6)
    assert (rcode_text(ours), rr_lines(ours.answer)) == (rcode_text(theirs), rr_lines(theirs.answer))


def test_nxdomain_for_a_minimised_name_is_not_remembered(resolver: DnsdHandle) -> None:
    """A broken server's NXDOMAIN for the empty non-terminal b.nxent.test. must not hide the names below it
    (RFC 9156 3): the second walk for the name resolves again."""
    for _ in range(2):
        out = _resolve(resolver, "www.a.b.nxent.test.", "A")
        assert (out.rcode, len(out.answer)) == (0, 1)
    assert resolver.app.recursor.stats.nxdomain_cuts == 0


# ---------------------------------------------------------------- NXDOMAIN cut (RFC 8020)


def test_below_a_known_nxdomain_nothing_is_asked(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    assert rcode_text(query(resolver, "nothere.example.test.", "A")) == "NXDOMAIN"
    hierarchy.clear()
    for name, rdtype in (("a.nothere.example.test.", "A"), ("b.c.nothere.example.test.", "TXT")):
        reply = query(resolver, name, rdtype)
        assert rcode_text(reply) == "NXDOMAIN"
        soa = [r for r in reply.authority if r.rdtype == 6]
        assert [r.name.to_text() for r in soa] == ["example.test."]
        assert 0 < soa[0].ttl <= 300  # what is left of the zone's negative TTL (SOA MINIMUM 300)
    assert hierarchy.queries() == []
    assert resolver.app.recursor.stats.nxdomain_cuts == 2


def test_nxdomain_cut_ends_with_the_negative_ttl(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    assert rcode_text(query(resolver, "gone.example.test.", "A")) == "NXDOMAIN"
    infra = resolver.app.recursor.infra
    infra.clock = lambda: time.monotonic() + 301  # past the 300 s negative TTL, inside the delegations' 3600 s
    hierarchy.clear()
    assert _resolve(resolver, "a.gone.example.test.", "A").rcode == 3  # NXDOMAIN
    assert {q.server for q in hierarchy.queries()} == {LEAF_IP}
    assert resolver.app.recursor.stats.nxdomain_cuts == 0


def test_a_cname_into_a_known_nxdomain(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    """dangling.example.test. is a CNAME to x.nothere.site.example.; nothere.site.example. is known NXDOMAIN:
    the chain ends there without asking site.example.'s server."""
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "NOERROR"  # the delegations are known
    assert rcode_text(query(resolver, "nothere.site.example.", "A")) == "NXDOMAIN"
    hierarchy.clear()
    reply = query(resolver, "dangling.example.test.", "A")
    assert rcode_text(reply) == "NXDOMAIN"
    assert [(r.name.to_text(), r[0].target.to_text()) for r in reply.answer] == [
        ("dangling.example.test.", "x.nothere.site.example.")
    ]
    assert [r.name.to_text() for r in reply.authority if r.rdtype == 6] == ["site.example."]
    assert {q.server for q in hierarchy.queries()} == {LEAF_IP}


# ---------------------------------------------------------------- root priming (RFC 8109)


@pytest.mark.parametrize("prime", [True, False], ids=["primed", "hints-only"])
def test_priming_learns_root_servers_beyond_the_hints(resolver: DnsdHandle, hierarchy: Hierarchy, prime: bool) -> None:
    """The hints name one root server; the root zone names two. Primed, dnsd asks the second one when the first
    failed lately; from the hints alone it can only ask the first."""
    walker = resolver.app.recursor.walker
    walker.prime = prime
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "NOERROR"
    first = next((q.server, q.qname, q.qtype) for q in hierarchy.queries())
    assert first == ((ROOT_IP, ".", "NS") if prime else (ROOT_IP, "test.", "A"))
    resolver.app.recursor.infra.failed(ROOT_IP, dns.name.root)  # asked last for a while
    hierarchy.clear()
    assert rcode_text(query(resolver, "www.site.example.", "A")) == "NOERROR"
    root_asked = [q.server for q in hierarchy.queries() if q.qname == "example."]
    assert root_asked == ([ROOT2_IP] if prime else [ROOT_IP])
    assert resolver.app.recursor.stats.primings == int(prime)


def test_priming_again_when_the_ttl_runs_out(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "NOERROR"
    assert rcode_text(query(resolver, "www.site.example.", "A")) == "NOERROR"
    assert [q.qname for q in hierarchy.queries() if q.qtype == "NS"] == ["."]  # once
    resolver.app.recursor.infra.clock = lambda: time.monotonic() + 86401  # past the root NS TTL (capped at a day)
    hierarchy.clear()
    assert _resolve(resolver, "www.example.test.", "A").rcode == 0
    assert next((q.server, q.qname, q.qtype) for q in hierarchy.queries()) == (ROOT_IP, ".", "NS")
    assert resolver.app.recursor.stats.primings == 2


def test_failed_priming_falls_back_to_the_hints(
    hierarchy: Hierarchy, dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path
) -> None:
    """The hints' server answers `. NS` with REFUSED here (a leaf server that does not serve the root): the walk
    goes on from the hints, and the next walk does not prime again at once."""
    hints = tmp_path / "leaf.hints"
    hints.write_text(f". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A {LEAF_IP}\n")
    h = dnsd_factory(config=iterative_config(hierarchy, root_hints=str(hints)))
    for _ in range(2):
        assert rcode_text(query(h, f"n{_}.example.", "A")) == "SERVFAIL"  # the leaf refuses everything above it
    stats = h.app.recursor.stats
    assert (stats.primings, stats.priming_failures) == (1, 1)


# ---------------------------------------------------------------- IPv6: AAAA for glueless NS names


@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "ipv4-only"])
def test_aaaa_of_a_glueless_ns_name(resolver: DnsdHandle, hierarchy: Hierarchy, ipv6: bool) -> None:
    """v6only.test.'s one NS name has an AAAA record only: with IPv6, dnsd looks it up and asks ::1; without,
    it asks no AAAA and no IPv6 server (not even one it knows), and the name cannot be resolved."""
    if not hierarchy.ipv6:
        pytest.skip("::1 cannot be bound here: the IPv6 server of the hierarchy is not started")
    resolver.app.recursor.walker.ipv6 = ipv6
    if not ipv6:  # even a known IPv6 address of the NS name is not asked
        resolver.app.recursor.infra.add_host(dns.name.from_text("ns-v6.hosting.net."), [V6_IP], 3600)
    reply = query(resolver, "www.v6only.test.", "A", timeout=6)
    asked = {(q.qname, q.qtype) for q in hierarchy.queries()}
    if ipv6:
        assert rcode_text(reply) == "NOERROR"
        assert_section(reply.answer, "www.v6only.test. 3600 IN A 192.0.2.60", "answer")
        assert ("ns-v6.hosting.net.", "AAAA") in asked
        assert [(q.qname, q.qtype) for q in hierarchy.queries(V6_IP)] == [("www.v6only.test.", "A")]
    else:
        assert rcode_text(reply) == "SERVFAIL"
        assert ("ns-v6.hosting.net.", "AAAA") not in asked
        assert hierarchy.queries(V6_IP) == []

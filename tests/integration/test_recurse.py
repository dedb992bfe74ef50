"""recursion: iterative against a real root/TLD/leaf hierarchy of NSD servers on 127.53.x.y:53, compared with
Unbound resolving the same names from the same root hints; the servers' query logs show what each was asked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
from support import DnsdHandle, assert_section, query, rcode_text, rr_lines, run_dnsd
from support.hierarchy import (
    DEAD_IP,
    HOSTING_IP,
    HOSTING_NS_IP,
    LEAF_IP,
    NET_IP,
    ROOT2_IP,
    ROOT_IP,
    SILENT_IP,
    SITE_IP,
    TEST_IP,
    Hierarchy,
    can_bind_53,
    iterative_config,
    unbound,
)

from dnsd.errors import DnsdError

pytestmark = pytest.mark.skipif(can_bind_53() is not None, reason=can_bind_53() or "")

ROOTS = (ROOT_IP, ROOT2_IP)
DATA = Path(__file__).resolve().parent.parent / "data" / "recurse"


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    with Hierarchy(tmp_path_factory.mktemp("hierarchy")) as h:
        yield h


@pytest.fixture
def reference(hierarchy: Hierarchy, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A fresh Unbound (cold cache, as the fresh dnsd) on the same root hints."""
    with unbound(tmp_path / "unbound", hierarchy.root_hints) as addr:
        yield addr


@pytest.fixture
def resolver(hierarchy: Hierarchy, dnsd_factory: Callable[..., DnsdHandle]) -> DnsdHandle:
    """A fresh dnsd (cold infrastructure cache) resolving through the hierarchy; the query log starts empty."""
    h = dnsd_factory(config=iterative_config(hierarchy))
    hierarchy.clear()
    return h


@dataclass(frozen=True)
class Case:
    name: str
    qname: str
    qtype: str
    rcode: str
    answer: str  # zone-file text
    authority_soa: str = ""  # the SOA owner a negative answer must carry ("" for none)
    tcp: bool = False


CASES = [
    Case("in-bailiwick-glue", "www.example.test.", "A", "NOERROR", "www.example.test. 3600 IN A 192.0.2.1"),
    Case("nodata", "www.example.test.", "AAAA", "NOERROR", "", "example.test."),
    Case("nxdomain", "nothere.example.test.", "A", "NXDOMAIN", "", "example.test."),
    Case("nxdomain-at-tld", "nothere.test.", "A", "NXDOMAIN", "", "test."),
    Case("empty-non-terminal", "b.example.test.", "A", "NOERROR", "", "example.test."),
    Case("below-ent", "a.b.example.test.", "A", "NOERROR", "a.b.example.test. 3600 IN A 192.0.2.2"),
    Case(
        "cname-across-zones",
        "alias.example.test.",
        "A",
        "NOERROR",
        """
        alias.example.test. 3600 IN CNAME www.site.example.
        www.site.example. 3600 IN A 192.0.2.10
        """,
    ),
    Case(
        "cname-in-zone",
        "inzone.example.test.",
        "A",
        "NOERROR",
        """
        inzone.example.test. 3600 IN CNAME www.example.test.
        www.example.test. 3600 IN A 192.0.2.1
        """,
    ),
    Case(
        "cname-chain-of-4",
        "c9.example.test.",
        "A",
        "NOERROR",
        """
        c9.example.test. 3600 IN CNAME c10.site.example.
        c10.site.example. 3600 IN CNAME c11.example.test.
        c11.example.test. 3600 IN CNAME c12.site.example.
        c12.site.example. 3600 IN CNAME c13.example.test.
        c13.example.test. 3600 IN A 192.0.2.99
        """,
    ),
    Case("cname-chain-too-long", "c1.example.test.", "A", "SERVFAIL", ""),
    Case("glueless", "www.glueless.test.", "A", "NOERROR", "www.glueless.test. 3600 IN A 192.0.2.20"),
    Case("lame-dead-refused", "www.lame.test.", "A", "NOERROR", "www.lame.test. 3600 IN A 192.0.2.30"),
    Case("silent-server", "www.silent.test.", "A", "NOERROR", "www.silent.test. 3600 IN A 192.0.2.40"),
    Case("delegation-loop", "www.loop.test.", "A", "SERVFAIL", ""),
    Case(
        "truncated-over-udp",
        "big.example.test.",
        "TXT",
        "NOERROR",
        "big.example.test. 3600 IN TXT " + " ".join(f'"{chr(97 + i) * 200}"' for i in range(12)),
        tcp=True,
    ),
]


def _ask(addr: tuple[str, int] | DnsdHandle, case: Case) -> dns.message.Message:
    if isinstance(addr, DnsdHandle):
        return query(addr, case.qname, case.qtype, tcp=case.tcp, timeout=6)
    # Unbound, the reference, sometimes drops the client's query while it backs off from the dead and silent
    # servers: a client would ask again, and so do we (once).
    try:
        return query(addr, case.qname, case.qtype, tcp=case.tcp, timeout=6)
    except dns.exception.Timeout:
        return query(addr, case.qname, case.qtype, tcp=case.tcp, timeout=6)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_iterative_answers(resolver: DnsdHandle, case: Case) -> None:
    reply = _ask(resolver, case)
    assert rcode_text(reply) == case.rcode
    assert_section(reply.answer, case.answer, "answer")
    soas = [r.name.to_text() for r in reply.authority if r.rdtype == 6]
    assert soas == ([case.authority_soa] if case.authority_soa else []), soas
    assert reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_as_unbound(resolver: DnsdHandle, reference: tuple[str, int], case: Case) -> None:
    ours, theirs = _ask(resolver, case), _ask(reference, case)
    assert rcode_text(ours) == rcode_text(theirs)
    assert rr_lines(ours.answer) == _ttl_of(rr_lines(theirs.answer), rr_lines(ours.answer))


def _ttl_of(theirs: set[str], ours: set[str]) -> set[str]:
    """Unbound's records with our TTLs where only the TTL differs (its cache may have aged them)."""
    strip = {(line.split(" ", 2)[0], line.split(" ", 2)[2]): line for line in ours}
    return {strip.get((t.split(" ", 2)[0], t.split(" ", 2)[2]), t) for t in theirs}


def test_qname_minimisation(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    """RFC 9156: after priming (`. NS` to the hints' server), a root server is asked for `test.` only, the TLD
    for `example.test.` only; the leaf gets the full name and type."""
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "NOERROR"
    roots = [(q.server, q.qname, q.qtype) for q in hierarchy.queries() if q.server in ROOTS]
    assert roots[0] == (ROOT_IP, ".", "NS")
    assert [(q, t) for _, q, t in roots[1:]] == [("test.", "A")]
    asked = {ip: {(q.qname, q.qtype) for q in hierarchy.queries(ip)} for ip in (TEST_IP, LEAF_IP)}
    assert asked == {
        TEST_IP: {("example.test.", "A")},
        LEAF_IP: {("www.example.test.", "A")},
    }


def test_minimised_ent_goes_on_at_the_same_server(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    """An empty non-terminal answers NOERROR (RFC 8020): the walk adds the next label at the same server."""
    query(resolver, "www.example.test.", "A")
    hierarchy.clear()
    assert rr_lines(query(resolver, "a.b.example.test.", "A").answer)
    assert [(q.server, q.qname) for q in hierarchy.queries()] == [
        (LEAF_IP, "b.example.test."),
        (LEAF_IP, "a.b.example.test."),
    ]


def test_second_name_starts_at_the_known_zone(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    query(resolver, "www.example.test.", "A")
    hierarchy.clear()
    assert rcode_text(query(resolver, "nothere.example.test.", "A")) == "NXDOMAIN"
    assert [q.server for q in hierarchy.queries()] == [LEAF_IP]


def test_truncated_reply_is_asked_again_over_tcp(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    query(resolver, "big.example.test.", "TXT", tcp=True)
    leaf = [(q.qname, q.transport) for q in hierarchy.queries(LEAF_IP)]
    assert leaf == [("big.example.test.", "udp"), ("big.example.test.", "tcp")]


def test_lame_servers_are_tried_then_avoided(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    """The dead and the REFUSING server are skipped; once they failed they are asked last for a while: of six
    names in lame.test, the REFUSING server is asked about one at most."""
    for i in range(6):
        assert rcode_text(query(resolver, f"n{i}.lame.test.", "A", timeout=6)) == "NXDOMAIN"
    good = [q.qname for q in hierarchy.queries(HOSTING_IP)]
    assert good == [f"n{i}.lame.test." for i in range(6)]
    assert len(hierarchy.queries(SITE_IP)) <= 1  # SITE_IP REFUSES lame.test.
    stats = resolver.app.recursor.stats
    assert stats.errors + stats.timeouts <= 2


def test_silent_server_costs_one_timeout_then_is_avoided(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    for i in range(4):
        assert rcode_text(query(resolver, f"n{i}.silent.test.", "A", timeout=6)) == "NXDOMAIN"
    silent = hierarchy.queries(SILENT_IP)
    assert len(silent) <= 1  # at most the first walk asked it; after its timeout it goes last


def test_delegation_loop_hits_the_work_bound(resolver: DnsdHandle) -> None:
    started = time.monotonic()
    assert rcode_text(query(resolver, "www.loop.test.", "A", timeout=6)) == "SERVFAIL"
    assert time.monotonic() - started < 2
    assert resolver.app.recursor.stats.sent <= 50


def test_query_budget_ends_in_servfail(resolver: DnsdHandle) -> None:
    resolver.app.recursor.walker.max_sent = 2  # three servers to walk: the budget runs out at the leaf
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "SERVFAIL"
    assert resolver.app.recursor.stats.work_limits == 1
    assert resolver.app.recursor.stats.sent == 2


def test_all_servers_failed_is_servfail_never_nxdomain(
    hierarchy: Hierarchy, dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path
) -> None:
    hints = tmp_path / "dead.hints"
    hints.write_text(f". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A {DEAD_IP}\n")
    h = dnsd_factory(config=iterative_config(hierarchy, root_hints=str(hints)))
    assert rcode_text(query(h, "www.example.test.", "A", timeout=6)) == "SERVFAIL"


def test_refused_outside_allow_recursion(hierarchy: Hierarchy, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    h = dnsd_factory(config=iterative_config(hierarchy, allow_recursion=["10.0.0.0/8"]))
    hierarchy.clear()
    reply = query(h, "www.example.test.", "A")
    assert rcode_text(reply) == "REFUSED"
    assert hierarchy.queries() == []  # nothing was sent
    assert h.app.recursor.refused == 1


def _resolve(h: DnsdHandle, name: str, rdtype: str, trace: list[str] | None = None) -> Any:
    """The recurse link's own answer (not the chain's) for a query from 127.0.0.1."""
    from dnsd.engine.context import UDP, QueryContext
    from dnsd.proto.wire import parse_query

    q = parse_query(dns.message.make_query(name, rdtype).to_wire())
    ctx = QueryContext(("127.0.0.1", 5353), UDP, 0.0, q, trace=trace)
    return asyncio.run_coroutine_threadsafe(h.app.recursor.resolve(q, ctx), h.loop).result(6)


def test_cluster_domain_is_never_asked_outside(resolver: DnsdHandle, hierarchy: Hierarchy) -> None:
    assert _resolve(resolver, "nothere.svc.cluster.local.", "A") is None  # the chain answers it, never upstream
    assert _resolve(resolver, "www.example.test.", "A") is not None
    assert {q.qname for q in hierarchy.queries()} == {".", "test.", "example.test.", "www.example.test."}


def test_over_max_concurrent_is_transient_servfail(resolver: DnsdHandle) -> None:
    resolver.app.recursor.max_concurrent = 0
    assert rcode_text(query(resolver, "www.example.test.", "A")) == "SERVFAIL"
    assert resolver.app.recursor.shed == 1


def test_trace_names_each_server_asked(resolver: DnsdHandle) -> None:
    trace: list[str] = []
    assert _resolve(resolver, "www.example.test.", "A", trace).rcode == 0
    asked = [line.replace(ROOT2_IP, ROOT_IP) for line in trace if " asked " in line]  # either root server
    assert asked == [
        f"recurse: {ROOT_IP} asked . NS -> answer (2 RRs)",
        f"recurse: {ROOT_IP} asked test. A (minimised) -> referral to test. (1 NS, 1 glue)",
        f"recurse: {TEST_IP} asked example.test. A (minimised) -> referral to example.test. (1 NS, 1 glue)",
        f"recurse: {LEAF_IP} asked www.example.test. A -> answer (1 RRs)",
    ]


@pytest.mark.parametrize(
    ("file", "message"),
    [("bad-syntax.hints", "bad-syntax.hints: line 3"), ("no-address.hints", "no root NS record with an address")],
)
def test_bad_root_hints_fail_at_start(hierarchy: Hierarchy, file: str, message: str) -> None:
    with pytest.raises(DnsdError, match=message):
        run_dnsd(iterative_config(hierarchy, root_hints=str(DATA / file)))


def _resolve_at_once(h: DnsdHandle, names: list[str], rdtype: str) -> list[Any]:
    """The recurse link's answers for names all asked at the same moment (cold: nothing is cached yet)."""
    from dnsd.engine.context import UDP, QueryContext
    from dnsd.proto.wire import parse_query

    async def all_at_once() -> list[Any]:
        queries = [parse_query(dns.message.make_query(n, rdtype).to_wire()) for n in names]
        ctxs = [QueryContext(("127.0.0.1", 5353), UDP, 0.0, q) for q in queries]
        return await asyncio.gather(*(h.app.recursor.resolve(q, c) for q, c in zip(queries, ctxs, strict=True)))

    return asyncio.run_coroutine_threadsafe(all_at_once(), h.loop).result(10)


@dataclass(frozen=True)
class Shared:
    name: str
    zone: str  # names n0.zone ... are asked at once; each is NXDOMAIN
    count: int
    leaf: str  # the server that gets each full name
    once: tuple[tuple[str, str, str], ...]  # (server, qname, qtype): asked exactly once ("root": either root)


SHARED = [
    Shared(
        "under-one-zone",
        "example.test.",
        50,
        LEAF_IP,
        (("root", ".", "NS"), ("root", "test.", "A"), (TEST_IP, "example.test.", "A")),
    ),
    Shared(
        "glueless-ns-looked-up-once",
        "glueless.test.",
        20,
        HOSTING_IP,
        (
            ("root", ".", "NS"),
            ("root", "test.", "A"),
            (TEST_IP, "glueless.test.", "A"),
            ("root", "net.", "A"),
            (NET_IP, "hosting.net.", "A"),
            (HOSTING_NS_IP, "ns.hosting.net.", "A"),
        ),
    ),
]


@pytest.mark.parametrize("case", SHARED, ids=lambda c: c.name)
def test_identical_questions_in_flight_are_sent_once(resolver: DnsdHandle, hierarchy: Hierarchy, case: Shared) -> None:
    """Cold walks that need the same referral (or the address of the same glueless NS) at the same time wait for
    the one query on its way: each server is asked each question once; the leaf gets every name."""
    names = [f"n{i}.{case.zone}" for i in range(case.count)]
    assert {rcode_text_of(a.rcode) for a in _resolve_at_once(resolver, names, "A")} == {"NXDOMAIN"}
    asked = Counter(
        ("root" if q.server in ROOTS else q.server, q.qname, q.qtype) for q in hierarchy.queries() if q.qtype != "AAAA"
    )  # AAAA of the NS name: only with an IPv6 route
    assert asked == Counter(case.once) + Counter((case.leaf, n, "A") for n in names)
    assert resolver.app.recursor.stats.shared >= case.count - 1


def rcode_text_of(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))

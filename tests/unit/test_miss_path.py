"""The miss path: negative answers from a zone's tail (render.behind), the doorkeeper, tables bounded by bytes."""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import pytest

from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import ClusterConfig
from dnsd.engine import fastpath
from dnsd.engine.chain import Chain
from dnsd.engine.context import QueryContext
from dnsd.engine.engine import TCP_LIMIT, Engine
from dnsd.engine.fastpath import FastTable
from dnsd.observe.counts import SpaceSaving
from dnsd.proto.answer import Answer
from dnsd.proto.render import Rendered, behind, finish, render
from dnsd.proto.wire import parse_query
from dnsd.store.model import Endpoint, EndpointPort, EndpointSlice, Namespace, Service, ServicePort
from dnsd.store.store import Store
from tests.support import assert_section

SOA_LINE = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {serial} 7200 1800 86400 5"


def _svc(name: str, ip: str, ns: str = "default") -> Service:
    return Service(ns, name, "ClusterIP", (ip,), False, (ServicePort("http", 80, "tcp"),), "", False)


def _slice(svc: str, ip: str, ns: str = "default") -> EndpointSlice:
    return EndpointSlice(
        ns, f"{svc}-x", svc, "IPv4", (Endpoint((ip,), True, "", "", ""),), (EndpointPort("http", 8080, "tcp"),)
    )


def _engine() -> tuple[Engine, Store]:
    store = Store()
    store.apply([Namespace("default"), _svc("web", "10.96.0.20"), _slice("web", "10.244.0.5")], [])
    store.mark_synced()
    return Engine(Chain([ClusterHandler(ClusterRecords(ClusterConfig(), store))]), store), store


def _wire(name: str, rdtype: str = "A", edns: int | None = None, do: bool = False, cd: bool = False) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=False if edns is None else edns, want_dnssec=do, payload=1232)
    q.id = random.getrandbits(16)
    if cd:
        q.flags |= dns.flags.CD
    return q.to_wire()


def _rendered(engine: Engine, data: bytes, tcp: bool = False) -> bytes:
    """What the renderer itself gives for this query (the reference for the tail)."""
    q = parse_query(data)
    ans = engine.chain.resolve(q, QueryContext(None, "tcp" if tcp else "udp", 0.0))
    assert isinstance(ans, Answer)
    limit = TCP_LIMIT if tcp else (min(q.edns.payload, 1232) if q.edns is not None else 512)
    return finish(render(q, ans, limit), data, engine.store.serial)


@dataclass(frozen=True)
class Case:
    name: str  # as asked (RFC 4343: the reply spells it so)
    rdtype: str
    edns: int | None
    do: bool
    rcode: str
    tail: bool = True  # answered from the zone's tail (else rendered, and kept at once, as before)


CASES = [
    Case("nope.default.svc.cluster.local.", "A", None, False, "NXDOMAIN"),
    Case("NoPe.DEFAULT.svc.Cluster.Local.", "A", None, False, "NXDOMAIN"),
    Case("nope.default.svc.cluster.local.", "AAAA", 0, False, "NXDOMAIN"),
    Case("nope.default.svc.cluster.local.", "SRV", 0, True, "NXDOMAIN"),
    Case("a.b.c.nons.svc.cluster.local.", "A", 0, True, "NXDOMAIN"),
    Case("x" * 63 + ".default.svc.cluster.local.", "A", None, False, "NXDOMAIN"),
    Case("web.default.svc.cluster.local.", "TXT", None, False, "NOERROR"),  # NODATA
    Case("Default.Svc.cluster.local.", "MX", 0, False, "NOERROR"),  # an empty non-terminal
    Case("cluster.local.", "A", 0, True, "NOERROR"),  # the apex itself
    Case("9.9.9.10.in-addr.arpa.", "PTR", None, False, "NXDOMAIN"),
    # Names the SOA holds (its MNAME and RNAME), or ends in: the renderer points them at the question.
    Case("Ns.Dns.cluster.local.", "AAAA", None, False, "NOERROR", tail=False),
    Case("HostMaster.cluster.local.", "A", 0, False, "NXDOMAIN", tail=False),
    Case("DNS.cluster.local.", "A", 0, True, "NXDOMAIN", tail=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.rdtype}-{c.edns}-{c.do}")
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_negative_from_the_tail_is_what_the_renderer_gives(case: Case, tcp: bool) -> None:
    engine, store = _engine()
    for cd in (False, True):
        data = _wire(case.name, case.rdtype, case.edns, case.do, cd)
        reply = engine.handle(data, tcp)
        assert isinstance(reply, bytes)
        assert reply == _rendered(engine, data, tcp)
        msg = dns.message.from_wire(reply)
        assert dns.rcode.to_text(msg.rcode()) == case.rcode
        assert msg.question[0].name.to_text() == case.name, "the question must be spelled as asked"
        assert bool(msg.flags & dns.flags.CD) is cd and bool(msg.flags & dns.flags.AA)
        assert (msg.edns >= 0) is (case.edns is not None) and bool(msg.ednsflags & dns.flags.DO) is case.do
        zone = "in-addr.arpa." if case.name.endswith("arpa.") else "cluster.local."
        if zone == "cluster.local.":
            assert_section(msg.authority, SOA_LINE.format(serial=store.serial), "authority")
            owner = msg.authority[0].name.to_text()
            assert owner == case.name[len(case.name) - len(zone) :], "the SOA owner is spelled as the question's zone"
        kept = 0 if case.tail and not cd else 1  # CD is not part of the key: the second ask is a repeat, kept
        assert len(engine.table.entries) == kept, "a negative answer is kept from its second ask"


def test_negative_tail_is_kept_from_the_second_ask_and_then_an_exact_hit() -> None:
    engine, _ = _engine()
    data = _wire("gone.default.svc.cluster.local.")
    for ask, (kept, hits) in enumerate([(0, 0), (1, 0), (1, 1), (1, 2)], 1):
        assert engine.handle(data) == _rendered(engine, data), f"ask {ask}"
        assert (len(engine.table), engine.counters.fast_hits) == (kept, hits), f"ask {ask}"


def test_one_off_names_do_not_evict_hot_names() -> None:
    """A stream of never-repeated names (random labels, NXDOMAIN) leaves the names asked all the time in the
    tables, however small the budget."""
    engine, _ = _engine()
    hot = [_wire("web.default.svc.cluster.local."), _wire("nope.default.svc.cluster.local.")]
    for data in hot * 2:
        engine.handle(data)
    engine.table.entry_budget = engine.table.entry_bytes + 200  # room for less than one more entry
    kept = set(engine.table.entries)
    rnd = random.Random(9)
    for _ in range(3000):
        reply = engine.handle(_wire(f"{rnd.getrandbits(64):016x}.default.svc.cluster.local."))
        assert reply is not None and reply[3] & 0x0F == dns.rcode.NXDOMAIN
    assert set(engine.table.entries) == kept
    hits = engine.counters.fast_hits
    for data in hot:
        engine.handle(data)
    assert engine.counters.fast_hits == hits + 2, "the hot names must still be exact-query hits"


def test_doorkeeper_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "DOORKEEPER", 100)
    engine, _ = _engine()
    for i in range(1000):
        engine.handle(_wire(f"r{i}.default.svc.cluster.local."))
        assert len(engine.table._seen) <= 100


def test_tail_is_never_stale_after_a_store_change() -> None:
    """A name answered NXDOMAIN from the tail exists after the store adds it; the serial is the store's."""
    engine, store = _engine()
    data = _wire("new.default.svc.cluster.local.", edns=0)
    engine.handle(data)  # the tail of the zone is made
    assert engine.table.tails
    store.serial += 100_000  # to the future, so that the clock cannot hide the move
    store.apply([_svc("new", "10.96.0.77"), _slice("new", "10.244.0.77")], [])
    msg = dns.message.from_wire(engine.handle(data))  # type: ignore[arg-type]
    assert dns.rcode.to_text(msg.rcode()) == "NOERROR"
    assert_section(msg.answer, "new.default.svc.cluster.local. 5 IN A 10.96.0.77", "answer")
    other = dns.message.from_wire(engine.handle(_wire("still-gone.default.svc.cluster.local.")))  # type: ignore[arg-type]
    assert_section(other.authority, SOA_LINE.format(serial=store.serial), "authority")


def test_one_off_names_are_counted() -> None:
    engine, _ = _engine()
    for i in range(5):
        engine.handle(_wire(f"once{i}.default.svc.cluster.local."), False, ("127.0.0.1", 5300))
    counted = {k: n for k, n in engine.counts.requests.items() if k.rcode == "NXDOMAIN"}
    assert [(k.link, k.namespace, n) for k, n in counted.items()] == [("cluster", "default", 5)]
    assert set(engine.counts.nxdomain_names.counts) == {f"once{i}.default.svc.cluster.local." for i in range(5)}


# ---------------------------------------------------------------- render.behind


BEHIND = [
    # (question name, limit, fits)
    ("a.cluster.local.", 512, True),
    ("A.B.C.D.cluster.local.", 512, True),
    ("cluster.local.", 512, True),
    ("x" * 63 + "." + "y" * 63 + "." + "z" * 63 + ".cluster.local.", 512, True),
    ("x" * 63 + "." + "y" * 63 + "." + "z" * 63 + ".cluster.local.", 250, False),
]


@pytest.mark.parametrize(("name", "limit", "fits"), BEHIND)
def test_behind_moves_a_zone_reply_behind_a_longer_question(name: str, limit: int, fits: bool) -> None:
    engine, _ = _engine()
    apex = parse_query(_wire("cluster.local.", "TXT", edns=0))
    q = parse_query(_wire(name, "TXT", edns=0))
    ans = engine.chain.resolve(q, QueryContext(None, "udp", 0.0))
    assert isinstance(ans, Answer) and len(ans.authority) == 1
    tail = render(apex, ans, TCP_LIMIT, pointers=True)
    moved = behind(tail, q.key_question, limit)
    if not fits:
        assert moved is None, "a reply over the limit must be rendered (and cut), not moved"
        return
    assert isinstance(moved, Rendered)
    want = render(q, ans, limit)
    assert (moved.data, moved.qname_len, moved.zone_len, moved.serial_at) == (
        want.data,
        want.qname_len,
        want.zone_len,
        want.serial_at,
    )


# ---------------------------------------------------------------- bounded by bytes, not by a count


def test_table_holds_more_than_the_old_count_bound_when_the_bytes_allow() -> None:
    table = FastTable()
    r = Rendered(bytes(40), 10, 0, (), -1)
    for i in range(60_000):
        table.put(i.to_bytes(4, "big"), r, frozenset())
    assert len(table) == 60_000, "a count bound dropped entries the byte budget had room for"
    table.entry_budget = table.entry_bytes // 2
    table.put(b"one more", r, frozenset())
    assert table.entry_bytes <= table.entry_budget and len(table) < 31_000


# ---------------------------------------------------------------- the top NXDOMAIN names


class _Naive:
    """Space-Saving as the paper writes it: a scan for the smallest counter."""

    def __init__(self, size: int) -> None:
        self.size, self.counts = size, dict[str, int]()

    def add(self, name: str, n: int) -> None:
        if name in self.counts:
            self.counts[name] += n
        elif len(self.counts) < self.size:
            self.counts[name] = n
        else:
            smallest = min(self.counts, key=self.counts.__getitem__)
            self.counts[name] = self.counts.pop(smallest) + n


@pytest.mark.parametrize("size", [1, 3, 20, 100])
@pytest.mark.parametrize("skew", [0.8, 1.2, 3.0])
def test_space_saving_keeps_the_counts_of_the_scan(size: int, skew: float) -> None:
    rnd = random.Random(size * 10 + int(skew * 10))
    fast, naive = SpaceSaving(size), _Naive(size)
    for _ in range(3000):
        name, n = f"n{int(rnd.paretovariate(skew)) % 300}", rnd.randint(1, 3)
        fast.add(name, n)
        naive.add(name, n)
        assert len(fast.counts) <= size
    # Ties may evict another name of the same count; the counts themselves are the algorithm's.
    assert sorted(fast.counts.values()) == sorted(naive.counts.values())
    top = max(naive.counts.values())
    assert fast.top(1)[0][1] == top

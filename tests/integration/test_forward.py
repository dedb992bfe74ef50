"""Forwarding (issue 6 section 3), through real sockets: dnsd in-process, upstreams on loopback only.

Two kinds of upstream: NSD (a real authoritative server the test starts on 127.0.0.1 with
tests/data/forward/example.test.zone) for the answers themselves, and FakeUpstream, a scripted UDP+TCP server in
this process, for what a real server will not do on purpose: silence, delay, SERVFAIL, REFUSED, garbage,
TC then the answer over TCP, a wrong ID / question / source address before the right reply. The first label of
the query name picks the behaviour (`drop.x.test.`), or `force` sets one for every query. Every fake records
what it received, so tests assert what dnsd sent (IDs, source ports, the question as asked) and what it did not.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from support import (
    FIXTURE_CLUSTER,
    DnsdHandle,
    assert_section,
    base_config,
    make_query,
    query,
    rcode_text,
    run_dnsd,
    wait_until,
)
from support.nsd import free_port
from support.scripted import LoopbackServer

from dnsd.forward.link import Forwarder
from dnsd.upstream import client as upstream_client

EVIL = "192.0.2.66"  # what every spoofed reply carries: it must never reach a client
SPOOF_HOST = "127.0.0.2"
TIMEOUT = 0.3  # forward.timeout in these tests: short, so the failure cases stay fast


# ---------------------------------------------------------------- the scripted upstream


@dataclass(frozen=True)
class Seen:
    transport: str
    qid: int
    sport: int
    qname: str  # as received, case kept
    qtype: str


BEHAVIOURS = {
    "tcgarbage",
    "ok",
    "nx",
    "drop",
    "slow",
    "servfail",
    "refused",
    "garbage",
    "tc",
    "wrongid",
    "wrongq",
    "othersrc",
}


class FakeUpstream(LoopbackServer):
    """A scripted upstream on 127.0.0.1 (UDP and TCP on one port) with a spoofing socket on 127.0.0.2. Answers
    A with 192.0.2.<tag>, so a test sees which upstream answered."""

    def __init__(self, tag: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tag = tag
        self.force: str | None = None
        self.delay = 1.0
        self.seen: list[Seen] = []
        super().__init__(host, port, name=f"fake-upstream-{tag}")

    async def started(self) -> None:
        self.spoof, _ = await self.loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(SPOOF_HOST, 0))
        self.extra.append(self.spoof)

    def queries(self, qtype: str | None = None, transport: str | None = None) -> list[Seen]:
        return [
            s for s in list(self.seen) if (qtype is None or s.qtype == qtype) and (transport in (None, s.transport))
        ]

    def behaviour(self, qname: dns.name.Name) -> str:
        if self.force is not None:
            return self.force
        first = qname.labels[0].decode().lower() if qname.labels and qname.labels[0] else ""
        return first if first in BEHAVIOURS else "ok"

    def answer(self, q: dns.message.Message, address: str | None = None) -> bytes:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        question = q.question[0]
        if question.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address or f"192.0.2.{self.tag}"))
        elif question.rdtype == dns.rdatatype.PTR:
            r.answer.append(dns.rrset.from_text(question.name, 60, "IN", "PTR", f"fake{self.tag}.example."))
        return r.to_wire()

    def plan(self, q: dns.message.Message, tcp: bool) -> list[tuple[str, bytes, float]]:
        """What to send back: (socket, bytes, delay)."""
        what = self.behaviour(q.question[0].name)
        if what == "drop":
            return []
        if what == "garbage" or (what == "tcgarbage" and tcp):
            # The right ID and QR, so it passes the cheap checks, then bytes no parser accepts.
            return [("main", q.id.to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00" + b"\xff" * 30, 0)]
        if what in ("servfail", "refused", "nx"):
            r = dns.message.make_response(q)
            r.set_rcode({"servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED, "nx": dns.rcode.NXDOMAIN}[what])
            return [("main", r.to_wire(), 0)]
        if what == "slow":
            return [("main", self.answer(q), self.delay)]
        if tcp:
            return [("main", self.answer(q), 0)]
        if what in ("tc", "tcgarbage"):
            r = dns.message.make_response(q)
            r.flags |= dns.flags.TC
            return [("main", r.to_wire(), 0)]
        if what == "wrongid":
            bad = dns.message.from_wire(self.answer(q, EVIL))
            bad.id = q.id ^ 0x5A5A
            return [("main", bad.to_wire(), 0), ("main", self.answer(q), 0.05)]
        if what == "wrongq":
            other = dns.message.make_query("evil.example.", "A")
            other.id = q.id
            return [("main", self.answer(other, EVIL), 0), ("main", self.answer(q), 0.05)]
        if what == "othersrc":
            return [("spoof", self.answer(q, EVIL), 0), ("main", self.answer(q), 0.05)]
        return [("main", self.answer(q), 0)]

    def record(self, transport: str, data: bytes, sport: int) -> dns.message.Message | None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return None
        qs = q.question[0]
        if qs.name.labels[-2:] == (b"dnsd-loop", b""):
            return q  # dnsd's forwarding-loop probe at start (dnsd.forward.link): answered, not counted
        self.seen.append(Seen(transport, q.id, sport, qs.name.to_text(), dns.rdatatype.to_text(qs.rdtype)))
        return q

    def on_stream(self, data: bytes, peer: Any) -> list[tuple[bytes, float]] | None:
        q = self.record("tcp", data, peer[1])
        if q is None:
            return None  # not DNS: close the connection
        return [(wire, delay) for _via, wire, delay in self.plan(q, tcp=True)]

    def on_datagram(self, data: bytes, addr: Any) -> None:
        q = self.record("udp", data, addr[1])
        if q is None:
            return
        for via, wire, delay in self.plan(q, tcp=False):
            sock = self.udp if via == "main" else self.spoof
            self.loop.call_later(delay, sock.sendto, wire, addr)


@pytest.fixture()
def fakes() -> Iterator[list[FakeUpstream]]:
    started = [FakeUpstream(tag) for tag in (1, 2, 3)]
    yield started
    for fake in started:
        fake.stop()


# ---------------------------------------------------------------- NSD, a real upstream


# ---------------------------------------------------------------- dnsd forwarding to them


@pytest.fixture()
def forwarding(dnsd_factory: Callable[..., DnsdHandle]) -> Callable[..., DnsdHandle]:
    """forwarding(upstreams, **forward_options, allow=[...], cluster={...}) -> a dnsd that forwards to them."""

    def make(
        upstreams: list[str],
        *,
        allow: list[str] | None = None,
        cluster: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
        **forward: Any,
    ) -> DnsdHandle:
        cfg = base_config(FIXTURE_CLUSTER, **(cluster or {}))
        cfg["recursion"] = "forward"
        cfg["forward"] = {"upstreams": upstreams, "timeout": TIMEOUT, **forward}
        # No cache unless a test asks: these tests are about the forwarder, so every query must reach it (the
        # cache has its own, test_cache.py).
        cfg["cache"] = cache if cache is not None else {"size": 0}
        cfg["allow_recursion"] = allow if allow is not None else ["127.0.0.1/32"]
        return dnsd_factory(config=cfg)

    return make


def forwarder(handle: DnsdHandle) -> Forwarder:
    fwd = handle.app.forwarder
    assert isinstance(fwd, Forwarder)
    return fwd


def answer_ips(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


# ---------------------------------------------------------------- through a real upstream


@dataclass(frozen=True)
class NsdCase:
    id: str
    name: str
    rdtype: str
    rcode: str
    answer: str  # zone-file text
    authority_types: tuple[str, ...] = ()
    tcp: bool = False


NSD_CASES = [
    NsdCase("a", "www.example.test.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10"),
    NsdCase("aaaa", "www.example.test.", "AAAA", "NOERROR", "www.example.test. 300 IN AAAA 2001:db8::10"),
    NsdCase(
        "cname",
        "alias.example.test.",
        "A",
        "NOERROR",
        "alias.example.test. 300 IN CNAME www.example.test.\nwww.example.test. 300 IN A 192.0.2.10",
    ),
    NsdCase("mx", "mail.example.test.", "MX", "NOERROR", "mail.example.test. 300 IN MX 10 www.example.test."),
    NsdCase("nxdomain", "absent.example.test.", "A", "NXDOMAIN", "", ("SOA",)),
    NsdCase("nodata", "www.example.test.", "TXT", "NOERROR", "", ("SOA",)),
    NsdCase("mixed-case", "WwW.ExAmPlE.TeSt.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10"),
    NsdCase("tcp", "www.example.test.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10", tcp=True),
]


@pytest.mark.parametrize("case", NSD_CASES, ids=[c.id for c in NSD_CASES])
def test_forwards_through_nsd(forwarding: Callable[..., DnsdHandle], nsd: str, case: NsdCase) -> None:
    h = forwarding([nsd])
    msg = query(h, case.name, case.rdtype, tcp=case.tcp)
    assert rcode_text(msg) == case.rcode
    assert_section(msg.answer, case.answer, "answer")
    assert tuple(dns.rdatatype.to_text(r.rdtype) for r in msg.authority) == case.authority_types
    assert msg.flags & dns.flags.RA, "a forwarded answer says recursion is available"
    assert not msg.flags & dns.flags.AA, "a forwarded answer is never authoritative (RFC 1035 4.1.1)"
    assert msg.question[0].name.to_text() == case.name, "the question is echoed as asked"


@dataclass(frozen=True)
class SizeCase:
    id: str
    edns: int | None
    tcp: bool
    truncated: bool
    records: int  # TXT records in the answer
    opt: bool


SIZE_CASES = [
    SizeCase("no-edns-udp", None, False, True, -1, False),
    SizeCase("edns-udp", 0, False, False, 30, True),
    SizeCase("no-edns-tcp", None, True, False, 30, False),
]


@pytest.mark.parametrize("case", SIZE_CASES, ids=[c.id for c in SIZE_CASES])
def test_reply_size_follows_the_client(forwarding: Callable[..., DnsdHandle], nsd: str, case: SizeCase) -> None:
    """The upstream answer is ~1 KB: a client without EDNS gets at most 512 octets with TC and no OPT
    (RFC 1035 4.2.1, RFC 6891 7); our OPT, never the upstream's, goes to an EDNS client."""
    h = forwarding([nsd])
    q = dns.message.make_query("big.example.test.", "TXT", use_edns=case.edns if case.edns is not None else False)
    sock_kind = socket.SOCK_STREAM if case.tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_kind) as s:
        s.settimeout(3)
        s.connect(h.addr)
        data = q.to_wire()
        if case.tcp:
            s.sendall(len(data).to_bytes(2, "big") + data)
            size = int.from_bytes(_recv_exact(s, 2), "big")
            raw = _recv_exact(s, size)
        else:
            s.send(data)
            raw = s.recv(65535)
    msg = dns.message.from_wire(raw)
    assert bool(msg.flags & dns.flags.TC) == case.truncated
    assert (msg.opt is not None) == case.opt
    if case.truncated:
        assert len(raw) <= 512
    else:
        assert sum(len(r) for r in msg.answer) == case.records
    if msg.opt is not None:
        assert msg.payload == 1232, "our OPT (payload 1232), not the upstream's"


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_query_log_names_the_forward_link(
    forwarding: Callable[..., DnsdHandle], nsd: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = forwarding([nsd])
    caplog.set_level(logging.INFO, logger="dnsd.query")
    h.call(lambda: setattr(h.app.engine, "log_queries", True))
    assert rcode_text(query(h, "www.example.test.")) == "NOERROR"
    line = wait_until(
        lambda: next((r.getMessage() for r in caplog.records if "www.example.test." in r.getMessage()), None)
    )
    assert " NOERROR forward " in line, line


# ---------------------------------------------------------------- policy, failover, health


def _counts(fakes: list[FakeUpstream]) -> list[int]:
    return [len(f.queries("A")) for f in fakes]


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        ("sequential", lambda c: c == [12, 0, 0]),
        ("round_robin", lambda c: c == [4, 4, 4]),
        ("random", lambda c: sum(c) == 12 and all(n > 0 for n in c) and max(c) < 12),
    ],
    ids=["sequential", "round_robin", "random"],
)
def test_policy_orders_the_upstreams(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], policy: str, check: Callable[[list[int]], bool]
) -> None:
    h = forwarding([f.addr for f in fakes], policy=policy)
    for i in range(12):
        assert rcode_text(query(h, f"n{i}.policy.test.")) == "NOERROR"
    # random: the chance that one of three upstreams gets none of 12 queries is 3 * (2/3)^12, about 2 %; so the
    # random case asks for more before it judges.
    if policy == "random" and not check(_counts(fakes)):
        for i in range(12, 60):
            query(h, f"n{i}.policy.test.")
        counts = _counts(fakes)
        assert sum(counts) == 60 and all(n > 0 for n in counts), counts
        return
    assert check(_counts(fakes)), _counts(fakes)


@pytest.mark.parametrize("failure", ["drop", "servfail", "refused", "garbage", "tcgarbage"])
def test_failover_to_the_next_upstream(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], failure: str
) -> None:
    first, second = fakes[0], fakes[1]
    first.force = failure
    h = forwarding([first.addr, second.addr])
    msg = query(h, "www.failover.test.")
    assert rcode_text(msg) == "NOERROR"
    assert answer_ips(msg) == ["192.0.2.2"], "the second upstream's answer, never the failed one's"
    assert len(first.queries("A", "udp")) == 1 and len(second.queries("A")) == 1
    assert len(first.queries("A", "tcp")) == (1 if failure == "tcgarbage" else 0), "TC: the TCP retry"


@pytest.mark.parametrize("failure", ["drop", "servfail", "refused", "garbage"])
def test_all_upstreams_fail_servfail_within_the_bound(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], failure: str
) -> None:
    for f in fakes[:2]:
        f.force = failure
    h = forwarding([f.addr for f in fakes[:2]])
    started = time.monotonic()
    msg = query(h, "www.allfail.test.", timeout=5)
    elapsed = time.monotonic() - started
    assert rcode_text(msg) == "SERVFAIL", "all upstreams failed: SERVFAIL, never NXDOMAIN or their rcode"
    assert msg.flags & dns.flags.RA, "a resolver's SERVFAIL still says recursion is available"
    assert elapsed < TIMEOUT * 2 + 0.5, f"bounded by timeout x upstreams: took {elapsed:.2f} s"
    assert [len(f.queries("A")) for f in fakes[:2]] == [1, 1]


def test_down_upstream_is_tried_last_and_probed_back_up(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream]
) -> None:
    bad, good = fakes[0], fakes[1]
    bad.force = "drop"
    h = forwarding([bad.addr, good.addr])
    fwd = forwarder(h)
    for i in range(2):  # MAX_FAILS timeouts in a row
        assert answer_ips(query(h, f"d{i}.health.test.")) == ["192.0.2.2"]
    assert h.call(lambda: fwd.upstream(bad.addr).down)
    wait_until(lambda: len(bad.queries("NS")) >= 2)  # the probe asks `. NS` again and again
    assert all(s.qname == "." for s in bad.queries("NS"))
    before = len(bad.queries("A"))
    assert answer_ips(query(h, "d9.health.test.")) == ["192.0.2.2"]
    assert len(bad.queries("A")) == before, "a down upstream is tried last, not first"
    bad.force = None  # it answers again: the next probe brings it back
    wait_until(lambda: not h.call(lambda: fwd.upstream(bad.addr).down))
    assert answer_ips(query(h, "back.health.test.")) == ["192.0.2.1"]
    assert h.call(lambda: len(fwd._probes)) == 0, "the probe task ended"


def test_inflight_cap_sheds_with_servfail(forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream]) -> None:
    slow = fakes[0]
    slow.force = "slow"
    slow.delay = TIMEOUT * 0.8
    h = forwarding([slow.addr])
    fwd = forwarder(h)
    h.call(lambda: setattr(fwd, "max_concurrent", 2))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(h.addr)
        s.settimeout(3)
        for i in range(2):
            q = make_query(f"w{i}.cap.test.")
            q.id = 100 + i
            s.send(q.to_wire())
        wait_until(lambda: h.call(lambda: fwd.inflight) == 2)
        q = make_query("over.cap.test.")
        q.id = 199
        s.send(q.to_wire())
        first = dns.message.from_wire(s.recv(65535))
        assert (first.id, rcode_text(first)) == (199, "SERVFAIL"), "overflow is answered at once"
        rest = sorted((m.id, rcode_text(m)) for m in (dns.message.from_wire(s.recv(65535)) for _ in range(2)))
        assert rest == [(100, "NOERROR"), (101, "NOERROR")]
    assert not any(s.qname == "over.cap.test." for s in slow.seen), "a shed query never reaches an upstream"
    assert h.call(lambda: fwd.shed) == 1


def test_ipv6_upstream(forwarding: Callable[..., DnsdHandle]) -> None:
    try:
        fake = FakeUpstream(6, host="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        h = forwarding([f"[::1]:{fake.port}"])
        assert answer_ips(query(h, "www.v6.test.")) == ["192.0.2.6"]
        assert answer_ips(query(h, "tc.v6.test.")) == ["192.0.2.6"]
        assert [s.transport for s in fake.queries("A")] == ["udp", "udp", "tcp"]
    finally:
        fake.stop()


# ---------------------------------------------------------------- stubs


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("x.other.test.", 1),
        ("x.corp.test.", 2),
        ("corp.test.", 2),
        ("a.b.deep.corp.test.", 3),
        ("deep.corp.test.", 3),
        ("x.notcorp.test.", 1),  # a suffix match is label by label
        ("X.DEEP.Corp.Test.", 3),
    ],
)
def test_stub_most_specific_suffix_wins(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], name: str, tag: int
) -> None:
    h = forwarding([fakes[0].addr], domains={"corp.test": [fakes[1].addr], "deep.corp.test": [fakes[2].addr]})
    assert answer_ips(query(h, name)) == [f"192.0.2.{tag}"]
    assert [len(f.queries("A")) for f in fakes] == [1 if f.tag == tag else 0 for f in fakes]


# ---------------------------------------------------------------- who may recurse, what is never forwarded


def _query_from(source: str, h: DnsdHandle, name: str) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        s.sendto(make_query(name).to_wire(), h.addr)
        return dns.message.from_wire(s.recv(65535))


@pytest.mark.parametrize(
    ("source", "allow", "rcode", "forwarded"),
    [
        ("127.0.0.1", ["127.0.0.1/32"], "NOERROR", True),
        ("127.0.0.2", ["127.0.0.1/32"], "REFUSED", False),
        ("127.0.0.2", ["127.0.0.0/8"], "NOERROR", True),
        ("127.0.0.1", [], "REFUSED", False),
    ],
)
def test_allow_recursion(
    forwarding: Callable[..., DnsdHandle],
    fakes: list[FakeUpstream],
    source: str,
    allow: list[str],
    rcode: str,
    forwarded: bool,
) -> None:
    h = forwarding([fakes[0].addr], allow=allow)
    assert rcode_text(_query_from(source, h, "www.allow.test.")) == rcode
    assert bool(fakes[0].seen) == forwarded
    # Cluster names are answered whoever asks: allow_recursion is about names we are not authoritative for.
    assert rcode_text(_query_from(source, h, "kubernetes.default.svc.cluster.local.")) == "NOERROR"


@dataclass(frozen=True)
class ChainCase:
    id: str
    fallthrough: tuple[str, ...]
    name: str
    rdtype: str
    rcode: str
    forwarded: bool


KUBERNETES = "kubernetes.default.svc.cluster.local."
CHAIN_CASES = [
    ChainCase("cluster-name", (), "kubernetes.default.svc.cluster.local.", "A", "NOERROR", False),
    ChainCase("cluster-nxdomain", (), "nosuch.default.svc.cluster.local.", "A", "NXDOMAIN", False),
    ChainCase("reverse-nxdomain", (), "1.2.0.192.in-addr.arpa.", "PTR", "NXDOMAIN", False),
    ChainCase("fallthrough-reverse", ("in-addr.arpa",), "1.2.0.192.in-addr.arpa.", "PTR", "NOERROR", True),
    ChainCase("fallthrough-cluster", ("cluster.local",), "nosuch.default.svc.cluster.local.", "A", "REFUSED", False),
    ChainCase("fallthrough-live", ("cluster.local",), KUBERNETES, "A", "NOERROR", False),
    ChainCase("outside", (), "www.example.org.", "A", "NOERROR", True),
]


@pytest.mark.parametrize("case", CHAIN_CASES, ids=[c.id for c in CHAIN_CASES])
def test_cluster_names_are_never_forwarded(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], case: ChainCase
) -> None:
    """The cluster link answers first; only a NXDOMAIN of a zone that cluster.fallthrough names reaches the
    forwarder, and the cluster domain itself is never forwarded even then (REFUSED: no upstream data for it)."""
    h = forwarding([fakes[0].addr], cluster={"fallthrough": list(case.fallthrough)})
    msg = query(h, case.name, case.rdtype)
    assert rcode_text(msg) == case.rcode
    assert bool(fakes[0].seen) == case.forwarded
    if case.forwarded and case.rdtype == "PTR":
        assert_section(msg.answer, f"{case.name} 60 IN PTR fake1.example.", "answer")


@pytest.mark.parametrize(("recursion", "forward"), [("off", {"upstreams": ["127.0.0.1:9"]}), ("forward", None)])
def test_no_forward_link_when_off(recursion: str, forward: dict[str, Any] | None) -> None:
    cfg = base_config(FIXTURE_CLUSTER)
    cfg["recursion"] = recursion
    cfg["forward"] = forward
    h = run_dnsd(cfg)
    try:
        assert h.app.forwarder is None
        assert rcode_text(query(h, "www.example.org.")) == "REFUSED"
    finally:
        h.stop()


# ---------------------------------------------------------------- RFC 5452: what we send, what we accept


@pytest.mark.parametrize("behaviour", ["wrongid", "wrongq", "othersrc"])
def test_spoofed_replies_are_ignored(
    forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream], behaviour: str
) -> None:
    h = forwarding([fakes[0].addr])
    ignored = upstream_client.STATS.ignored
    msg = query(h, f"{behaviour}.spoof.test.")
    assert answer_ips(msg) == ["192.0.2.1"], f"the right reply, not the spoofed {EVIL}"
    if behaviour != "othersrc":
        # From another source the kernel itself drops it: the upstream socket is connected to the server.
        assert upstream_client.STATS.ignored > ignored
    assert len(fakes[0].queries("A")) == 1, "ignored while still waiting, no second query"


def test_truncated_reply_is_retried_over_tcp(forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream]) -> None:
    h = forwarding([fakes[0].addr])
    msg = query(h, "tc.trunc.test.")
    assert answer_ips(msg) == ["192.0.2.1"] and not msg.flags & dns.flags.TC
    udp, tcp = fakes[0].queries("A", "udp"), fakes[0].queries("A", "tcp")
    assert len(udp) == 1 and len(tcp) == 1
    assert udp[0].qid != tcp[0].qid, "a fresh ID for the TCP retry"


def test_ids_ports_and_question_as_asked(forwarding: Callable[..., DnsdHandle], fakes: list[FakeUpstream]) -> None:
    h = forwarding([fakes[0].addr])
    client_ids = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(h.addr)
        s.settimeout(3)
        for i in range(30):
            q = make_query(f"Q{i}.MiXeD.Test.")
            q.id = 7 + i
            client_ids.append(q.id)
            s.send(q.to_wire())
            assert dns.message.from_wire(s.recv(65535)).id == q.id
    seen = fakes[0].queries("A")
    assert [s.qname for s in seen] == [f"Q{i}.MiXeD.Test." for i in range(30)], "the question as the client spelled it"
    ids = [s.qid for s in seen]
    # Random upstream IDs may equal the client's by chance (1 in 65,536 each); copied IDs would match all 30.
    assert sum(a == b for a, b in zip(ids, client_ids, strict=True)) <= 1, "the client's ID is not reused upstream"
    assert len(set(ids)) >= 29, ids
    ports = [s.sport for s in seen]
    assert len(set(ports)) >= 25, f"source ports must spread (RFC 5452 9.2): {ports}"


# ---------------------------------------------------------------- resolv.conf


def test_resolv_conf_upstreams_skip_our_own_address(tmp_path: Path) -> None:
    """A resolv.conf the test writes: our own address is skipped, the other nameserver (a fake on port 53 of a
    loopback address, so the test needs root) answers."""
    try:
        fake = FakeUpstream(7, host="127.0.0.47", port=53)
    except (OSError, PermissionError) as exc:
        pytest.skip(f"cannot listen on 127.0.0.47:53: {exc}")
    try:
        conf = tmp_path / "resolv.conf"
        conf.write_text(
            "# written by the test\nsearch default.svc.cluster.local\nnameserver 127.0.0.46\n"
            "nameserver 127.0.0.47\noptions ndots:5\n"
        )
        cfg = base_config(FIXTURE_CLUSTER)
        cfg.update(
            {
                "recursion": "forward",
                "forward": {"upstreams": [str(conf)], "timeout": TIMEOUT},
                "allow_recursion": ["127.0.0.0/8"],
                "listen": ["127.0.0.46:53"],
            }
        )
        h = run_dnsd(cfg)
        try:
            assert forwarder(h).servers == [upstream_client.Server("127.0.0.47", 53)]
            assert answer_ips(query(h, "www.resolv.test.")) == ["192.0.2.7"]
        finally:
            h.stop()
    finally:
        fake.stop()


def test_dead_upstream_fails_at_once_not_at_the_timeout(forwarding: Callable[..., DnsdHandle]) -> None:
    """Nothing listens on the upstream's port: the ICMP port unreachable reaches the connected upstream socket,
    so the try fails at once (as Unbound's does), not after forward.timeout."""
    dead = f"127.0.0.1:{free_port()}"
    h = forwarding([dead], timeout=5.0)
    started = time.monotonic()
    assert rcode_text(query(h, "www.example.org.", timeout=6)) == "SERVFAIL"
    assert time.monotonic() - started < 2.5, "failed at the ICMP error, not after the 5 s per-try timeout"

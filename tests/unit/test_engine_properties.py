"""Property tests of Engine.handle (the function both transports call): whatever arrives, the reply obeys the
invariants of RFC 8906 (a reply to every well-formed header), and nothing raises."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fastpath import _engine

from dnsd.engine.engine import Engine

ENGINE: Engine = _engine()[0]
RCODES = {0, 1, 2, 3, 4, 5, 16}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(
    [
        "web.default.svc.cluster.local.",
        "WeB.DeFault.svc.Cluster.LOCAL.",
        "_http._tcp.web.default.svc.cluster.local.",
        "nope.default.svc.cluster.local.",
        "20.0.96.10.in-addr.arpa.",
        "cluster.local.",
        "example.com.",
        ".",
    ]
)
LABEL = st.binary(min_size=1, max_size=63)
RANDOM_NAMES = st.lists(LABEL, max_size=6).map(
    lambda labels: dns.name.Name([*labels, b""]) if sum(len(x) + 1 for x in labels) < 255 else dns.name.root
)
OPTIONS = st.lists(
    st.builds(
        dns.edns.GenericOption,
        st.integers(0, 65535).filter(lambda c: c not in (8, 10, 11, 12, 14, 15)),  # strictly parsed codes aside
        st.binary(max_size=40),
    ),
    max_size=3,
)


def _query(
    name: dns.name.Name | str, rdtype: int, qid: int, edns: int | None, payload: int, options: list[dns.edns.Option]
) -> bytes:
    if edns is None:  # (giving make_query a payload or options would turn EDNS on)
        q = dns.message.make_query(name, rdtype)
    else:
        q = dns.message.make_query(name, rdtype, use_edns=edns, payload=max(payload, 512), options=options or None)
    q.id = qid
    wire = q.to_wire()
    if edns is not None and payload < 512:  # make_query floors the payload: patch the OPT class by hand
        opt_at = 12 + len(q.question[0].name.to_wire()) + 4  # the OPT RR follows the question: owner, type, class
        assert wire[opt_at : opt_at + 3] == b"\x00\x00\x29"
        wire = wire[: opt_at + 3] + struct.pack("!H", payload) + wire[opt_at + 5 :]
    return wire


@SETTINGS
@given(
    name=st.one_of(NAMES, RANDOM_NAMES),
    rdtype=st.integers(1, 65535).filter(lambda t: t not in (41, 251, 252)),
    qid=st.integers(0, 65535),
    edns=st.one_of(st.none(), st.integers(0, 3)),
    payload=st.integers(0, 65535),
    options=OPTIONS,
    tcp=st.booleans(),
)
def test_well_formed_queries_keep_the_invariants(
    name: dns.name.Name | str,
    rdtype: int,
    qid: int,
    edns: int | None,
    payload: int,
    options: list[dns.edns.Option],
    tcp: bool,
) -> None:
    wire = _query(name, rdtype, qid, edns, payload, options)
    reply = ENGINE.handle(wire, tcp)
    assert reply is not None, "every well-formed query is answered (RFC 8906)"
    assert reply[:2] == wire[:2], "ID echoed"
    assert reply[2] & 0x80, "QR set"
    assert not reply[3] & 0x20, "AD never set"
    limit = 65535 if tcp else (512 if edns is None else min(max(payload, 512), 1232))
    assert len(reply) <= limit
    msg = dns.message.from_wire(reply)
    assert (msg.edns >= 0) == (edns is not None), "OPT in the reply iff the query had one"
    assert msg.rcode() in RCODES
    opt_len = 11 + sum(4 + len(o.to_wire() or b"") for o in options) if edns is not None else 0
    qlen = len(wire) - 12 - opt_len
    if edns is not None and edns > 0:
        assert msg.rcode() == dns.rcode.BADVERS and not msg.answer and not msg.authority
    else:
        assert reply[12 : 12 + qlen] == wire[12 : 12 + qlen], "question echoed byte for byte"
        if not msg.flags & dns.flags.TC:
            assert ENGINE.handle(wire, tcp) == reply, "the same query twice gives the same answer"


@SETTINGS
@given(data=st.binary(max_size=600), tcp=st.booleans())
def test_random_bytes_never_raise(data: bytes, tcp: bool) -> None:
    reply = ENGINE.handle(data, tcp)
    if len(data) < 12 or data[2] & 0x80:
        assert reply is None, "no reply to a short message or to a response"
    else:
        assert reply is not None and reply[:2] == data[:2] and reply[2] & 0x80


@SETTINGS
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 80)),
)
def test_damaged_queries_never_raise(flips: list[tuple[int, int]], cut: int | None) -> None:
    wire = bytearray(_query("_http._tcp.web.default.svc.cluster.local.", 33, 7, 0, 1232, []))
    for pos, bit in flips:
        wire[pos % len(wire)] ^= 1 << bit
    data = bytes(wire[:cut] if cut is not None else wire)
    reply = ENGINE.handle(data, False)
    if reply is not None:
        assert reply[:2] == data[:2] and reply[2] & 0x80
        assert len(reply) <= 1232
    assert ENGINE.counters.servfail_internal == 0, "no internal error"

"""EDNS(0) per RFC 6891 and UDP truncation (RFC 6891 6.1-7; RFC 2181 9 for TC).

Queries are built with struct so that bad OPT records can be sent; replies are checked both on
the wire (the OPT record's exact fields and position) and through dnspython (the records).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest
from support import DnsdHandle, base_config, run_dnsd, zone_lines
from support.rawdns import (
    AA,
    AAAA,
    AD,
    BADVERS,
    BIG,
    CD,
    CH,
    COOKIE,
    DO,
    ECS,
    EXPIRE,
    FORMERR,
    IN,
    NOERROR,
    NSID,
    NXDOMAIN,
    OPT,
    QR,
    RD,
    REFUSED,
    SOA,
    TC,
    WEB,
    WEB_A,
    ZONE_SOA,
    A,
    assert_records,
    header,
    lines,
    opt_rr,
    option,
    question,
    rcode_name,
    tcp_exchange,
    udp_exchange,
    wire_name,
)
from support.rawdns import PROTOCOL_MANIFESTS as MANIFESTS

APEX = "cluster.local."
MID = "mid.default.svc.cluster.local."
# tests/data/protocol: `big` has 200 ready endpoints 10.1.0.1-200, `mid` 40 endpoints 10.2.0.1-40
BIG_A = "\n".join(f"big.default.svc.cluster.local. 5 IN A 10.1.0.{i}" for i in range(1, 201))
MID_A = "\n".join(f"mid.default.svc.cluster.local. 5 IN A 10.2.0.{i}" for i in range(1, 41))

OUR_PAYLOAD = 1232


# ---------------------------------------------------------------- building


def build(
    name: str,
    qtype: int = A,
    *,
    opts: list[bytes] | None = None,
    flags: int = 0,
    qclass: int = IN,
    qid: int | None = None,
) -> bytes:
    """A query with zero, one or several raw OPT (or other) records in the additional section."""
    extra = opts or []
    qid = secrets.randbelow(0x10000) if qid is None else qid
    return header(qid, flags, ar=len(extra)) + question(name, qtype, qclass) + b"".join(extra)


# ---------------------------------------------------------------- reading replies on the wire


@dataclass(frozen=True)
class RawRR:
    section: int  # 1 answer, 2 authority, 3 additional
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    start: int
    end: int


@dataclass(frozen=True)
class Wire:
    raw: bytes
    qid: int
    flags: int
    counts: tuple[int, int, int, int]
    rrs: list[RawRR]

    @property
    def opts(self) -> list[RawRR]:
        return [r for r in self.rrs if r.rtype == OPT]

    @property
    def opt(self) -> RawRR | None:
        opts = self.opts
        assert len(opts) <= 1, "more than one OPT record in the reply"
        return opts[0] if opts else None

    @property
    def rcode(self) -> int:
        """The full rcode: header bits plus the OPT extended bits (RFC 6891 6.1.3)."""
        ext = (self.opt.ttl >> 24) if self.opt else 0
        return (ext << 4) | (self.flags & 0xF)

    @property
    def edns_version(self) -> int:
        assert self.opt is not None
        return (self.opt.ttl >> 16) & 0xFF

    @property
    def edns_flags(self) -> int:
        assert self.opt is not None
        return self.opt.ttl & 0xFFFF

    @property
    def options(self) -> list[tuple[int, bytes]]:
        assert self.opt is not None
        out, data = [], self.opt.rdata
        while data:
            assert len(data) >= 4, "truncated option in the reply's OPT"
            code, n = struct.unpack("!HH", data[:4])
            assert len(data) >= 4 + n, "option length past the end in the reply's OPT"
            out.append((code, data[4 : 4 + n]))
            data = data[4 + n :]
        return out


def _skip_name(buf: bytes, off: int) -> int:
    while True:
        n = buf[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def parse_wire(reply: bytes) -> Wire:
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", reply[:12])
    off = 12
    for _ in range(qd):
        off = _skip_name(reply, off) + 4
    rrs: list[RawRR] = []
    for section, count in ((1, an), (2, ns), (3, ar)):
        for _ in range(count):
            start = off
            off = _skip_name(reply, off)
            rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", reply[off : off + 10])
            off += 10
            rrs.append(RawRR(section, rtype, rclass, ttl, reply[off : off + rdlen], start, off + rdlen))
            off += rdlen
    assert off == len(reply), f"reply has {len(reply) - off} octets after its last record"
    return Wire(reply, qid, flags, (qd, an, ns, ar), rrs)


# ---------------------------------------------------------------- sockets


def exchange(addr: tuple[str, int], packet: bytes, tcp: bool = False, timeout: float = 2.0) -> bytes:
    reply = (tcp_exchange if tcp else udp_exchange)(addr, packet, timeout)
    assert reply is not None, "no reply (RFC 8906: every query with a readable header is answered)"
    assert reply[:2] == packet[:2], "ID not echoed"
    return reply


def assert_canary(addr: tuple[str, int]) -> None:
    reply = exchange(addr, build(WEB))
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.NOERROR
    assert_records(msg.answer, WEB_A, "canary answer")


@pytest.fixture(scope="module")
def server() -> Iterator[DnsdHandle]:
    handle = run_dnsd(base_config(MANIFESTS))
    yield handle
    handle.stop()


# ---------------------------------------------------------------- E1: OPT presence


@dataclass(frozen=True)
class Presence:
    name: str
    qname: str
    qtype: int
    qclass: int
    rcode: int


PRESENCE_CASES = [
    Presence("positive", WEB, A, IN, NOERROR),
    Presence("apex SOA", APEX, SOA, IN, NOERROR),
    Presence("NODATA", WEB, AAAA, IN, NOERROR),
    Presence("NXDOMAIN", "nope.default.svc.cluster.local.", A, IN, NXDOMAIN),
    Presence("REFUSED, out of zone", "www.example.com.", A, IN, REFUSED),
    Presence("REFUSED, class CH", WEB, A, CH, REFUSED),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("edns", [False, True], ids=["no-edns", "edns0"])
@pytest.mark.parametrize("case", PRESENCE_CASES, ids=lambda c: c.name)
def test_opt_in_reply_iff_in_query(server: DnsdHandle, case: Presence, edns: bool, tcp: bool) -> None:
    """RFC 6891 7: no OPT in the request, no OPT in the response; otherwise one OPT, version 0,
    our payload 1232, placed last."""
    packet = build(case.qname, case.qtype, qclass=case.qclass, opts=[opt_rr(4096)] if edns else None)
    w = parse_wire(exchange(server.addr, packet, tcp))
    assert w.rcode == case.rcode, f"rcode {rcode_name(w.rcode)}, want {rcode_name(case.rcode)}"
    if not edns:
        assert w.opts == [], "OPT in the reply to a query without EDNS"
        return
    assert w.opt is not None, "no OPT in the reply to an EDNS query"
    assert w.rrs[-1] is w.opt, "the OPT record must be the last record of the message"
    assert w.opt.section == 3
    assert w.raw[w.opt.start] == 0, "OPT owner must be the root"
    assert w.opt.rclass == OUR_PAYLOAD, f"our payload is {w.opt.rclass}, want {OUR_PAYLOAD}"
    assert w.edns_version == 0
    assert w.edns_flags == 0, "no EDNS flag was asked for"


# ---------------------------------------------------------------- E2: BADVERS


@dataclass(frozen=True)
class Vers:
    name: str
    qname: str
    qtype: int
    version: int
    flags: int = 0
    options: bytes = b""


VERS_CASES = [
    Vers("edns1 (genreport)", APEX, SOA, 1),
    Vers("edns version 100", APEX, SOA, 100),
    Vers("edns version 255", APEX, SOA, 255),
    Vers("edns1 on a service name", WEB, A, 1),
    Vers("edns1 on a missing name", "nope.default.svc.cluster.local.", A, 1),
    Vers("edns1opt: option 100", APEX, SOA, 1, options=option(100)),
    Vers("edns1 with flag 0x0080", APEX, SOA, 1, flags=0x0080),
    Vers("edns1do: DO", APEX, SOA, 1, flags=DO),
    Vers("edns1nsid", APEX, SOA, 1, options=option(NSID)),
    Vers("edns1cookie", APEX, SOA, 1, options=option(COOKIE, bytes(range(1, 9)))),
    Vers("edns1expire", APEX, SOA, 1, options=option(EXPIRE)),
    Vers("edns1subnet", APEX, SOA, 1, options=option(ECS, b"\x00\x01\x00\x00")),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", VERS_CASES, ids=lambda c: c.name)
def test_edns_version_above_0_gets_badvers(server: DnsdHandle, case: Vers, tcp: bool) -> None:
    """RFC 6891 6.1.3: BADVERS (extended rcode 16) with an OPT of version 0; no answer and no SOA
    (genreport `edns1` flags `soa`); MBZ flags cleared; unknown options not echoed."""
    opt = opt_rr(4096, version=case.version, flags=case.flags, options=case.options)
    w = parse_wire(exchange(server.addr, build(case.qname, case.qtype, opts=[opt]), tcp))
    assert w.opt is not None, "BADVERS needs an OPT record to carry the extended rcode"
    assert w.rcode == BADVERS, f"rcode {w.rcode}, want BADVERS (16)"
    assert w.flags & 0xF == 0, "the low rcode bits of BADVERS are 0"
    assert w.edns_version == 0, "we implement version 0: the reply says 0"
    assert w.edns_flags & 0x7FFF == 0, "MBZ flags set in the reply"
    assert w.counts[1] == 0 and w.counts[2] == 0, "BADVERS carries no answer and no SOA"
    assert w.counts[3] == 1, "only the OPT in the additional section"
    assert all(code not in (100, NSID, EXPIRE) for code, _ in w.options)
    assert_canary(server.addr)


# ---------------------------------------------------------------- E3, E6, E7: options and flags that are accepted


@dataclass(frozen=True)
class Accept:
    name: str
    flags: int = 0  # header flags
    eflags: int = 0  # EDNS flags
    options: bytes = b""
    qname: str = APEX
    qtype: int = SOA
    answer: str = ZONE_SOA
    payload: int = 4096


CLIENT_COOKIE = bytes(range(1, 9))
OPTLIST = (
    option(NSID) + option(ECS, b"\x00\x01\x00\x00") + option(EXPIRE) + option(COOKIE, CLIENT_COOKIE)
)  # genreport `optlist`

ACCEPT_CASES = [
    Accept("edns (genreport)"),
    Accept("ednsopt: option 100, empty", options=option(100)),
    Accept("option 100 with data", options=option(100, b"\x01\x02\x03\x04")),
    # 65001 is dnsd's own --trace option (dnsd.proto.trace); 65002 is local use that dnsd gives no meaning.
    Accept("option 65002 (local use)", options=option(65002, b"xy")),
    Accept("two unknown options", options=option(100) + option(65002, b"z")),
    Accept("ednsflags: flag 0x0080", eflags=0x0080),
    Accept("every MBZ flag", eflags=0x7FFF),
    Accept("flag 0x0080 with DO", eflags=0x0080 | DO),
    Accept("do (genreport)", eflags=DO),
    Accept("docd (genreport)", flags=CD, eflags=DO),
    Accept("AD in the query with EDNS", flags=AD),
    Accept("AD and DO", flags=AD, eflags=DO),
    Accept("DO on a service name", eflags=DO, qname=WEB, qtype=A, answer=WEB_A),
    Accept("ednsnsid", options=option(NSID)),
    Accept("ednsexpire", options=option(EXPIRE)),
    Accept("ednssubnet 0.0.0.0/0", options=option(ECS, b"\x00\x01\x00\x00")),
    Accept("ECS 10.0.0.0/8", options=option(ECS, b"\x00\x01\x08\x00\x0a")),
    Accept("ECS ::/0", options=option(ECS, b"\x00\x02\x00\x00")),
    Accept("optlist (genreport)", options=OPTLIST),
    Accept("ednscookie: 8-byte client cookie", options=option(COOKIE, CLIENT_COOKIE)),
    Accept(
        "client cookie with a bogus 16-byte server cookie",
        options=option(COOKIE, CLIENT_COOKIE + bytes(16)),
    ),
    Accept("client cookie with a 32-byte server cookie", options=option(COOKIE, CLIENT_COOKIE + b"\xaa" * 32)),
    Accept("bind11: cookie and DO", eflags=DO, options=option(COOKIE, CLIENT_COOKIE)),
    Accept("dig11: cookie, AD and RD", flags=AD | RD, options=option(COOKIE, CLIENT_COOKIE)),
    Accept("payload 512", payload=512),
    Accept("payload 0 (treated as 512)", payload=0),
    Accept("payload 65535", payload=65535),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", ACCEPT_CASES, ids=lambda c: c.name)
def test_edns_options_and_flags(server: DnsdHandle, case: Accept, tcp: bool) -> None:
    """Unknown options and flags are ignored and not echoed (RFC 6891 6.1.2, 6.1.4); DO is copied
    (RFC 3225); CD is copied, AD never set; a well-formed COOKIE is accepted (RFC 7873 5.2)."""
    opt = opt_rr(case.payload, flags=case.eflags, options=case.options)
    packet = build(case.qname, case.qtype, flags=case.flags, opts=[opt])
    reply = exchange(server.addr, packet, tcp)
    w = parse_wire(reply)
    assert w.rcode == NOERROR, f"rcode {rcode_name(w.rcode)}"
    assert w.flags & AA
    assert w.opt is not None and w.rrs[-1] is w.opt
    assert w.edns_version == 0
    assert w.edns_flags & 0x7FFF == 0, f"MBZ EDNS flags echoed: {w.edns_flags:#06x}"
    assert bool(w.edns_flags & DO) == bool(case.eflags & DO), "DO must be copied"
    assert bool(w.flags & CD) == bool(case.flags & CD), "CD must be copied"
    assert not w.flags & AD, "AD set on unsigned data"
    assert not w.flags & TC
    assert bool(w.flags & RD) == bool(case.flags & RD)
    codes = [code for code, _ in w.options]
    assert not {100, 65002} & set(codes), f"unknown options echoed: {codes}"
    assert len(codes) == len(set(codes)), f"an option appears twice: {codes}"
    for code, data in w.options:
        if code == COOKIE:  # cookies are optional; if present, RFC 7873 5.2.3 shape
            assert data[:8] == CLIENT_COOKIE, "the client cookie must be echoed"
            assert 16 <= len(data) <= 40, f"server cookie of bad length {len(data) - 8}"
    msg = dns.message.from_wire(reply)
    assert_records(msg.answer, case.answer, "answer")


# ---------------------------------------------------------------- E5: bad OPT records -> FORMERR


@dataclass(frozen=True)
class BadOpt:
    name: str
    extra: list[bytes]


def _ecs(family: int, source: int, scope: int, address: bytes) -> bytes:
    return option(ECS, struct.pack("!HBB", family, source, scope) + address)


BAD_OPT_CASES = [
    BadOpt("two OPT RRs", [opt_rr(), opt_rr()]),
    BadOpt("two OPT RRs, different payloads", [opt_rr(512), opt_rr(4096, flags=DO)]),
    BadOpt("OPT owner a.", [opt_rr(owner=wire_name("a."))]),
    BadOpt("OPT owner is the query name (pointer)", [opt_rr(owner=b"\xc0\x0c")]),
    BadOpt("option length past the end of RDATA", [opt_rr(options=option(100, b"ab", length=10))]),
    BadOpt("option header cut short", [opt_rr(options=b"\x00\x64")]),
    BadOpt("RDLENGTH past the end of the message", [opt_rr(options=option(100), rdlen=40)]),
    BadOpt("COOKIE length 0", [opt_rr(options=option(COOKIE))]),
    BadOpt("COOKIE length 5", [opt_rr(options=option(COOKIE, b"\x01" * 5))]),
    BadOpt("COOKIE length 7", [opt_rr(options=option(COOKIE, b"\x01" * 7))]),
    BadOpt("COOKIE length 12 (server cookie too short)", [opt_rr(options=option(COOKIE, b"\x01" * 12))]),
    BadOpt("COOKIE length 41", [opt_rr(options=option(COOKIE, b"\x01" * 41))]),
    BadOpt("ECS family 3", [opt_rr(options=_ecs(3, 0, 0, b""))]),
    BadOpt("ECS IPv4 source prefix 33", [opt_rr(options=_ecs(1, 33, 0, b"\x0a\x00\x00\x00\x00"))]),
    BadOpt("ECS address longer than its prefix", [opt_rr(options=_ecs(1, 8, 0, b"\x0a\x00\x00\x00"))]),
    BadOpt("ECS option of 3 octets", [opt_rr(options=option(ECS, b"\x00\x01\x00"))]),
]


@pytest.mark.parametrize("case", BAD_OPT_CASES, ids=lambda c: c.name)
def test_bad_opt_gets_formerr(server: DnsdHandle, case: BadOpt) -> None:
    """RFC 6891 6.1.1 (one OPT, owner root), RFC 7873 5.2.2 (cookie lengths), RFC 7871 (ECS): FORMERR,
    as BIND answers; then the next query is answered."""
    packet = build(WEB, opts=case.extra)
    reply = exchange(server.addr, packet)
    _, flags = struct.unpack("!HH", reply[:4])
    assert flags & QR
    assert flags & 0xF == FORMERR, f"rcode {rcode_name(flags & 0xF)}, want FORMERR"
    assert_canary(server.addr)


# ---------------------------------------------------------------- E4: truncation


@dataclass(frozen=True)
class Trunc:
    name: str
    qname: str
    payload: int | None  # None: no EDNS
    limit: int  # the largest reply allowed
    full: str  # every record of the answer as zone text
    fits: bool  # True: the whole answer must come back without TC


TRUNC_CASES = [
    Trunc("big, no EDNS", BIG, None, 512, BIG_A, False),
    Trunc("big, payload 0", BIG, 0, 512, BIG_A, False),
    Trunc("big, payload 100", BIG, 100, 512, BIG_A, False),
    Trunc("big, payload 512", BIG, 512, 512, BIG_A, False),
    Trunc("big, payload 1000", BIG, 1000, 1000, BIG_A, False),
    Trunc("big, payload 1232", BIG, 1232, 1232, BIG_A, False),
    Trunc("big, payload 4096", BIG, 4096, 1232, BIG_A, False),
    Trunc("big, payload 65535", BIG, 65535, 1232, BIG_A, False),
    Trunc("mid, no EDNS", MID, None, 512, MID_A, False),
    Trunc("mid, payload 512", MID, 512, 512, MID_A, False),
    Trunc("mid, payload 1232", MID, 1232, 1232, MID_A, True),
    Trunc("mid, payload 4096", MID, 4096, 1232, MID_A, True),
    Trunc("web, no EDNS", WEB, None, 512, WEB_A, True),
    Trunc("web, payload 100", WEB, 100, 512, WEB_A, True),
]


@pytest.mark.parametrize("case", TRUNC_CASES, ids=lambda c: c.name)
def test_udp_reply_fits_the_client(server: DnsdHandle, case: Trunc) -> None:
    """RFC 6891 6.2.5 / RFC 1035 4.2.1: a UDP reply is at most min(max(payload, 512), 1232) octets
    (512 without EDNS). If the answer does not fit: TC=1, the OPT kept, and the answer holds as many
    whole, valid records as fit. A reply that fits never has TC."""
    opts = None if case.payload is None else [opt_rr(case.payload)]
    packet = build(case.qname, A, flags=RD, opts=opts)
    reply = exchange(server.addr, packet)
    w = parse_wire(reply)
    print(f"{case.name}: {len(reply)} octets, {w.counts[1]} answers, TC={int(bool(w.flags & TC))}")
    assert len(reply) <= case.limit, f"UDP reply of {len(reply)} octets exceeds {case.limit}"
    assert w.rcode == NOERROR
    if case.payload is None:
        assert w.opts == []
    else:
        assert w.opt is not None, "the OPT must be kept in a truncated reply"
        assert w.opt.rclass == OUR_PAYLOAD
    msg = dns.message.from_wire(reply)
    want = zone_lines(case.full)
    got = lines(msg.answer)
    if case.fits:
        assert not w.flags & TC, "TC set on a reply that fits"
        assert got == want
        return
    assert w.flags & TC, "the answer cannot fit: TC must be set"
    answers = [r for r in w.rrs if r.section == 1]
    assert len(answers) == len(got), "duplicate records in a truncated answer"
    assert got <= want, f"records that do not exist: {sorted(got - want)[:3]}"
    assert answers, "the answer holds as many whole records as fit (at least one fits here)"
    biggest = max(r.end - r.start for r in answers)
    assert len(reply) + biggest > case.limit, (
        f"{len(reply)} octets with {len(answers)} records: another {biggest}-octet record would fit"
    )


@pytest.mark.parametrize(
    "payload,eflags",
    [(None, 0), (512, 0), (512, DO), (1232, 0), (4096, 0)],
    ids=["no-edns", "payload-512", "ednstcp-512-do", "payload-1232", "payload-4096"],
)
def test_tcp_gets_the_whole_answer(server: DnsdHandle, payload: int | None, eflags: int) -> None:
    """TCP replies are not limited by the EDNS payload (genreport `ednstcp`): all 200 records, no TC."""
    opts = None if payload is None else [opt_rr(payload, flags=eflags)]
    reply = exchange(server.addr, build(BIG, A, flags=RD, opts=opts), tcp=True)
    w = parse_wire(reply)
    assert not w.flags & TC, "TC over TCP"
    assert (w.opt is not None) == (payload is not None)
    msg = dns.message.from_wire(reply)
    assert_records(msg.answer, BIG_A, "answer over TCP")


def test_truncated_reply_then_tcp_retry_gets_everything(server: DnsdHandle) -> None:
    """What a stub does: UDP without EDNS, sees TC, retries the same question over TCP."""
    packet = build("BiG.default.svc.cluster.local.", A, flags=RD)
    udp = parse_wire(exchange(server.addr, packet))
    assert udp.flags & TC
    tcp_reply = exchange(server.addr, packet, tcp=True)
    assert tcp_reply[12 : len(packet)] == packet[12:], "question not echoed as sent"
    msg = dns.message.from_wire(tcp_reply)
    assert {r.name.to_text() for r in msg.answer} == {"BiG.default.svc.cluster.local."}
    assert len(lines(msg.answer)) == 200

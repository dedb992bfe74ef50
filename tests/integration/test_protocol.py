"""Protocol robustness (RFC 1035 4.1, RFC 8906, RFC 6891): header rules, malformed bodies,
RFC 8906 "every query gets an answer", flags, case preservation, negative answers and CNAME chains.

Malformed packets are built with struct (dnspython refuses to build most of them). Every malformed
packet is followed by a valid query that must still be answered.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest
import yaml
from support import (
    DnsdHandle,
    base_config,
    read_tcp_message,
    run_dnsd,
    tcp_frame,
    zone_lines,
)
from support.rawdns import (
    AA,
    AAAA,
    AD,
    ANY,
    AXFR,
    BADKEY,
    CD,
    CH,
    CLASS_ANY,
    FORMERR,
    HMAC_SHA256,
    HS,
    IN,
    IXFR,
    NOERROR,
    NOTAUTH,
    NOTIMP,
    NXDOMAIN,
    OPT,
    PTR,
    QR,
    RA,
    RD,
    REFUSED,
    SOA,
    SRV,
    TC,
    TSIG,
    TXT,
    WEB,
    WEB_A,
    ZONE_SOA,
    A,
    Z,
    assert_records,
    head,
    header,
    lines,
    opt_rr,
    query_bytes,
    question,
    rcode_name,
    tcp_exchange,
    tsig_rr,
    udp_exchange,
    wire_name,
)
from support.rawdns import PROTOCOL_MANIFESTS as MANIFESTS

from dnsd.cluster.records import MAX_ADDRESS_RRS, MAX_SRV_RRS

WEB_SRV = "web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."

# every header flag bit a query can set, other than QR and the opcode
ALL_FLAGS = AA | TC | RD | RA | Z | AD | CD
FLAG_BITS = 0x07F0  # AA TC RD RA Z AD CD


def rr(owner: bytes, rtype: int, rclass: int, ttl: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


# ---------------------------------------------------------------- canaries


def canary_packet() -> tuple[int, bytes]:
    qid = secrets.randbelow(0x10000)
    return qid, query_bytes(qid=qid)


def check_canary(reply: bytes | None, qid: int, what: str) -> None:
    assert reply is not None, f"{what}: the valid query after it got no answer"
    msg = dns.message.from_wire(reply)
    assert msg.id == qid
    assert msg.rcode() == dns.rcode.NOERROR, f"{what}: canary rcode {dns.rcode.to_text(msg.rcode())}"
    assert_records(msg.answer, WEB_A, f"{what}: canary answer")


def assert_server_answers(addr: tuple[str, int], what: str) -> None:
    """A valid query over UDP and over TCP is answered correctly."""
    qid, pkt = canary_packet()
    check_canary(udp_exchange(addr, pkt), qid, what + " (udp)")
    qid, pkt = canary_packet()
    check_canary(tcp_exchange(addr, pkt), qid, what + " (tcp)")


def assert_no_reply(addr: tuple[str, int], packet: bytes, what: str) -> None:
    """Send packet, then a canary on the same socket: only the canary may be answered."""
    qid, canary = canary_packet()
    got: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, addr)
        s.sendto(canary, addr)
        deadline = time.monotonic() + 2.0
        canary_seen_at: float | None = None
        while time.monotonic() < deadline:
            # after the canary reply, wait a little more for a late reply to the bad packet
            if canary_seen_at is not None and time.monotonic() > canary_seen_at + 0.1:
                break
            s.settimeout(0.05)
            try:
                data = s.recv(65535)
            except TimeoutError:
                continue
            got.append(data)
            if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid and canary_seen_at is None:
                canary_seen_at = time.monotonic()
    canaries = [d for d in got if len(d) >= 12 and struct.unpack("!H", d[:2])[0] == qid]
    others = [d for d in got if d not in canaries]
    assert not others, f"{what}: the server replied to a packet it must drop: {others[0][:32]!r}"
    assert canaries, f"{what}: the valid query sent after it was not answered"
    check_canary(canaries[0], qid, what)


@pytest.fixture(scope="module")
def server() -> Iterator[DnsdHandle]:
    handle = run_dnsd(base_config(MANIFESTS))
    yield handle
    handle.stop()


# ---------------------------------------------------------------- P7, P4: packets that get no reply

VALID = query_bytes(qid=0xBEEF)


@dataclass(frozen=True)
class Silent:
    name: str
    packet: bytes


def _response_bytes() -> bytes:
    q = dns.message.make_query(WEB, "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(WEB, 5, "IN", "A", "10.96.0.20"))
    return r.to_wire()


SILENT_CASES = [
    *(Silent(f"{n}-byte datagram", VALID[:n]) for n in range(12)),
    Silent("11 zero bytes", b"\x00" * 11),
    Silent("QR=1: a real response", _response_bytes()),
    Silent("QR=1: a query with the QR bit set", header(0xBEEF, QR | RD) + question()),
    Silent("QR=1 header only, QDCOUNT=0", header(0xBEEF, QR, qd=0)),
    Silent("QR=1 with opcode 15 and every flag", header(0xBEEF, QR | ALL_FLAGS, opcode=15, qd=0)),
    Silent("QR=1 with QDCOUNT=2", header(0xBEEF, QR, qd=2) + question() + question()),
    Silent("QR=1 with a body of junk", header(0xBEEF, QR) + b"\xff" * 40),
]


@pytest.mark.parametrize("case", SILENT_CASES, ids=lambda c: c.name)
def test_no_reply_over_udp(server: DnsdHandle, case: Silent) -> None:
    assert_no_reply(server.addr, case.packet, case.name)


def test_response_over_tcp_closes_the_connection(server: DnsdHandle) -> None:
    """P4: a response (QR=1) sent over TCP: no reply, the connection is closed; a valid query first is answered."""
    with socket.create_connection(server.addr, timeout=3) as s:
        qid, pkt = canary_packet()
        s.sendall(tcp_frame(pkt))
        check_canary(read_tcp_message(s), qid, "query before the response")
        start = time.monotonic()
        s.sendall(tcp_frame(_response_bytes()))
        try:
            data = s.recv(65535)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            pytest.fail("the connection stayed open after a QR=1 message")
        elapsed = time.monotonic() - start
    print(f"QR=1 over TCP: closed after {elapsed * 1000:.1f} ms")
    assert data == b"", f"the server replied to a QR=1 message over TCP: {data[:40]!r}"
    assert elapsed < 1.0
    assert_server_answers(server.addr, "after QR=1 over TCP")


# ---------------------------------------------------------------- P5: opcodes other than QUERY


@dataclass(frozen=True)
class Opcode:
    name: str
    opcode: int
    flags: int
    body: bytes  # the question section (empty for header-only, as genreport's opcode test sends)


OPCODE_CASES = [
    Opcode("opcode 15, header only (genreport opcode)", 15, 0, b""),
    Opcode("opcode 15, every flag (genreport opcodeflg)", 15, ALL_FLAGS, b""),
    Opcode("opcode 2 STATUS with a question and RD", 2, RD, question()),
    Opcode("opcode 2 STATUS, every flag", 2, ALL_FLAGS, question()),
    Opcode("opcode 5 UPDATE, zone section", 5, 0, question("cluster.local.", SOA)),
    Opcode("opcode 5 UPDATE, every flag", 5, ALL_FLAGS, question("cluster.local.", SOA)),
    Opcode("opcode 1 IQUERY (obsolete)", 1, RD, question()),
    Opcode("opcode 3 (unassigned)", 3, RD, question()),
]


@pytest.mark.parametrize("case", OPCODE_CASES, ids=lambda c: c.name)
def test_unknown_opcode_gets_notimp(server: DnsdHandle, case: Opcode) -> None:
    """NOTIMP, the opcode echoed, QR the only flag (genreport: AA, TC, RD, RA, Z, AD, CD never echoed on
    a non-QUERY opcode) and every section empty (genreport flags a non-empty section; NSD and BIND)."""
    qd = 1 if case.body else 0
    packet = header(0x0F0F, case.flags, opcode=case.opcode, qd=qd) + case.body
    reply = udp_exchange(server.addr, packet)
    assert reply is not None, "no reply (RFC 8906: an unknown opcode must be answered with NOTIMP)"
    h = head(reply)
    assert h.qid == 0x0F0F
    assert h.flags & QR
    assert h.opcode == case.opcode, "the opcode must be echoed"
    assert h.rcode == NOTIMP, f"rcode {rcode_name(h.rcode)}"
    assert h.flags & FLAG_BITS == 0, f"flags echoed on NOTIMP: {dns.flags.to_text(h.flags & FLAG_BITS)}"
    assert (h.qd, h.an, h.ns, h.ar) == (0, 0, 0, 0), f"sections not empty: {h}"
    # and over TCP the same
    reply_tcp = tcp_exchange(server.addr, packet)
    assert reply_tcp is not None
    assert head(reply_tcp).rcode == NOTIMP
    assert head(reply_tcp).flags & FLAG_BITS == 0
    qid, pkt = canary_packet()
    check_canary(udp_exchange(server.addr, pkt), qid, case.name)


# ---------------------------------------------------------------- P2, P3 + header counts: FORMERR


@dataclass(frozen=True)
class Bad:
    name: str
    packet: bytes
    reply_qd: int | None = None  # the reply's QDCOUNT when it is pinned down


A_RR = rr(b"\xc0\x0c", A, IN, 5, bytes([10, 96, 0, 20]))
OPT_RR = rr(b"\x00", OPT, 1232, 0, b"")

HEADER_CASES = [
    Bad("QDCOUNT=0, header only", header(qd=0), reply_qd=0),
    Bad("QDCOUNT=0 with a question after the header", header(qd=0) + question()),
    Bad("QDCOUNT=2, the same question twice", header(qd=2) + question() + question()),
    Bad("QDCOUNT=2, A and AAAA", header(qd=2) + question() + question(WEB, AAAA)),
    Bad("QDCOUNT=65535, one question", header(qd=65535) + question()),
    Bad("ANCOUNT=1 with an answer RR", header(an=1) + question() + A_RR),
    Bad("ANCOUNT=1 with no data", header(an=1) + question()),
    Bad("ANCOUNT=65535", header(an=65535) + question()),
    Bad("NSCOUNT=1 with an authority RR", header(ns=1) + question() + A_RR),
    Bad("NSCOUNT=1 with no data", header(ns=1) + question()),
    Bad("ARCOUNT=2: OPT and an A RR", header(ar=2) + question() + OPT_RR + A_RR),
    Bad("ARCOUNT=2 with no data", header(ar=2) + question()),
    Bad("ARCOUNT=65535 with no data", header(ar=65535) + question()),
]


def expect_formerr(addr: tuple[str, int], case: Bad) -> None:
    qid = struct.unpack("!H", case.packet[:2])[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        start = time.monotonic()
        s.sendto(case.packet, addr)
        try:
            reply = s.recv(65535)
        except TimeoutError:
            pytest.fail(f"{case.name}: no reply (a readable header must get FORMERR)")
        elapsed = time.monotonic() - start
        h = head(reply)
        assert h.qid == qid, "ID not echoed"
        assert h.flags & QR
        assert h.opcode == 0
        assert h.rcode == FORMERR, f"{case.name}: rcode {rcode_name(h.rcode)}, want FORMERR"
        assert not h.flags & TC
        if case.reply_qd is not None:
            assert h.qd == case.reply_qd
        assert elapsed < 1.0, f"{case.name}: FORMERR took {elapsed:.3f} s"
        cqid, canary = canary_packet()
        s.sendto(canary, addr)
        try:
            check_canary(s.recv(65535), cqid, case.name)
        except TimeoutError:
            pytest.fail(f"{case.name}: the valid query sent after it was not answered")


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda c: c.name)
def test_bad_header_counts_get_formerr(server: DnsdHandle, case: Bad) -> None:
    expect_formerr(server.addr, case)


# ---------------------------------------------------------------- P6: malformed body, readable header


def _labels_to(total: int, suffix: str) -> str:
    """A name whose wire form is exactly `total` octets, ending in suffix."""
    rest = total - len(wire_name(suffix))
    labels: list[str] = []
    while rest > 0:
        n = min(63, rest - 1)
        if rest - (n + 1) == 1:  # never leave a single octet (a label needs at least 2)
            n -= 1
        labels.append("a" * n)
        rest -= n + 1
    return ".".join([*labels, suffix.rstrip(".")]) + "."


NAME_255 = _labels_to(255, "cluster.local.")
NAME_256 = _labels_to(256, "cluster.local.")
assert len(wire_name(NAME_255)) == 255 and len(wire_name(NAME_256)) == 256

QTAIL = struct.pack("!HH", A, IN)
WEB_WIRE = wire_name(WEB)

MALFORMED_CASES = [
    Bad("question missing entirely", header()),
    Bad("question cut inside a label", header() + WEB_WIRE[:9]),
    Bad("question without its terminating root label", header() + WEB_WIRE[:-1]),
    Bad("question without QTYPE and QCLASS", header() + WEB_WIRE),
    Bad("question without QCLASS", header() + WEB_WIRE + b"\x00\x01"),
    Bad("question with half a QCLASS", header() + WEB_WIRE + b"\x00\x01\x00"),
    Bad("label of 64 octets", header() + b"\x40" + b"a" * 64 + WEB_WIRE + QTAIL),
    Bad("name of 256 octets", header() + wire_name(NAME_256) + QTAIL),
    Bad("pointer to itself", header() + b"\xc0\x0c" + QTAIL),
    Bad("pointer loop through a label", header() + b"\x01a\xc0\x0c" + QTAIL),
    Bad("two pointers pointing at each other", header() + b"\xc0\x0e\xc0\x0c" + QTAIL),
    Bad("forward pointer", header() + b"\xc0\x12" + QTAIL + WEB_WIRE),
    Bad("pointer past the end of the message", header() + b"\xc0\xff" + QTAIL),
    Bad("label type 01 (extended label, RFC 6891)", header() + b"\x41" + b"a" * 20 + b"\x00" + QTAIL),
    Bad("label type 10 (reserved)", header() + b"\x81" + b"a" + b"\x00" + QTAIL),
    Bad("short OPT RR", header(ar=1) + question() + b"\x00\x00\x29\x04"),
    Bad("OPT RR with RDLENGTH past the end", header(ar=1) + question() + OPT_RR[:-2] + b"\x00\x10"),
    Bad("short additional RR (A cut in its RDATA)", header(ar=1) + question() + A_RR[:-2]),
    Bad("additional RR with a looping owner", header(ar=1) + question() + rr(b"\xc0\x2f", A, IN, 5, bytes(4))),
]


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=lambda c: c.name)
def test_malformed_body_gets_formerr(server: DnsdHandle, case: Bad) -> None:
    expect_formerr(server.addr, case)


@dataclass(frozen=True)
class Odd:
    """A well-formed-enough query that must be answered normally."""

    name: str
    packet: bytes
    rcode: int
    answer: str = ""


ODD_CASES = [
    # BIND and NSD answer a query with trailing junk; Knot sends FORMERR. dnsd follows BIND.
    Odd("4 junk octets after the question", header() + question() + b"\xde\xad\xbe\xef", NOERROR, WEB_A),
    Odd("1 junk octet after the question", header() + question() + b"\x00", NOERROR, WEB_A),
    Odd("name of exactly 255 octets", header() + wire_name(NAME_255) + QTAIL, NXDOMAIN),
    Odd("labels of exactly 63 octets", header() + question("a" * 63 + ".default.svc.cluster.local."), NXDOMAIN),
    Odd("the root name (out of zone)", header() + question("."), REFUSED),
]


@pytest.mark.parametrize("case", ODD_CASES, ids=lambda c: c.name)
def test_odd_but_valid_queries_are_answered(server: DnsdHandle, case: Odd) -> None:
    reply = udp_exchange(server.addr, case.packet)
    assert reply is not None, f"{case.name}: no reply"
    h = head(reply)
    assert h.flags & QR and h.qid == 0x1234
    assert h.rcode == case.rcode, f"rcode {rcode_name(h.rcode)}, want {rcode_name(case.rcode)}"
    msg = dns.message.from_wire(reply)
    assert_records(msg.answer, case.answer, "answer")
    qid, pkt = canary_packet()
    check_canary(udp_exchange(server.addr, pkt), qid, case.name)


# ---------------------------------------------------------------- P8: every type gets an answer

# genreport's TYPE group (ISC DNS Compliance Testing, genreport.c `opts[]`, "-t"), by number, plus
# TYPE666 (its FULL test), private-use 65280 and reserved 65535.
GENREPORT_TYPES: dict[str, int] = {
    "A": 1, "NS": 2, "MD": 3, "MF": 4, "CNAME": 5, "SOA": 6, "MB": 7, "MG": 8, "MR": 9, "NULL": 10,
    "WKS": 11, "PTR": 12, "HINFO": 13, "MINFO": 14, "MX": 15, "TXT": 16, "RP": 17, "AFSDB": 18,
    "X25": 19, "ISDN": 20, "RT": 21, "NSAP": 22, "NSAP-PTR": 23, "SIG": 24, "KEY": 25, "PX": 26,
    "GPOS": 27, "AAAA": 28, "LOC": 29, "NXT": 30, "SRV": 33, "NAPTR": 35, "KX": 36, "CERT": 37,
    "A6": 38, "DNAME": 39, "APL": 42, "DS": 43, "SSHFP": 44, "IPSECKEY": 45, "RRSIG": 46,
    "NSEC": 47, "DNSKEY": 48, "DHCID": 49, "NSEC3": 50, "NSEC3PARAM": 51, "TLSA": 52, "SMIMEA": 53,
    "HIP": 55, "CDS": 59, "CDNSKEY": 60, "OPENPGPKEY": 61, "SPF": 99, "NID": 104, "L32": 105,
    "L64": 106, "LP": 107, "EUI48": 108, "EUI64": 109, "URI": 256, "CAA": 257, "AVC": 258,
    "DOA": 259, "DLV": 32769, "TYPE1000": 1000, "TYPE666": 666, "TYPE65280": 65280,
    "TYPE65535": 65535,
}  # fmt: skip


@dataclass(frozen=True)
class TypeCase:
    name: str
    qname: str
    qtype: int
    answer: str  # empty: NODATA, the SOA in authority


TYPE_CASES = [
    TypeCase(
        f"web {tname}",
        WEB,
        number,
        {A: WEB_A, SRV: WEB_SRV}.get(number, ""),  # the service has an A and (bare) SRV; the rest is NODATA
    )
    for tname, number in GENREPORT_TYPES.items()
] + [
    TypeCase("apex TYPE666 (genreport type666)", "cluster.local.", 666, ""),
    TypeCase("apex TYPE1000", "cluster.local.", 1000, ""),
]


@pytest.mark.parametrize("case", TYPE_CASES, ids=lambda c: c.name)
def test_every_type_is_answered(server: DnsdHandle, case: TypeCase) -> None:
    """RFC 8906 / genreport -t: NOERROR for every type, never a timeout; AA; NODATA carries the SOA."""
    reply = udp_exchange(server.addr, header(0x4242, 0) + question(case.qname, case.qtype))
    assert reply is not None, f"no answer for qtype {case.qtype} (RFC 8906: never time out)"
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x4242
    assert msg.rcode() == dns.rcode.NOERROR, f"rcode {dns.rcode.to_text(msg.rcode())}"
    assert msg.flags & dns.flags.AA, "an authoritative answer must carry AA"
    assert not msg.flags & dns.flags.TC
    assert_records(msg.answer, case.answer, "answer")
    if not case.answer:
        assert_records(msg.authority, ZONE_SOA, "authority of a NODATA answer")


# ---------------------------------------------------------------- P9: classes, transfers, ANY


@dataclass(frozen=True)
class Meta:
    name: str
    qname: str
    qtype: int
    qclass: int
    tcp: bool
    rcode: int


META_CASES = [
    Meta("class CH, A", WEB, A, CH, False, REFUSED),
    Meta("class HS, A", WEB, A, HS, False, REFUSED),
    Meta("class CH, TXT version.bind", "version.bind.", 16, CH, False, REFUSED),
    Meta("class CH, TXT hostname.bind over TCP", "hostname.bind.", 16, CH, True, REFUSED),
    Meta("class HS over TCP", WEB, A, HS, True, REFUSED),
    Meta("AXFR over UDP", "cluster.local.", AXFR, IN, False, NOTIMP),
    Meta("IXFR over UDP", "cluster.local.", IXFR, IN, False, NOTIMP),
    Meta("AXFR over TCP", "cluster.local.", AXFR, IN, True, REFUSED),
    Meta("IXFR over TCP", "cluster.local.", IXFR, IN, True, REFUSED),
    Meta("out-of-zone name, RD=1 (no recursion yet)", "www.example.com.", A, IN, False, REFUSED),
]


@pytest.mark.parametrize("case", META_CASES, ids=lambda c: c.name)
def test_classes_and_transfers(server: DnsdHandle, case: Meta) -> None:
    packet = header(0x5151, RD) + question(case.qname, case.qtype, case.qclass)
    reply = (tcp_exchange if case.tcp else udp_exchange)(server.addr, packet)
    assert reply is not None, "no answer (RFC 8906)"
    h = head(reply)
    assert h.qid == 0x5151 and h.flags & QR
    assert h.rcode == case.rcode, f"rcode {rcode_name(h.rcode)}, want {rcode_name(case.rcode)}"
    assert h.an == 0, "no records may come with a refusal"
    qlen = len(question(case.qname, case.qtype, case.qclass))
    if h.qd == 1:
        assert reply[12 : 12 + qlen] == packet[12:], "the question must come back as sent"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_any_query(server: DnsdHandle, tcp: bool) -> None:
    """RFC 8482: a minimal answer (one HINFO, as CoreDNS's `any` plugin) or the records that exist
    (or NODATA, which is what CoreDNS's kubernetes plugin gives); NOERROR and AA either way."""
    reply = (tcp_exchange if tcp else udp_exchange)(server.addr, header(0x6161, 0) + question(WEB, ANY))
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    types = {rrset.rdtype for rrset in msg.answer}
    if types == {dns.rdatatype.HINFO}:
        assert sum(len(r) for r in msg.answer) == 1, "RFC 8482: one synthesised HINFO"
    elif msg.answer:
        assert lines(msg.answer) <= zone_lines(WEB_A + "\n" + WEB_SRV), "ANY returned records that do not exist"
    else:
        assert_records(msg.authority, ZONE_SOA, "authority of an empty ANY answer")


# ---------------------------------------------------------------- P1, P10 and flags


@dataclass(frozen=True)
class FlagCase:
    name: str
    qname: str
    qtype: int
    flags: int
    answer: str


FLAG_CASES = [
    # genreport's header-flag tests: SOA at the apex, no EDNS
    FlagCase("dns: plain, RD=0", "cluster.local.", SOA, 0, ZONE_SOA),
    FlagCase("rd: RD=1 is copied", "cluster.local.", SOA, RD, ZONE_SOA),
    FlagCase("aa: AA in the query", "cluster.local.", SOA, AA, ZONE_SOA),
    FlagCase("ad: AD=1 is never echoed", "cluster.local.", SOA, AD, ZONE_SOA),
    FlagCase("cd: CD=1 is copied", "cluster.local.", SOA, CD, ZONE_SOA),
    FlagCase("ra: RA in the query", "cluster.local.", SOA, RA, ZONE_SOA),
    FlagCase("tc: TC in the query is not echoed", "cluster.local.", SOA, TC, ZONE_SOA),
    FlagCase("zflag: Z is not echoed", "cluster.local.", SOA, Z, ZONE_SOA),
    FlagCase("every flag at once", "cluster.local.", SOA, ALL_FLAGS, ZONE_SOA),
    # P1 sanity on a service name
    FlagCase("web A with RD", WEB, A, RD, WEB_A),
    FlagCase("web A without RD", WEB, A, 0, WEB_A),
    FlagCase("web A with AD and CD", WEB, A, RD | AD | CD, WEB_A),
    FlagCase("missing name (NXDOMAIN) with RD and AD", "nope.default.svc.cluster.local.", A, RD | AD, ""),
    FlagCase("web AAAA (NODATA) with CD", WEB, AAAA, CD, ""),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", FLAG_CASES, ids=lambda c: c.name)
def test_header_flags(server: DnsdHandle, case: FlagCase, tcp: bool) -> None:
    """AA on authoritative answers; RD and CD copied; AD, TC and Z never set; ID echoed."""
    qid = secrets.randbelow(0x10000)
    packet = header(qid, case.flags) + question(case.qname, case.qtype)
    reply = (tcp_exchange if tcp else udp_exchange)(server.addr, packet)
    assert reply is not None, "no answer"
    h = head(reply)
    assert h.qid == qid, "ID not echoed"
    assert h.flags & QR and h.opcode == 0
    assert h.flags & AA, "AA missing on an authoritative answer"
    assert bool(h.flags & RD) == bool(case.flags & RD), "RD must be copied"
    assert bool(h.flags & CD) == bool(case.flags & CD), "CD must be copied"
    assert not h.flags & AD, "AD set on unsigned data"
    assert not h.flags & TC, "TC set on a reply that fits"
    assert not h.flags & Z, "Z must be zero"
    assert reply[12 : len(packet)] == packet[12:], "the question must come back as sent"
    msg = dns.message.from_wire(reply)
    assert_records(msg.answer, case.answer, "answer")
    if not case.answer:
        assert msg.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
        assert_records(msg.authority, ZONE_SOA, "authority of a negative answer")
    else:
        assert msg.rcode() == dns.rcode.NOERROR


def test_ra_is_not_copied_from_the_query(server: DnsdHandle) -> None:
    """genreport `ra`: RA in the reply says what the server offers; it never echoes the query's RA."""
    replies = [udp_exchange(server.addr, header(0x7171, flags) + question()) for flags in (0, RA)]
    assert replies[0] is not None and replies[1] is not None
    assert head(replies[0]).flags & RA == head(replies[1]).flags & RA


@dataclass(frozen=True)
class CaseCase:
    name: str
    qname: str
    qtype: int
    rcode: int
    owner: str = ""  # the exact spelling the answer (or authority SOA) owner must have
    answer: str = ""


CASE_CASES = [
    CaseCase("mixed case A", "WeB.DeFaulT.svc.cluster.LOCAL.", A, NOERROR, "WeB.DeFaulT.svc.cluster.LOCAL.", WEB_A),
    CaseCase("upper case A", "WEB.DEFAULT.SVC.CLUSTER.LOCAL.", A, NOERROR, "WEB.DEFAULT.SVC.CLUSTER.LOCAL.", WEB_A),
    CaseCase("mixed case NODATA", "wEb.default.SVC.cluster.local.", AAAA, NOERROR, "cluster.local."),
    CaseCase("mixed case NXDOMAIN", "NoPe.DeFaulT.svc.Cluster.Local.", A, NXDOMAIN, "Cluster.Local."),
    CaseCase("mixed case apex SOA", "ClUsTeR.lOcAl.", SOA, NOERROR, "ClUsTeR.lOcAl.", ZONE_SOA),
    CaseCase("mixed case out of zone", "WwW.ExAmPlE.CoM.", A, REFUSED),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", CASE_CASES, ids=lambda c: c.name)
def test_question_case_preserved(server: DnsdHandle, case: CaseCase, tcp: bool) -> None:
    """P10 / RFC 4343: the question comes back byte for byte; owners are spelled as asked."""
    packet = header(0x7777, RD) + question(case.qname, case.qtype)
    reply = (tcp_exchange if tcp else udp_exchange)(server.addr, packet)
    assert reply is not None
    assert head(reply).qd == 1
    assert reply[12 : len(packet)] == packet[12:], "question not echoed byte for byte"
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == case.rcode, dns.rcode.to_text(msg.rcode())
    assert_records(msg.answer, case.answer, "answer")
    if case.owner:
        section = msg.answer if case.answer else msg.authority
        owners = {rrset.name.to_text() for rrset in section}
        assert owners == {case.owner}, f"owner spelled {owners}, want {case.owner!r}"


# ---------------------------------------------------------------- P11: negative answers


REVERSE4_SOA = "in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 0 7200 1800 86400 5"
REVERSE6_SOA = "ip6.arpa. 5 IN SOA ns.dns.ip6.arpa. hostmaster.ip6.arpa. 0 7200 1800 86400 5"


@dataclass(frozen=True)
class Negative:
    name: str
    qname: str
    qtype: int
    rcode: int
    soa: str = ZONE_SOA


NEGATIVE_CASES = [
    Negative("missing service", "nope.default.svc.cluster.local.", A, NXDOMAIN),
    Negative("existing service, another type", WEB, AAAA, NOERROR),
    Negative("empty non-terminal: the namespace", "default.svc.cluster.local.", A, NOERROR),
    Negative("empty non-terminal: svc", "svc.cluster.local.", A, NOERROR),
    Negative("apex A", "cluster.local.", A, NOERROR),
    Negative("missing namespace", "nons.svc.cluster.local.", A, NXDOMAIN),
    Negative("service in a missing namespace", "web.nons.svc.cluster.local.", A, NXDOMAIN),
    Negative("neither svc nor pod", "foo.cluster.local.", A, NXDOMAIN),
    # RFC 8020: a name that exists is never NXDOMAIN, whatever the type. CoreDNS answers NXDOMAIN for TXT at
    # the apex and on svc.<zone> / <ns>.svc.<zone> (its TXT lookup knows only dns-version.<zone>); dnsd NODATA.
    Negative("apex TXT (RFC 8020)", "cluster.local.", TXT, NOERROR),
    Negative("empty non-terminal svc, TXT", "svc.cluster.local.", TXT, NOERROR),
    Negative("empty non-terminal <ns>.svc, TXT", "default.svc.cluster.local.", TXT, NOERROR),
    Negative("empty non-terminal pod, TXT", "pod.cluster.local.", TXT, NOERROR),
    Negative("reverse apex in-addr.arpa, TXT", "in-addr.arpa.", TXT, NOERROR, REVERSE4_SOA),
    Negative("reverse apex in-addr.arpa, A", "in-addr.arpa.", A, NOERROR, REVERSE4_SOA),
    Negative("reverse apex ip6.arpa, TXT", "ip6.arpa.", TXT, NOERROR, REVERSE6_SOA),
    Negative("reverse apex ip6.arpa, AAAA", "ip6.arpa.", AAAA, NOERROR, REVERSE6_SOA),
]


@pytest.mark.parametrize("case", NEGATIVE_CASES, ids=lambda c: c.name)
def test_negative_answers_carry_the_soa(server: DnsdHandle, case: Negative) -> None:
    """P11 / RFC 2308 3: NXDOMAIN and NODATA (empty non-terminals are NODATA) carry exactly the zone
    SOA in authority, AA set; the negative TTL min(SOA TTL, MINIMUM) is the configured ttl, 5."""
    reply = udp_exchange(server.addr, header(0x3131, RD) + question(case.qname, case.qtype))
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == case.rcode, f"rcode {dns.rcode.to_text(msg.rcode())}, want {rcode_name(case.rcode)}"
    assert msg.flags & dns.flags.AA
    assert_records(msg.answer, "", "answer")
    assert_records(msg.authority, case.soa, "authority")
    soa = msg.authority[0]
    assert min(soa.ttl, soa[0].minimum) == 5


# ---------------------------------------------------------------- P12: CNAME chains (ExternalName)


def _chain(prefix: str, n: int) -> str:
    out = [
        f"{prefix}{i}.default.svc.cluster.local. 5 IN CNAME {prefix}{i + 1}.default.svc.cluster.local."
        for i in range(1, n)
    ]
    out.append(f"{prefix}{n}.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.")
    return "\n".join([*out, WEB_A])


def test_cname_chain_of_5_is_answered_in_full(server: DnsdHandle) -> None:
    """P12 / spec 2.5: in-zone ExternalName targets are chased locally: 5 CNAMEs, then web's A."""
    reply = udp_exchange(server.addr, header(0x2121, RD) + question("chain1.default.svc.cluster.local."))
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert_records(msg.answer, _chain("chain", 5), "answer")
    assert [r.rdtype for r in msg.answer][-1] == dns.rdatatype.A, "the CNAMEs come first, then the A"


@pytest.mark.parametrize(
    "qname",
    ["long1.default.svc.cluster.local.", "loop-a.default.svc.cluster.local.", "self.default.svc.cluster.local."],
    ids=["chain of 12", "loop a-b-a", "self loop"],
)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_long_or_looping_cname_chains_end_fast(server: DnsdHandle, qname: str, tcp: bool) -> None:
    """P12: a chain over the hop limit or a loop never hangs: answered at once, either SERVFAIL
    (RFC 1034 5.3.3; CoreDNS `file`) or a bounded answer without a repeated CNAME (CoreDNS
    `kubernetes` stops adding after 8 CNAMEs and skips duplicates)."""
    start = time.monotonic()
    reply = (tcp_exchange if tcp else udp_exchange)(server.addr, header(0x2222, RD) + question(qname))
    elapsed = time.monotonic() - start
    print(f"{qname}: answered in {elapsed * 1000:.1f} ms")
    assert reply is not None, "no answer: the server hung on a CNAME chain"
    assert elapsed < 1.0
    msg = dns.message.from_wire(reply)
    assert msg.rcode() in (dns.rcode.NOERROR, dns.rcode.SERVFAIL), dns.rcode.to_text(msg.rcode())
    cnames = [r for r in msg.answer if r.rdtype == dns.rdatatype.CNAME]
    owners = [r.name.to_text().lower() for r in cnames]
    assert len(owners) == len(set(owners)), f"a CNAME repeated: {owners}"
    assert sum(len(r) for r in cnames) <= 10, "the chain must be cut (CoreDNS: at most 8 hops, spec: 10)"
    assert_server_answers(server.addr, "after a CNAME chain")


# ---------------------------------------------------------------- LD6: the expensive 64 KB query


def expensive_query(n_rrs: int = 4300) -> bytes:
    """QDCOUNT=1 with a 255-octet name (127 one-letter labels), then n TXT RRs in additional whose
    owners are pointers to that name: about 1.1 s of dnspython parsing (measured when the header check was written)."""
    name = b"\x01a" * 127 + b"\x00"
    txt = rr(b"\xc0\x0c", 16, IN, 0, b"\x02ab")
    return header(0xE0E0, RD, ar=n_rrs) + name + QTAIL + txt * n_rrs


@pytest.mark.parametrize("tcp", [True, False], ids=["tcp", "udp"])
def test_64k_query_with_4300_additional_rrs_gets_fast_formerr(server: DnsdHandle, tcp: bool) -> None:
    packet = expensive_query()
    assert 60_000 < len(packet) <= 65_507
    if tcp:
        with socket.create_connection(server.addr, timeout=5) as s:
            start = time.monotonic()  # from before the send: the server's whole share of the exchange
            s.sendall(tcp_frame(packet))
            reply = read_tcp_message(s)
            elapsed = time.monotonic() - start
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            start = time.monotonic()
            s.sendto(packet, server.addr)
            reply = s.recv(65535)
            elapsed = time.monotonic() - start
    print(f"64 KB query with ARCOUNT=4300 over {'TCP' if tcp else 'UDP'}: reply in {elapsed * 1000:.2f} ms")
    assert reply is not None, "no reply"
    h = head(reply)
    assert h.qid == 0xE0E0 and h.rcode == FORMERR, f"rcode {rcode_name(h.rcode)}, want FORMERR"
    assert elapsed < 1.0, f"FORMERR took {elapsed:.3f} s: the header check must come before the parse"
    assert_server_answers(server.addr, "after the 64 KB query")


# ---------------------------------------------------------------- TSIG (RFC 8945) with no key configured

TSIG_QNAME = "cluster.local."
TSIG_QUESTION = question(TSIG_QNAME, SOA)
TSIG_QID = 0x5151


@dataclass(frozen=True)
class TsigCase:
    name: str
    packet: bytes
    key: str  # the key name the reply must carry, uncompressed
    edns: bool  # the query had an OPT record: so must the reply
    tcp: bool = False


TSIG_CASES = [
    TsigCase("TSIG alone (ARCOUNT 1)", header(TSIG_QID, ar=1) + TSIG_QUESTION + tsig_rr(), "key.", False),
    TsigCase("OPT then TSIG (ARCOUNT 2)", header(TSIG_QID, ar=2) + TSIG_QUESTION + opt_rr() + tsig_rr(), "key.", True),
    TsigCase(
        "OPT with DO then TSIG over TCP",
        header(TSIG_QID, ar=2) + TSIG_QUESTION + opt_rr(flags=0x8000) + tsig_rr(),
        "key.",
        True,
        tcp=True,
    ),
    TsigCase(
        "key name compressed: a pointer to the question name",
        header(TSIG_QID, ar=1) + TSIG_QUESTION + tsig_rr(b"\xc0\x0c"),
        TSIG_QNAME,
        False,
    ),
    TsigCase(
        "genreport dnswkk: key '.', hmac-sha256, original ID as sent",
        header(TSIG_QID, ar=1) + TSIG_QUESTION + tsig_rr(b"\x00", original_id=TSIG_QID),
        ".",
        False,
    ),
    TsigCase(
        "AXFR over TCP: TSIG is checked first",
        header(TSIG_QID, ar=1) + question(TSIG_QNAME, AXFR) + tsig_rr(),
        "key.",
        False,
        tcp=True,
    ),
]


@pytest.mark.parametrize("case", TSIG_CASES, ids=lambda c: c.name)
def test_tsig_with_an_unknown_key_gets_notauth_badkey(server: DnsdHandle, case: TsigCase) -> None:
    """RFC 8945 5.2.1 / 5.3.2: no key is configured, so every key is unknown: NOTAUTH with an unsigned TSIG
    record (key name and algorithm copied, time signed and fudge copied, MAC size 0, the original ID copied,
    error BADKEY, no other data), last in the additional section; the OPT record iff the query had one."""
    reply = (tcp_exchange if case.tcp else udp_exchange)(server.addr, case.packet)
    assert reply is not None, f"{case.name}: no reply"
    h = head(reply)
    assert h.qid == TSIG_QID
    assert h.rcode == NOTAUTH, f"rcode {rcode_name(h.rcode)}, want NOTAUTH"
    assert not h.flags & AA, "nothing was answered: AA must be clear"
    assert h.flags & RD, "RD is copied"
    assert (h.qd, h.an, h.ns, h.ar) == (1, 0, 0, 2 if case.edns else 1)
    qlen = len(case.packet) - len(header()) - len(tsig_rr()) - (len(opt_rr()) if case.edns else 0)
    assert reply[12 : 12 + qlen] == case.packet[12 : 12 + qlen], "the question is echoed as sent"
    # dnspython reads the records; a keyring that knows no key makes it keep the TSIG without checking a MAC.
    msg = dns.message.from_wire(reply, keyring=lambda _msg, _name: False)
    assert (msg.edns >= 0) == case.edns
    assert msg.tsig is not None, "no TSIG record in the reply"
    assert msg.tsig.name.to_text() == case.key
    assert (msg.tsig.rdclass, msg.tsig.rdtype, msg.tsig.ttl) == (CLASS_ANY, TSIG, 0)
    sent = tsig_rr()
    rd = msg.tsig[0]
    assert rd.algorithm.to_text() == HMAC_SHA256
    assert (rd.time_signed, rd.fudge, rd.mac, rd.error, rd.other) == (1_700_000_000, 300, b"", BADKEY, b"")
    want_id = TSIG_QID if "dnswkk" in case.name else struct.unpack("!H", sent[-6:-4])[0]
    assert rd.original_id == want_id, "the original ID is copied from the request's TSIG"
    assert_server_answers(server.addr, case.name)


def test_tsig_signed_by_dnspython_is_refused_as_bad_key(server: DnsdHandle) -> None:
    """A query signed by an independent implementation: dnspython recognises the reply as BADKEY."""
    keyring = dns.tsigkeyring.from_text({"client-key.": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    for edns in (None, 0):
        q = dns.message.make_query(TSIG_QNAME, "SOA", use_edns=edns)
        q.use_tsig(keyring, keyname="client-key.", algorithm=dns.tsig.HMAC_SHA256)
        reply = udp_exchange(server.addr, q.to_wire())
        assert reply is not None
        with pytest.raises(dns.tsig.PeerBadKey):
            dns.message.from_wire(reply, keyring=keyring, request_mac=q.mac)


TSIG_FORMERR_CASES = [
    Bad("TSIG before OPT (TSIG not last)", header(ar=2) + question() + tsig_rr() + OPT_RR),
    Bad("two TSIG records", header(ar=2) + question() + tsig_rr() + tsig_rr()),
    Bad("TSIG and an A RR", header(ar=2) + question() + A_RR + tsig_rr()),
    Bad("TSIG RDLENGTH one octet short", header(ar=1) + question() + tsig_rr(rdlen=len(tsig_rr()) - 12)),
    Bad("TSIG other data longer than its RDATA", header(ar=1) + question() + tsig_rr(other=b"x")[:-1]),
    Bad("TSIG with a looping owner", header(ar=1) + question() + tsig_rr(b"\xc0\x2f")),
]


@pytest.mark.parametrize("case", TSIG_FORMERR_CASES, ids=lambda c: c.name)
def test_misplaced_or_malformed_tsig_gets_formerr(server: DnsdHandle, case: Bad) -> None:
    """RFC 8945 5.1: a TSIG that is not the last additional record, or a second one, is FORMERR; so is a
    TSIG whose fields do not fill its RDATA exactly."""
    expect_formerr(server.addr, case)


# ---------------------------------------------------------------- hostile names: never a traceback


def raw_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def arpa6(ip_nibbles: list[bytes]) -> list[bytes]:
    return [*ip_nibbles, b"ip6", b"arpa"]


NIBBLES_OK = [b"0"] * 31 + [b"1"]  # ::1 reversed-ish: 32 single-hex-digit labels
SVC = [b"svc", b"cluster", b"local"]
POD = [b"pod", b"cluster", b"local"]


@dataclass(frozen=True)
class Hostile:
    name: str
    qname: bytes  # wire form
    qtype: int
    rcode: int


HOSTILE_CASES = [
    # Superscript digits: str.isdigit() accepts them after latin-1 decoding, int() does not.
    Hostile(
        "superscript 2 (0xB2) in an in-addr.arpa label",
        raw_name(b"5", b"1", b"\xb2", b"10", b"in-addr", b"arpa"),
        PTR,
        NXDOMAIN,
    ),
    Hostile(
        "superscript 1 (0xB9) as a whole octet",
        raw_name(b"\xb9", b"0", b"96", b"10", b"in-addr", b"arpa"),
        PTR,
        NXDOMAIN,
    ),
    Hostile(
        "superscript 3 (0xB3) after ASCII digits",
        raw_name(b"2\xb3", b"0", b"96", b"10", b"in-addr", b"arpa"),
        PTR,
        NXDOMAIN,
    ),
    Hostile(
        "superscript in in-addr.arpa, type A", raw_name(b"20", b"0", b"\xb2", b"10", b"in-addr", b"arpa"), A, NXDOMAIN
    ),
    Hostile("a dot inside an in-addr.arpa label", raw_name(b"20", b"0.96", b"10", b"in-addr", b"arpa"), PTR, NXDOMAIN),
    Hostile(
        "NUL octet in an in-addr.arpa label",
        raw_name(b"2\x000", b"0", b"96", b"10", b"in-addr", b"arpa"),
        PTR,
        NXDOMAIN,
    ),
    Hostile("0xB2 as an ip6.arpa nibble", raw_name(*arpa6([b"\xb2", *NIBBLES_OK[1:]])), PTR, NXDOMAIN),
    Hostile("0xC4 (upper-case A-umlaut) nibble", raw_name(*arpa6([b"\xc4", *NIBBLES_OK[1:]])), PTR, NXDOMAIN),
    Hostile("two-octet ip6.arpa nibble", raw_name(*arpa6([b"00", *NIBBLES_OK[1:]])), PTR, NXDOMAIN),
    Hostile("superscript in a pod name", raw_name(b"10-0-0-\xb2", b"default", *POD), A, NXDOMAIN),
    Hostile("IPv6 zone index in a pod name", raw_name(b"fe80--1%eth0", b"default", *POD), AAAA, NXDOMAIN),
    Hostile("dots and dashes in a pod label", raw_name(b"10.0-0-1", b"default", *POD), A, NXDOMAIN),
    Hostile("0xFF octets in a pod label", raw_name(b"\xff" * 63, b"default", *POD), A, NXDOMAIN),
    Hostile("latin-1 letter in a service name", raw_name(b"w\xe9b", b"default", *SVC), A, NXDOMAIN),
    Hostile("latin-1 capital in a namespace", raw_name(b"web", b"D\xc9FAULT", *SVC), A, NXDOMAIN),
    Hostile("a dot inside the namespace label", raw_name(b"web.default", *SVC), A, NXDOMAIN),
    Hostile("NUL in an SRV port label", raw_name(b"_ht\x00tp", b"_tcp", b"web", b"default", *SVC), SRV, NXDOMAIN),
    Hostile("superscript in a headless endpoint", raw_name(b"10-1-0-\xb2", b"big", b"default", *SVC), A, NXDOMAIN),
    Hostile(
        "0xB2 port label on a headless service", raw_name(b"_\xb2", b"_tcp", b"big", b"default", *SVC), SRV, NXDOMAIN
    ),
    Hostile("dns-version with a 0xFF octet", raw_name(b"dns-version\xff", b"cluster", b"local"), TXT, NXDOMAIN),
    Hostile("ANY on a hostile service name", raw_name(b"\x00\x01\x02", b"default", *SVC), ANY, NXDOMAIN),
    Hostile("the zone written as one label", raw_name(b"web", b"default", b"svc", b"cluster.local"), A, REFUSED),
]


@pytest.fixture(scope="module")
def pods_server() -> Iterator[DnsdHandle]:
    """The protocol data with pod records on (pods: insecure), so that pod names are parsed."""
    handle = run_dnsd(base_config(MANIFESTS, pods="insecure"))
    yield handle
    handle.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", HOSTILE_CASES, ids=lambda c: c.name)
def test_hostile_names_get_a_plain_answer_and_no_traceback(
    pods_server: DnsdHandle, case: Hostile, tcp: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Client octets that are not ASCII, dots inside labels, NULs: the right rcode, and never the internal-error
    path (a SERVFAIL and a traceback logged at ERROR for every such query)."""
    caplog.set_level(logging.WARNING)
    errors_before = pods_server.app.engine.counters.servfail_internal
    packet = header(0x4242, RD) + case.qname + struct.pack("!HH", case.qtype, IN)
    reply = (tcp_exchange if tcp else udp_exchange)(pods_server.addr, packet)
    assert reply is not None, f"{case.name}: no reply"
    h = head(reply)
    assert h.rcode == case.rcode, f"{case.name}: rcode {rcode_name(h.rcode)}, want {rcode_name(case.rcode)}"
    assert reply[12 : 12 + len(case.qname)] == case.qname, "the question is echoed as sent"
    assert pods_server.app.engine.counters.servfail_internal == errors_before, "the internal-error path ran"
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, f"{case.name}: logged at ERROR: {logged[0].getMessage()}"


# ---------------------------------------------------------------- records per answer are capped


def huge_headless(directory: Path, endpoints: int, ports: int, per_slice: int = 1000) -> None:
    """A headless Service `huge` in `default` with `endpoints` ready IPv4 endpoints (slices of at most 1000, the
    API's limit) each listing `ports` ports: the worst case one SRV name can select."""
    port_list = [{"name": f"p{i}", "port": 1000 + i, "protocol": "TCP"} for i in range(ports)]
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "huge", "namespace": "default"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": port_list},
        },
    ]
    for first in range(0, endpoints, per_slice):
        addresses = [f"10.{100 + j // 65536}.{(j // 256) % 256}.{j % 256}" for j in range(first, first + per_slice)]
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"huge-{first}",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "huge"},
                },
                "addressType": "IPv4",
                "ports": port_list,
                "endpoints": [
                    {"addresses": [a], "conditions": {"ready": True}} for a in addresses[: endpoints - first]
                ],
            }
        )
    (directory / "huge.yaml").write_text(yaml.safe_dump_all(docs))


HUGE = "huge.default.svc.cluster.local."


@pytest.mark.parametrize(
    ("endpoints", "ports", "qtype", "cap"),
    [
        pytest.param(1000, 100, SRV, MAX_SRV_RRS, id="SRV, 1000 endpoints x 100 ports"),
        pytest.param(4100, 1, A, MAX_ADDRESS_RRS, id="A, 4100 endpoints"),
    ],
)
def test_records_per_answer_are_capped(
    dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path, endpoints: int, ports: int, qtype: int, cap: int
) -> None:
    """One name of a headless service selects up to endpoints x ports records (100 000 SRV for 1000 x 100): the
    answer holds at most the cap (what a 64 KB TCP message holds), so building and rendering it stays bounded;
    the cap fits over TCP without truncation."""
    huge_headless(tmp_path, endpoints, ports)
    handle = dnsd_factory(tmp_path)
    start = time.monotonic()
    reply = tcp_exchange(handle.addr, header(0x6161, RD) + question(HUGE, qtype), timeout=30)
    elapsed = time.monotonic() - start
    assert reply is not None
    h = head(reply)
    assert h.rcode == NOERROR
    assert h.an == cap, f"ANCOUNT {h.an}, want the cap {cap}"
    assert not h.flags & TC, "the capped answer fits in one TCP message"
    msg = dns.message.from_wire(reply)
    assert sum(len(rrset) for rrset in msg.answer) == cap
    print(f"{dns.rdatatype.to_text(qtype)} for {endpoints} endpoints x {ports} ports: first reply in {elapsed:.3f} s")

"""Raw DNS packets for the protocol tests: wire-format builders, header parsing and the shared constants.

The builders do no validation, so that malformed queries can be made: names are encoded label by label,
header counts and OPT lengths are whatever the caller says. Used by the protocol, EDNS, TCP and garbage tests
(tests/integration/test_protocol.py, test_edns.py, test_tcp.py, test_garbage.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
from dataclasses import dataclass

import dns.rcode
import dns.rrset

from support import REPO, read_tcp_message, rr_lines, tcp_frame, zone_lines

# The small cluster the protocol, EDNS, TCP and garbage tests serve (tests/data/protocol), and its answers.
PROTOCOL_MANIFESTS = REPO / "tests" / "data" / "protocol"
WEB_A = "web.default.svc.cluster.local. 5 IN A 10.96.0.20"
BIG = "big.default.svc.cluster.local."  # 200 A records, about 3 KB
# The apex SOA (CoreDNS's); the serial is a timestamp, compared as 0.
ZONE_SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5"

# the name every helper queries by default: a service of tests/data/protocol with one A record
WEB = "web.default.svc.cluster.local."

# header flag bits (RFC 1035 4.1.1, RFC 4035 for AD/CD)
QR, AA, TC, RD, RA, Z, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0040, 0x0020, 0x0010
DO = 0x8000  # the EDNS DO flag (RFC 3225), in the OPT TTL
# classes, types, rcodes and EDNS option codes, by number
IN, CH, HS = 1, 3, 4
A, NS, SOA, PTR, TXT, AAAA, SRV, OPT, IXFR, AXFR, ANY = 1, 2, 6, 12, 16, 28, 33, 41, 251, 252, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
NSID, ECS, EXPIRE, COOKIE = 3, 8, 9, 10


def rcode_name(value: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(value))
    except ValueError:
        return str(value)


# ---------------------------------------------------------------- building


def wire_name(name: str) -> bytes:
    """Encode a dotted name label by label, without any validation (so bad names can be built)."""
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode()
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def header(
    qid: int = 0x1234,
    flags: int = RD,
    *,
    opcode: int = 0,
    qd: int = 1,
    an: int = 0,
    ns: int = 0,
    ar: int = 0,
) -> bytes:
    return struct.pack("!6H", qid, flags | (opcode << 11), qd, an, ns, ar)


def question(name: str = WEB, qtype: int = A, qclass: int = IN) -> bytes:
    return wire_name(name) + struct.pack("!HH", qtype, qclass)


def query_bytes(
    name: str = WEB,
    qtype: int = A,
    qclass: int = IN,
    *,
    qid: int | None = None,
    flags: int = RD,
) -> bytes:
    """One question, no other record; a random ID unless qid is given."""
    qid = secrets.randbelow(0x10000) if qid is None else qid
    return header(qid, flags) + question(name, qtype, qclass)


def option(code: int, data: bytes = b"", length: int | None = None) -> bytes:
    """An EDNS option; `length` overrides the option length written (to build bad options)."""
    return struct.pack("!HH", code, len(data) if length is None else length) + data


def opt_rr(
    payload: int = 1232,
    *,
    version: int = 0,
    flags: int = 0,
    ext_rcode: int = 0,
    options: bytes = b"",
    owner: bytes = b"\x00",
    rdlen: int | None = None,
) -> bytes:
    """An OPT record; `owner` and `rdlen` can be set to build bad ones."""
    ttl = (ext_rcode << 24) | (version << 16) | flags
    n = len(options) if rdlen is None else rdlen
    return owner + struct.pack("!HHIH", OPT, payload, ttl, n) + options


TSIG, CLASS_ANY, NOTAUTH, BADKEY = 250, 255, 9, 17  # RFC 8945 4.2 and 5.2.1
HMAC_SHA256 = "hmac-sha256."


def tsig_rr(
    key: bytes = b"\x03key\x00",
    algorithm: str = HMAC_SHA256,
    *,
    time_signed: int = 1_700_000_000,
    fudge: int = 300,
    mac: bytes = bytes(32),
    original_id: int = 0x1234,
    error: int = 0,
    other: bytes = b"",
    rdlen: int | None = None,
) -> bytes:
    """A TSIG record (RFC 8945 4.2) with a MAC no key made (dnsd has no keys, so it never checks one). `key` is
    the owner in wire form (a compression pointer can be given); `rdlen` overrides RDLENGTH to build bad ones."""
    rdata = (
        wire_name(algorithm)
        + struct.pack("!HIH", time_signed >> 32, time_signed & 0xFFFFFFFF, fudge)
        + struct.pack("!H", len(mac))
        + mac
        + struct.pack("!HHH", original_id, error, len(other))
        + other
    )
    n = len(rdata) if rdlen is None else rdlen
    return key + struct.pack("!HHIH", TSIG, CLASS_ANY, 0, n) + rdata


# ---------------------------------------------------------------- reading a reply header


@dataclass(frozen=True)
class Head:
    qid: int
    flags: int
    qd: int
    an: int
    ns: int
    ar: int

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def head(reply: bytes) -> Head:
    assert len(reply) >= 12, f"reply shorter than a header: {reply!r}"
    return Head(*struct.unpack("!6H", reply[:12]))


# ---------------------------------------------------------------- expected records


def lines(section: list[dns.rrset.RRset]) -> set[str]:
    """rr_lines with SOA serials zeroed (the serial is a timestamp the spec leaves to the server)."""
    out: set[str] = set()
    for line in rr_lines(section):
        parts = line.split(" ")
        if parts[3] == "SOA":
            parts[6] = "0"
        out.add(" ".join(parts))
    return out


def assert_records(section: list[dns.rrset.RRset], expected: str, what: str) -> None:
    got, want = lines(section), (zone_lines(expected) if expected.strip() else set())
    assert got == want, f"{what} differs\n  missing: {sorted(want - got)}\n  unexpected: {sorted(got - want)}"


# ---------------------------------------------------------------- sockets


def udp_exchange(addr: tuple[str, int], packet: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one datagram and return the first reply, or None after timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, addr)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def tcp_exchange(addr: tuple[str, int], packet: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one framed message on a new connection and return the reply, or None if it was closed."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(tcp_frame(packet))
        return read_tcp_message(s)


def socket_count() -> int:
    """Open sockets in this process (the server runs in it): client and server ends alike."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count

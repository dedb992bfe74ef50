"""Reading queries off the wire: the header check, the question, the OPT and TSIG records, by hand.

The header is checked before anything else is parsed (as miekg/dns's DefaultMsgAcceptFunc does for CoreDNS): a
crafted 64 KB message costs a full DNS-library parse over a second of CPU, the header check costs nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

import dns.rcode
import dns.rdatatype

from dnsd.errors import FormatError
from dnsd.proto.answer import FORMERR, IXFR, NOTIMP, OPT, Labels

MAX_QUERY_SIZE = 4096  # no legitimate query is larger (one question, one OPT with a few options)
EDNS_PAYLOAD = 1232  # what we advertise (DNS Flag Day 2020; NSD, Knot and Unbound default)

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")

TSIG = 250  # the TSIG RR type (RFC 8945 4.2)

# EDNS option codes validated strictly (BIND answers FORMERR for these when malformed).
OPT_ECS, OPT_COOKIE = 8, 10


class Verdict(Enum):
    DROP = "drop"  # shorter than a header, or a response (QR=1): no reply at all
    NOTIMP = "notimp"
    FORMERR = "formerr"
    OK = "ok"


def check_header(data: bytes) -> Verdict:
    """RFC 1035 4.1.1 and RFC 8906: what to do with a message before parsing its body."""
    if len(data) < 12 or data[2] & 0x80:
        return Verdict.DROP
    if (data[2] >> 3) & 0x0F != 0:
        return Verdict.NOTIMP
    _, _, qd, an, ns, ar = _HEADER.unpack_from(data)
    # One authority record is allowed for IXFR, which carries the client's SOA there (RFC 1995 3);
    # parse_query rejects it for every other type. Two additional records are an OPT and a TSIG (RFC 8945
    # 5.1: TSIG last); parse_query rejects any other pair.
    if qd != 1 or an != 0 or ns > 1 or ar > 2 or len(data) > MAX_QUERY_SIZE:
        return Verdict.FORMERR
    return Verdict.OK


@dataclass(frozen=True, slots=True)
class Edns:
    payload: int  # the client's UDP size, floored at 512 (RFC 6891 6.2.5)
    version: int
    do: bool
    options: bool = False  # the OPT record carried options (a COOKIE, ECS...)


@dataclass(frozen=True, slots=True)
class Tsig:
    """A TSIG record of a query (RFC 8945 4.2), the fields an unsigned error reply copies (RFC 8945 5.3.2)."""

    key_name: bytes  # the owner name, uncompressed wire form
    algorithm: bytes  # uncompressed wire form
    time_signed: bytes  # 48-bit seconds since the epoch, as sent
    fudge: int
    original_id: int


@dataclass(frozen=True, slots=True)
class Query:
    data: bytes  # the whole message as received
    id: int
    flags: int
    qname_wire: bytes  # the question name exactly as sent, root label included
    labels: Labels  # lower-case labels
    qtype: int
    qclass: int
    edns: Edns | None
    tsig: Tsig | None = None

    @property
    def key_question(self) -> bytes:
        """The question with its name lower-cased (ASCII only, RFC 4343); label length octets are < 64 so
        bytes.lower() cannot touch them."""
        return self.qname_wire.lower() + self.data[12 + len(self.qname_wire) : 16 + len(self.qname_wire)]

    @property
    def name_text(self) -> str:
        return ".".join(self.labels) + "."


def read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """An uncompressed question name (RFC 1035 4.1.2): its wire bytes and the offset after it.
    Pointers are not accepted in the question: at offset 12 there is nothing earlier to point to."""
    start = offset
    n = len(data)
    while True:
        if offset >= n:
            raise FormatError("question name runs past the end of the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length > 63:
            raise FormatError("bad label in the question name (a pointer or a label over 63 octets)")
        offset += length + 1
    if offset - start > 255:
        raise FormatError("question name longer than 255 octets")
    return data[start:offset], offset


def split_labels(wire: bytes) -> Labels:
    out: list[str] = []
    i = 0
    while wire[i]:
        length = wire[i]
        # ASCII-only lower-casing (RFC 4343), the same as the key's bytes.lower(): other octets stay as sent.
        out.append(wire[i + 1 : i + 1 + length].lower().decode("latin-1"))
        i += length + 1
    return tuple(out)


def parse_query(data: bytes) -> Query:
    """Parse a message that passed check_header; FormatError when the body is malformed."""
    qid, flags, _, _, ns, ar = _HEADER.unpack_from(data)
    qname, off = read_name(data, 12)
    if off + 4 > len(data):
        raise FormatError("question is truncated")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    off += 4
    if ns:
        if qtype != IXFR:
            raise FormatError("an authority record in a query that is not IXFR")
        off = _skip_rr(data, off)
    edns: Edns | None = None
    tsig: Tsig | None = None
    for i in range(ar):
        owner_at = off
        if off >= len(data):
            raise FormatError("additional record is missing")
        off = off + 1 if data[off] == 0 else _skip_name(data, off)[1]
        if off + 10 > len(data):
            raise FormatError("additional record is truncated")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, off)
        off += 10
        if off + rdlen > len(data):
            raise FormatError("additional record data runs past the end")
        if rtype == OPT:
            if edns is not None:
                raise FormatError("two OPT records")  # RFC 6891 6.1.1
            if data[owner_at] != 0:
                raise FormatError("OPT owner is not the root")
            edns = _read_opt(data[off : off + rdlen], rclass, ttl)
        elif rtype == TSIG:
            if i != ar - 1:
                raise FormatError("TSIG is not the last record")  # RFC 8945 5.1: FORMERR
            tsig = _read_tsig(data, owner_at, off, off + rdlen)
        elif ar > 1:
            raise FormatError("two additional records that are not OPT and TSIG")
        # Any other single record (RFC 1035 allows it) is skipped.
        off += rdlen
    if ar == 2 and (edns is None or tsig is None):
        raise FormatError("two additional records that are not OPT and TSIG")
    # Bytes after the last record are ignored, as BIND and NSD do.
    return Query(data, qid, flags, qname, split_labels(qname), qtype, qclass, edns, tsig)


def _read_opt(rdata: bytes, rclass: int, ttl: int) -> Edns:
    """The OPT record (RFC 6891 6.1): options checked, payload, version and DO read."""
    _check_options(rdata)
    version = (ttl >> 16) & 0xFF
    do = bool(ttl & 0x8000)
    return Edns(max(512, rclass), version, do, len(rdata) > 0)


def _read_tsig(data: bytes, owner_at: int, off: int, end: int) -> Tsig:
    """A TSIG record's owner and RDATA (RFC 8945 4.2), which must fill RDLENGTH exactly. The MAC is not
    checked: no key is configured, so every key is unknown (RFC 8945 5.2.1)."""
    key_name, _ = _expand_name(data, owner_at)
    algorithm, off = _expand_name(data, off, end)
    if off + 10 > end:
        raise FormatError("TSIG RDATA is truncated")
    time_signed = data[off : off + 6]
    fudge, mac_size = struct.unpack_from("!HH", data, off + 6)
    off += 10 + mac_size
    if off + 6 > end:
        raise FormatError("TSIG MAC runs past its RDATA")
    original_id, _error, other_len = struct.unpack_from("!HHH", data, off)
    if off + 6 + other_len != end:
        raise FormatError("TSIG RDATA length does not match its fields")
    return Tsig(key_name, algorithm, time_signed, fudge, original_id)


def _skip_rr(data: bytes, off: int) -> int:
    """Validate a resource record's framing and return the offset after it."""
    _, off = _skip_name(data, off)
    if off + 10 > len(data):
        raise FormatError("record is truncated")
    (rdlen,) = struct.unpack_from("!H", data, off + 8)
    off += 10 + rdlen
    if off > len(data):
        raise FormatError("record data runs past the end")
    return off


def _skip_name(data: bytes, off: int) -> tuple[None, int]:
    """Validate a possibly compressed name; return the offset after the name where it appears."""
    return None, _expand_name(data, off)[1]


def _expand_name(data: bytes, off: int, end: int | None = None) -> tuple[bytes, int]:
    """Read a possibly compressed name (RFC 1035 4.1.4): pointers only point backwards, at most 255 octets in
    all. Return its uncompressed wire form and the offset after the name where it appears, which must not
    pass `end` (the end of the record data holding it)."""
    stop = len(data) if end is None else end
    out = bytearray()
    after = -1
    limit = off  # a pointer must point before the place it was found
    while True:
        if off >= (stop if after < 0 else len(data)):
            raise FormatError("name runs past the end")
        length = data[off]
        if length >= 0xC0:
            if off + 2 > (stop if after < 0 else len(data)):
                raise FormatError("truncated pointer")
            target = ((length & 0x3F) << 8) | data[off + 1]
            if after < 0:
                after = off + 2
            if target >= limit:
                raise FormatError("compression pointer does not point backwards")
            limit = target
            off = target
            continue
        if length > 63:
            raise FormatError("bad label type")
        if len(out) + length + 1 > 255:
            raise FormatError("name longer than 255 octets")
        out += data[off : off + length + 1]
        if length == 0:
            return bytes(out), (after if after >= 0 else off + 1)
        if after < 0 and off + length + 1 > stop:
            raise FormatError("name runs past the end")
        off += length + 1


def _check_options(rdata: bytes) -> None:
    """Option framing must be exact; COOKIE and ECS must have legal lengths (RFC 7873 4, RFC 7871 6)."""
    i = 0
    while i < len(rdata):
        if i + 4 > len(rdata):
            raise FormatError("EDNS option header is truncated")
        code, length = struct.unpack_from("!HH", rdata, i)
        i += 4
        if i + length > len(rdata):
            raise FormatError("EDNS option length runs past the end")
        value = rdata[i : i + length]
        i += length
        if code == OPT_COOKIE and not (length == 8 or 16 <= length <= 40):
            raise FormatError("COOKIE option has a bad length")
        if code == OPT_ECS:
            _check_ecs(value)


def _check_ecs(value: bytes) -> None:
    if len(value) < 4:
        raise FormatError("ECS option is too short")
    family, source, scope = struct.unpack_from("!HBB", value)
    max_bits = {1: 32, 2: 128}.get(family)
    if max_bits is None or source > max_bits or scope != 0:
        raise FormatError("ECS option is malformed")
    if len(value) - 4 != (source + 7) // 8:
        raise FormatError("ECS address length does not match its prefix")


# ---------------------------------------------------------------- replies that need no renderer


def header_only(data: bytes, verdict: Verdict) -> bytes:
    """FORMERR or NOTIMP from the header alone: ID and opcode echoed, no question, no flags but QR
    (RD is copied on FORMERR; on NOTIMP nothing is echoed, as genreport's opcodeflg test expects)."""
    qid = data[0:2]
    opcode_bits = data[2] & 0x78
    if verdict is Verdict.NOTIMP:
        return qid + bytes((0x80 | opcode_bits, NOTIMP)) + bytes(8)
    return qid + bytes((0x80 | opcode_bits | (data[2] & 0x01), FORMERR)) + bytes(8)


def type_text(qtype: int) -> str:
    """A query type as dig prints it (A, SRV, TYPE666)."""
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))


def rcode_text(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))

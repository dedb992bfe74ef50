"""Writing answers to the wire with compression we control, so one rendering serves every spelling of a name.

Owner names equal to the question are pointers to offset 12 and names inside the zone point at the zone part of
the question; so a template rendered for the lower-cased question answers a mixed-case one once the question bytes
are copied in (RFC 4343: the answer is spelled as asked). SRV targets must not be compressed (RFC 2782), so their
zone part is written out and its offsets are recorded for the same patch.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from dnsd.proto.answer import AAAA, CLASS_IN, CNAME, NS, OPT, PTR, RR, SOA, SRV, TXT, A, Answer, Labels
from dnsd.proto.wire import EDNS_PAYLOAD, Query

_RR_FIXED = struct.Struct("!HHIH")
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RA = 0x8000, 0x0400, 0x0200, 0x0080


@dataclass(frozen=True, slots=True)
class Rendered:
    """A reply for the lower-cased question; per query the ID, RD and CD bits and the question's spelling
    are copied in (see finish)."""

    data: bytes
    qname_len: int
    zone_len: int  # octets of the zone part of the question name, root included (0: no zone)
    zone_patches: tuple[int, ...]  # offsets of uncompressed copies of the zone name
    serial_at: int  # offset of the SOA serial, -1 if none
    pointers: tuple[int, ...] = ()  # offsets of the compression pointers written after the question (see behind)


def opt_record(do: bool, ext_rcode: int = 0) -> bytes:
    """Our OPT RR: root owner, payload 1232, version 0, DO copied, no options (RFC 6891 6.1.2)."""
    return b"\x00" + _RR_FIXED.pack(OPT, EDNS_PAYLOAD, (ext_rcode << 24) | (0x8000 if do else 0), 0)


class _Writer:
    def __init__(self, labels: Labels, zone: Labels | None) -> None:
        self.buf = bytearray()
        self.labels = labels
        self.compress: dict[Labels, int] = {}
        self.zone_patches: list[int] = []
        self.pointers: list[int] = []  # where (relative to self.buf) each compression pointer was written
        self.serial_at = -1
        self.zone = zone
        self.seeded = False

    def _seed(self) -> None:
        """The question name: the whole name at 12, and the zone's suffixes inside it (the other suffixes are
        not seeded, so synthesised names keep their own lower-case spelling, as CoreDNS writes them). Done at
        the first name written: an answer owned by the question alone (rr) needs none of it."""
        self.seeded = True
        labels, zone = self.labels, self.zone
        self.compress[labels] = 12
        if zone is not None and labels[len(labels) - len(zone) :] == zone:
            off = 12
            for i in range(len(labels)):
                suffix = labels[i:]
                if len(suffix) <= len(zone):
                    self.compress.setdefault(suffix, off)
                off += len(labels[i]) + 1

    def name(self, labels: Labels, compress: bool = True, base: int = 0) -> None:
        """Write a name; base is where self.buf starts in the message."""
        if not self.seeded:
            self._seed()
        for i in range(len(labels)):
            suffix = labels[i:]
            ptr = self.compress.get(suffix) if compress else None
            if ptr is not None:
                self.pointers.append(len(self.buf))
                self.buf += struct.pack("!H", 0xC000 | ptr)
                return
            pos = base + len(self.buf)
            if not compress and self.zone and suffix == self.zone:
                self.zone_patches.append(pos)
            if pos < 0x3FFF and suffix not in self.compress:
                self.compress[suffix] = pos
            raw = labels[i].encode("latin-1")
            self.buf.append(len(raw))
            self.buf += raw
        self.buf.append(0)

    def rr(self, rr: RR, base: int) -> None:
        if rr.name == self.labels:  # the question's own name: a pointer to it (what name() would write)
            self.pointers.append(len(self.buf))
            self.buf += b"\xc0\x0c"
        else:
            self.name(rr.name, base=base)
        fixed_at = len(self.buf)
        self.buf += _RR_FIXED.pack(rr.rtype, CLASS_IN, rr.ttl, 0)
        start = len(self.buf)
        if len(rr.rdata) == 1 and isinstance(rr.rdata[0], bytes):
            # Raw rdata (zone files, upstream answers): any type, written as it came, uncompressed, which is
            # always legal (RFC 3597 4); names inside it keep their own spelling.
            self.buf += rr.rdata[0]
        else:
            write = RDATA_WRITERS.get(rr.rtype)
            if write is None:
                raise ValueError(f"cannot render RR type {rr.rtype}")
            write(self, rr.rdata, base)
        struct.pack_into("!H", self.buf, fixed_at + 8, len(self.buf) - start)


# ---------------------------------------------------------------- rdata, one writer per type (RR.rdata layouts)


def _address(w: _Writer, d: tuple[object, ...], base: int) -> None:
    """A (RFC 1035 3.4.1) and AAAA (RFC 3596 2.2): the packed address."""
    text = str(d[0])
    w.buf += socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _target(w: _Writer, d: tuple[object, ...], base: int) -> None:
    """CNAME, PTR, NS (RFC 1035 3.3): one name, compressed (RFC 3597 4 allows it for these well-known types)."""
    w.name(_labels(d[0]), base=base)


def _srv(w: _Writer, d: tuple[object, ...], base: int) -> None:
    """SRV (RFC 2782): priority, weight, port, and a target that must not be compressed."""
    w.buf += struct.pack("!HHH", int(str(d[0])), int(str(d[1])), int(str(d[2])))
    w.name(_labels(d[3]), compress=False, base=base)


def _soa(w: _Writer, d: tuple[object, ...], base: int) -> None:
    """SOA (RFC 1035 3.3.13): the serial's offset is recorded so that finish() can patch it."""
    w.name(_labels(d[0]), base=base)
    w.name(_labels(d[1]), base=base)
    w.serial_at = base + len(w.buf)
    w.buf += struct.pack("!IIIII", *(int(str(v)) for v in d[2:7]))


def _txt(w: _Writer, d: tuple[object, ...], base: int) -> None:
    """TXT (RFC 1035 3.3.14): each string with its length octet."""
    for s in d:
        raw = str(s).encode()
        w.buf.append(len(raw))
        w.buf += raw


RDATA_WRITERS: dict[int, Callable[[_Writer, tuple[object, ...], int], None]] = {
    A: _address,
    AAAA: _address,
    CNAME: _target,
    PTR: _target,
    NS: _target,
    SRV: _srv,
    SOA: _soa,
    TXT: _txt,
}


def _labels(v: object) -> Labels:
    assert isinstance(v, tuple)
    return v


def render(q: Query, ans: Answer, limit: int, pointers: bool = False) -> Rendered:
    """The reply for q's lower-cased question, cut to `limit` octets (UDP) by whole records.

    Records that do not fit are dropped; TC is set when an answer or authority record was dropped, not for
    optional additional records (RFC 2181 9). The OPT record is always kept (RFC 6891 7). With pointers, the
    offsets of the compression pointers are kept too (for behind; a table entry does without them)."""
    qlen = len(q.qname_wire)
    question = q.key_question
    w = _Writer(q.labels, ans.zone)
    base = 12 + len(question)
    ends: list[tuple[int, int]] = []  # (section, end offset in the message)
    for section, rrs in enumerate((ans.answer, ans.authority, ans.additional)):
        for rr in rrs:
            w.rr(rr, base)
            ends.append((section, base + len(w.buf)))
    opt = opt_record(q.edns.do) if q.edns is not None else b""
    counts = [len(ans.answer), len(ans.authority), len(ans.additional)]
    body = bytes(w.buf)
    truncated = False
    if base + len(body) + len(opt) > limit:
        keep = 0
        for _section, end in ends:
            if end + len(opt) > limit:
                break
            keep += 1
        cut_section = ends[keep][0]
        truncated = cut_section < 2
        body = body[: (ends[keep - 1][1] - base) if keep else 0]
        counts = [0, 0, 0]
        for section, _ in ends[:keep]:
            counts[section] += 1
    flags = FLAG_QR | (ans.rcode & 0x0F)
    if ans.aa:
        flags |= FLAG_AA
    if ans.ra:
        flags |= FLAG_RA
    if truncated:
        flags |= FLAG_TC
    header = struct.pack("!HHHHHH", 0, flags, 1, counts[0], counts[1], counts[2] + (1 if opt else 0))
    data = header + question + body + opt
    end = len(header) + len(question) + len(body)
    zone_len = 0
    if ans.zone is not None:
        zone_len = sum(len(lab) + 1 for lab in ans.zone) + 1
        if q.labels[len(q.labels) - len(ans.zone) :] != ans.zone:
            zone_len = 0
    patches = tuple(p for p in w.zone_patches if p + zone_len <= end) if zone_len else ()
    serial_at = w.serial_at if w.serial_at + 4 <= end else -1
    kept = tuple(base + p for p in w.pointers if base + p + 2 <= end) if pointers else ()
    return Rendered(data, qlen, zone_len, patches, serial_at, kept)


def behind(r: Rendered, question: bytes, limit: int) -> Rendered | None:
    """A reply rendered for its zone as the question (r), moved behind `question`, a lower-cased question for a
    name below that zone: the reply that render() gives for it, without rendering. None when it would pass
    `limit` (the caller renders, and cuts). Only for replies whose records name the question through its zone
    alone (a negative answer's SOA, RFC 2308 3): then every compression pointer, into the zone part of the
    question or into the records after it, moves by the same number of octets as the records do."""
    out = _moved(r, question, limit)
    if out is None:
        return None
    shift = len(question) - 4 - r.qname_len
    patches = tuple(at + shift for at in r.zone_patches)
    serial_at = r.serial_at + shift if r.serial_at >= 0 else -1
    return Rendered(bytes(out), len(question) - 4, r.zone_len, patches, serial_at)


def finish_behind(r: Rendered, query: bytes, qname_len: int, serial: int, limit: int) -> bytes | None:
    """finish(behind(r, question, limit), query, serial) in one copy, the question spelled as asked."""
    out = _moved(r, query[12 : 16 + qname_len], limit)
    if out is None:
        return None
    shift = qname_len - r.qname_len
    out[0:2] = query[0:2]
    out[2] |= query[2] & 0x01  # RD copied (RFC 1035 4.1.1)
    out[3] |= query[3] & 0x10  # CD copied (RFC 4035 3.1.6)
    if r.zone_patches:
        zone = query[12 + qname_len - r.zone_len : 12 + qname_len]
        for at in r.zone_patches:
            out[at + shift : at + shift + r.zone_len] = zone
    if r.serial_at >= 0:
        struct.pack_into("!I", out, r.serial_at + shift, serial)
    return bytes(out)


def _moved(r: Rendered, question: bytes, limit: int) -> bytearray | None:
    shift = len(question) - 4 - r.qname_len
    data = r.data
    if len(data) + shift > limit:
        return None
    out = bytearray(data[:12])
    out += question
    out += data[16 + r.qname_len :]
    for at in r.pointers:
        target = ((data[at] << 8) | data[at + 1]) + shift
        if target > 0xFFFF:
            return None  # past what a pointer can reach (RFC 1035 4.1.4): render it
        out[at + shift] = target >> 8
        out[at + shift + 1] = target & 0xFF
    return out


def finish(r: Rendered, query: bytes, serial: int) -> bytes:
    """The rendered reply for this query: its ID, RD and CD bits, its spelling, the current SOA serial."""
    out = bytearray(r.data)
    out[0:2] = query[0:2]
    out[2] |= query[2] & 0x01  # RD copied (RFC 1035 4.1.1)
    out[3] |= query[3] & 0x10  # CD copied (RFC 4035 3.1.6); AD is never set
    qname = query[12 : 12 + r.qname_len]
    if qname != r.data[12 : 12 + r.qname_len]:
        out[12 : 12 + r.qname_len] = qname
        if r.zone_len:
            zone = qname[r.qname_len - r.zone_len :]
            for off in r.zone_patches:
                out[off : off + r.zone_len] = zone
    if r.serial_at >= 0:
        struct.pack_into("!I", out, r.serial_at, serial)
    return bytes(out)


def simple_reply(q: Query, rcode: int, *, aa: bool = False, ra: bool = False) -> bytes:
    """A reply with the question and no records (REFUSED, SERVFAIL, NOTIMP...), OPT when the query had one.
    Extended rcodes (BADVERS) go in the OPT record (RFC 6891 6.1.3)."""
    qlen = len(q.qname_wire)
    question = q.data[12 : 16 + qlen]
    opt = opt_record(q.edns.do, rcode >> 4) if q.edns is not None else b""
    flags = FLAG_QR | (rcode & 0x0F) | (q.flags & 0x0100) | (q.flags & 0x0010)
    if aa:
        flags |= FLAG_AA
    if ra:
        flags |= FLAG_RA
    header = struct.pack("!HHHHHH", q.id, flags, 1, 0, 0, 1 if opt else 0)
    return header + question + opt


def with_option(reply: bytes, option: bytes, limit: int) -> bytes:
    """The reply with one more EDNS option in its OPT record (ours: the last record, empty RDATA, RFC 6891
    6.1.2). When that would pass `limit` (UDP), the reply is cut to header, question and a bare OPT with TC set,
    so the client asks again over TCP (RFC 1035 4.2.1). A reply without our OPT is returned as it is."""
    if len(reply) < 23 or reply[-11] != 0 or reply[-10:-8] != b"\x00\x29" or reply[-2:] != b"\x00\x00":
        return reply
    if len(reply) + len(option) <= limit:
        return reply[:-2] + struct.pack("!H", len(option)) + option
    qd_end = 12
    while reply[qd_end] != 0:  # our question: an uncompressed name (the query's own bytes)
        qd_end += reply[qd_end] + 1
    qd_end += 5
    flags = struct.unpack_from("!H", reply, 2)[0] | FLAG_TC
    return struct.pack("!HHHHHH", int.from_bytes(reply[0:2], "big"), flags, 1, 0, 0, 1) + reply[12:qd_end] + reply[-11:]

"""The offsets of the TTL fields in a rendered reply, so that a cached reply ages by a patch (RFC 1035 4.1.3)."""

from __future__ import annotations

import struct

from dnsd.errors import FormatError
from dnsd.proto.answer import OPT

_COUNTS = struct.Struct("!HHHH")
_TYPE = struct.Struct("!H")
_RDLEN = struct.Struct("!H")


def _skip_name(msg: bytes, at: int) -> int:
    """The offset after the name at `at`: labels up to the root label or a compression pointer (which ends it)."""
    while True:
        if at >= len(msg):
            raise FormatError("name runs past the end of the message")
        length = msg[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:
            return at + 2
        if length & 0xC0:
            raise FormatError("reserved label type")
        at += 1 + length


def ttl_offsets(msg: bytes) -> list[int]:
    """Where each record's TTL is, in every section; the OPT pseudo-record's TTL field holds flags (RFC 6891
    6.1.3) and is left out."""
    qd, an, ns, ar = _COUNTS.unpack_from(msg, 4)
    at = 12
    for _ in range(qd):
        at = _skip_name(msg, at) + 4
    out: list[int] = []
    for _ in range(an + ns + ar):
        at = _skip_name(msg, at)
        if at + 10 > len(msg):
            raise FormatError("record runs past the end of the message")
        (rtype,) = _TYPE.unpack_from(msg, at)
        if rtype != OPT:
            out.append(at + 4)
        (rdlen,) = _RDLEN.unpack_from(msg, at + 8)
        at += 10 + rdlen
    if at > len(msg):
        raise FormatError("record data runs past the end of the message")
    return out

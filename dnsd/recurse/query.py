"""The query a walk sends one server: its wire form built by hand, once, on this hot path (dnspython's make_query
and to_wire cost about 75 us a query; this about 3); dnspython still parses the reply."""

from __future__ import annotations

import secrets
import struct
from typing import Any

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnsd.upstream.client import UDP_PAYLOAD

OPT = 41
DO = 0x8000  # in the OPT record's TTL field: extended rcode 0, version 0, then the flags (RFC 6891 6.1.3, RFC 3225)
_COUNTS = struct.pack("!HHHHH", 0, 1, 0, 0, 1)  # flags 0 (RD clear: iterative, RFC 1034 5.3.1); 1 question, 1 OPT


class IterativeQuery(dns.message.QueryMessage):
    """(sname, stype, IN) with RD clear and EDNS (our buffer size, the client's DO bit: RFC 6891 6.1.2), under a
    fresh random ID (RFC 5452 9.2). Only what dnsd.upstream.client reads is kept: `id`, `question` (to check the
    reply's, RFC 5452 9.1) and to_wire(), which puts the current ID (the TCP retry draws a new one) in front of
    the rest of the message, built here once."""

    def __init__(self, sname: dns.name.Name, stype: int, do: bool) -> None:
        super().__init__(id=secrets.randbits(16))
        self.flags = 0
        self.question = [dns.rrset.RRset(sname, dns.rdataclass.IN, dns.rdatatype.RdataType.make(stype))]
        owner = sname.to_wire()  # as spelt: the reply's question must repeat it (RFC 5452 9.1)
        assert owner is not None  # bytes when no file is given
        opt = struct.pack("!BHHIH", 0, OPT, UDP_PAYLOAD, DO if do else 0, 0)
        self._after_id = _COUNTS + owner + struct.pack("!HH", stype, dns.rdataclass.IN) + opt

    def to_wire(self, *args: Any, **kwargs: Any) -> bytes:
        return self.id.to_bytes(2, "big") + self._after_id

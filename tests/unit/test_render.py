"""The reply writer on records that come as raw rdata (zone files, upstream answers) and the RA flag: what
dnspython reads back must be the records given, for every type, including ones dnsd has no writer of its own for."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from support import rr_lines, zone_lines

from dnsd.proto.answer import NOERROR, RR, Answer
from dnsd.proto.render import finish, render
from dnsd.proto.wire import parse_query

CASES = [
    ("mail.example.org. 300 IN MX 10 mx1.example.org.", "MX"),
    ('example.org. 300 IN CAA 0 issue "letsencrypt.org"', "CAA"),
    ('example.org. 300 IN TXT "v=spf1 -all" "second"', "TXT"),
    ("_sip._udp.example.org. 300 IN SRV 0 5 5060 sip.example.org.", "SRV"),
    ("example.org. 300 IN NS ns1.example.org.", "NS"),
    ("www.example.org. 300 IN CNAME example.org.", "CNAME"),
    ("example.org. 300 IN TYPE65534 \\# 3 010203", "TYPE65534"),
    ("example.org. 300 IN AAAA 2001:db8::1", "AAAA"),
]


def _raw_rr(line: str) -> RR:
    name, ttl, _cls, rtype, *rest = line.split(None, 4)
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), " ".join(rest))
    labels = tuple(name.rstrip(".").split("."))
    return RR(labels, int(rd.rdtype), int(ttl), (rd.to_wire(),))


@pytest.mark.parametrize(("line", "qtype"), CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("ra", [False, True], ids=["ra0", "ra1"])
def test_raw_rdata_reads_back(line: str, qtype: str, ra: bool) -> None:
    owner = line.split()[0]
    wire = dns.message.make_query(owner, qtype).to_wire()
    q = parse_query(wire)
    ans = Answer(NOERROR, [_raw_rr(line)], aa=False, ra=ra)
    reply = dns.message.from_wire(finish(render(q, ans, 512), wire, 1))
    assert rr_lines(reply.answer) == zone_lines(line)
    assert bool(reply.flags & dns.flags.RA) is ra
    assert not reply.flags & dns.flags.AA

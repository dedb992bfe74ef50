"""An upstream's reply (a dnspython message) as our Answer: shared by the forward and recurse links."""

from __future__ import annotations

import dns.message
import dns.rdataclass

from dnsd.proto.answer import OPT, RR, SERVFAIL, Answer

TSIG = 250


def upstream_servfail(transient: bool = False) -> Answer:
    """Every upstream failed (or, transient, the query was shed): SERVFAIL with RA, never cached as data."""
    return Answer(SERVFAIL, aa=False, ra=True, cacheable=False, transient=transient)


def to_answer(reply: dns.message.Message) -> Answer:
    """The upstream reply as our Answer: records as raw rdata (rendered uncompressed, RFC 3597 4), owner names
    with the upstream's spelling, the upstream's OPT and any TSIG left out (our renderer adds our own OPT when
    the client sent one, RFC 6891 6.1.1: OPT is hop by hop)."""
    sections: list[list[RR]] = []
    for section in (reply.answer, reply.authority, reply.additional):
        rrs: list[RR] = []
        for rrset in section:
            if rrset.rdtype in (OPT, TSIG) or rrset.rdclass != dns.rdataclass.IN:
                continue
            owner = tuple(lab.decode("latin-1") for lab in rrset.name.labels[:-1])
            for rd in rrset:
                rrs.append(RR(owner, int(rrset.rdtype), rrset.ttl, (rd.to_wire(),)))
        sections.append(rrs)
    return Answer(reply.rcode() & 0x0F, sections[0], sections[1], sections[2], aa=False, ra=True, cacheable=False)

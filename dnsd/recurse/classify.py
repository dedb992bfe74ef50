"""What an authoritative server's reply means for a walk: an answer, a referral, NXDOMAIN, NODATA or a lame reply.

Every record is checked against the bailiwick of the zone the server was asked for (the scrubbing Unbound does,
RFC 5452 6): answer records outside it are dropped (a CNAME target elsewhere is chased, not believed), glue only
for NS names inside it, a referral only to a zone strictly below it and above the name asked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from dnsd.recurse.infra import Delegation

A, NS, CNAME, SOA, AAAA, DNAME, DS, ANY = 1, 2, 5, 6, 28, 39, 43, 255


class Kind(enum.Enum):
    ANSWER = "answer"  # records for the name (maybe a CNAME chain ending elsewhere: `target`)
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    REFERRAL = "referral"
    LAME = "lame"  # not authoritative for the zone (no answer, no referral down, no SOA): try another server
    ERROR = "error"  # an rcode other than NOERROR/NXDOMAIN (REFUSED, SERVFAIL, FORMERR...)


@dataclass(slots=True)
class Verdict:
    kind: Kind
    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    target: dns.name.Name | None = None  # where a CNAME chain leaves the answer without data: to chase
    referral: Delegation | None = None


def rcode_text(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))


def type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def within(name: dns.name.Name, zone: dns.name.Name) -> bool:
    return name.is_subdomain(zone)


def classify(reply: dns.message.Message, zone: dns.name.Name, sname: dns.name.Name, stype: int) -> Verdict:
    """The meaning of a reply to (sname, stype) from a server of zone (RFC 1034 5.3.3, RFC 2308 2)."""
    rcode = reply.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Verdict(Kind.ERROR, rcode)
    authority = [r for r in reply.authority if within(r.name, zone)]
    additional = [r for r in reply.additional if within(r.name, zone) and r.rdtype in (A, AAAA)]
    answer, target = scrub_answer(reply, zone, sname, stype)
    soa = [r for r in authority if r.rdtype == SOA and within(sname, r.name)]
    if answer:
        return Verdict(Kind.ANSWER, rcode, answer, soa or _ns_of(authority, sname), additional, target)
    if rcode == dns.rcode.NXDOMAIN:
        return Verdict(Kind.NXDOMAIN, rcode, [], soa)
    deleg = referral(reply, zone, sname)
    if deleg is not None and not reply.flags & dns.flags.AA:
        return Verdict(Kind.REFERRAL, rcode, referral=deleg)
    if soa or reply.flags & dns.flags.AA:
        return Verdict(Kind.NODATA, rcode, [], soa)
    return Verdict(Kind.LAME, rcode)


def _ns_of(authority: list[dns.rrset.RRset], sname: dns.name.Name) -> list[dns.rrset.RRset]:
    return [r for r in authority if r.rdtype == NS and within(sname, r.name)]


def scrub_answer(
    reply: dns.message.Message, zone: dns.name.Name, sname: dns.name.Name, stype: int
) -> tuple[list[dns.rrset.RRset], dns.name.Name | None]:
    """The answer RRsets that follow the chain from sname inside the zone's bailiwick, and the name the chain
    ends at when that name has no data in the reply (a CNAME to chase). Anything else in the section is dropped."""
    out: list[dns.rrset.RRset] = []
    names = [sname]
    name: dns.name.Name | None = sname
    while name is not None and within(name, zone):
        data = [r for r in reply.answer if r.name == name and (r.rdtype == stype or stype == ANY)]
        cname = next((r for r in reply.answer if r.name == name and r.rdtype == CNAME), None)
        if data:
            out.extend(data)
            name = None
        elif cname is None:
            break  # no data here: a NODATA (or NXDOMAIN) for the chain's end, or a name to chase
        else:
            out.append(cname)
            target = cname[0].target
            name = None if stype == CNAME or target in names else target  # a CNAME loop ends here
            if name is not None:
                names.append(name)
    # A DNAME above a name of the chain (RFC 6672) travels with the CNAME synthesised from it.
    dnames = [r for r in reply.answer if r.rdtype == DNAME and within(r.name, zone)
              and any(n != r.name and within(n, r.name) for n in names)]  # fmt: skip
    return dnames + out, (name if out else None)


def referral(reply: dns.message.Message, zone: dns.name.Name, sname: dns.name.Name) -> Delegation | None:
    """The delegation a reply hands down: an NS set in authority for a zone strictly below the one asked and at
    or above sname, with the glue that lies inside the asked zone's bailiwick (RFC 1034 4.2.1, RFC 5452 6)."""
    for rrset in reply.authority:
        if rrset.rdtype != NS or rrset.name == zone or not within(rrset.name, zone) or not within(sname, rrset.name):
            continue
        ns = tuple(rd.target for rd in rrset)
        glue: dict[dns.name.Name, list[str]] = {}
        ttl = rrset.ttl
        for extra in reply.additional:
            if extra.rdtype in (A, AAAA) and extra.name in ns and within(extra.name, zone):
                glue.setdefault(extra.name, []).extend(rd.address for rd in extra)
                ttl = min(ttl, extra.ttl)
        return Delegation(rrset.name, ns, tuple((n, tuple(a)) for n, a in glue.items()), ttl)
    return None

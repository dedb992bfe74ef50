"""What a handler answers: records as plain values, an rcode, and the store dependencies of the answer."""

from __future__ import annotations

from dataclasses import dataclass, field

# RR types and rcodes used by name in the code (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 6891).
A, NS, CNAME, SOA, PTR, HINFO, MX, TXT, AAAA, SRV, OPT, IXFR, AXFR, ANY = (
    1,
    2,
    5,
    6,
    12,
    13,
    15,
    16,
    28,
    33,
    41,
    251,
    252,
    255,
)
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 3, 4, 5, 9
BADVERS = 16  # extended rcode (RFC 6891 6.1.3)
CLASS_IN = 1

Labels = tuple[str, ...]  # lower-case labels of an absolute name, without the root

# A dependency tag: what part of the store an answer was derived from. A store change names the
# tags it touches; cached wire answers carrying one of them are dropped (design: "invalidate exactly
# the names an event touched").
Tag = tuple[str, ...]
ALL: Tag = ("all",)  # everything depends on it (Namespace changes, the first sync): drop every cached answer


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record. rdata by type:
    A/AAAA: (ip_text,); NS/CNAME/PTR: (target Labels,); TXT: (strings...);
    SRV: (priority, weight, port, target Labels); SOA: (mname, rname, serial, refresh, retry, expire, minimum).
    """

    name: Labels
    rtype: int
    ttl: int
    rdata: tuple[object, ...]


@dataclass(slots=True)
class Answer:
    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    aa: bool = True
    # The zone this answer belongs to (lower-case); names ending in it are written with the query's spelling.
    zone: Labels | None = None
    tags: frozenset[Tag] = frozenset()
    cacheable: bool = True
    source: str = "cluster"  # which link of the chain answered (metrics and query log)

    @property
    def negative(self) -> bool:
        """NXDOMAIN, or NODATA (RFC 2308 2.2): the answers that carry the zone's SOA in authority."""
        return self.rcode == NXDOMAIN or (self.rcode == NOERROR and not self.answer)

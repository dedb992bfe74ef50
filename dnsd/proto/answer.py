"""What a handler answers: records as plain values, an rcode, and the store dependencies of the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

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


def labels_of(name: str) -> Labels:
    """The labels of a name written as text ("Cluster.Local." -> ("cluster", "local")); the root is ()."""
    return tuple(lab for lab in name.lower().strip(".").split(".") if lab)


def in_zone(name: Labels, zone: Labels) -> bool:
    """Whether name is zone or below it."""
    return len(name) >= len(zone) and name[len(name) - len(zone) :] == zone


TagKind = Literal["svc", "absent-svc", "ip", "absent-ip", "pod", "apex", "zone", "all"]


class Tag(NamedTuple):
    """A dependency tag: what part of the store an answer was derived from. A store change names the tags it
    touches and every pre-rendered answer carrying one of them is dropped, so exactly the names a change touched
    are rendered again. A NamedTuple, so tags hash and compare as fast as plain tuples on the hot path."""

    kind: TagKind
    subject: str = ""  # the namespace, the IP address, or the zone origin
    name: str = ""  # the service name (kind "svc")


def service_tag(namespace: str, name: str) -> Tag:
    """Every name of one service: its records, its endpoints', its SRV."""
    return Tag("svc", namespace, name)


def absent_service_tag(namespace: str) -> Tag:
    """The names of services that do not exist in a namespace: one shared tag, so that a flood of random names
    does not grow the invalidation index; the store names it when any service of the namespace appears."""
    return Tag("absent-svc", namespace)


def ip_tag(ip: str) -> Tag:
    """The PTR records of one address (canonical text)."""
    return Tag("ip", ip)


def pods_tag(namespace: str) -> Tag:
    """The pod names of a namespace (verified mode checks the pods)."""
    return Tag("pod", namespace)


def zone_tag(origin: str) -> Tag:
    """Every answer from one zone file (lower-case origin without the trailing dot): a reload drops them all."""
    return Tag("zone", origin)


ABSENT_IP = Tag("absent-ip")  # PTR queries for addresses nobody holds; named when any address appears
APEX = Tag("apex")  # the apex NS answer and ns.dns, which depend on the services holding our own IPs
ALL = Tag("all")  # everything depends on it (Namespace changes, the first sync): drop every cached answer


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record. rdata by type:
    A/AAAA: (ip_text,); NS/CNAME/PTR: (target Labels,); TXT: (strings...);
    SRV: (priority, weight, port, target Labels); SOA: (mname, rname, serial, refresh, retry, expire, minimum).
    Any type: (raw rdata bytes,), its wire form uncompressed (zone files and upstream answers).
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
    ra: bool = False  # recursion available: set on answers of the links that recurse or forward (RFC 1035 4.1.1)
    # The zone this answer belongs to (lower-case); names ending in it are written with the query's spelling.
    zone: Labels | None = None
    tags: frozenset[Tag] = frozenset()
    cacheable: bool = True
    source: str = "cluster"  # which link of the chain answered (metrics and query log)
    # A verdict of the moment (shed under load, a deadline), never kept by the cache, unlike an upstream's own
    # SERVFAIL (RFC 2308 7.1).
    transient: bool = False

    @property
    def negative(self) -> bool:
        """NXDOMAIN, or NODATA (RFC 2308 2.2): the answers that carry the zone's SOA in authority."""
        return self.rcode == NXDOMAIN or (self.rcode == NOERROR and not self.answer)

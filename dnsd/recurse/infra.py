"""The infrastructure cache: delegations (zone -> NS names and addresses), server addresses, server health and
the names known not to exist (RFC 8020 NXDOMAIN cuts).

Bounded (LRU) and expiring by each entry's own TTL (cachetools TLRUCache), on an injectable clock so that tests
can move time. It is not an answer cache: it only tells a walk where to start and which servers to ask first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.name
import dns.rrset
from cachetools import LRUCache, TLRUCache

MAX_TTL = 86400  # seconds an infrastructure record is kept at most (Unbound's cache-max-ttl)
ZONES = 10_000  # delegations remembered
HOSTS = 20_000  # name-server names whose addresses are remembered
SERVERS = 10_000  # (address, zone) pairs whose health is remembered
NXDOMAINS = 10_000  # names known not to exist (RFC 8020)
MAX_NEGATIVE_TTL = 3600  # seconds an NXDOMAIN cut is kept at most (RFC 2308 5 suggests 1 to 3 hours; Unbound 3600)
UNKNOWN_RTT = 0.376  # what a server never asked is assumed to take (Unbound's UNKNOWN_SERVER_NICENESS)
BAND = 0.4  # servers within this of the fastest are picked at random among (Unbound's RTT band)
DOWN_FOR = 60.0  # seconds a server that failed for a zone is asked only after the others (Unbound: infra-host-ttl)


@dataclass(frozen=True, slots=True)
class Delegation:
    """A zone cut: the zone, its NS names and the addresses known for them (glue within the bailiwick of the
    server that gave it, or addresses resolved since)."""

    zone: dns.name.Name
    ns: tuple[dns.name.Name, ...]
    glue: tuple[tuple[dns.name.Name, tuple[str, ...]], ...] = ()
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class Host:
    addresses: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class Nxdomain:
    """A name its zone said does not exist, and the zone's SOA (for the negative answer and its TTL)."""

    name: dns.name.Name
    soa: dns.rrset.RRset
    ttl: int
    until: float  # on the Infra clock


@dataclass(slots=True)
class Health:
    rtt: float = UNKNOWN_RTT
    down_until: float = 0.0


def _ttu(ttl: int) -> float:
    return float(min(max(ttl, 0), MAX_TTL))


class Infra:
    """Delegations, host addresses and server health, each bounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, size: int = ZONES) -> None:
        self.clock = clock  # read through a lambda: a test may move time by replacing it
        self.zones: TLRUCache[dns.name.Name, Delegation] = TLRUCache(
            size, ttu=lambda _k, v, now: now + _ttu(v.ttl), timer=lambda: self.clock()
        )
        self.hosts: TLRUCache[dns.name.Name, Host] = TLRUCache(
            max(size * 2, 1), ttu=lambda _k, v, now: now + _ttu(v.ttl), timer=lambda: self.clock()
        )
        self.health: LRUCache[tuple[str, dns.name.Name], Health] = LRUCache(size)
        self.nxdomains: TLRUCache[dns.name.Name, Nxdomain] = TLRUCache(
            max(size, 1), ttu=lambda _k, v, _now: v.until, timer=lambda: self.clock()
        )

    # ------------------------------------------------------------ delegations

    def add_delegation(self, deleg: Delegation) -> None:
        self.zones[deleg.zone] = deleg
        for host, addrs in deleg.glue:
            self.add_host(host, addrs, deleg.ttl)

    def closest(self, name: dns.name.Name) -> Delegation | None:
        """The deepest known delegation at or above name (the root's comes from the hints, not from here)."""
        while name != dns.name.root:
            deleg = self.zones.get(name)
            if deleg is not None:
                return deleg
            name = name.parent()
        return None

    # ------------------------------------------------------------ names that do not exist (RFC 8020)

    def add_nxdomain(self, name: dns.name.Name, soa: dns.rrset.RRset) -> None:
        """Remember that name does not exist, for the negative TTL: the lesser of the SOA's TTL and its MINIMUM
        (RFC 2308 5), at most MAX_NEGATIVE_TTL."""
        ttl = min(soa.ttl, soa[0].minimum, MAX_NEGATIVE_TTL)
        if ttl > 0 and name != dns.name.root:
            self.nxdomains[name] = Nxdomain(name, soa, ttl, self.clock() + ttl)

    def nxdomain_at_or_above(self, name: dns.name.Name) -> Nxdomain | None:
        """A remembered NXDOMAIN for name or one of its ancestors: nothing exists below it (RFC 8020 2)."""
        if not self.nxdomains:
            return None
        while name != dns.name.root:  # bounded: at most 127 labels
            cut = self.nxdomains.get(name)
            if cut is not None:
                return cut
            name = name.parent()
        return None

    # ------------------------------------------------------------ addresses

    def add_host(self, name: dns.name.Name, addresses: Iterable[str], ttl: int) -> None:
        addrs = tuple(dict.fromkeys(addresses))
        if addrs:
            self.hosts[name] = Host(addrs, ttl)

    def addresses(self, name: dns.name.Name) -> tuple[str, ...]:
        host = self.hosts.get(name)
        return host.addresses if host is not None else ()

    # ------------------------------------------------------------ health

    def answered(self, addr: str, zone: dns.name.Name, rtt: float) -> None:
        h = self.health.get((addr, zone))
        if h is None:
            self.health[(addr, zone)] = Health(rtt)
        else:
            h.rtt = 0.7 * h.rtt + 0.3 * rtt  # smoothed, as Unbound's RTT estimate
            h.down_until = 0.0

    def failed(self, addr: str, zone: dns.name.Name) -> None:
        """A timeout, a network error, REFUSED or SERVFAIL, or a lame reply: asked last for a while."""
        h = self.health.setdefault((addr, zone), Health())
        h.down_until = self.clock() + DOWN_FOR

    def order(self, addrs: Iterable[str], zone: dns.name.Name) -> list[str]:
        """Servers to try: the ones that did not fail lately first, the fast band among them in random order
        (spreads load, as Unbound does), then slower ones, the failed last."""
        now = self.clock()
        scored: list[tuple[int, float, float, str]] = []
        for addr in dict.fromkeys(addrs):
            h = self.health.get((addr, zone))
            down = h is not None and h.down_until > now
            rtt = h.rtt if h is not None else UNKNOWN_RTT
            scored.append((int(down), rtt, random.random(), addr))
        if not scored:
            return []
        best = min(s[1] for s in scored if s[0] == 0) if any(s[0] == 0 for s in scored) else 0.0
        scored.sort(key=lambda s: (s[0], s[1] > best + BAND, s[2] if s[1] <= best + BAND else s[1]))
        return [s[3] for s in scored]

"""The infrastructure cache: delegations (zone -> NS names and addresses), server addresses, server health and
the names known not to exist (RFC 8020 NXDOMAIN cuts).

Bounded (LRU) and expiring by each entry's own TTL, on an injectable clock so that tests can move time. It is
not an answer cache: it only tells a walk where to start and which servers to ask first. Every walk reads it
several times (closest delegation, NXDOMAIN cuts, addresses, health), so it is keyed by a name's lower-case labels
(names compare case-insensitively, RFC 4343): a tuple of bytes hashes and slices to its ancestors in C, where a
dns.name.Name hashes letter by letter in Python.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import dns.name
import dns.rrset

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


Key = tuple[bytes, ...]  # a name's labels in lower case, the root's empty label last
V = TypeVar("V")


def key(name: dns.name.Name) -> Key:
    return tuple(label.lower() for label in name.labels)


class Expiring(Generic[V]):
    """A bounded map, least recently used out first, whose entries expire at their own time (on the caller's
    clock). An expired entry goes when it is next read, or when the LRU order pushes it out."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.data: OrderedDict[Key, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.data)

    def get(self, k: Key, now: float) -> V | None:
        item = self.data.get(k)
        if item is None:
            return None
        if now >= item[0]:
            del self.data[k]
            return None
        self.data.move_to_end(k)
        return item[1]

    def put(self, k: Key, value: V, until: float) -> None:
        self.data[k] = (until, value)
        self.data.move_to_end(k)
        if len(self.data) > self.size:
            self.data.popitem(last=False)


class Infra:
    """Delegations, host addresses and server health, each bounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, size: int = ZONES) -> None:
        self.clock = clock  # read at each call: a test may move time by replacing it
        self.zones: Expiring[Delegation] = Expiring(size)
        self.hosts: Expiring[Host] = Expiring(size * 2)
        self.health: OrderedDict[tuple[str, Key], Health] = OrderedDict()  # LRU, at most `size`
        self.health_size = max(size, 1)
        self.nxdomains: Expiring[Nxdomain] = Expiring(size)

    # ------------------------------------------------------------ delegations

    def add_delegation(self, deleg: Delegation) -> None:
        now = self.clock()
        self.zones.put(key(deleg.zone), deleg, now + _ttu(deleg.ttl))
        for host, addrs in deleg.glue:
            self.add_host(host, addrs, deleg.ttl)

    def closest(self, name: dns.name.Name) -> Delegation | None:
        """The deepest known delegation at or above name (the root's comes from the hints, not from here)."""
        k, now = key(name), self.clock()
        for i in range(len(k) - 1):  # name, its parent, ..., the TLD: not the root
            deleg = self.zones.get(k[i:], now)
            if deleg is not None:
                return deleg
        return None

    # ------------------------------------------------------------ names that do not exist (RFC 8020)

    def add_nxdomain(self, name: dns.name.Name, soa: dns.rrset.RRset) -> None:
        """Remember that name does not exist, for the negative TTL: the lesser of the SOA's TTL and its MINIMUM
        (RFC 2308 5), at most MAX_NEGATIVE_TTL."""
        ttl = min(soa.ttl, soa[0].minimum, MAX_NEGATIVE_TTL)
        if ttl > 0 and name != dns.name.root:
            until = self.clock() + ttl
            self.nxdomains.put(key(name), Nxdomain(name, soa, ttl, until), until)

    def nxdomain_at_or_above(self, name: dns.name.Name) -> Nxdomain | None:
        """A remembered NXDOMAIN for name or one of its ancestors: nothing exists below it (RFC 8020 2)."""
        if not self.nxdomains:
            return None
        k, now = key(name), self.clock()
        for i in range(len(k) - 1):  # bounded: at most 127 labels; the root is never a cut
            cut = self.nxdomains.get(k[i:], now)
            if cut is not None:
                return cut
        return None

    # ------------------------------------------------------------ addresses

    def add_host(self, name: dns.name.Name, addresses: Iterable[str], ttl: int) -> None:
        addrs = tuple(dict.fromkeys(addresses))
        if addrs:
            self.hosts.put(key(name), Host(addrs, ttl), self.clock() + _ttu(ttl))

    def addresses(self, name: dns.name.Name) -> tuple[str, ...]:
        host = self.hosts.get(key(name), self.clock())
        return host.addresses if host is not None else ()

    # ------------------------------------------------------------ health

    def _health(self, addr: str, zone: dns.name.Name, rtt: float) -> Health:
        k = (addr, key(zone))
        h = self.health.get(k)
        if h is None:
            h = self.health[k] = Health(rtt)
            if len(self.health) > self.health_size:
                self.health.popitem(last=False)
        else:
            self.health.move_to_end(k)
        return h

    def answered(self, addr: str, zone: dns.name.Name, rtt: float) -> None:
        h = self._health(addr, zone, rtt)
        h.rtt = 0.7 * h.rtt + 0.3 * rtt  # smoothed, as Unbound's RTT estimate (a new entry: rtt itself)
        h.down_until = 0.0

    def failed(self, addr: str, zone: dns.name.Name) -> None:
        """A timeout, a network error, REFUSED or SERVFAIL, or a lame reply: asked last for a while."""
        self._health(addr, zone, UNKNOWN_RTT).down_until = self.clock() + DOWN_FOR

    def order(self, addrs: Iterable[str], zone: dns.name.Name) -> list[str]:
        """Servers to try: the ones that did not fail lately first, the fast band among them in random order
        (spreads load, as Unbound does), then slower ones, the failed last."""
        unique = list(dict.fromkeys(addrs))
        if len(unique) <= 1:
            return unique  # nothing to choose between (the usual leaf zone of one server)
        now, z = self.clock(), key(zone)
        scored: list[tuple[int, float, float, str]] = []
        for addr in unique:
            h = self.health.get((addr, z))
            down = h is not None and h.down_until > now
            rtt = h.rtt if h is not None else UNKNOWN_RTT
            scored.append((int(down), rtt, random.random(), addr))
        if not scored:
            return []
        best = min(s[1] for s in scored if s[0] == 0) if any(s[0] == 0 for s in scored) else 0.0
        scored.sort(key=lambda s: (s[0], s[1] > best + BAND, s[2] if s[1] <= best + BAND else s[1]))
        return [s[3] for s in scored]

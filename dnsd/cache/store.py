"""The cache's storage: which upstream answers are kept and for how long (RFC 1035 7.4, RFC 2308, RFC 8767), the
entries bounded by count, and their replies kept as wire bytes with the offsets of their TTL fields."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cachetools import TLRUCache

from dnsd.config import CacheConfig
from dnsd.observe.counts import Key, QueryCounts
from dnsd.proto.answer import NOERROR, NXDOMAIN, RR, SERVFAIL, SOA, Answer, Labels, in_zone
from dnsd.proto.ttl import ttl_offsets
from dnsd.proto.wire import Query

SERVFAIL_TTL = 5  # seconds an upstream failure is remembered (RFC 2308 7.1 allows 5 minutes; CoreDNS keeps 5 s)
STALE_TTL = 30  # the TTL of a stale answer (RFC 8767 4)
STALE_RETRY = 30.0  # while serving stale, at most one refresh attempt per this many seconds (RFC 8767 5)
WIRE_MIN = 1024  # exact-query replies kept at least; at most twice the entries (cleared whole when full)

CacheKey = tuple[bytes, int, bool, bool]  # lower-cased qname wire, qtype, DO, CD (the class is always IN here)
NO_KEY = Key(".", "other", "NOERROR", "cache", "udp", "1", "")


def cache_key(q: Query) -> CacheKey:
    """Case does not matter (RFC 4343); DO and CD change what an upstream returns (RFC 4035 3.2), so each is
    its own entry."""
    return (q.qname_wire.lower(), q.qtype, q.edns is not None and q.edns.do, bool(q.flags & 0x0010))


@dataclass(slots=True, eq=False)
class Entry:
    """One cached answer: the records with their TTLs when stored (capped at the entry's TTL)."""

    key: CacheKey
    answer: Answer
    stored: float
    ttl: int
    query: Query  # what was asked, so that a prefetch can ask it again
    link: Any  # the tail link that answered (an AsyncLink), for the prefetch
    hits: int = 0
    live: bool = True  # False once evicted, replaced or withdrawn: its wire replies stop being served
    retry_at: float = 0.0  # serve-stale: no upstream attempt before this (RFC 8767 5)
    prefetching: bool = False

    @property
    def expires(self) -> float:
        return self.stored + self.ttl

    def fresh(self, now: float) -> bool:
        return now < self.stored + self.ttl

    def remaining(self, now: float) -> int:
        return self.ttl - int(now - self.stored)

    def aged(self, now: float) -> Answer:
        """The answer as served now: every TTL less the whole seconds since it was stored."""
        age = int(now - self.stored)
        return self._with_ttls(lambda ttl: max(0, ttl - age))

    def stale(self) -> Answer:
        """The answer served past its expiry when the upstreams fail: every TTL set to STALE_TTL (RFC 8767 4)."""
        return self._with_ttls(lambda _ttl: STALE_TTL)

    def _with_ttls(self, ttl: Callable[[int], int]) -> Answer:
        a = self.answer
        return replace(
            a,
            answer=[replace(rr, ttl=ttl(rr.ttl)) for rr in a.answer],
            authority=[replace(rr, ttl=ttl(rr.ttl)) for rr in a.authority],
            additional=[replace(rr, ttl=ttl(rr.ttl)) for rr in a.additional],
            source="cache",
        )


@dataclass(slots=True, eq=False)
class WireReply:
    """A cached answer as rendered for one exact query (everything after the ID), and where its TTLs are: a hit
    is a copy and a patch of the TTLs, at most once a second, not a render."""

    entry: Entry
    template: bytes
    offsets: list[int]
    base: list[int]  # each TTL as rendered, at age 0
    key: Key = NO_KEY  # the metrics' labels (dnsd.observe.counts): hits counted as the fast path's slots are
    qsize: int = 0
    rsize: int = 0
    hits: int = 0
    seen: int = 0
    age: int = -1
    current: bytes = b""
    until: float = 0.0  # `current` is right until this time (the next whole second of age); 0: not made yet

    def at(self, now: float) -> bytes | None:
        """The reply (after the ID) as of now; None when the entry expired or is gone."""
        entry = self.entry
        age = int(now - entry.stored)
        if age >= entry.ttl or age < 0 or not entry.live:
            return None
        if age != self.age:
            out = bytearray(self.template)
            for off, ttl in zip(self.offsets, self.base, strict=True):
                struct.pack_into("!I", out, off, max(0, ttl - age))
            self.current = bytes(out)
            self.age = age
            self.until = entry.stored + age + 1
        return self.current


def wire_reply(entry: Entry, reply: bytes, key: Key = NO_KEY, qsize: int = 0) -> WireReply:
    """A WireReply from a full reply rendered from entry.answer at age 0."""
    offsets = [off - 2 for off in ttl_offsets(reply)]
    rest = reply[2:]
    base = [struct.unpack_from("!I", rest, off)[0] for off in offsets]
    return WireReply(entry, rest, offsets, base, key, qsize, len(reply))


@dataclass(slots=True)
class CacheStats:
    """Plain counters (the metrics publish them at scrape time)."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    not_stored: int = 0  # answers the rules refused (no SOA, TTL 0, our own names, transient)
    evictions: int = 0
    expired: int = 0
    stale_served: int = 0
    prefetches: int = 0
    coalesced: int = 0  # queries that waited on an identical one in flight instead of asking upstream
    withdrawn: int = 0  # entries dropped because a zone of ours now holds their name


class _Entries(TLRUCache[CacheKey, Entry]):
    """Entries by key: least recently used evicted first when full, dropped once past expiry plus the stale
    window (ttu). Eviction marks the entry dead, so its wire replies are no longer served."""

    def __init__(self, maxsize: int, stale_window: int, timer: Callable[[], float], stats: CacheStats) -> None:
        super().__init__(maxsize, self._ttu, timer)
        self.stale_window = stale_window
        self.stats = stats

    def _ttu(self, _key: CacheKey, entry: Entry, _now: float) -> float:
        return entry.expires + self.stale_window

    def popitem(self) -> tuple[CacheKey, Entry]:
        key, entry = super().popitem()
        entry.live = False
        self.stats.evictions += 1
        return key, entry

    def expire(self, time: float | None = None) -> list[tuple[CacheKey, Entry]]:
        gone = super().expire(time)
        for _key, entry in gone:
            entry.live = False
        self.stats.expired += len(gone)
        return gone


@dataclass
class AnswerCache:
    """The store of cached answers. `is_ours` says whether a name belongs to a zone we answer for (the cluster
    domain, its reverse zones, the zone files): upstream data for those is never kept."""

    cfg: CacheConfig
    is_ours: Callable[[Labels], bool]
    clock: Callable[[], float] = time.monotonic
    stats: CacheStats = field(default_factory=CacheStats)
    counts: QueryCounts | None = None  # where exact replies' hits go when they leave (the engine's)

    def __post_init__(self) -> None:
        self.entries = _Entries(self.cfg.size, self.cfg.serve_stale, self.now, self.stats)
        self.wire: dict[bytes, WireReply] = {}
        self.wire_max = max(WIRE_MIN, 2 * self.cfg.size)

    def now(self) -> float:
        """The cache's clock (injected: the tests move it instead of sleeping)."""
        return self.clock()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: CacheKey) -> Entry | None:
        """The entry for key, fresh or (within the serve-stale window) expired."""
        return self.entries.get(key)

    def store(self, q: Query, ans: Answer, link: object) -> Entry | None:
        """Keep ans for q if the rules allow; the entry, or None."""
        ttl = None if ans.transient or self.is_ours(q.labels) else self.ttl_of(ans)
        if ttl is None or ttl <= 0:
            self.stats.not_stored += 1
            return None
        kept = replace(
            ans,
            answer=[_cap(rr, ttl) for rr in ans.answer],
            authority=[_cap(rr, ttl) for rr in ans.authority],
            additional=[_cap(rr, ttl) for rr in ans.additional],
            aa=False,
            cacheable=False,
        )
        entry = Entry(cache_key(q), kept, self.now(), ttl, q, link)
        old = self.entries.get(entry.key)
        if old is not None:
            old.live = False
        if self.cfg.size:
            self.entries[entry.key] = entry
        self.stats.stored += 1
        return entry

    def ttl_of(self, ans: Answer) -> int | None:
        """How long an answer may be kept, or None: positive answers for their smallest TTL (RFC 2181 5.2),
        negative ones for min(SOA TTL, SOA MINIMUM) and not at all without an SOA (RFC 2308 3, 5), an
        upstream's SERVFAIL briefly (RFC 2308 7.1); anything else not."""
        if ans.rcode == SERVFAIL:
            return SERVFAIL_TTL
        if ans.rcode == NOERROR and ans.answer:
            return min(min(rr.ttl for rr in ans.answer), self.cfg.success_ttl_max)
        if ans.rcode not in (NOERROR, NXDOMAIN):
            return None
        soa = next((rr for rr in ans.authority if rr.rtype == SOA), None)
        minimum = _soa_minimum(soa) if soa is not None else None
        if soa is None or minimum is None:
            return None
        ttl = min(soa.ttl, minimum, self.cfg.denial_ttl_max)
        if ans.answer:  # NXDOMAIN at the end of a CNAME chain: the chain's records bound it too
            ttl = min(ttl, min(rr.ttl for rr in ans.answer))
        return ttl

    def remember(self, rest: bytes, wire: WireReply) -> None:
        """Keep the reply for one exact query (everything after the ID), bounded by count."""
        if len(self.wire) >= self.wire_max:
            self.clear_wire()
        self.wire[rest] = wire

    def forget(self, rest: bytes) -> None:
        """One exact reply goes (its entry expired): its hits go to the totals."""
        wire = self.wire.pop(rest, None)
        if wire is not None and wire.hits and self.counts is not None:
            self.counts.fold(wire, rest)

    def clear_wire(self) -> None:
        if self.counts is not None:
            for rest, wire in self.wire.items():
                if wire.hits:
                    self.counts.fold(wire, rest)
        self.wire.clear()

    def drop_under(self, zone: Labels) -> int:
        """A zone of ours appeared or changed: forget every entry at or below it (and every wire reply)."""
        gone = [k for k, e in list(self.entries.items()) if in_zone(e.query.labels, zone)]
        for key in gone:
            entry = self.entries.pop(key)
            entry.live = False
        self.clear_wire()
        self.stats.withdrawn += len(gone)
        return len(gone)


def _cap(rr: RR, ttl: int) -> RR:
    return rr if rr.ttl <= ttl else replace(rr, ttl=ttl)


def _soa_minimum(soa: RR) -> int | None:
    """The MINIMUM field of an SOA: the last 4 octets of its wire rdata (RFC 1035 3.3.13)."""
    value = soa.rdata[-1] if soa.rdata else None
    if isinstance(value, bytes) and len(soa.rdata) == 1 and len(value) >= 22:
        return int(struct.unpack_from("!I", value, len(value) - 4)[0])
    if isinstance(value, int):
        return value
    return None

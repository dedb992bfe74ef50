"""The plain counters behind the metrics: what the hot path touches is an int attribute or a dict slot, never a
prometheus_client object; the collector (metrics.py) folds them into families at scrape time.

Queries are counted per Key (zone, type, rcode, link, proto, family, namespace): the exact-query fast path counts
on the Slot that holds each reply (one attribute increment, see fastpath.py), everything else through
QueryCounts.add. The labels are bounded: types outside COMMON_TYPES are "other", namespaces beyond the cap are
"other", zones are ours or ".".
"""

from __future__ import annotations

import bisect
import functools
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from dnsd.proto.wire import rcode_text, type_text

# Types that get a label of their own (CoreDNS's plugin/pkg/dnsutil monitored types, plus HTTPS/SVCB); the rest
# are counted as "other", so a client asking random types cannot grow the label set.
COMMON_TYPES = frozenset({1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 46, 47, 48, 50, 51, 52, 64, 65, 99, 252, 255, 257})
# Buckets of the request duration histogram (seconds): CoreDNS's dns.TimeBuckets.
DURATION_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.048,
    4.096,
    8.192,
)
# Request and response sizes (octets): CoreDNS's plugin/pkg/dnsutil size buckets.
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000)
# Upstream round trips (seconds): CoreDNS's forward plugin uses the same time buckets.
UPSTREAM_BUCKETS = DURATION_BUCKETS
# Programming latency (seconds): a change in the source to the changed answer being served.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"


def type_label(qtype: int) -> str:
    return type_text(qtype) if qtype in COMMON_TYPES else OTHER


class Key(NamedTuple):
    """The labels one answered query is counted under."""

    zone: str
    type: str
    rcode: str
    link: str
    proto: str
    family: str  # "1" IPv4, "2" IPv6 (CoreDNS's family label)
    namespace: str  # "" outside the cluster domain


class Histogram:
    """Bucket counts (not cumulative), a sum and a count; observe() is a bisect and two additions."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def merged(self, others: Iterable[Histogram]) -> Histogram:
        out = Histogram(self.bounds)
        for h in (self, *others):
            for i, c in enumerate(h.counts):
                out.counts[i] += c
            out.sum += h.sum
            out.count += h.count
        return out

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), +Inf last."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            total += c
            out.append((_le(bound), float(total)))
        out.append(("+Inf", float(self.count)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Counted(Protocol):
    """What QueryCounts.fold reads: a reply served `hits` times under `key` (a Slot, a cached wire reply)."""

    hits: int
    seen: int
    key: Key
    qsize: int
    rsize: int


class Slot:
    """The value of an exact-query table: the reply after its ID, how often it was served, and under which labels
    (a hit is `slot.hits += 1`: the labels and sizes are fixed per slot, so nothing else is needed per query)."""

    __slots__ = ("hits", "key", "qsize", "rest", "rsize", "seen")

    def __init__(self, rest: bytes, key: Key, qsize: int) -> None:
        self.rest = rest
        self.hits = 0
        self.seen = 0  # hits already given to the NXDOMAIN sketch (it is fed at scrape time)
        self.key = key
        self.qsize = qsize
        self.rsize = len(rest) + 2


class SpaceSaving:
    """The top names of a stream in bounded memory (Metwally et al.'s Space-Saving): at most `size` counters;
    a new name takes the place of the smallest, inheriting its count (an overestimate bounded by that count).

    The smallest counter is found through the paper's Stream-Summary: names grouped by count, the counts in a
    heap (stale ones skipped lazily), so a stream of never-repeated names (random labels, each one NXDOMAIN)
    costs O(log size) per name, not a scan of every counter."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.counts: dict[str, int] = {}
        self._groups: dict[int, dict[str, None]] = {}  # count -> the names holding it, oldest first
        self._heap: list[int] = []  # the counts of _groups, each at least once (stale entries skipped)

    def add(self, name: str, n: int = 1) -> None:
        counts, groups = self.counts, self._groups
        old = counts.get(name)
        if old is None:
            if len(counts) < self.size:
                old = 0
            else:
                heap = self._heap
                while heap[0] not in groups:
                    heapq.heappop(heap)
                old = heap[0]
                smallest = groups[old]
                victim = next(iter(smallest))
                del smallest[victim], counts[victim]
                if not smallest:
                    del groups[old]
        else:
            was = groups[old]
            del was[name]
            if not was:
                del groups[old]
        new = old + n
        counts[name] = new
        group = groups.get(new)
        if group is None:
            group = groups[new] = {}
            heapq.heappush(self._heap, new)
            if len(self._heap) > 4 * self.size + 64:  # stale counts: rebuild from the live ones
                self._heap = list(groups)
                heapq.heapify(self._heap)
        group[name] = None

    def top(self, k: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


@dataclass
class QueryCounts:
    """Every query answered off the exact fast path, and what the exact slots hand back when they go."""

    namespace_cap: int = 100
    top_size: int = 1000
    requests: dict[Key, int] = field(default_factory=dict)
    duration: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (zone, type)
    request_size: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (zone, proto)
    response_size: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (zone, proto)
    namespaces: set[str] = field(default_factory=set)
    nxdomain_names: SpaceSaving = field(init=False)
    _hists: dict[Key, tuple[Histogram, Histogram, Histogram]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nxdomain_names = SpaceSaving(self.top_size)
        self._hists = {}

    def namespace(self, name: str) -> str:
        """The namespace label: the first namespace_cap namespaces seen have their own, the rest are "other"."""
        if name in self.namespaces:
            return name
        if len(self.namespaces) < self.namespace_cap:
            self.namespaces.add(name)
            return name
        return OTHER

    def add(self, key: Key, n: int, seconds: float, qsize: int, rsize: int) -> None:
        self.requests[key] = self.requests.get(key, 0) + n
        hists = self._hists.get(key)
        if hists is None:
            hists = self._hists[key] = self._histograms(key)
        duration, request, response = hists
        duration.observe(seconds, n)
        request.observe(qsize, n)
        if rsize:
            response.observe(rsize, n)

    def _histograms(self, key: Key) -> tuple[Histogram, Histogram, Histogram]:
        """The three histograms a key's queries go to (memoised per key: one lookup per query, not three)."""
        zt, zp = (key.zone, key.type), (key.zone, key.proto)
        duration = self.duration.get(zt)
        if duration is None:
            duration = self.duration[zt] = Histogram(DURATION_BUCKETS)
        request = self.request_size.get(zp)
        if request is None:
            request = self.request_size[zp] = Histogram(SIZE_BUCKETS)
        response = self.response_size.get(zp)
        if response is None:
            response = self.response_size[zp] = Histogram(SIZE_BUCKETS)
        return duration, request, response

    def fold(self, slot: Counted, query_after_id: bytes) -> None:
        """A slot leaves its table: what it served goes into the totals (at 0 s: fast hits are not timed)."""
        if slot.hits:
            self.add(slot.key, slot.hits, 0.0, slot.qsize, slot.rsize)
            self.sketch(slot, query_after_id)
            slot.hits = 0
            slot.seen = 0

    def sketch(self, slot: Counted, query_after_id: bytes) -> None:
        """Give the NXDOMAIN sketch the hits of a slot it has not seen yet."""
        if slot.key.rcode == "NXDOMAIN" and slot.hits > slot.seen:
            self.nxdomain_names.add(qname_text(query_after_id), slot.hits - slot.seen)
            slot.seen = slot.hits


def qname_text(query_after_id: bytes) -> str:
    """The question name of a query (after its ID), lower-cased, for the NXDOMAIN names."""
    labels: list[str] = []
    at = 10
    while at < len(query_after_id):
        n = query_after_id[at]
        if n == 0 or n > 63:
            break
        labels.append(query_after_id[at + 1 : at + 1 + n].decode("ascii", "backslashreplace").lower())
        at += 1 + n
    return ".".join(labels) + "."


@functools.lru_cache(maxsize=4096)  # a handful of distinct label sets; the text of types and rcodes is not free
def key_for(zone: str, qtype: int, rcode: int, link: str, proto: str, v6: bool, namespace: str) -> Key:
    return Key(zone, type_label(qtype), rcode_text(rcode), link, proto, "2" if v6 else "1", namespace)

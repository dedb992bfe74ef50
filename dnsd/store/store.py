"""The endpoint store: Kubernetes objects, their indexes, the sync flag, a generation and change events."""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dnsd.proto.answer import ABSENT_IP, ALL, APEX, Tag, absent_service_tag, ip_tag, pods_tag, service_tag
from dnsd.store.model import Endpoint, EndpointSlice, KubeObject, Namespace, Pod, Service, object_key

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str, str]
ServiceKey = tuple[str, str]  # (namespace, service name)
# A change touching more cached answers than this drops them all: one clear is cheaper than that many lookups.
MAX_TAGS = 10_000
# Services whose ready addresses are kept worked out (ready_addresses). Cleared by every change and when full:
# at 100,000 services an unbounded cache would hold a second copy of every endpoint.
READY_CACHE_MAX = 4096

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class ReadyAddress:
    """One ready endpoint address of a service, with the slice it came from (CoreDNS's EndpointAddress)."""

    address: str
    endpoint: Endpoint
    slice: EndpointSlice


EndpointEntry = tuple[Service, ReadyAddress]
# Index values: one object (the common case, no tuple to hold it: 48 bytes a key at 100,000 services) or several.
Services = Service | tuple[Service, ...]
Slices = EndpointSlice | tuple[EndpointSlice, ...]
T = TypeVar("T")


def _services(value: Services | None) -> tuple[Service, ...]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def _slices(value: Slices | None) -> tuple[EndpointSlice, ...]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def _pack(items: tuple[T, ...]) -> T | tuple[T, ...] | None:
    if not items:
        return None
    return items[0] if len(items) == 1 else items


class _Layer(Generic[K, V]):
    """One batch's writes to one published table. Reads see the batch's writes first, then the table; the table
    itself is changed only by apply (Store.commit, on the loop), in time proportional to the writes.

    A key deleted and written again in one batch moves to the end of the table, as a pop and an insert would
    move it (the order of `services` is the store order PTR answers follow)."""

    __slots__ = ("base", "dels", "sets")

    def __init__(self, base: dict[K, V]) -> None:
        self.base = base
        self.sets: dict[K, V] = {}
        self.dels: set[K] = set()

    def get(self, key: K) -> V | None:
        value = self.sets.get(key)
        if value is not None or key in self.dels:
            return value
        return self.base.get(key)

    def __setitem__(self, key: K, value: V) -> None:
        self.sets[key] = value

    def pop(self, key: K) -> None:
        self.sets.pop(key, None)
        self.dels.add(key)

    def put(self, key: K, value: V | None) -> None:
        """Write value, or delete the key when value is None."""
        if value is None:
            self.pop(key)
        else:
            self.sets[key] = value

    def apply(self) -> dict[K, V]:
        """Write the batch into the table; return the table to publish (the batch's own dict on a first load)."""
        if not self.sets and not self.dels:
            return self.base
        if not self.base:
            return self.sets  # nothing to merge into (a first load): no copy at all
        for key in self.dels:
            self.base.pop(key, None)
        self.base.update(self.sets)
        return self.base


class _Tables:
    """Every published table of the store. Values are never changed in place (a group is a tuple, replaced
    whole), so a reader in another thread sees each value whole; the dicts themselves change only in commit."""

    __slots__ = (
        "cluster_ip",
        "endpoint_ip",
        "endpoints_v1",
        "namespaces",
        "objects",
        "pod_ip",
        "pods",
        "service_seq",
        "services",
        "slices",
    )

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, KubeObject] = {}
        self.namespaces: set[str] = set()
        self.services: dict[ServiceKey, Service] = {}
        # A service's EndpointSlices sorted by name (one held as itself); a v1 Endpoints object is used only
        # when there is none.
        self.slices: dict[ServiceKey, Slices] = {}
        self.endpoints_v1: dict[ServiceKey, EndpointSlice] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        # PTR indexes (spec 3.5), kept up to date by every batch so a reverse lookup is a dict lookup: cluster IP
        # -> its services in insertion order; endpoint IP (canonical) -> the services with a ready address
        # equal to it, in store order (the addresses themselves are found in the service's slices).
        self.cluster_ip: dict[str, Services] = {}
        self.endpoint_ip: dict[str, Services] = {}
        # The order services were (re)inserted in, which is the order of `services` and so of PTR targets.
        self.service_seq: dict[ServiceKey, int] = {}
        self.pod_ip: dict[tuple[str, str], int] = {}  # (ns, primary IP) -> pods


class _Batch:
    """A batch being worked out: a layer over each table (see _Layer), read and written like the tables."""

    __slots__ = (
        "base",
        "cluster_ip",
        "endpoint_ip",
        "endpoints_v1",
        "keys",
        "namespaces",
        "next_seq",
        "objects",
        "pod_ip",
        "pods",
        "service_seq",
        "services",
        "slices",
    )

    def __init__(self, base: _Tables, next_seq: int) -> None:
        self.base = base
        self.objects: _Layer[ObjectKey, KubeObject] = _Layer(base.objects)
        self.namespaces: dict[str, bool] = {}  # name -> present after the batch
        self.services: _Layer[ServiceKey, Service] = _Layer(base.services)
        self.slices: _Layer[ServiceKey, Slices] = _Layer(base.slices)
        self.endpoints_v1: _Layer[ServiceKey, EndpointSlice] = _Layer(base.endpoints_v1)
        self.pods: _Layer[tuple[str, str], Pod] = _Layer(base.pods)
        self.cluster_ip: _Layer[str, Services] = _Layer(base.cluster_ip)
        self.endpoint_ip: _Layer[str, Services] = _Layer(base.endpoint_ip)
        self.service_seq: _Layer[ServiceKey, int] = _Layer(base.service_seq)
        self.pod_ip: _Layer[tuple[str, str], int] = _Layer(base.pod_ip)
        self.next_seq = next_seq
        # One (namespace, service) tuple for a service's entries in every table the batch writes (services,
        # service_seq, slices): a first load then holds one per service instead of three.
        self.keys: dict[ServiceKey, ServiceKey] = {}

    def _key(self, ns: str, name: str) -> ServiceKey:
        key = (ns, name)
        return self.keys.setdefault(key, key)

    def touch(self, obj: KubeObject, dirty: dict[ServiceKey, None]) -> None:
        """Note the service whose endpoint-IP entries the object feeds."""
        if isinstance(obj, Service):
            dirty[self._key(obj.namespace, obj.name)] = None
        elif isinstance(obj, EndpointSlice):
            dirty[self._key(obj.namespace, obj.service)] = None

    def index(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces[obj.name] = True
        elif isinstance(obj, Service):
            key = self._key(obj.namespace, obj.name)
            self.services[key] = obj
            self.service_seq[key] = self.next_seq
            self.next_seq += 1
            for ip in obj.cluster_ips:
                self.cluster_ip.put(ip, _pack((*_services(self.cluster_ip.get(ip)), obj)))
        elif isinstance(obj, EndpointSlice):
            key = self._key(obj.namespace, obj.service)
            if obj.from_endpoints:
                self.endpoints_v1[key] = obj
            else:
                group = [s for s in _slices(self.slices.get(key)) if s.name != obj.name]
                group.append(obj)
                group.sort(key=_slice_name)
                self.slices.put(key, _pack(tuple(group)))
        else:
            self.pods[(obj.namespace, obj.name)] = obj
            k = _pod_ip_key(obj)
            if k is not None:
                self.pod_ip[k] = (self.pod_ip.get(k) or 0) + 1

    def unindex(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces[obj.name] = False
        elif isinstance(obj, Service):
            key = (obj.namespace, obj.name)
            self.services.pop(key)
            self.service_seq.pop(key)
            for ip in obj.cluster_ips:
                rest = tuple(s for s in _services(self.cluster_ip.get(ip)) if (s.namespace, s.name) != key)
                self.cluster_ip.put(ip, _pack(rest))
        elif isinstance(obj, EndpointSlice):
            key = (obj.namespace, obj.service)
            if obj.from_endpoints:
                self.endpoints_v1.pop(key)
            else:
                group = tuple(s for s in _slices(self.slices.get(key)) if s.name != obj.name)
                self.slices.put(key, _pack(group))
        else:
            self.pods.pop((obj.namespace, obj.name))
            k = _pod_ip_key(obj)
            if k is not None:
                n = (self.pod_ip.get(k) or 0) - 1
                self.pod_ip.put(k, n if n > 0 else None)

    def reindex_endpoints(self, key: ServiceKey) -> tuple[set[str], set[str]]:
        """Re-derive the endpoint-IP entries of one service; return its indexed IPs before and after the batch.

        Before is worked out from the published tables (which the batch has not changed), so nothing per service
        needs to be kept to remember what was indexed."""
        base = self.base
        before = _ready_ips(base.slices.get(key), base.endpoints_v1.get(key)) if key in base.services else set[str]()
        svc = self.services.get(key)
        after = _ready_ips(self.slices.get(key), self.endpoints_v1.get(key)) if svc is not None else set[str]()
        seq = self.service_seq
        for ip in before | after:
            rest = [s for s in _services(self.endpoint_ip.get(ip)) if (s.namespace, s.name) != key]
            if svc is not None and ip in after:
                rest.append(svc)
                if len(rest) > 1:
                    rest.sort(key=lambda s: seq.get((s.namespace, s.name)) or 0)
            self.endpoint_ip.put(ip, _pack(tuple(rest)))
        return before, after

    def apply(self) -> None:
        """Write the batch into the published tables (Store.commit, on the loop)."""
        base = self.base
        for name, present in self.namespaces.items():
            if present:
                base.namespaces.add(name)
            else:
                base.namespaces.discard(name)
        base.objects = self.objects.apply()
        base.services = self.services.apply()
        base.slices = self.slices.apply()
        base.endpoints_v1 = self.endpoints_v1.apply()
        base.pods = self.pods.apply()
        base.cluster_ip = self.cluster_ip.apply()
        base.endpoint_ip = self.endpoint_ip.apply()
        base.service_seq = self.service_seq.apply()
        base.pod_ip = self.pod_ip.apply()


def _slice_name(s: EndpointSlice) -> str:
    return s.name


def _slices_of(group: Slices | None, v1: EndpointSlice | None) -> tuple[EndpointSlice, ...]:
    if group is not None:
        return _slices(group)
    return v1.subsets if v1 is not None else ()  # one slice per subset: each has its own ports


def _ready_ips(group: Slices | None, v1: EndpointSlice | None) -> set[str]:
    return {
        _canonical(addr) for sl in _slices_of(group, v1) for ep in sl.endpoints if ep.ready for addr in ep.addresses
    }


@dataclass(slots=True)
class Prepared:
    """A batch worked out against the store's tables as of `version`, ready to be written in by Store.commit."""

    version: int
    upserts: list[KubeObject]
    deletes: list[ObjectKey]
    batch: _Batch | None
    changed: int
    tags: set[Tag] = field(default_factory=set)


class Store:
    """Objects plus indexes. A batch is worked out as a layer of writes over the tables (prepare, which reads the
    tables and writes nothing, so it may run in a thread) and written in on the event loop in one step (commit),
    so a lookup (which never awaits) always sees one consistent state. Both cost time in proportion to the
    batch, not to the store: a storm of small batches at 200,000 objects copies nothing."""

    # The current tables, published as attributes for the lookups (the same dicts until a commit swaps one in).
    objects: dict[ObjectKey, KubeObject]
    namespaces: set[str]
    services: dict[ServiceKey, Service]
    slices: dict[ServiceKey, Slices]
    endpoints_v1: dict[ServiceKey, EndpointSlice]
    pods: dict[tuple[str, str], Pod]

    def __init__(self) -> None:
        self._t = _Tables()
        self._publish()
        self.synced = False
        self.generation = 0
        self.version = 0  # commits so far: a Prepared batch applies only to the version it was worked out on
        self.serial = int(time.time())
        self._next_seq = 0
        self._listeners: list[Callable[[set[Tag]], None]] = []
        self._ready_cache: dict[ServiceKey, list[ReadyAddress]] = {}

    def _publish(self) -> None:
        t = self._t
        self.objects = t.objects
        self.namespaces = t.namespaces
        self.services = t.services
        self.slices = t.slices
        self.endpoints_v1 = t.endpoints_v1
        self.pods = t.pods

    # ------------------------------------------------------------ mutation

    def subscribe(self, listener: Callable[[set[Tag]], None]) -> None:
        """listener(tags) runs after every applied change, with the tags of what changed."""
        self._listeners.append(listener)

    def apply(self, upserts: Iterable[KubeObject], deletes: Iterable[ObjectKey]) -> int:
        """Apply one batch atomically; return the number of objects that changed."""
        return self.commit(self.prepare(upserts, deletes))

    def prepare(self, upserts: Iterable[KubeObject], deletes: Iterable[ObjectKey]) -> Prepared:
        """Work a batch out as a layer over the tables. Reads the store and writes nothing, so it may run in a
        thread while the loop answers queries; the one writer (the source) must commit before preparing again."""
        version = self.version  # read first: a commit that runs meanwhile makes this batch stale (see commit)
        ups = list(upserts)
        dels = list(deletes)
        if not ups and not dels:
            return Prepared(version, ups, dels, None, 0)
        t = _Batch(self._t, self._next_seq)
        # Before the first sync every cached answer is dropped by mark_synced anyway: no need to work out tags.
        track = self.synced
        tags: set[Tag] = set()
        dirty: dict[ServiceKey, None] = {}
        changed = 0
        for key in dels:
            old = t.objects.get(key)
            if old is not None:
                t.objects.pop(key)
                t.unindex(old)
                t.touch(old, dirty)
                if track:
                    tags |= _tags_of(old)
                changed += 1
        for obj in ups:
            key = object_key(obj)
            old = t.objects.get(key)
            if old == obj:
                continue  # no DNS-relevant difference (CoreDNS filters these too, controller.go)
            if old is not None:
                t.unindex(old)
                t.touch(old, dirty)
                if track:
                    tags |= _tags_of(old)
            elif track and isinstance(obj, Service):
                tags.add(absent_service_tag(obj.namespace))  # a name that was absent exists now
            t.objects[key] = obj
            t.index(obj)
            t.touch(obj, dirty)
            if track:
                tags |= _tags_of(obj)
            changed += 1
        for svc_key in dirty:
            # A Service coming or going also makes or breaks the PTRs of its endpoints (spec 3.5).
            before, after = t.reindex_endpoints(svc_key)
            if track:
                tags |= {ip_tag(ip) for ip in before | after}
        if track and any(tag.kind == "ip" for tag in tags):
            tags.add(ABSENT_IP)  # an address that had no PTR may have one now
        if not track or len(tags) > MAX_TAGS:
            tags = {ALL}
        return Prepared(version, ups, dels, t, changed, tags)

    def commit(self, batch: Prepared) -> int:
        """Write a prepared batch in (on the loop, in one step); return the number of objects that changed."""
        if batch.version != self.version:
            # Worked out against tables that have changed since: work it out again against the current ones.
            batch = self.prepare(batch.upserts, batch.deletes)
        if not batch.changed or batch.batch is None:
            return 0
        batch.batch.apply()
        self._next_seq = batch.batch.next_seq
        self._publish()
        self.version += 1
        self._bump(batch.tags)
        return batch.changed

    def mark_synced(self) -> None:
        if not self.synced:
            self.synced = True
            self._bump({ALL})

    def _bump(self, tags: set[Tag]) -> None:
        self.generation += 1
        # SOA serial: the Unix time of the last change (CoreDNS controller.go), never going backwards.
        self.serial = max(self.serial, int(time.time())) & 0xFFFFFFFF
        self._ready_cache.clear()
        for listener in self._listeners:
            listener(tags)

    # ------------------------------------------------------------ derived views

    def slices_of(self, ns: str, service: str) -> list[EndpointSlice]:
        """EndpointSlices of a service; the v1 Endpoints object only when the service has no slice."""
        key = (ns, service)
        return list(_slices_of(self._t.slices.get(key), self._t.endpoints_v1.get(key)))

    def ready_addresses(self, ns: str, service: str) -> list[ReadyAddress]:
        """Every ready address of the service, one item per address (not-ready endpoints are dropped)."""
        key = (ns, service)
        cached = self._ready_cache.get(key)
        if cached is None:
            cached = [
                ReadyAddress(addr, ep, sl)
                for sl in _slices_of(self._t.slices.get(key), self._t.endpoints_v1.get(key))
                for ep in sl.endpoints
                if ep.ready
                for addr in ep.addresses
            ]
            if len(self._ready_cache) >= READY_CACHE_MAX:
                self._ready_cache.clear()
            self._ready_cache[key] = cached
        return cached

    def services_with_cluster_ip(self, ip: str) -> list[Service]:
        return list(_services(self._t.cluster_ip.get(ip)))

    def endpoints_with_ip(self, ip: str) -> list[EndpointEntry]:
        """Ready addresses equal to ip, service by service in store order, each service's in slice order."""
        return [
            (svc, item)
            for svc in _services(self._t.endpoint_ip.get(ip))
            for item in self.ready_addresses(svc.namespace, svc.name)
            if _canonical(item.address) == ip
        ]

    def pod_has_ip(self, ns: str, ip: str) -> bool:
        """Verified pod mode: a pod in ns whose primary IP is ip, in a phase other than Succeeded/Failed/Unknown."""
        return (ns, ip) in self._t.pod_ip


def _canonical(ip: str) -> str:
    """The canonical text of an address (the index key of PTR lookups). A valid IPv4 text is canonical already
    (ipaddress refuses leading zeros, and the model accepts only what it parses), so only IPv6 is parsed; a
    canonical text is returned as the same object, so the indexes share it with the model."""
    if ":" not in ip:
        return ip
    try:
        text = str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
    return ip if text == ip else text


def _pod_ip_key(pod: Pod) -> tuple[str, str] | None:
    if pod.ips and pod.phase not in ("Succeeded", "Failed", "Unknown"):
        return (pod.namespace, _canonical(pod.ips[0]))
    return None


def _tags_of(obj: KubeObject) -> set[Tag]:
    """The cached answers an object can affect (see answer.Tag)."""
    if isinstance(obj, Namespace):
        return {ALL}
    if isinstance(obj, Service):
        tags: set[Tag] = {service_tag(obj.namespace, obj.name), APEX}
        tags |= {ip_tag(ip) for ip in obj.cluster_ips}
        return tags
    if isinstance(obj, EndpointSlice):
        tags = {service_tag(obj.namespace, obj.service), APEX}
        tags |= {ip_tag(_canonical(a)) for ep in obj.endpoints for a in ep.addresses}
        return tags
    assert isinstance(obj, Pod)
    return {pods_tag(obj.namespace)}


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; a no-op elsewhere). After a big
    batch the garbage of the parse and of the batch is freed, but glibc keeps the pages of its main heap until
    the top of it is free, which after a load it never is. Releases the GIL while it runs (ctypes)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library: glibc has it, musl does not
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim

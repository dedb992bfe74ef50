"""The endpoint store: Kubernetes objects, their indexes, the sync flag, a generation and change events."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dnsd.proto.answer import ABSENT_IP, ALL, APEX, Tag, absent_service_tag, ip_tag, pods_tag, service_tag
from dnsd.store.model import Endpoint, EndpointSlice, KubeObject, Namespace, Pod, Service, object_key

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str, str]
ServiceKey = tuple[str, str]  # (namespace, service name)
# A change touching more cached answers than this drops them all: one clear is cheaper than that many lookups.
MAX_TAGS = 10_000


@dataclass(frozen=True, slots=True)
class ReadyAddress:
    """One ready endpoint address of a service, with the slice it came from (CoreDNS's EndpointAddress)."""

    address: str
    endpoint: Endpoint
    slice: EndpointSlice


EndpointEntry = tuple[Service, ReadyAddress]


class _Tables:
    """Every table of the store. A batch works on a copy (Store.prepare) and the store swaps it in at once
    (Store.commit), so the tables a lookup reads are never changed under it, even while a batch is prepared in
    another thread. The copy is shallow: the inner groups (a service's slices, an IP's entries) are copied the
    first time the batch writes them (_own), never changed in place."""

    __slots__ = (
        "_owned",
        "cluster_ip",
        "endpoint_ip",
        "endpoints_v1",
        "namespaces",
        "next_seq",
        "objects",
        "pod_ip",
        "pods",
        "service_ips",
        "service_seq",
        "services",
        "slices",
    )

    def __init__(self, base: _Tables | None = None) -> None:
        self.objects: dict[ObjectKey, KubeObject] = dict(base.objects) if base else {}
        self.namespaces: set[str] = set(base.namespaces) if base else set()
        self.services: dict[ServiceKey, Service] = dict(base.services) if base else {}
        self.slices: dict[ServiceKey, dict[str, EndpointSlice]] = dict(base.slices) if base else {}
        self.endpoints_v1: dict[ServiceKey, EndpointSlice] = dict(base.endpoints_v1) if base else {}
        self.pods: dict[tuple[str, str], Pod] = dict(base.pods) if base else {}
        # PTR indexes (spec 3.5), kept up to date by every batch so a reverse lookup is a dict lookup:
        # cluster IP -> services in store order; endpoint IP -> service -> its ready addresses with that IP.
        self.cluster_ip: dict[str, tuple[Service, ...]] = dict(base.cluster_ip) if base else {}
        self.endpoint_ip: dict[str, dict[ServiceKey, tuple[EndpointEntry, ...]]] = (
            dict(base.endpoint_ip) if base else {}
        )
        self.service_ips: dict[ServiceKey, tuple[str, ...]] = dict(base.service_ips) if base else {}
        # The order services were (re)inserted in, which is the order of `services` and so of PTR targets.
        self.service_seq: dict[ServiceKey, int] = dict(base.service_seq) if base else {}
        self.pod_ip: dict[tuple[str, str], int] = dict(base.pod_ip) if base else {}  # (ns, primary IP) -> pods
        self.next_seq: int = base.next_seq if base else 0
        self._owned: set[tuple[str, object]] = set()

    def _own_slices(self, key: ServiceKey) -> dict[str, EndpointSlice]:
        group = self.slices.get(key)
        if group is None:
            group = self.slices[key] = {}
        elif ("slices", key) not in self._owned:
            group = self.slices[key] = dict(group)
        self._owned.add(("slices", key))
        return group

    def _own_endpoint_ip(self, ip: str) -> dict[ServiceKey, tuple[EndpointEntry, ...]]:
        group = self.endpoint_ip.get(ip)
        if group is None:
            group = self.endpoint_ip[ip] = {}
        elif ("ip", ip) not in self._owned:
            group = self.endpoint_ip[ip] = dict(group)
        self._owned.add(("ip", ip))
        return group

    def index(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces.add(obj.name)
        elif isinstance(obj, Service):
            key = (obj.namespace, obj.name)
            self.services[key] = obj
            self.service_seq[key] = self.next_seq
            self.next_seq += 1
            for ip in obj.cluster_ips:
                self.cluster_ip[ip] = (*self.cluster_ip.get(ip, ()), obj)
        elif isinstance(obj, EndpointSlice):
            if obj.from_endpoints:
                self.endpoints_v1[(obj.namespace, obj.service)] = obj
            else:
                self._own_slices((obj.namespace, obj.service))[obj.name] = obj
        else:
            self.pods[(obj.namespace, obj.name)] = obj
            k = _pod_ip_key(obj)
            if k is not None:
                self.pod_ip[k] = self.pod_ip.get(k, 0) + 1

    def unindex(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces.discard(obj.name)
        elif isinstance(obj, Service):
            key = (obj.namespace, obj.name)
            self.services.pop(key, None)
            self.service_seq.pop(key, None)
            for ip in obj.cluster_ips:
                rest = tuple(s for s in self.cluster_ip.get(ip, ()) if (s.namespace, s.name) != key)
                if rest:
                    self.cluster_ip[ip] = rest
                else:
                    self.cluster_ip.pop(ip, None)
        elif isinstance(obj, EndpointSlice):
            if obj.from_endpoints:
                self.endpoints_v1.pop((obj.namespace, obj.service), None)
            elif (obj.namespace, obj.service) in self.slices:
                group = self._own_slices((obj.namespace, obj.service))
                group.pop(obj.name, None)
                if not group:
                    del self.slices[(obj.namespace, obj.service)]
        else:
            self.pods.pop((obj.namespace, obj.name), None)
            k = _pod_ip_key(obj)
            if k is not None:
                n = self.pod_ip.get(k, 0) - 1
                if n > 0:
                    self.pod_ip[k] = n
                else:
                    self.pod_ip.pop(k, None)

    def slices_of(self, ns: str, service: str) -> list[EndpointSlice]:
        group = self.slices.get((ns, service))
        if group:
            return [group[name] for name in sorted(group)]
        v1 = self.endpoints_v1.get((ns, service))
        return list(v1.subsets) if v1 is not None else []  # one slice per subset: each has its own ports

    def ready(self, ns: str, service: str) -> list[ReadyAddress]:
        return [
            ReadyAddress(addr, ep, sl)
            for sl in self.slices_of(ns, service)
            for ep in sl.endpoints
            if ep.ready
            for addr in ep.addresses
        ]

    def reindex_endpoints(self, key: ServiceKey) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Re-derive the endpoint-IP entries of one service; return its indexed IPs before and after."""
        before = self.service_ips.pop(key, ())
        for ip in before:
            group = self._own_endpoint_ip(ip)
            group.pop(key, None)
            if not group:
                del self.endpoint_ip[ip]
        svc = self.services.get(key)
        if svc is None:
            return before, ()
        by_ip: dict[str, list[EndpointEntry]] = {}
        for item in self.ready(*key):
            by_ip.setdefault(_canonical(item.address), []).append((svc, item))
        for ip, entries in by_ip.items():
            self._own_endpoint_ip(ip)[key] = tuple(entries)
        after = tuple(by_ip)
        if after:
            self.service_ips[key] = after
        return before, after


@dataclass(slots=True)
class Prepared:
    """A batch worked out against the store's tables as of `version`, ready to be swapped in by Store.commit."""

    version: int
    upserts: list[KubeObject]
    deletes: list[ObjectKey]
    tables: _Tables
    changed: int
    tags: set[Tag] = field(default_factory=set)


class Store:
    """Objects plus indexes. A batch is worked out on a copy of the tables (prepare, which may run in a thread)
    and swapped in on the event loop in one step (commit), so a lookup (which never awaits) always sees one
    consistent snapshot and a big batch never holds up the loop."""

    # The current tables, published as attributes for the lookups (swapped as a whole by commit).
    objects: dict[ObjectKey, KubeObject]
    namespaces: set[str]
    services: dict[ServiceKey, Service]
    slices: dict[ServiceKey, dict[str, EndpointSlice]]
    endpoints_v1: dict[ServiceKey, EndpointSlice]
    pods: dict[tuple[str, str], Pod]

    def __init__(self) -> None:
        self._t = _Tables()
        self._publish(self._t)
        self.synced = False
        self.generation = 0
        self.version = 0  # commits so far: a Prepared batch applies only to the version it was worked out on
        self.serial = int(time.time())
        self._listeners: list[Callable[[set[Tag]], None]] = []
        self._ready_cache: dict[ServiceKey, list[ReadyAddress]] = {}
        self._retired: _Tables | None = None  # replaced by the last commit; dropped by the next prepare

    def _publish(self, t: _Tables) -> None:
        self._t = t
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
        """Work a batch out on a copy of the tables. Reads the store and writes nothing, so it may run in a
        thread while the loop answers queries; the one writer (the source) must commit before preparing again."""
        # The tables the last commit replaced are freed here, where freeing a big batch's worth of objects
        # holds up only this thread, not the loop.
        self._retired = None
        ups = list(upserts)
        dels = list(deletes)
        if not ups and not dels:
            return Prepared(self.version, ups, dels, self._t, 0)
        t = _Tables(self._t)
        # Before the first sync every cached answer is dropped by mark_synced anyway: no need to work out tags.
        track = self.synced
        tags: set[Tag] = set()
        dirty: set[ServiceKey] = set()
        changed = 0
        for key in dels:
            old = t.objects.pop(key, None)
            if old is not None:
                t.unindex(old)
                _touch(old, dirty)
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
                _touch(old, dirty)
                if track:
                    tags |= _tags_of(old)
            elif track and isinstance(obj, Service):
                tags.add(absent_service_tag(obj.namespace))  # a name that was absent exists now
            t.objects[key] = obj
            t.index(obj)
            _touch(obj, dirty)
            if track:
                tags |= _tags_of(obj)
            changed += 1
        for svc_key in dirty:
            # A Service coming or going also makes or breaks the PTRs of its endpoints (spec 3.5).
            before, after = t.reindex_endpoints(svc_key)
            if track:
                tags |= {ip_tag(ip) for ip in (*before, *after)}
        if track and any(tag.kind == "ip" for tag in tags):
            tags.add(ABSENT_IP)  # an address that had no PTR may have one now
        if not track or len(tags) > MAX_TAGS:
            tags = {ALL}
        return Prepared(self.version, ups, dels, t, changed, tags)

    def commit(self, batch: Prepared) -> int:
        """Swap a prepared batch in (on the loop); return the number of objects that changed."""
        if batch.version != self.version:
            # Worked out against tables that have changed since: work it out again against the current ones.
            batch = self.prepare(batch.upserts, batch.deletes)
        if not batch.changed:
            return 0
        self._retired = self._t
        self._publish(batch.tables)
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
        return self._t.slices_of(ns, service)

    def ready_addresses(self, ns: str, service: str) -> list[ReadyAddress]:
        """Every ready address of the service, one item per address (not-ready endpoints are dropped)."""
        key = (ns, service)
        cached = self._ready_cache.get(key)
        if cached is None:
            cached = self._t.ready(ns, service)
            self._ready_cache[key] = cached
        return cached

    def services_with_cluster_ip(self, ip: str) -> list[Service]:
        return list(self._t.cluster_ip.get(ip, ()))

    def endpoints_with_ip(self, ip: str) -> list[EndpointEntry]:
        """Ready addresses equal to ip, service by service in store order, each service's in slice order."""
        groups = self._t.endpoint_ip.get(ip)
        if not groups:
            return []
        if len(groups) == 1:
            return list(next(iter(groups.values())))
        seq = self._t.service_seq
        return [entry for key in sorted(groups, key=lambda k: seq.get(k, 0)) for entry in groups[key]]

    def pod_has_ip(self, ns: str, ip: str) -> bool:
        """Verified pod mode: a pod in ns whose primary IP is ip, in a phase other than Succeeded/Failed/Unknown."""
        return (ns, ip) in self._t.pod_ip


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _pod_ip_key(pod: Pod) -> tuple[str, str] | None:
    if pod.ips and pod.phase not in ("Succeeded", "Failed", "Unknown"):
        return (pod.namespace, _canonical(pod.ips[0]))
    return None


def _touch(obj: KubeObject, dirty: set[ServiceKey]) -> None:
    """Note the service whose endpoint-IP entries the object feeds."""
    if isinstance(obj, Service):
        dirty.add((obj.namespace, obj.name))
    elif isinstance(obj, EndpointSlice):
        dirty.add((obj.namespace, obj.service))


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

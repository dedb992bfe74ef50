"""The endpoint store: Kubernetes objects, their indexes, the sync flag, a generation and change events."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dnsd.proto.answer import ALL, Tag
from dnsd.store.model import Endpoint, EndpointSlice, KubeObject, Namespace, Pod, Service, object_key

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str, str]
ABSENT_IP: Tag = ("absent-ip",)  # negative PTR answers (see records.ClusterRecords._reverse)


@dataclass(frozen=True, slots=True)
class ReadyAddress:
    """One ready endpoint address of a service, with the slice it came from (CoreDNS's EndpointAddress)."""

    address: str
    endpoint: Endpoint
    slice: EndpointSlice


class Store:
    """Objects plus indexes. Mutations run synchronously on the event loop, so a lookup (which never awaits)
    always sees one consistent snapshot."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, KubeObject] = {}
        self.namespaces: set[str] = set()
        self.services: dict[tuple[str, str], Service] = {}
        self.slices: dict[tuple[str, str], dict[str, EndpointSlice]] = {}  # (ns, service) -> slices
        self.endpoints_v1: dict[tuple[str, str], EndpointSlice] = {}  # (ns, service) -> converted v1 Endpoints
        self.pods: dict[tuple[str, str], Pod] = {}
        self.synced = False
        self.generation = 0
        self.serial = int(time.time())
        self._listeners: list[Callable[[set[Tag]], None]] = []
        self._ready_cache: dict[tuple[str, str], list[ReadyAddress]] = {}
        self._ip_index_gen = -1
        self._cluster_ip_index: dict[str, list[Service]] = {}
        self._endpoint_ip_index: dict[str, list[tuple[Service, ReadyAddress]]] = {}
        self._pod_ip_index: dict[tuple[str, str], int] = {}
        self._pod_index_gen = -1

    # ------------------------------------------------------------ mutation

    def subscribe(self, listener: Callable[[set[Tag]], None]) -> None:
        """listener(tags) runs after every applied change, with the tags of what changed."""
        self._listeners.append(listener)

    def apply(self, upserts: Iterable[KubeObject], deletes: Iterable[ObjectKey]) -> int:
        """Apply one batch atomically; return the number of objects that changed."""
        tags: set[Tag] = set()
        changed = 0
        for key in deletes:
            old = self.objects.pop(key, None)
            if old is not None:
                self._unindex(old)
                tags |= _tags_of(old)
                changed += 1
        for obj in upserts:
            key = object_key(obj)
            old = self.objects.get(key)
            if old == obj:
                continue  # no DNS-relevant difference (CoreDNS filters these too, controller.go)
            if old is not None:
                self._unindex(old)
                tags |= _tags_of(old)
            elif isinstance(obj, Service):
                tags.add(("absent-svc", obj.namespace))  # a name that was absent exists now
            self.objects[key] = obj
            self._index(obj)
            tags |= _tags_of(obj)
            changed += 1
        if changed:
            # A Service coming or going also makes or breaks the PTRs of its endpoints (spec 3.5).
            for tag in list(tags):
                if tag[0] == "svc":
                    tags |= {("ip", _canonical(r.address)) for r in self._ready_uncached(tag[1], tag[2])}
            if any(tag[0] == "ip" for tag in tags):
                tags.add(ABSENT_IP)  # an address that had no PTR may have one now
            self._bump(tags)
        return changed

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

    def _index(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces.add(obj.name)
        elif isinstance(obj, Service):
            self.services[(obj.namespace, obj.name)] = obj
        elif isinstance(obj, EndpointSlice):
            if obj.from_endpoints:
                self.endpoints_v1[(obj.namespace, obj.service)] = obj
            else:
                self.slices.setdefault((obj.namespace, obj.service), {})[obj.name] = obj
        else:
            self.pods[(obj.namespace, obj.name)] = obj

    def _unindex(self, obj: KubeObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces.discard(obj.name)
        elif isinstance(obj, Service):
            self.services.pop((obj.namespace, obj.name), None)
        elif isinstance(obj, EndpointSlice):
            if obj.from_endpoints:
                self.endpoints_v1.pop((obj.namespace, obj.service), None)
            else:
                group = self.slices.get((obj.namespace, obj.service))
                if group is not None:
                    group.pop(obj.name, None)
                    if not group:
                        del self.slices[(obj.namespace, obj.service)]
        else:
            self.pods.pop((obj.namespace, obj.name), None)

    # ------------------------------------------------------------ derived views

    def slices_of(self, ns: str, service: str) -> list[EndpointSlice]:
        """EndpointSlices of a service; the v1 Endpoints object only when the service has no slice."""
        group = self.slices.get((ns, service))
        if group:
            return [group[name] for name in sorted(group)]
        v1 = self.endpoints_v1.get((ns, service))
        return list(v1.subsets) if v1 is not None else []  # one slice per subset: each has its own ports

    def _ready_uncached(self, ns: str, service: str) -> list[ReadyAddress]:
        return [
            ReadyAddress(addr, ep, sl)
            for sl in self.slices_of(ns, service)
            for ep in sl.endpoints
            if ep.ready
            for addr in ep.addresses
        ]

    def ready_addresses(self, ns: str, service: str) -> list[ReadyAddress]:
        """Every ready address of the service, one item per address (not-ready endpoints are dropped)."""
        key = (ns, service)
        cached = self._ready_cache.get(key)
        if cached is None:
            cached = self._ready_uncached(ns, service)
            self._ready_cache[key] = cached
        return cached

    def _build_ip_indexes(self) -> None:
        if self._ip_index_gen == self.generation:
            return
        cluster: dict[str, list[Service]] = {}
        endpoint: dict[str, list[tuple[Service, ReadyAddress]]] = {}
        for svc in self.services.values():
            for ip in svc.cluster_ips:
                cluster.setdefault(ip, []).append(svc)
            for item in self.ready_addresses(svc.namespace, svc.name):
                endpoint.setdefault(_canonical(item.address), []).append((svc, item))
        self._cluster_ip_index = cluster
        self._endpoint_ip_index = endpoint
        self._ip_index_gen = self.generation

    def services_with_cluster_ip(self, ip: str) -> list[Service]:
        self._build_ip_indexes()
        return self._cluster_ip_index.get(ip, [])

    def endpoints_with_ip(self, ip: str) -> list[tuple[Service, ReadyAddress]]:
        self._build_ip_indexes()
        return self._endpoint_ip_index.get(ip, [])

    def pod_has_ip(self, ns: str, ip: str) -> bool:
        """Verified pod mode: a pod in ns whose primary IP is ip, in a phase other than Succeeded/Failed/Unknown."""
        if self._pod_index_gen != self.generation:
            index: dict[tuple[str, str], int] = {}
            for pod in self.pods.values():
                if pod.ips and pod.phase not in ("Succeeded", "Failed", "Unknown"):
                    k = (pod.namespace, _canonical(pod.ips[0]))
                    index[k] = index.get(k, 0) + 1
            self._pod_ip_index = index
            self._pod_index_gen = self.generation
        return (ns, ip) in self._pod_ip_index


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _tags_of(obj: KubeObject) -> set[Tag]:
    """The cached answers an object can affect (see answer.Tag)."""
    if isinstance(obj, Namespace):
        return {ALL}
    if isinstance(obj, Service):
        tags: set[Tag] = {("svc", obj.namespace, obj.name), ("apex",)}
        tags |= {("ip", ip) for ip in obj.cluster_ips}
        return tags
    if isinstance(obj, EndpointSlice):
        tags = {("svc", obj.namespace, obj.service), ("apex",)}
        tags |= {("ip", _canonical(a)) for ep in obj.endpoints for a in ep.addresses}
        return tags
    assert isinstance(obj, Pod)
    return {("pod", obj.namespace)}

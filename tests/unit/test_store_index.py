"""The store's PTR indexes are kept up to date by each batch (issue 5 section 3.5): after any sequence of
batches they equal indexes rebuilt from scratch (the previous algorithm), and a prepared batch changes nothing
a lookup sees until it is committed."""

from __future__ import annotations

import ipaddress
import random

import pytest

from dnsd.store.model import Endpoint, EndpointPort, EndpointSlice, KubeObject, Pod, Service
from dnsd.store.store import ObjectKey, ReadyAddress, Store

IPS = [f"10.0.0.{i}" for i in range(1, 9)] + ["fd00::1", "fd00:0::1", "10.0.0.1"]


def rebuilt(store: Store) -> tuple[dict[str, list[Service]], dict[str, list[tuple[Service, ReadyAddress]]], set]:
    """The indexes as the store used to build them on the first PTR query after a change."""
    cluster: dict[str, list[Service]] = {}
    endpoint: dict[str, list[tuple[Service, ReadyAddress]]] = {}
    for svc in store.services.values():
        for ip in svc.cluster_ips:
            cluster.setdefault(ip, []).append(svc)
        for item in store.ready_addresses(svc.namespace, svc.name):
            endpoint.setdefault(str(ipaddress.ip_address(item.address)), []).append((svc, item))
    pods = {
        (p.namespace, str(ipaddress.ip_address(p.ips[0])))
        for p in store.pods.values()
        if p.ips and p.phase not in ("Succeeded", "Failed", "Unknown")
    }
    return cluster, endpoint, pods


def random_object(rng: random.Random) -> KubeObject:
    ns = rng.choice(["a", "b"])
    svc = rng.choice(["s1", "s2", "s3"])
    kind = rng.randrange(4)
    if kind == 0:
        ips = tuple(rng.sample(IPS[:8], rng.randrange(0, 2)))
        return Service(ns, svc, "ClusterIP", ips, not ips, (), "", False)
    if kind == 1:
        eps = tuple(
            Endpoint((rng.choice(IPS),), rng.random() < 0.8, rng.choice(["", "h0", "h1"]), "", "")
            for _ in range(rng.randrange(0, 4))
        )
        return EndpointSlice(ns, f"{svc}-{rng.randrange(2)}", svc, "IPv4", eps, (EndpointPort("", -1, "tcp"),))
    if kind == 2:
        sub = EndpointSlice(ns, svc, svc, "mixed", (Endpoint((rng.choice(IPS),), True, "", "", ""),), ())
        return EndpointSlice(ns, svc, svc, "mixed", sub.endpoints, (), True, (sub,))
    return Pod(ns, f"p{rng.randrange(3)}", (rng.choice(IPS),), rng.choice(["Running", "Failed"]), False)


def key_of(obj: KubeObject) -> ObjectKey:
    from dnsd.store.model import object_key

    return object_key(obj)


@pytest.mark.parametrize("seed", range(30))
def test_incremental_indexes_equal_rebuilt(seed: int) -> None:
    rng = random.Random(seed)
    store = Store()
    store.mark_synced()
    for _ in range(40):
        ups = [random_object(rng) for _ in range(rng.randrange(0, 5))]
        dels = [key_of(random_object(rng)) for _ in range(rng.randrange(0, 3))]
        store.apply(ups, dels)
        cluster, endpoint, pods = rebuilt(store)
        for ip in {*IPS, *(str(ipaddress.ip_address(i)) for i in IPS)}:
            assert store.services_with_cluster_ip(ip) == cluster.get(ip, [])
            assert store.endpoints_with_ip(ip) == endpoint.get(ip, [])
            for ns in ("a", "b"):
                assert store.pod_has_ip(ns, ip) == ((ns, ip) in pods)


def test_prepared_batch_is_invisible_until_committed() -> None:
    store = Store()
    store.mark_synced()
    old = Service("a", "web", "ClusterIP", ("10.0.0.1",), False, (), "", False)
    store.apply([old], [])
    new = Service("a", "web", "ClusterIP", ("10.0.0.2",), False, (), "", False)
    batch = store.prepare([new], [])
    assert store.services[("a", "web")] == old
    assert store.services_with_cluster_ip("10.0.0.1") == [old]
    assert store.services_with_cluster_ip("10.0.0.2") == []
    generation = store.generation
    assert store.commit(batch) == 1
    assert store.generation == generation + 1
    assert store.services_with_cluster_ip("10.0.0.1") == []
    assert store.services_with_cluster_ip("10.0.0.2") == [new]


def test_stale_prepared_batch_is_worked_out_again() -> None:
    store = Store()
    web = Service("a", "web", "ClusterIP", ("10.0.0.1",), False, (), "", False)
    api = Service("a", "api", "ClusterIP", ("10.0.0.3",), False, (), "", False)
    stale = store.prepare([web], [])
    store.apply([api], [])
    assert store.commit(stale) == 1
    assert set(store.services) == {("a", "web"), ("a", "api")}

"""The store's PTR indexes are kept up to date by each batch (issue 5 section 3.5): after any sequence of
batches they equal indexes rebuilt from scratch (the previous algorithm), and a prepared batch changes nothing
a lookup sees until it is committed."""

from __future__ import annotations

import ipaddress
import random

import pytest

from dnsd.store.model import Endpoint, EndpointPort, EndpointSlice, KubeObject, Pod, Service
from dnsd.store.store import ObjectKey, Prepared, ReadyAddress, Store

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


def test_small_batch_is_written_into_the_published_tables() -> None:
    """A batch costs its own size: the tables a lookup reads are written in, not copied (at 200,000 objects a
    copy per batch stalled a storm of small batches for hundreds of ms)."""
    store = Store()
    store.mark_synced()
    store.apply([Service("a", f"s{i}", "ClusterIP", (f"10.0.1.{i}",), False, (), "", False) for i in range(50)], [])
    tables = (store.objects, store.services, store.slices, store.namespaces)
    new = Service("a", "new", "ClusterIP", ("10.0.2.1",), False, (), "", False)
    assert store.apply([new], [("Service", "a", "s3")]) == 2
    now = (store.objects, store.services, store.slices, store.namespaces)
    assert all(table is before for table, before in zip(now, tables, strict=True))
    assert store.services[("a", "new")] is new and ("a", "s3") not in store.services
    assert store.services_with_cluster_ip("10.0.2.1") == [new] and store.services_with_cluster_ip("10.0.1.3") == []


def generation(gen: int, n: int) -> list[KubeObject]:
    """n services, each with a cluster IP and a slice of one ready endpoint, at addresses of generation gen."""
    out: list[KubeObject] = []
    for i in range(n):
        out.append(Service("a", f"s{i}", "ClusterIP", (f"10.{gen}.{i // 250}.{i % 250}",), False, (), "", False))
        ep = Endpoint((f"10.{100 + gen}.{i // 250}.{i % 250}",), True, "", "", "")
        out.append(EndpointSlice("a", f"s{i}-x", f"s{i}", "IPv4", (ep,), (EndpointPort("", -1, "tcp"),)))
    return out


def check_generation(store: Store, gen: int, n: int) -> None:
    for i in range(0, n, 97):
        svc = store.services[("a", f"s{i}")]
        cip, eip = f"10.{gen}.{i // 250}.{i % 250}", f"10.{100 + gen}.{i // 250}.{i % 250}"
        assert svc.cluster_ips == (cip,)
        assert store.services_with_cluster_ip(cip) == [svc]
        assert [(s, r.address) for s, r in store.endpoints_with_ip(eip)] == [(svc, eip)]
        assert [r.address for r in store.ready_addresses("a", f"s{i}")] == [eip]


def test_batch_prepared_in_a_thread_is_invisible_to_readers_then_whole() -> None:
    """While a big batch is worked out in a thread, lookups (on the loop) see the tables as they were; after the
    commit they see all of the batch: never a mix of the two."""
    import threading

    n = 3000
    store = Store()
    store.mark_synced()
    store.apply(generation(1, n), [])
    check_generation(store, 1, n)
    prepared: list[Prepared] = []
    worker = threading.Thread(target=lambda: prepared.append(store.prepare(generation(2, n), [])))
    worker.start()
    reads = 0
    while worker.is_alive() or reads == 0:
        check_generation(store, 1, n)
        reads += 1
    worker.join()
    check_generation(store, 1, n)  # prepared, not committed: nothing is visible
    assert store.commit(prepared[0]) == 2 * n
    check_generation(store, 2, n)
    assert store.services_with_cluster_ip("10.1.0.0") == [] and store.endpoints_with_ip("10.101.0.0") == []

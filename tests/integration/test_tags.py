"""Invalidation tags: every tag the cluster records put on an answer is one the store emits on some change.

A tag that the records emit but the store never names would leave its answers in the pre-rendered table until
something drops everything: a stale answer. The names asked are generated from what the store holds (every
service, port, endpoint name, IP, pod and absent name), and the store changes are every object withdrawn and put
back plus a service appearing in each namespace: between them, every tag an answer can carry must be named.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, run_dnsd

from dnsd.cluster.records import ClusterRecords, dashed
from dnsd.proto.answer import AAAA, ALL, CNAME, NS, PTR, SOA, SRV, TXT, A
from dnsd.store.model import Service
from dnsd.store.store import Store

ZONE = ("cluster", "local")


@pytest.fixture(scope="module")
def server() -> Iterator[DnsdHandle]:
    handle = run_dnsd(base_config(FIXTURE_CLUSTER, pods="verified"))
    try:
        yield handle
    finally:
        handle.stop()


def _names(store: Store, records: ClusterRecords) -> Iterator[tuple[tuple[str, ...], int]]:
    """(labels, qtype) for every kind of name the store's objects make, and absent ones."""
    yield ZONE, SOA
    yield ZONE, NS
    yield ("ns", "dns", *ZONE), A
    for ns in sorted(store.namespaces):
        yield ("nosuch", ns, "svc", *ZONE), A
        yield (ns, "svc", *ZONE), A
    for svc in store.services.values():
        base = (svc.name, svc.namespace, "svc", *ZONE)
        for qtype in (A, AAAA, SRV, TXT, CNAME):
            yield base, qtype
        for port in svc.ports:
            yield (f"_{port.name}", f"_{port.protocol}", *base), SRV
        for ip in svc.cluster_ips:
            yield _reverse(ip), PTR
        for item in store.ready_addresses(svc.namespace, svc.name):
            yield (records.endpoint_name(item), *base), A
            yield _reverse(item.address), PTR
    yield _reverse("192.0.2.77"), PTR  # an address nobody holds
    for pod in store.pods.values():
        for ip in pod.ips:
            yield (dashed(ip), pod.namespace, "pod", *ZONE), A


def _reverse(ip: str) -> tuple[str, ...]:
    return tuple(ipaddress.ip_address(ip).reverse_pointer.split("."))


def test_every_tag_the_records_emit_is_one_the_store_emits(server: DnsdHandle) -> None:
    app: Any = server.app
    store: Store = app.store
    records: ClusterRecords = app.records

    def records_tags() -> tuple[set[Any], int]:
        tags: set[Any] = set()
        n = 0
        for labels, qtype in _names(store, records):
            ans = records.lookup(labels, qtype)
            assert ans is not None, f"{'.'.join(labels)} is in our zone"
            tags |= ans.tags
            n += 1
        return tags, n

    def store_tags() -> set[Any]:
        seen: set[Any] = set()
        store.subscribe(seen.update)
        for key, obj in list(store.objects.items()):
            store.apply([], [key])
            store.apply([obj], [])
        for ns in sorted(store.namespaces):
            new = Service(ns, "appears-later", "ClusterIP", ("10.255.0.1",), False, (), "", False)
            store.apply([new], [])
            store.apply([], [("Service", ns, "appears-later")])
        return seen

    emitted, asked = server.call(records_tags)
    assert asked > 100 and len(emitted) > 20, "the fixture must exercise many names and tags"
    named = server.call(store_tags)
    never_named = {t for t in emitted if t not in named and t != ALL}
    stale = sorted(map(str, never_named))
    assert not never_named, f"tags no store change ever names (their answers would go stale): {stale}"

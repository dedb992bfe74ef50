"""What the model shares to keep 100,000 services small (dnsd.store.model: interned strings, `shared` port lists,
the cached object key): equal values become one object, and distinct values are never merged, also through a
pickle (the parse child) and after the sharing table starts over."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dnsd.store import model
from dnsd.store.model import KubeObject, object_from, object_key


def svc(
    name: str, ns: str = "shop", ports: list[dict[str, Any]] | None = None, stype: str = "ClusterIP"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": stype, "clusterIP": "10.0.0.1", "ports": ports if ports is not None else HTTP}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def eps(name: str, service: str, ns: str = "shop", node: str = "node-1", ports: list[dict[str, Any]] | None = None,
        family: str = "IPv4") -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": [{"addresses": ["10.1.0.1" if family == "IPv4" else "fd00::1"], "nodeName": node}],
        "ports": ports if ports is not None else HTTP,
    }


HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}]


def fresh(text: str) -> str:
    """An equal string that is a different object (as a YAML parser hands them out)."""
    return "".join(list(text))


@dataclass(frozen=True)
class Case:
    name: str
    a: dict[str, Any]
    b: dict[str, Any]
    part: Callable[[Any], Any]  # the field compared
    same: bool  # expected: one object for both (equal values), else distinct and unequal


CASES = [
    Case("namespace", svc("web", ns=fresh("shop")), svc("api", ns=fresh("shop")), lambda o: o.namespace, True),
    Case("other namespace", svc("web", ns="shop"), svc("web", ns="shop2"), lambda o: o.namespace, False),
    Case(
        "service type", svc("web", stype=fresh("NodePort")), svc("api", stype=fresh("NodePort")), lambda o: o.type, True
    ),
    Case("equal ports", svc("web"), svc("api"), lambda o: o.ports, True),
    Case("port number differs", svc("web"), svc("api", ports=[{"name": "http", "port": 81}]), lambda o: o.ports, False),
    Case("port name differs", svc("web"), svc("api", ports=[{"name": "https", "port": 80}]), lambda o: o.ports, False),
    Case(
        "protocol differs",
        svc("web"),
        svc("api", ports=[{"name": "http", "port": 80, "protocol": "UDP"}]),
        lambda o: o.ports,
        False,
    ),
    Case("port name case folds", svc("web", ports=[{"name": "HTTP", "port": 80}]), svc("api"), lambda o: o.ports, True),
    Case("slice ports equal", eps("a-1", "a"), eps("b-1", "b"), lambda o: o.ports, True),
    Case("slice and service ports are not one", svc("web"), eps("web-1", "web"), lambda o: o.ports, False),
    Case(
        "node name",
        eps("a-1", "a", node=fresh("node-7")),
        eps("b-1", "b", node=fresh("node-7")),
        lambda o: o.endpoints[0].node_name,
        True,
    ),
    Case(
        "other node",
        eps("a-1", "a", node="node-7"),
        eps("b-1", "b", node="node-8"),
        lambda o: o.endpoints[0].node_name,
        False,
    ),
    Case(
        "address family", eps("a-1", "a", family="IPv6"), eps("b-1", "b", family="IPv6"), lambda o: o.address_type, True
    ),
    Case(
        "service name and its slice's label",
        svc(fresh("web")),
        eps("web-1", fresh("web")),
        lambda o: o.name if isinstance(o, model.Service) else o.service,
        True,
    ),
    Case(
        "other service's slice",
        svc("web"),
        eps("web-1", "webs"),
        lambda o: o.name if isinstance(o, model.Service) else o.service,
        False,
    ),
]


def convert(doc: dict[str, Any]) -> KubeObject:
    obj = object_from(doc)
    assert obj is not None
    return obj


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_equal_values_are_one_object_distinct_ones_stay_distinct(case: Case) -> None:
    a, b = case.part(convert(case.a)), case.part(convert(case.b))
    if case.same:
        assert a == b and a is b
    else:
        assert a != b and a is not b


@pytest.mark.parametrize("case", [c for c in CASES if c.same], ids=[c.name for c in CASES if c.same])
def test_sharing_survives_one_pickle(case: Case) -> None:
    """The parse child sends objects in pickled chunks: what is shared in a chunk arrives shared."""
    a, b = pickle.loads(pickle.dumps((convert(case.a), convert(case.b)), protocol=pickle.HIGHEST_PROTOCOL))
    assert case.part(a) is case.part(b)


def test_shared_table_starting_over_keeps_values() -> None:
    """When the table is full it is cleared: later values are equal to what was asked, never another value."""
    first = [model.shared(("port", i)) for i in range(model.SHARED_MAX + 10)]
    again = [model.shared(("port", i)) for i in range(model.SHARED_MAX + 10)]
    assert first == again == [("port", i) for i in range(model.SHARED_MAX + 10)]


def test_object_key_is_one_tuple_and_not_part_of_the_value() -> None:
    web = convert(svc("web"))
    key = object_key(web)
    assert key == ("Service", "shop", "web") and object_key(web) is key
    other = convert(svc("web"))
    assert other == web and hash(other) == hash(web)  # a worked-out key changes neither equality nor hash
    back = pickle.loads(pickle.dumps(web))
    assert back == web and object_key(back) == key


@pytest.mark.parametrize(
    ("given", "held", "addresses"),
    [
        (("10.0.0.1",), "10.0.0.1", ("10.0.0.1",)),  # one address: held as itself
        ("10.0.0.1", "10.0.0.1", ("10.0.0.1",)),
        (("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.2")),
        ((), (), ()),
    ],
)
def test_endpoint_addresses(given: Any, held: Any, addresses: tuple[str, ...]) -> None:
    ep = model.Endpoint(given, True, "", "", "")
    assert ep._addresses == held and ep.addresses == addresses
    same = model.Endpoint(addresses, True, "", "", "")
    assert ep == same and hash(ep) == hash(same)
    assert pickle.loads(pickle.dumps(ep)) == ep

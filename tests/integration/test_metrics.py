"""The metrics (docs/metrics.md) against a running dnsd: queries sent over real sockets, /metrics read with a real
HTTP client and parsed with prometheus_client's parser; each case says which samples must move, and by how much."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, make_query, query, svc_yaml, wait_until
from support.nsd import nsd_upstream

REPO_ZONES = Path(__file__).resolve().parents[2] / "zones"

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(h: DnsdHandle) -> dict[Sample, float]:
    host, port = h.app.http.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[Sample, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nsd_upstream(tmp_path_factory.mktemp("nsd")) as addr:
        yield addr


@pytest.fixture()
def server(dnsd_factory: Callable[..., DnsdHandle], upstream: str, tmp_path: Path) -> DnsdHandle:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for f in FIXTURE_CLUSTER.iterdir():
        if f.is_file():
            (manifests / f.name).write_bytes(f.read_bytes())
    cfg = base_config(manifests)
    cfg.update(
        {
            "http": "127.0.0.1:0",
            "zones": str(REPO_ZONES),
            "recursion": "forward",
            "forward": {"upstreams": [upstream]},
            "allow_recursion": ["127.0.0.0/8"],
        }
    )
    h = dnsd_factory(config=cfg)
    h.manifests = manifests  # type: ignore[attr-defined]
    return h


def raw_udp(h: DnsdHandle, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, (h.host, h.port))
        s.recv(4096)


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[DnsdHandle], Any]
    moves: tuple[tuple[str, dict[str, str], float], ...]  # (sample name, labels it must have, at least this much)
    times: int = 5


def _q(name: str, rtype: str = "A", tcp: bool = False) -> Callable[[DnsdHandle], Any]:
    return lambda h: query(h, name, rtype, tcp=tcp)


CASES = [
    Case(
        "cluster-a-udp",
        _q("kubernetes.default.svc.cluster.local."),
        (
            ("dnsd_dns_requests_total", {"zone": "cluster.local.", "type": "A", "proto": "udp", "family": "1"}, 5),
            ("dnsd_dns_responses_total", {"zone": "cluster.local.", "rcode": "NOERROR", "link": "cluster"}, 5),
            ("dnsd_namespace_requests_total", {"namespace": "default"}, 5),
            ("dnsd_dns_request_duration_seconds_count", {"zone": "cluster.local.", "type": "A"}, 5),
            ("dnsd_dns_response_size_bytes_count", {"zone": "cluster.local.", "proto": "udp"}, 5),
        ),
    ),
    Case(
        "cluster-srv-tcp",
        _q("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV", tcp=True),
        (("dnsd_dns_requests_total", {"zone": "cluster.local.", "type": "SRV", "proto": "tcp"}, 5),),
    ),
    Case(
        "cluster-nxdomain",
        _q("nosuch.default.svc.cluster.local."),
        (
            ("dnsd_dns_responses_total", {"rcode": "NXDOMAIN", "link": "cluster"}, 5),
            ("dnsd_namespace_nxdomain_total", {"namespace": "default"}, 5),
        ),
    ),
    Case(
        "zone-file",
        _q("www.example.internal.", "AAAA"),
        (("dnsd_dns_responses_total", {"zone": "example.internal.", "rcode": "NOERROR", "link": "zone"}, 5),),
    ),
    Case(
        "forwarded-then-cached",
        _q("www.example.test."),
        (
            ("dnsd_dns_responses_total", {"zone": ".", "link": "forward"}, 1),
            ("dnsd_dns_responses_total", {"zone": ".", "link": "cache"}, 4),
            ("dnsd_cache_hits_total", {"type": "success"}, 4),
            ("dnsd_upstream_requests_total", {"link": "forward"}, 1),
            ("dnsd_upstream_responses_total", {"rcode": "NOERROR"}, 1),
            ("dnsd_upstream_request_duration_seconds_count", {}, 1),
        ),
    ),
    Case(
        "formerr-is-the-engines",
        lambda h: raw_udp(h, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40"),
        (("dnsd_dns_responses_total", {"rcode": "FORMERR", "link": "engine"}, 5),),
    ),
    Case(
        "rare-type-is-other",
        _q("kubernetes.default.svc.cluster.local.", 1000),
        (("dnsd_dns_requests_total", {"zone": "cluster.local.", "type": "other"}, 5),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_samples_move(server: DnsdHandle, case: Case) -> None:
    before = scrape(server)
    for _ in range(case.times):
        case.send(server)
    after = scrape(server)
    for name, labels, at_least in case.moves:
        moved = value(after, name, **labels) - value(before, name, **labels)
        assert moved >= at_least, f"{name}{labels} moved by {moved}, expected at least {at_least}"
        assert moved <= case.times * 2, f"{name}{labels} moved by {moved}: counted twice?"


def test_exact_hits_are_counted_exactly(server: DnsdHandle) -> None:
    """200 identical queries (exact-table hits after the first): the request counter moves by exactly 200."""
    q = make_query("kubernetes.default.svc.cluster.local.", "A").to_wire()
    before = value(scrape(server), "dnsd_dns_requests_total", zone="cluster.local.", type="A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for _ in range(200):
            s.sendto(q, (server.host, server.port))
            s.recv(4096)
    after = value(scrape(server), "dnsd_dns_requests_total", zone="cluster.local.", type="A")
    assert after - before == 200


def test_top_nxdomain_names(server: DnsdHandle) -> None:
    for i in range(3):
        for _ in range(i + 1):
            query(server, f"typo{i}.default.svc.cluster.local.")
    top = server.call(lambda: server.app.metrics.top_nxdomain(3))
    assert [name for name, _ in top] == [f"typo{i}.default.svc.cluster.local." for i in (2, 1, 0)]
    assert [n for _, n in top] == [3, 2, 1]


def test_programming_latency_and_data_age(server: DnsdHandle) -> None:
    before = scrape(server)
    assert value(before, "dnsd_data_age_seconds", source="file") == 0.0, "the directory watch is in place"
    count = value(before, "dnsd_programming_latency_seconds_count")
    (server.manifests / "new.yaml").write_text(svc_yaml("metrics-new", "10.0.9.9"))  # type: ignore[attr-defined]
    wait_until(lambda: query(server, "metrics-new.default.svc.cluster.local.").answer)
    after = scrape(server)
    assert value(after, "dnsd_programming_latency_seconds_count") == count + 1
    assert 0 < value(after, "dnsd_programming_latency_seconds_sum") < 10
    assert value(after, "dnsd_store_generation") > value(before, "dnsd_store_generation")
    assert value(after, "dnsd_store_objects", kind="Service") == value(before, "dnsd_store_objects", kind="Service") + 1


def test_openmetrics_when_asked(server: DnsdHandle) -> None:
    host, port = server.app.http.address
    req = urllib.request.Request(
        f"http://{host}:{port}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        body = r.read().decode()
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

    names = {f.name for f in om_families(body)}
    assert {"dnsd_dns_requests", "dnsd_cache_hits", "dnsd_ready"} <= names

"""The etcd source against real etcd from Debian on loopback (issue 8 section 2): put, delete, the prefix, invalid
values, compaction, a member killed mid-watch with a deletion while it is down, failover between endpoints, a
frozen (silent) member, and the data age during an outage."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import DnsdHandle, query, rcode_text, rr_lines, wait_until, zone_lines
from support.etcd import Etcd, start_etcd

import dnsd.sources.etcd as etcd_source

PREFIX = "/dnsd/"
TIMEOUT = 15.0
WEB = "web.default.svc.cluster.local."
DB = "db.default.svc.cluster.local."


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def service(name: str, ip: str | None) -> dict[str, Any]:
    """A Service in namespace default: ClusterIP ip, or headless (ip None)."""
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip or "None", "ports": [{"name": "http", "port": 80}]},
    }  # fmt: skip


def slice_(service_name: str, *ips: str) -> dict[str, Any]:
    """An EndpointSlice of the service with one ready endpoint per address."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service_name}-x1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }  # fmt: skip


def key(obj: dict[str, Any]) -> str:
    """The documented layout: <prefix><kind>/<namespace>/<name>."""
    meta = obj["metadata"]
    return f"{PREFIX}{obj['kind']}/{meta.get('namespace', '-')}/{meta['name']}"


def config(*endpoints: str) -> dict[str, Any]:
    return {
        "listen": ["127.0.0.1:0"], "http": None, "zones": None, "forward": None, "recursion": "off",
        "cluster": {"source": {"etcd": {"endpoints": list(endpoints), "prefix": PREFIX}}},
    }  # fmt: skip


def answer(h: DnsdHandle, name: str) -> tuple[str, set[str]]:
    msg = query(h, name)
    return rcode_text(msg), rr_lines(msg.answer)


def a(name: str, *ips: str) -> tuple[str, set[str]]:
    return "NOERROR", zone_lines("\n".join(f"{name} 5 IN A {ip}" for ip in ips))


NX: tuple[str, set[str]] = ("NXDOMAIN", set())


def answers(h: DnsdHandle, name: str, want: tuple[str, set[str]]) -> Callable[[], bool]:
    return lambda: answer(h, name) == want


def age(h: DnsdHandle) -> float:
    return float(h.call(h.app.source.data_age))


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    cluster = start_etcd(tmp_path / "etcd")
    cluster.put(key(NAMESPACE), NAMESPACE)  # names answer only in namespaces that exist (CoreDNS too)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[Etcd]:
    """Three members: one can be down while the other two still take writes (a quorum of two)."""
    cluster = start_etcd(tmp_path / "etcd", members=3)
    cluster.put(key(NAMESPACE), NAMESPACE)
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect within a second or two of etcd coming back, so that the tests' deadlines stay short."""
    monkeypatch.setattr(etcd_source, "BACKOFF_CAP_S", 1.0)


# ---------------------------------------------------------------- put and delete


def test_put_then_delete(etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    etcd.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    h = dnsd_factory(config=config(etcd.url))
    assert answer(h, WEB) == a(WEB, "10.96.0.20")  # from the first range
    assert answer(h, DB) == NX
    # Changes from the watch: a headless Service and its EndpointSlice, then deletions.
    etcd.put(key(service("db", None)), service("db", None))
    etcd.put(key(slice_("db", "10.1.0.5", "10.1.0.6")), slice_("db", "10.1.0.5", "10.1.0.6"))
    wait_until(answers(h, DB, a(DB, "10.1.0.5", "10.1.0.6")), TIMEOUT)
    etcd.put(key(slice_("db", "10.1.0.7")), slice_("db", "10.1.0.7"))  # an update replaces the endpoints
    wait_until(answers(h, DB, a(DB, "10.1.0.7")), TIMEOUT)
    etcd.delete(key(service("db", None)))
    etcd.delete(key(slice_("db")))
    wait_until(answers(h, DB, NX), TIMEOUT)
    etcd.delete(key(service("web", "10.96.0.20")))
    wait_until(answers(h, WEB, NX), TIMEOUT)
    src = h.app.source
    assert src.programming.count >= 4  # each watch message committed is timed
    assert src.ranges == 1  # no re-range was needed
    assert age(h) == 0.0


def test_prefix_watch_ignores_other_keys(etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    h = dnsd_factory(config=config(etcd.url))
    outside = {
        "/other/Service/default/a": "a",
        "/dnsd0/Service/default/b": "b",  # the first key after the prefix range
        "/dnsdb/Service/default/c": "c",  # shares the prefix's text without its slash
        "/dns/Service/default/d": "d",
    }
    for k, name in outside.items():
        etcd.put(k, service(name, "10.96.1.1"))
    etcd.put(key(service("marker", "10.96.1.2")), service("marker", "10.96.1.2"))  # after them: the watch's order
    marker = "marker.default.svc.cluster.local."
    wait_until(answers(h, marker, a(marker, "10.96.1.2")), TIMEOUT)
    for name in outside.values():
        assert answer(h, f"{name}.default.svc.cluster.local.") == NX, name
    assert h.app.source.keys() == {("Namespace", "", "default"), ("Service", "default", "marker")}


BAD_VALUES = [
    pytest.param("not json {", "JSONDecodeError", id="not-json"),
    pytest.param("[1, 2]", "not a JSON object", id="json-list"),
    pytest.param('{"apiVersion":"v1","kind":"Service","metadata":{"name":"Bad_Name"}}', "Bad_Name", id="bad-name"),
    pytest.param(
        '{"apiVersion":"v1","kind":"Service","metadata":{"name":"bad"},"spec":{"clusterIP":"10.300.0.1"}}',
        "10.300.0.1",
        id="bad-ip",
    ),
]


@pytest.mark.parametrize(("value", "reason"), BAD_VALUES)
def test_invalid_value_is_skipped_counted_and_logged_with_its_key(
    etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle], caplog: pytest.LogCaptureFixture, value: str, reason: str
) -> None:
    caplog.set_level(logging.ERROR, logger="dnsd.sources.etcd")
    etcd.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    h = dnsd_factory(config=config(etcd.url))
    etcd.put(f"{PREFIX}Service/default/web", value)  # a bad update: the last good object keeps serving
    etcd.put(f"{PREFIX}Service/default/new", value)  # a bad new key: nothing from it
    etcd.put(key(service("ok", "10.96.0.21")), service("ok", "10.96.0.21"))
    ok = "ok.default.svc.cluster.local."
    wait_until(answers(h, ok, a(ok, "10.96.0.21")), TIMEOUT)
    assert answer(h, WEB) == a(WEB, "10.96.0.20")
    assert h.app.source.invalid == 2
    lines = [r.getMessage() for r in caplog.records]
    for k in (f"{PREFIX}Service/default/web", f"{PREFIX}Service/default/new"):
        assert any(f"etcd key {k} " in ln and reason in ln for ln in lines), lines


def test_two_keys_holding_one_object_the_later_key_wins(etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    h = dnsd_factory(config=config(etcd.url))
    etcd.put(f"{PREFIX}a", service("web", "10.96.0.1"))
    etcd.put(f"{PREFIX}b", service("web", "10.96.0.2"))
    wait_until(answers(h, WEB, a(WEB, "10.96.0.2")), TIMEOUT)
    etcd.delete(f"{PREFIX}b")  # the earlier key's object serves again
    wait_until(answers(h, WEB, a(WEB, "10.96.0.1")), TIMEOUT)


def test_resync_ranges_again_and_keeps_watching(etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """SIGHUP's resync: a new range (diffed: nothing changed, nothing blinks), then the watch goes on."""
    etcd.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    h = dnsd_factory(config=config(etcd.url))
    generation = h.app.store.generation
    asyncio.run_coroutine_threadsafe(h.app.source.resync(), h.loop).result(TIMEOUT)
    assert h.app.source.ranges == 2
    assert h.app.store.generation == generation  # the same data: no commit
    etcd.put(key(service("web", "10.96.0.21")), service("web", "10.96.0.21"))
    wait_until(answers(h, WEB, a(WEB, "10.96.0.21")), TIMEOUT)


# ---------------------------------------------------------------- outages, compaction, failover


def test_killed_and_restarted_deletion_right_after_restart(etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """One member killed mid-watch: the last data keeps serving and the data age grows; it restarts on its data
    directory and a key is deleted at once, racing dnsd's reconnection; the deletion is served either way."""
    etcd.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    etcd.put(key(service("db", "10.96.0.30")), service("db", "10.96.0.30"))
    h = dnsd_factory(config=config(etcd.url))
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    etcd.kill()
    wait_until(lambda: age(h) > 1.0, TIMEOUT)
    assert answer(h, WEB) == a(WEB, "10.96.0.20")  # the last data keeps serving during the outage
    first = age(h)
    wait_until(lambda: age(h) > first + 0.5, TIMEOUT)  # and its age keeps growing
    etcd.restart()
    etcd.delete(key(service("web", "10.96.0.20")))
    wait_until(answers(h, WEB, NX), TIMEOUT)
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    assert answer(h, DB) == a(DB, "10.96.0.30")


def test_deletion_and_compaction_while_the_watched_member_is_down(
    etcd3: Etcd, dnsd_factory: Callable[..., DnsdHandle], caplog: pytest.LogCaptureFixture
) -> None:
    """dnsd watches member 0 only. It is killed; through member 1 a key is deleted, another put, and the history
    compacted with the real etcdctl. Member 0 restarts, catches up from the others, and dnsd's watch from its
    old revision is cancelled as compacted: a new range, diffed (web gone, db new, api never blinking out)."""
    caplog.set_level(logging.INFO, logger="dnsd.sources.etcd")
    m0, m1, _ = etcd3.members
    etcd3.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    etcd3.put(key(service("api", "10.96.0.40")), service("api", "10.96.0.40"))
    h = dnsd_factory(config=config(m0.url))
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    etcd3.kill(m0)
    wait_until(lambda: age(h) > 1.0, TIMEOUT)
    etcd3.delete(key(service("web", "10.96.0.20")), member=m1)
    rev = etcd3.put(key(service("db", "10.96.0.30")), service("db", "10.96.0.30"), member=m1)
    out = etcd3.etcdctl("compact", str(rev), member=m1)
    assert f"compacted revision {rev}" in out, out
    assert answer(h, WEB) == a(WEB, "10.96.0.20")  # nothing has reached dnsd yet
    api = "api.default.svc.cluster.local."
    blinks: list[tuple[str, set[str]]] = []
    etcd3.restart(m0)

    def caught_up() -> bool:
        got = answer(h, api)
        if got != a(api, "10.96.0.40"):
            blinks.append(got)
        return answer(h, WEB) == NX and answer(h, DB) == a(DB, "10.96.0.30")

    wait_until(caught_up, TIMEOUT, interval=0.02)
    assert blinks == []
    assert h.app.source.ranges == 2
    assert any("is compacted" in r.getMessage() for r in caplog.records)
    wait_until(lambda: age(h) == 0.0, TIMEOUT)


def test_endpoints_tried_in_turn(etcd3: Etcd, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """Member 0 killed: dnsd moves to member 1 and sees a deletion made through member 2 while member 0 is down."""
    m0, m1, m2 = etcd3.members
    etcd3.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    h = dnsd_factory(config=config(m0.url, m1.url))
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    assert h.app.source.endpoint == m0.url
    etcd3.kill(m0)
    etcd3.delete(key(service("web", "10.96.0.20")), member=m2)
    wait_until(answers(h, WEB, NX), TIMEOUT)
    assert h.app.source.endpoint == m1.url
    wait_until(lambda: age(h) == 0.0, TIMEOUT)


def test_silent_watch_is_restarted(
    etcd: Etcd, dnsd_factory: Callable[..., DnsdHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd frozen (SIGSTOP): the connection stays open but nothing arrives, not even progress notifications
    (every second). Past the watch's deadline the data age grows; once etcd runs again the watch is restarted
    and a change made meanwhile is served."""
    monkeypatch.setattr(etcd_source, "SILENT_S", 2.0)
    etcd.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
    h = dnsd_factory(config=config(etcd.url))
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    assert h.app.source.watches == 1
    proc = etcd.members[0].proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: age(h) > 2.0, TIMEOUT)
        assert answer(h, WEB) == a(WEB, "10.96.0.20")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    etcd.put(key(service("web", "10.96.0.21")), service("web", "10.96.0.21"))
    wait_until(answers(h, WEB, a(WEB, "10.96.0.21")), TIMEOUT)
    wait_until(lambda: age(h) == 0.0, TIMEOUT)
    assert h.app.source.watches >= 2  # the frozen watch was dropped and a new one made, not merely resumed


def test_start_waits_for_etcd_then_serves(tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """etcd down at start: start() (and so /ready) waits for the first range, retrying, then serves."""
    cluster = start_etcd(tmp_path / "etcd")
    handle: list[DnsdHandle] = []
    try:
        cluster.kill()
        t = threading.Thread(target=lambda: handle.append(dnsd_factory(config=config(cluster.url))), daemon=True)
        t.start()
        t.join(1.5)
        assert not handle, "start() returned before any range"
        cluster.restart()
        cluster.put(key(NAMESPACE), NAMESPACE)
        cluster.put(key(service("web", "10.96.0.20")), service("web", "10.96.0.20"))
        t.join(TIMEOUT)
        assert handle, "dnsd did not start once etcd was up"
        wait_until(answers(handle[0], WEB, a(WEB, "10.96.0.20")), TIMEOUT)  # ranged, or watched if put after
    finally:
        cluster.stop()

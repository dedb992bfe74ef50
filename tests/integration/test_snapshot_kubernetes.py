"""The last-known-good snapshot with the kubernetes source against the FAKE API server: a restart while the API
is down serves the snapshot at once and says it is stale, the API's listing then confirms it (what the API no
longer has is withdrawn), and a snapshot of another API server is foreign and ignored with a warning."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import DnsdHandle, a_answer, a_ok, wait_until
from support.fakeapi import FakeApiServer

import dnsd.sources.kubernetes as kube

Obj = dict[str, Any]
NX: tuple[str, set[str]] = ("NXDOMAIN", set())


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, ip: str) -> Obj:
    spec: Obj = {
        "type": "ClusterIP",
        "clusterIP": ip,
        "clusterIPs": [ip],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": name}, "spec": spec}


SERVICES = {"web": "10.96.0.11", "db": "10.96.0.12"}


def config(kubeconfig: Path, snapshot: Path) -> dict[str, Any]:
    cluster: Obj = {"source": {"kubernetes": {"kubeconfig": str(kubeconfig)}}, "snapshot": str(snapshot)}
    return {
        "listen": ["127.0.0.1:0"],
        "http": None,
        "zones": None,
        "forward": None,
        "recursion": "off",
        "cluster": cluster,
    }


def snapshot_names(path: Path) -> set[str] | None:
    """The names of the Services in the snapshot file now (None while it does not exist yet)."""
    try:
        lines = path.read_bytes().splitlines()[1:]
        return {row[2] for row in map(json.loads, lines) if row[0] == "Service"}
    except (OSError, ValueError):
        return None


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoff: the source's retries find the API soon after it is back, within the test's deadlines."""
    monkeypatch.setattr(kube, "BACKOFF_MAX_S", 0.5)
    monkeypatch.setattr(kube, "SILENCE_S", 3.0)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    objects = [namespace("default"), *(service(n, ip) for n, ip in SERVICES.items())]
    with FakeApiServer(objects=objects) as server:
        yield server


def _write_snapshot(fake: FakeApiServer, kubeconfig: Path, snap: Path, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """dnsd #1 lists the fake, answers, writes the snapshot and stops (its last write is at stop)."""
    first = dnsd_factory(config=config(kubeconfig, snap))
    for name, ip in SERVICES.items():
        assert a_answer(first, name) == a_ok(name, ip)
    wait_until(lambda: snapshot_names(snap) == set(SERVICES), timeout=10)
    first.stop()


def test_served_while_the_api_is_down_then_confirmed(
    fake: FakeApiServer, tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle]
) -> None:
    kubeconfig, snap = fake.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "snapshot.jsonl"
    _write_snapshot(fake, kubeconfig, snap, dnsd_factory)
    header = json.loads(snap.read_bytes().splitlines()[0])
    assert header["source"] == {"kind": "kubernetes", "server": fake.url}

    fake.stop()  # the API is down while dnsd restarts
    time.sleep(0.05)  # written_at is in the past: the data age must be more than nothing
    second = dnsd_factory(config=config(kubeconfig, snap))
    for name, ip in SERVICES.items():
        assert a_answer(second, name) == a_ok(name, ip)  # at once, from the snapshot: the API cannot answer
    notes = second.call(second.app.ready_notes)
    assert len(notes) == 1 and notes[0].startswith("serving the snapshot of "), notes
    assert notes[0].endswith("; the source has not confirmed it yet"), notes
    assert second.call(second.app.data_age) > 0.05
    assert second.app.store.synced
    assert second.app.snapshot.stale

    # The API comes back without db: the source lists, confirms the snapshot, and db is withdrawn.
    assert fake.delete("Service", "default", "db") is not None
    fake.start()
    wait_until(lambda: second.call(second.app.ready_notes) == [], timeout=10)
    assert a_answer(second, "db") == NX
    assert a_answer(second, "web") == a_ok("web", SERVICES["web"])
    assert second.app.snapshot.withdrawn == 1
    assert second.call(second.app.data_age) < 5.0  # the source's own age now, not the snapshot's
    # The confirmed data is written again, without db.
    wait_until(lambda: snapshot_names(snap) == {"web"}, timeout=10)


def test_a_snapshot_of_another_api_server_is_ignored(
    fake: FakeApiServer,
    tmp_path: Path,
    dnsd_factory: Callable[..., DnsdHandle],
    logs: pytest.LogCaptureFixture,
) -> None:
    snap = tmp_path / "snapshot.jsonl"
    _write_snapshot(fake, fake.write_kubeconfig(tmp_path / "kubeconfig"), snap, dnsd_factory)
    with FakeApiServer(objects=[namespace("default"), service("other", "10.96.0.20")]) as other:
        assert other.url != fake.url
        logs.clear()
        handle = dnsd_factory(config=config(other.write_kubeconfig(tmp_path / "other-kubeconfig"), snap))
        warnings = [
            r.getMessage() for r in logs.records if r.name == "dnsd.store.snapshot" and r.levelname == "WARNING"
        ]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"{snap}: snapshot ignored: foreign: its source is "), warnings
        assert fake.url in warnings[0] and other.url in warnings[0], warnings
        assert a_answer(handle, "web") == NX  # started from the other API alone
        assert a_answer(handle, "other") == a_ok("other", "10.96.0.20")
        assert handle.call(handle.app.ready_notes) == []
        # The other API's data replaces the foreign file.
        wait_until(lambda: snapshot_names(snap) == {"other"}, timeout=10)
        handle.stop()

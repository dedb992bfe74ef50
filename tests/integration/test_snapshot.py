"""The last-known-good snapshot (issue 8 section 3) with a real dnsd and the files source: changes are written,
a restart while the source has nothing to give serves the snapshot at once and says it is stale, the source's
listing then replaces it, a broken or foreign snapshot is ignored with a warning, and a writer killed with
SIGKILL never leaves a broken file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import NS_YAML, REPO, a_answer, a_ok, base_config, svc_yaml, wait_until

from dnsd.store.snapshot import header_for, read_snapshot, remove_leftovers


def snapshot_names(path: Path) -> set[str] | None:
    """The names of the Services in the snapshot file now (None while it does not exist or is not one of ours:
    a test may have broken it on purpose)."""
    try:
        lines = path.read_bytes().splitlines()[1:]
        return {row[2] for row in map(json.loads, lines) if row[0] == "Service"}
    except (OSError, ValueError):
        return None


def ready(handle: Any) -> tuple[int, str]:
    host, port = handle.app.http.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fill(root: Path, services: dict[str, str]) -> None:
    root.mkdir(exist_ok=True)
    (root / "ns.yaml").write_text(NS_YAML)
    for name, ip in services.items():
        (root / f"{name}.yaml").write_text(svc_yaml(name, ip))


def test_written_then_served_until_the_source_confirms(dnsd_factory: Any, tmp_path: Path) -> None:
    root, snap = tmp_path / "manifests", tmp_path / "state" / "snapshot.jsonl"
    snap.parent.mkdir()
    fill(root, {"api": "10.0.0.1", "web": "10.0.0.2"})
    config = base_config(root, snapshot=str(snap))
    config["http"] = "127.0.0.1:0"
    first = dnsd_factory(config=config)
    wait_until(lambda: snapshot_names(snap) == {"api", "web"})
    # A change is written (within the 2 s rate limit).
    (root / "db.yaml").write_text(svc_yaml("db", "10.0.0.3"))
    wait_until(lambda: snapshot_names(snap) == {"api", "web", "db"}, timeout=10)
    first.stop()

    # Restart with the source holding nothing yet: its directory is gone (a ConfigMap volume not mounted yet,
    # an API server down: the files source withdraws nothing until the directory is back).
    root.rename(tmp_path / "away")
    time.sleep(0.05)  # written_at is in the past: the data age must be more than nothing
    second = dnsd_factory(config=config)
    for name, ip in (("api", "10.0.0.1"), ("web", "10.0.0.2"), ("db", "10.0.0.3")):
        assert a_answer(second, name) == a_ok(name, ip)  # served at once, from the snapshot
    notes = second.call(second.app.ready_notes)
    assert len(notes) == 1 and notes[0].startswith("serving the snapshot of ")
    assert notes[0].endswith("; the source has not confirmed it yet")
    code, body = ready(second)
    assert code == 200  # a 503 would take every replica out of the kube-dns Service at once
    assert "serving the snapshot of" in body, body  # the staleness shows in the body
    assert second.call(second.app.data_age) > 0.05
    assert second.app.store.synced
    # Nothing is written while the snapshot is unconfirmed (rewriting it would date old data as fresh).
    written_at = json.loads(snap.read_bytes().splitlines()[0])["written_at"]

    # The source comes back with less: what it lacks disappears, the rest keeps answering.
    fill(root, {"api": "10.0.0.1", "web": "10.0.0.9"})
    wait_until(lambda: a_answer(second, "db")[0] == "NXDOMAIN", timeout=10)
    assert a_answer(second, "api") == a_ok("api", "10.0.0.1")
    assert a_answer(second, "web") == a_ok("web", "10.0.0.9")
    assert second.call(second.app.ready_notes) == []
    assert second.call(second.app.data_age) < 1.0
    assert ready(second) == (200, "OK\n")
    assert second.app.snapshot.withdrawn == 1
    wait_until(lambda: snapshot_names(snap) == {"api", "web"}, timeout=10)
    assert json.loads(snap.read_bytes().splitlines()[0])["written_at"] > written_at


def test_rate_limited(dnsd_factory: Any, tmp_path: Path) -> None:
    """A burst of changes costs one write per interval, not one per change; the last state is written."""
    root, snap = tmp_path / "manifests", tmp_path / "snapshot.jsonl"
    fill(root, {})
    handle = dnsd_factory(config=base_config(root, snapshot=str(snap)))
    wait_until(lambda: handle.app.snapshot.writes >= 1)
    start, writes = time.monotonic(), handle.app.snapshot.writes
    for i in range(20):
        (root / f"s{i}.yaml").write_text(svc_yaml(f"s{i}", f"10.0.1.{i + 1}"))
        wait_until(lambda i=i: a_answer(handle, f"s{i}")[0] == "NOERROR")
    # The file is renamed into place before the write is counted: wait for both.
    wait_until(lambda: len(snapshot_names(snap) or ()) == 20 and handle.app.snapshot.writes > writes, timeout=10)
    elapsed = time.monotonic() - start
    made = handle.app.snapshot.writes - writes
    assert 1 <= made <= elapsed / 2.0 + 1, (made, elapsed)


def _write_snapshot_of(tmp_path: Path, root: Path, snap: Path, dnsd_factory: Any) -> None:
    fill(root, {"api": "10.0.0.1"})
    handle = dnsd_factory(config=base_config(root, snapshot=str(snap)))
    wait_until(lambda: snapshot_names(snap) == {"api"})
    handle.stop()
    for path in root.iterdir():  # the source now lists only the namespace: "api" can come from the snapshot only
        if path.name != "ns.yaml":
            path.unlink()


def _header(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        first, _, body = data.partition(b"\n")
        header = json.loads(first)
        edit(header)
        return json.dumps(header).encode() + b"\n" + body

    return change


# (case, change to the snapshot's bytes, the reason the warning gives)
IGNORED: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("corrupt", lambda d: d.replace(b"10.0.0.1", b"10.0.0.7"), "checksum mismatch"),
    ("truncated", lambda d: d[:-20], "checksum mismatch"),
    ("truncated in the header", lambda d: d[:100], "not JSON"),
    ("garbage", lambda d: b"\x00\xff" * 100, "not JSON"),
    ("other format version", _header(lambda h: h.update(version=99)), "foreign: its version is 99"),
    ("other cluster domain", _header(lambda h: h.update(domain="east.local")), "foreign: its domain"),
    ("other source", _header(lambda h: h.update(source={"kind": "etcd"})), "foreign: its source"),
]


@pytest.mark.parametrize(("case", "change", "reason"), IGNORED, ids=[c[0] for c in IGNORED])
def test_ignored_with_a_warning(
    dnsd_factory: Any,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    case: str,
    change: Callable[[bytes], bytes],
    reason: str,
) -> None:
    root, snap = tmp_path / "manifests", tmp_path / "snapshot.jsonl"
    _write_snapshot_of(tmp_path, root, snap, dnsd_factory)
    snap.write_bytes(change(snap.read_bytes()))
    logs.clear()
    handle = dnsd_factory(config=base_config(root, snapshot=str(snap)))
    warnings = [r.getMessage() for r in logs.records if r.name == "dnsd.store.snapshot" and r.levelname == "WARNING"]
    assert warnings == [f"{snap}: snapshot ignored: {warnings[0].split('ignored: ', 1)[1]}"], warnings
    assert reason in warnings[0], (case, warnings)
    assert a_answer(handle, "api")[0] == "NXDOMAIN"  # started from the source alone
    assert handle.call(handle.app.ready_notes) == []
    # ... and the source's data replaces the bad file.
    wait_until(lambda: snapshot_names(snap) == set())


def test_a_good_snapshot_is_used(dnsd_factory: Any, tmp_path: Path) -> None:
    """The control case of the table above: unchanged, the same file serves "api" until the source confirms."""
    root, snap = tmp_path / "manifests", tmp_path / "snapshot.jsonl"
    _write_snapshot_of(tmp_path, root, snap, dnsd_factory)
    root.rename(tmp_path / "away")
    handle = dnsd_factory(config=base_config(root, snapshot=str(snap)))
    assert a_answer(handle, "api") == a_ok("api", "10.0.0.1")


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    real_fsync = os.fsync

    def slow_fsync(fd):  # a slow disk: the temporary file lives long enough for kills to land on it
        time.sleep(0.05)
        real_fsync(fd)

    os.fsync = slow_fsync
    from dnsd.config import parse_config
    from dnsd.store.model import Service
    from dnsd.store.snapshot import header_for, write_snapshot

    path = Path(sys.argv[1])
    header = header_for(parse_config({"cluster": {"source": {"files": "/srv/cluster"}}}))
    big = [Service("ns", f"s{i}", "ClusterIP", (f"10.9.{i // 250}.{i % 250}",), False, (), "", False)
           for i in range(20000)]
    small = big[:3]
    write_snapshot(path, header, small, time.time())
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        write_snapshot(path, header, big if n % 2 else small, time.time())
    """
)


def test_kill_9_while_writing(tmp_path: Path) -> None:
    """SIGKILL at any moment of a write leaves the old snapshot or the new one (rename(2) is atomic), never a
    broken one; the temporary files a kill leaves are ours to remove."""
    from dnsd.config import parse_config

    snap = tmp_path / "snapshot.jsonl"
    header = header_for(parse_config({"cluster": {"source": {"files": "/srv/cluster"}}}))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    sizes: set[int] = set()
    interrupted = 0
    for i in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(snap)], stdout=subprocess.PIPE, env=env, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            wait_until(lambda: snap.stat().st_size > 100_000, timeout=10)  # the big one was written once
            time.sleep(i * 0.035)  # then a different moment of the write cycle (0.3 s for the big one, 0.1 s small)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        loaded = read_snapshot(snap, header)  # raises when the file is broken
        sizes.add(len(loaded.objects))
        leftovers = remove_leftovers(snap)
        assert leftovers <= 1
        interrupted += leftovers
    assert sizes <= {3, 20000}
    assert interrupted >= 1  # some kills did land in the middle of a write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.jsonl"]

"""The snapshot file (issue 8 section 3): every kind of object survives the round trip, and a corrupt, truncated
or foreign file is refused with its reason before any object of it is used."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dnsd.config import EtcdSource, FilesSource, parse_config
from dnsd.store.model import Endpoint, EndpointPort, EndpointSlice, KubeObject, Namespace, Pod, Service, ServicePort
from dnsd.store.snapshot import SnapshotError, header_for, read_snapshot, remove_leftovers, write_snapshot

EP = Endpoint(("10.1.0.1", "10.1.0.2"), True, "web-0", "web-0", "node-a")
PORT = EndpointPort("http", 80, "tcp")
V1_PART = EndpointSlice("shop", "db", "db", "mixed", (Endpoint(("10.2.0.1",), False, "", "", ""),), (PORT,), True)
OBJECTS: list[KubeObject] = [
    Namespace("shop"),
    Service("shop", "api", "ClusterIP", ("10.0.0.1", "fd00::1"), False, (ServicePort("http", 80, "tcp"),), "", False),
    Service("shop", "ext", "ExternalName", (), False, (), "example.test", True),
    Service("shop", "web", "ClusterIP", (), True, (), "", False),
    EndpointSlice("shop", "web-abc", "web", "IPv4", (EP,), (PORT, EndpointPort("", -1, "tcp"))),
    EndpointSlice("shop", "db", "db", "mixed", V1_PART.endpoints, (PORT,), True, (V1_PART,)),
    Pod("shop", "web-0", ("10.1.0.1",), "Running", False),
]


def config(path: str = "/srv/cluster", domain: str = "cluster.local") -> Any:
    return parse_config({"cluster": {"domain": domain, "source": {"files": path}}})


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    header = header_for(config())
    assert write_snapshot(path, header, OBJECTS, 1_700_000_000.5) == len(OBJECTS)
    loaded = read_snapshot(path, header)
    assert list(loaded.objects) == OBJECTS
    assert loaded.written_at == 1_700_000_000.5
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_leftovers_removed(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    for name in (".snap.abc.tmp", ".snap.x1.tmp", ".other.abc.tmp", "snap.tmp"):
        (tmp_path / name).write_text("x")
    assert remove_leftovers(path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc.tmp", "snap.tmp"]


def _rewrite(edit: Callable[[dict[str, Any], list[bytes]], None]) -> Callable[[bytes], bytes]:
    """A file change that keeps the checksum right: the file is still whole, its content is what differs."""

    def change(data: bytes) -> bytes:
        first, _, body = data.partition(b"\n")
        header = json.loads(first)
        lines = body.splitlines(keepends=True)
        edit(header, lines)
        body = b"".join(lines)
        header["sha256"] = hashlib.sha256(body).hexdigest()
        return json.dumps(header).encode() + b"\n" + body

    return change


def _set(key: str, value: Any) -> Callable[[dict[str, Any], list[bytes]], None]:
    return lambda header, _lines: header.__setitem__(key, value)


def _line(n: int, text: bytes) -> Callable[[dict[str, Any], list[bytes]], None]:
    return lambda _header, lines: lines.__setitem__(n, text + b"\n")


# (case, change to the file's bytes, the reason's expected words)
BROKEN: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda d: b"", "not JSON"),
    ("binary garbage", lambda d: bytes(range(256)) * 4, "not JSON"),
    ("another JSON file", lambda d: b'{"apiVersion": "v1"}\n', "not a dnsd snapshot"),
    ("truncated in the header", lambda d: d[:40], "not JSON"),
    ("truncated in an object", lambda d: d[: len(d) - 30], "checksum mismatch"),
    ("header only", lambda d: d.partition(b"\n")[0], "checksum mismatch"),
    ("one byte flipped", lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "checksum mismatch"),
    ("an object line dropped", _rewrite(lambda h, lines: lines.pop()), "objects where the header says"),
    ("format version 2", _rewrite(_set("version", 2)), "foreign: its version is 2"),
    ("another model", _rewrite(_set("model", "0" * 16)), "foreign: its model"),
    ("another cluster domain", _rewrite(_set("domain", "other.local")), "foreign: its domain is 'other.local'"),
    ("another files path", _rewrite(_set("source", {"kind": "files", "path": "/x"})), "foreign: its source"),
    ("an etcd source", _rewrite(_set("source", {"kind": "etcd", "endpoints": []})), "foreign: its source"),
    ("no written_at", _rewrite(_set("written_at", None)), "lacks objects, sha256 or written_at"),
    ("an unknown kind", _rewrite(_line(0, b'["Ingress","shop","x"]')), "line 2: not an object of a known kind"),
    ("a field missing", _rewrite(_line(0, b'["Pod","shop","web-0"]')), "line 2: a Pod does not have its 5 fields"),
    ("a wrong type", _rewrite(_line(0, b'["Namespace",7]')), "line 2: Namespace.name is int, not str"),
    ("a bool for a port", _rewrite(_line(1, b'["Service","s","a","ClusterIP",[],false,[["h",true,"tcp"]],"",false]')),
     "line 3: ServicePort.port is bool, not int"),
    ("not JSON in an object", _rewrite(_line(0, b"[oops")), "line 2:"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "reason"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_or_foreign(tmp_path: Path, case: str, change: Callable[[bytes], bytes], reason: str) -> None:
    path = tmp_path / "snap"
    header = header_for(config())
    write_snapshot(path, header, OBJECTS, 1_700_000_000.0)
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(SnapshotError) as info:
        read_snapshot(path, header)
    assert reason in str(info.value), f"{case}: {info.value}"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (FilesSource(Path("/srv/cluster")), FilesSource(Path("/srv/cluster/")), True),
        (FilesSource(Path("/srv/cluster")), FilesSource(Path("/srv/other")), False),
        (EtcdSource(("http://a:2379", "http://b:2379")), EtcdSource(("http://b:2379", "http://a:2379")), True),
        (EtcdSource(("http://a:2379",), "/dnsd/"), EtcdSource(("http://a:2379",), "/other/"), False),
        (FilesSource(Path("/srv/cluster")), EtcdSource(), False),
    ],
)
def test_source_identity(a: Any, b: Any, same: bool) -> None:
    from dnsd.store.snapshot import source_identity

    assert (source_identity(a) == source_identity(b)) is same


def test_kubeconfig_server(tmp_path: Path) -> None:
    """A kubeconfig's context names the API server the snapshot belongs to; the file is read, nothing else."""
    from dnsd.config import KubernetesSource
    from dnsd.store.snapshot import source_identity

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "contexts: [{name: a, context: {cluster: one}}, {name: b, context: {cluster: two}}]\n"
        "clusters: [{name: one, cluster: {server: 'https://one:6443'}}, {name: two, cluster: {server: 'https://two'}}]\n"
    )
    current = source_identity(KubernetesSource(str(kubeconfig)))
    named = source_identity(KubernetesSource(str(kubeconfig), context="b"))
    assert current == {"kind": "kubernetes", "server": "https://one:6443"}
    assert named == {"kind": "kubernetes", "server": "https://two"}
    missing = source_identity(KubernetesSource(str(tmp_path / "absent")))
    assert missing["server"].startswith(f"kubeconfig {tmp_path / 'absent'}")

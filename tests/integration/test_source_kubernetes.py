"""The kubernetes source against the FAKE API server: list+watch into DNS answers, and the control plane's faults."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import pytest
import yaml
from support import DnsdHandle, query, rcode_text, rr_lines, run_dnsd, wait_until, zone_lines
from support.fakeapi import FakeApiServer, make_tls

import dnsd.sources.kubernetes as kube
from dnsd.sources import kubecreds

Obj = dict[str, Any]
DOMAIN = "svc.cluster.local."


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(ns: str, name: str, ip: str | None) -> Obj:
    spec: Obj = {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    spec["clusterIP"] = ip if ip is not None else "None"
    spec["clusterIPs"] = [ip] if ip is not None else ["None"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}


def endpoint_slice(ns: str, svc: str, name: str, ips: list[str]) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def pod(ns: str, name: str, ip: str, phase: str = "Running") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


BASE = [
    namespace("default"),
    namespace("shop"),
    service("shop", "api", "10.96.0.10"),
    service("shop", "web", "10.96.0.11"),
    service("shop", "db", None),
    endpoint_slice("shop", "db", "db-abc", ["10.1.0.5", "10.1.0.6"]),
]


def answer(h: DnsdHandle, name: str, rdtype: str = "A") -> tuple[str, set[str]]:
    msg = query(h, name, rdtype)
    return rcode_text(msg), rr_lines(msg.answer)


def a_rec(name: str, *ips: str) -> tuple[str, set[str]]:
    return "NOERROR", zone_lines("\n".join(f"{name} 5 IN A {ip}" for ip in ips))


NX: tuple[str, set[str]] = ("NXDOMAIN", set())


def config(kubeconfig: Path, **cluster: Any) -> dict[str, Any]:
    cl: dict[str, Any] = {"source": {"kubernetes": {"kubeconfig": str(kubeconfig)}}}
    cl.update(cluster)
    return {"listen": ["127.0.0.1:0"], "http": None, "zones": None, "forward": None, "recursion": "off", "cluster": cl}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoff and silence deadline, so faults heal within a test's deadlines (the fake bookmarks every
    second, so a healthy watch is never silent for 3 s)."""
    monkeypatch.setattr(kube, "BACKOFF_MAX_S", 0.5)
    monkeypatch.setattr(kube, "SILENCE_S", 3.0)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(objects=[dict(o) for o in BASE]) as server:
        yield server


@pytest.fixture
def served(fake: FakeApiServer, tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle]) -> DnsdHandle:
    return dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig")))


# ---------------------------------------------------------------- list + watch into answers


@dataclass(frozen=True)
class Step:
    id: str
    change: Callable[[FakeApiServer], object]
    qname: str
    want: tuple[str, set[str]]


STEPS = [
    Step("listed", lambda f: None, f"api.shop.{DOMAIN}", a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")),
    Step("listed-headless", lambda f: None, f"db.shop.{DOMAIN}", a_rec(f"db.shop.{DOMAIN}", "10.1.0.5", "10.1.0.6")),
    Step(
        "added",
        lambda f: f.upsert(service("shop", "cart", "10.96.0.12")),
        f"cart.shop.{DOMAIN}",
        a_rec(f"cart.shop.{DOMAIN}", "10.96.0.12"),
    ),
    Step(
        "modified",
        lambda f: f.upsert(service("shop", "api", "10.96.0.99")),
        f"api.shop.{DOMAIN}",
        a_rec(f"api.shop.{DOMAIN}", "10.96.0.99"),
    ),
    Step(
        "endpoints-modified",
        lambda f: f.upsert(endpoint_slice("shop", "db", "db-abc", ["10.1.0.7"])),
        f"db.shop.{DOMAIN}",
        a_rec(f"db.shop.{DOMAIN}", "10.1.0.7"),
    ),
    Step("deleted", lambda f: f.delete("Service", "shop", "web"), f"web.shop.{DOMAIN}", NX),
    Step(
        "namespace-added",
        lambda f: (f.upsert(namespace("blog")), f.upsert(service("blog", "feed", "10.96.1.1"))),
        f"feed.blog.{DOMAIN}",
        a_rec(f"feed.blog.{DOMAIN}", "10.96.1.1"),
    ),
]


def test_list_then_watch_reach_the_answers(fake: FakeApiServer, served: DnsdHandle) -> None:
    """Each step's change, made in the API, is what DNS answers next; the steps build on each other."""
    source = served.app.source
    assert source.name == "kubernetes" and served.app.store.synced and source.complete()
    for step in STEPS:
        step.change(fake)
        wait_until(lambda s=step: answer(served, s.qname) == s.want, timeout=5)  # type: ignore[misc]
    assert source.programming.count > 0  # events were timed from arrival to commit
    assert source.keys() == set(served.app.store.objects)
    assert source.data_age() == 0.0  # every watch connected and heard from
    first = [r for r in fake.requests if not r.watch]
    assert all(r.query.get("limit") == str(kube.PAGE) for r in first), first
    watches = fake.requests_for("services", watch=True) + fake.requests_for("endpointslices", watch=True)
    for r in watches:
        assert r.query.get("allowWatchBookmarks") == "true" and r.query.get("resourceVersion")
        assert 240 <= int(r.query["timeoutSeconds"]) <= 360


def test_pods_verified_are_listed_filtered(fake: FakeApiServer, tmp_path: Path, dnsd_factory: Any) -> None:
    """pods: verified watches Pods, filtered by the API to the phases that get answers; other modes do not."""
    fake.upsert(pod("shop", "p1", "10.2.0.1"))
    fake.upsert(pod("shop", "p2", "10.2.0.2", phase="Succeeded"))
    h = dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig"), pods="verified"))
    name = "10-2-0-1.shop.pod.cluster.local."
    assert answer(h, name) == a_rec(name, "10.2.0.1")
    assert answer(h, "10-2-0-2.shop.pod.cluster.local.")[0] == "NXDOMAIN"
    lists = fake.requests_for("pods", watch=False)
    assert lists and lists[0].query.get("fieldSelector") == kube.PODS.field_selector
    assert ("Pod", "shop", "p2") not in h.app.store.objects  # filtered by the API, never sent
    fake.upsert(pod("shop", "p1", "10.2.0.1", phase="Failed"))  # leaves the selector: a DELETED event
    wait_until(lambda: answer(h, name)[0] == "NXDOMAIN", timeout=5)


def test_pods_not_watched_unless_verified(fake: FakeApiServer, served: DnsdHandle) -> None:
    assert fake.requests_for("pods") == []
    assert [r.kind for r in served.app.source.resources] == ["Namespace", "Service", "EndpointSlice"]


# ---------------------------------------------------------------- faults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_down_at_start_waits_then_serves(fake: FakeApiServer, tmp_path: Path) -> None:
    """Until the first list completes start() does not return, unknown names get SERVFAIL and /ready says why;
    then the API comes up and everything is served."""
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    fake.stop()
    port = _free_port()
    cfg = config(kubeconfig)
    cfg["listen"] = [f"127.0.0.1:{port}"]
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("h", run_dnsd(cfg)), daemon=True)
    thread.start()
    try:

        def servfail() -> bool:
            try:
                return answer(("127.0.0.1", port), f"api.shop.{DOMAIN}")[0] == "SERVFAIL"  # type: ignore[arg-type]
            except (OSError, dns.exception.Timeout):
                return False  # not listening yet

        wait_until(servfail, timeout=10)
        assert thread.is_alive()  # start() still waits for the first list
        fake.start()
        thread.join(20)
        h: DnsdHandle = box["h"]
        assert h.app.not_ready() == []
        assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")
    finally:
        thread.join(20)
        if "h" in box:
            box["h"].stop()


@pytest.mark.parametrize("compacted", [False, True], ids=["resume", "410-relist"])
def test_outage_mid_watch_with_a_deletion(fake: FakeApiServer, served: DnsdHandle, compacted: bool) -> None:
    """The API goes away; the last data keeps serving and its age grows; a service deleted meanwhile goes when
    the API is back, by the watch resuming (history kept) or by a 410 and a relist diff (history compacted),
    and no live name blinks out during the relist."""
    source = served.app.source
    fake.stop()
    fake.delete("Service", "shop", "web")
    fake.upsert(service("shop", "late", "10.96.0.50"))
    if compacted:
        fake.compact()
    wait_until(lambda: source.data_age() > 0.5, timeout=10)
    assert answer(served, f"web.shop.{DOMAIN}") == a_rec(f"web.shop.{DOMAIN}", "10.96.0.11")  # still serving
    relists = source.relists
    blinks: list[tuple[str, set[str]]] = []
    stop = threading.Event()

    def watch_api() -> None:  # the live name is asked all through the recovery
        while not stop.is_set():
            got = answer(served, f"api.shop.{DOMAIN}")
            if got != a_rec(f"api.shop.{DOMAIN}", "10.96.0.10"):
                blinks.append(got)

    asker = threading.Thread(target=watch_api, daemon=True)
    asker.start()
    try:
        fake.start()
        wait_until(lambda: answer(served, f"web.shop.{DOMAIN}") == NX, timeout=10)
        wait_until(lambda: answer(served, f"late.shop.{DOMAIN}") == a_rec(f"late.shop.{DOMAIN}", "10.96.0.50"))
    finally:
        stop.set()
        asker.join(5)
    assert blinks == []
    assert (source.relists > relists) == compacted
    wait_until(lambda: source.data_age() == 0.0, timeout=5)


def test_410_on_continue_restarts_the_list(
    fake: FakeApiServer, tmp_path: Path, dnsd_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continue token that expired between two pages (HTTP 410) starts the list over; every object is served."""
    monkeypatch.setattr(kube, "PAGE", 2)
    real = kube.convert_page
    calls = {"n": 0}

    def convert_then_compact(body: bytes, res: kube.Resource) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            fake.compact()  # the token in this page is now too old
            fake.upsert(service("shop", "extra", "10.96.0.60"))
        return real(body, res)

    monkeypatch.setattr(kube, "convert_page", convert_then_compact)
    h = dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    gone = [r for r in fake.requests if r.status == 410 and "continue" in r.query]
    assert gone, [(r.path, r.status) for r in fake.requests]
    assert h.app.source.relists >= 1
    for name, ip in (("api", "10.96.0.10"), ("web", "10.96.0.11"), ("extra", "10.96.0.60")):
        assert answer(h, f"{name}.shop.{DOMAIN}") == a_rec(f"{name}.shop.{DOMAIN}", ip)


def test_silent_watch_is_restarted(fake: FakeApiServer, served: DnsdHandle) -> None:
    """A watch that sends nothing (no events, no bookmarks) past SILENCE_S is dropped and opened again; the data
    age grows while nothing is heard."""
    source = served.app.source
    opened = len(fake.requests_for("services", watch=True))
    fake.set_silent(True)
    fake.upsert(service("shop", "quiet", "10.96.0.70"))
    wait_until(lambda: source.watch_restarts >= 1, timeout=10)
    wait_until(lambda: source.data_age() > 0, timeout=10)
    assert answer(served, f"quiet.shop.{DOMAIN}") == NX
    fake.set_silent(False)
    wait_until(lambda: answer(served, f"quiet.shop.{DOMAIN}") == a_rec(f"quiet.shop.{DOMAIN}", "10.96.0.70"), 10)
    assert len(fake.requests_for("services", watch=True)) > opened


def test_half_written_line_resumes_the_watch(fake: FakeApiServer, served: DnsdHandle) -> None:
    """The connection is cut in the middle of an event: the half line is dropped and the watch resumes from the
    last whole event, which brings the event again (no relist)."""
    source = served.app.source
    assert fake.inject_half_line("services") >= 1
    fake.upsert(service("shop", "half", "10.96.0.80"))
    wait_until(lambda: answer(served, f"half.shop.{DOMAIN}") == a_rec(f"half.shop.{DOMAIN}", "10.96.0.80"), 10)
    assert source.watch_restarts >= 1
    assert source.relists == 0


def test_invalid_object_is_skipped_counted_and_the_rest_served(
    fake: FakeApiServer, tmp_path: Path, dnsd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An object with invalid fields, listed or watched, is skipped with its identity in the log and counted;
    a valid object that turns invalid keeps its last good version."""
    caplog.set_level(logging.ERROR, logger="dnsd.sources.kubernetes")
    fake.upsert(service("shop", "bad", "not-an-ip"))
    h = dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    source = h.app.source
    assert source.invalid_objects == 1
    assert answer(h, f"bad.shop.{DOMAIN}") == NX
    assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")
    assert any("Service shop/bad" in r.getMessage() for r in caplog.records), caplog.text
    fake.upsert(service("shop", "api", "999.1.1.1"))  # turns invalid
    fake.upsert(service("shop", "after", "10.96.0.90"))  # a later event still applies
    wait_until(lambda: answer(h, f"after.shop.{DOMAIN}") == a_rec(f"after.shop.{DOMAIN}", "10.96.0.90"))
    assert source.invalid_objects == 2
    assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")


def test_token_rotation_rereads_the_token_file(tmp_path: Path, dnsd_factory: Any) -> None:
    """The token in the file is rotated (the old one gets 401 at once): after the 401 the source reads the file
    again and goes on."""
    token_file = tmp_path / "token"
    with FakeApiServer(objects=[dict(o) for o in BASE], token="first", token_file=token_file) as fake:
        h = dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig", token_file=token_file)))
        fake.rotate_token("second")
        fake.inject_half_line()  # every watch reconnects now (a real one would at its timeout)
        fake.upsert(service("shop", "rotated", "10.96.0.100"))
        want = a_rec(f"rotated.shop.{DOMAIN}", "10.96.0.100")
        wait_until(lambda: answer(h, f"rotated.shop.{DOMAIN}") == want, timeout=10)
        assert any(r.status == 401 for r in fake.requests)
        assert h.app.source.creds.token_reads >= 2


EXEC_PLUGIN = """
import json, os, sys
count = sys.argv[1]
n = int(open(count).read()) + 1 if os.path.exists(count) else 1
open(count, "w").write(str(n))
assert json.loads(os.environ["KUBERNETES_EXEC_INFO"])["spec"]["interactive"] is False
token = open(os.environ["FAKE_TOKEN_FILE"]).read().strip()
status = {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}))
"""


def test_exec_plugin_token(fake: FakeApiServer, tmp_path: Path, dnsd_factory: Any) -> None:
    """An exec credential plugin (as cloud providers use) is run with its args and env; its token is cached
    until it expires and fetched again after a 401."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    source = tmp_path / "issued"  # what the plugin's "cloud" issues now
    source.write_text("fake-token")
    count = tmp_path / "runs"
    kubeconfig = tmp_path / "kubeconfig"
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), str(count)],
            "env": [{"name": "FAKE_TOKEN_FILE", "value": str(source)}],
        }
    }
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": fake.url}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kubeconfig.write_text(yaml.safe_dump(doc))
    h = dnsd_factory(config=config(kubeconfig))
    assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")
    assert count.read_text() == "1"  # cached for every request since
    assert all(r.status != 401 for r in fake.requests)
    # The token is revoked and a new one issued: the plugin runs again after the 401.
    fake.rotate_token("rotated")
    source.write_text("rotated")
    fake.inject_half_line()
    fake.upsert(service("shop", "exec", "10.96.0.110"))
    want = a_rec(f"exec.shop.{DOMAIN}", "10.96.0.110")
    wait_until(lambda: answer(h, f"exec.shop.{DOMAIN}") == want, timeout=10)
    assert int(count.read_text()) >= 2


def test_data_age_metric_and_programming_histogram(fake: FakeApiServer, served: DnsdHandle) -> None:
    """The metrics read data_age() and programming from the source."""
    from dnsd.observe.metrics import Metrics

    fake.upsert(service("shop", "metric", "10.96.0.120"))
    wait_until(lambda: served.app.source.programming.count >= 1)
    text = json.dumps([m.name for m in Metrics(served.app).registry.collect()])
    assert "dnsd_data_age_seconds" in text and "dnsd_programming_latency_seconds" in text
    families = {m.name: m for m in Metrics(served.app).registry.collect()}
    ages = [s for s in families["dnsd_data_age_seconds"].samples if s.labels.get("source") == "kubernetes"]
    assert ages and ages[0].value == 0.0


def test_https_with_the_kubeconfig_ca(tmp_path: Path, dnsd_factory: Any) -> None:
    """Over HTTPS the server certificate is checked against the kubeconfig's certificate-authority."""
    tls = make_tls(tmp_path / "tls")
    with FakeApiServer(objects=[dict(o) for o in BASE], ssl_context=tls.server_context()) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", ca_file=tls.ca)
        h = dnsd_factory(config=config(kubeconfig))
        assert fake.url.startswith("https://")
        assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")


def test_big_list_pages_are_read_whole(fake: FakeApiServer, tmp_path: Path, dnsd_factory: Any) -> None:
    """Pages of 500 objects (hundreds of KiB, more than one read of the stream) in several pages: all served."""
    fake.upsert(namespace("bulk"))
    for i in range(1200):
        fake.upsert(service("bulk", f"s{i}", f"10.97.{i // 250}.{i % 250 + 1}"))
    h = dnsd_factory(config=config(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    assert len([r for r in fake.requests_for("services", watch=False) if r.query.get("continue")]) == 2
    for i in (0, 499, 500, 1199):
        name = f"s{i}.bulk.{DOMAIN}"
        assert answer(h, name) == a_rec(name, f"10.97.{i // 250}.{i % 250 + 1}")


def test_in_cluster(tmp_path: Path, dnsd_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """in_cluster: true finds the API as a pod does: KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA."""
    tls = make_tls(tmp_path / "tls")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(tls.ca.read_bytes())
    token = account / "token"
    with FakeApiServer(objects=[dict(o) for o in BASE], token="sa-1", token_file=token,
                       ssl_context=tls.server_context()) as fake:  # fmt: skip
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fake.port))
        monkeypatch.setattr(kubecreds, "SERVICE_ACCOUNT", account)
        cfg = config(tmp_path / "unused")
        cfg["cluster"]["source"] = {"kubernetes": {"in_cluster": True}}
        h = dnsd_factory(config=cfg)
        assert h.app.source.creds.target.origin == "in-cluster"
        assert answer(h, f"api.shop.{DOMAIN}") == a_rec(f"api.shop.{DOMAIN}", "10.96.0.10")

"""Real-world manifests through a running server (dnsd issue 5, section 1): third-party files served as they are,
and the per-object rule seen over DNS.

Expected answers are zone-file text from the Kubernetes DNS spec 1.1.0 as CoreDNS answers it: ExternalName CNAME
(2.5), headless A per ready endpoint and SRV per port with weight max(1, floor(100/N)) (2.4.1, 2.4.2), dashed-IP
endpoint names (CoreDNS),
TTL 5. Changes are awaited with wait_until, never with sleep.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, DnsdHandle, query, rcode_text, rr_lines, wait_until, zone_lines

THIRDPARTY = REPO / "tests" / "data" / "manifests" / "thirdparty"
CHANGE_TIMEOUT = 5.0
Result = tuple[str, frozenset[str]]


def answer(h: DnsdHandle, name: str, rtype: str) -> Result:
    msg = query(h, name, rtype)
    return rcode_text(msg), frozenset(rr_lines(msg.answer))


def ok(text: str) -> Result:
    return "NOERROR", frozenset(zone_lines(text))


NX: Result = ("NXDOMAIN", frozenset())
NODATA: Result = ("NOERROR", frozenset())


def wait_answer(h: DnsdHandle, name: str, rtype: str, want: Result) -> None:
    last: list[Result] = []

    def seen() -> bool:
        last[:] = [answer(h, name, rtype)]
        return last[0] == want

    try:
        wait_until(seen, CHANGE_TIMEOUT)
    except AssertionError:
        raise AssertionError(f"{name} {rtype}: expected {want}, still answering {last}") from None


def yaml_text(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def ns_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def svc_doc(name: str, cluster_ip: str, ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def reports(logs: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in list(logs.records) if r.levelno >= logging.WARNING and str(path) in r.getMessage()]


# ---------------------------------------------------------------- third-party files, served as they are

Z = "svc.cluster.local."
THIRDPARTY_ANSWERS = [
    # The core ExternalName Service Knative created; the serving.knative.dev/v1 Service of the same name after it
    # in the same file is not a core Service and does not replace it.
    ("horse-jaskier.default." + Z, "CNAME",
     ok(f"horse-jaskier.default.{Z} 5 IN CNAME kourier-internal.kourier-system.{Z}")),
    # v1 Endpoints, two subsets with their own ports (the Kubernetes API doc's example): SRV per subset's port.
    ("_a._tcp.mysvc.default." + Z, "SRV", ok(f"""
        _a._tcp.mysvc.default.{Z} 5 IN SRV 0 33 8675 10-10-1-1.mysvc.default.{Z}
        _a._tcp.mysvc.default.{Z} 5 IN SRV 0 33 8675 10-10-2-2.mysvc.default.{Z}
        _a._tcp.mysvc.default.{Z} 5 IN SRV 0 33 93 10-10-3-3.mysvc.default.{Z}""")),
    ("_b._tcp.mysvc.default." + Z, "SRV", ok(f"""
        _b._tcp.mysvc.default.{Z} 5 IN SRV 0 33 309 10-10-1-1.mysvc.default.{Z}
        _b._tcp.mysvc.default.{Z} 5 IN SRV 0 33 309 10-10-2-2.mysvc.default.{Z}
        _b._tcp.mysvc.default.{Z} 5 IN SRV 0 33 76 10-10-3-3.mysvc.default.{Z}""")),
    ("mysvc.default." + Z, "A", ok(f"""
        mysvc.default.{Z} 5 IN A 10.10.1.1
        mysvc.default.{Z} 5 IN A 10.10.2.2
        mysvc.default.{Z} 5 IN A 10.10.3.3""")),
    # Helm-rendered LoadBalancer Service before an IP is allocated: the name exists, without addresses.
    ("ingress-nginx-controller.ingress-nginx." + Z, "A", NODATA),
    ("ingress-nginx-controller-admission.ingress-nginx." + Z, "A", NODATA),
    # Multi-cluster imports (ServiceImport, v1beta1 slice) are not ours.
    ("my-svc.my-ns." + Z, "A", NX),
]  # fmt: skip


@pytest.fixture
def thirdparty_server(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> DnsdHandle:
    for p in THIRDPARTY.iterdir():
        shutil.copy(p, root / p.name)
    (root / "00-namespaces.yaml").write_text(yaml_text(ns_doc("default"), ns_doc("monitoring"), ns_doc("my-ns")))
    return dnsd_factory(root)


@pytest.mark.parametrize(("qname", "qtype", "want"), THIRDPARTY_ANSWERS,
                         ids=[f"{q.split('.')[0]}-{t}" for q, t, _ in THIRDPARTY_ANSWERS])  # fmt: skip
def test_thirdparty_directory(
    thirdparty_server: DnsdHandle, logs: pytest.LogCaptureFixture, qname: str, qtype: str, want: Result
) -> None:
    assert answer(thirdparty_server, qname, qtype) == want
    # Nothing in those files is an error or a warning (they were read while the server started).
    records = logs.get_records("setup") + logs.records
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


# ---------------------------------------------------------------- per object, through DNS

WEB = "web.default." + Z
WEB2 = "web2.default." + Z


def test_invalid_service_next_to_a_valid_one(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A file with one invalid and one valid Service serves the valid one from the start; the invalid one is
    reported once with its path and line."""
    path = root / "svc.yaml"
    text = yaml_text(ns_doc("default"), svc_doc("web", "10.96.0.300"), svc_doc("web2", "10.96.0.40"))
    path.write_text(text)
    h = dnsd_factory(root)
    assert answer(h, WEB2, "A") == ok(f"{WEB2} 5 IN A 10.96.0.40")
    assert answer(h, WEB, "A") == NX
    wait_until(lambda: reports(logs, path), CHANGE_TIMEOUT)
    (report,) = reports(logs, path)
    doc_line = text.splitlines().index("---") + 2  # the report names the first line of web's document
    assert re.match(rf"{re.escape(str(path))}:{doc_line}: .*10\.96\.0\.300.*not served", report), report


def test_bad_object_in_a_changed_file_keeps_its_last_good_version(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    (root / "ns.yaml").write_text(yaml_text(ns_doc("default")))
    path = root / "svc.yaml"
    path.write_text(yaml_text(svc_doc("web", "10.96.0.20"), svc_doc("web2", "10.96.0.40")))
    h = dnsd_factory(root)
    assert answer(h, WEB, "A") == ok(f"{WEB} 5 IN A 10.96.0.20")

    # web becomes invalid, web2 changes: web2's change is served, web keeps its last good version.
    path.write_text(yaml_text(svc_doc("web", "not-an-ip"), svc_doc("web2", "10.96.0.41")))
    wait_answer(h, WEB2, "A", ok(f"{WEB2} 5 IN A 10.96.0.41"))
    assert answer(h, WEB, "A") == ok(f"{WEB} 5 IN A 10.96.0.20")
    wait_until(lambda: reports(logs, path), CHANGE_TIMEOUT)
    (report,) = reports(logs, path)
    assert "not-an-ip" in report and "last good Service default/web keeps serving" in report, report

    # Still invalid, and web2 changes again: the last good web is kept across parses.
    path.write_text(yaml_text(svc_doc("web", "still-not-an-ip"), svc_doc("web2", "10.96.0.42")))
    wait_answer(h, WEB2, "A", ok(f"{WEB2} 5 IN A 10.96.0.42"))
    assert answer(h, WEB, "A") == ok(f"{WEB} 5 IN A 10.96.0.20")

    # Fixed: the new version is served.
    path.write_text(yaml_text(svc_doc("web", "10.96.0.22"), svc_doc("web2", "10.96.0.42")))
    wait_answer(h, WEB, "A", ok(f"{WEB} 5 IN A 10.96.0.22"))


def test_bad_hostname_endpoint_keeps_its_dashed_name(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    """An endpoint hostname that is not a DNS label is dropped with a warning; the endpoint is still served."""
    path = root / "hl.yaml"
    slice_doc = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "hl-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "hl"}},
        "endpoints": [{"addresses": ["10.244.0.5"], "hostname": "web.0"},
                      {"addresses": ["10.244.0.6"], "hostname": "h" * 80}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }  # fmt: skip
    path.write_text(yaml_text(ns_doc("default"), svc_doc("hl", "None"), slice_doc))
    h = dnsd_factory(root)
    hl = "hl.default." + Z
    assert answer(h, "_http._tcp." + hl, "SRV") == ok(f"""
        _http._tcp.{hl} 5 IN SRV 0 50 80 10-244-0-5.{hl}
        _http._tcp.{hl} 5 IN SRV 0 50 80 10-244-0-6.{hl}""")
    assert answer(h, "10-244-0-5." + hl, "A") == ok(f"10-244-0-5.{hl} 5 IN A 10.244.0.5")
    assert answer(h, "0." + hl, "A") == NX
    assert len([r for r in reports(logs, path) if "hostname" in r]) == 2

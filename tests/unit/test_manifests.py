"""Manifest reading, without a server: one object (dnsd.store.model.object_from), one file (parse_file), one directory
(manifest_files). The integration tests in tests/integration/test_store.py cover the same rules through DNS.

Expected objects are written from the Kubernetes API types and how CoreDNS reads them: `ready: null` counts as
ready, a slice without ports gets the sentinel port -1, `clusterIP: None` is headless, every entry of
`spec.clusterIPs` is used, a trailing dot in `externalName` is accepted, slices belong to their Service through
the `kubernetes.io/service-name` label.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dnsd.errors import ManifestError
from dnsd.sources.files import manifest_files
from dnsd.sources.manifests import parse_file
from dnsd.store.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Namespace,
    Pod,
    Service,
    ServicePort,
    object_from,
)

# ---------------------------------------------------------------- one object


def svc(spec: dict[str, Any], name: str = "web", ns: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def eps_slice(endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None,
              family: str = "IPv4", service: str | None = "hl") -> dict[str, Any]:  # fmt: skip
    labels = {"kubernetes.io/service-name": service} if service else {}
    doc: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "hl-abc", "namespace": "default", "labels": labels},
        "addressType": family,
        "endpoints": endpoints,
    }
    if ports is not None:
        doc["ports"] = ports
    return doc


HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}]
HTTP_PORT = (EndpointPort("http", 80, "tcp"),)


@dataclass(frozen=True)
class ObjCase:
    id: str
    doc: dict[str, Any]
    want: object  # the converted object, or None for a kind DNS does not use


OBJ_CASES = [
    ObjCase("namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, Namespace("shop")),
    ObjCase(
        "service-clusterip",
        svc({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
        Service("default", "web", "ClusterIP", ("10.96.0.20",), False, (ServicePort("http", 80, "tcp"),), "", False),
    ),
    ObjCase(
        "service-namespace-defaults-to-default",
        svc({"clusterIP": "10.96.0.20"}, ns=None),
        Service("default", "web", "ClusterIP", ("10.96.0.20",), False, (), "", False),
    ),
    ObjCase(
        "service-dual-stack-uses-every-clusterip",
        svc({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00:10:96::30"], "type": "NodePort",
             "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 9153}]}),
        Service("default", "web", "NodePort", ("10.96.0.30", "fd00:10:96::30"), False,
                (ServicePort("dns", 53, "udp"), ServicePort("", 9153, "tcp")), "", False),
    ),
    ObjCase(
        "service-without-clusterip-has-no-addresses",  # an apply-style manifest: no IP allocated yet
        svc({"ports": [{"name": "http", "port": 80}]}),
        Service("default", "web", "ClusterIP", (), False, (ServicePort("http", 80, "tcp"),), "", False),
    ),
    ObjCase(
        "service-empty-clusterip-has-no-addresses",
        svc({"clusterIP": ""}),
        Service("default", "web", "ClusterIP", (), False, (), "", False),
    ),
    ObjCase(
        "service-headless",
        svc({"clusterIP": "None", "publishNotReadyAddresses": True}),
        Service("default", "web", "ClusterIP", (), True, (), "", True),
    ),
    ObjCase(
        "service-externalname-trailing-dot",
        svc({"type": "ExternalName", "externalName": "my.database.example.com."}),
        Service("default", "web", "ExternalName", (), False, (), "my.database.example.com", False),
    ),
    ObjCase(
        "slice-ready-null-true-false",
        eps_slice(
            [
                {"addresses": ["10.244.0.1"]},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": None}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": True, "serving": False}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": False, "serving": True}},
            ],
            HTTP,
        ),
        EndpointSlice("default", "hl-abc", "hl", "IPv4", (
            Endpoint(("10.244.0.1",), True, "", "", ""),
            Endpoint(("10.244.0.2",), True, "", "", ""),
            Endpoint(("10.244.0.3",), True, "", "", ""),
            Endpoint(("10.244.0.4",), False, "", "", ""),
        ), HTTP_PORT),
    ),
    ObjCase(
        "slice-hostname-pod-node",
        eps_slice([{"addresses": ["10.244.0.5"], "hostname": "web-0", "nodeName": "node-a",
                    "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}}], HTTP),
        EndpointSlice("default", "hl-abc", "hl", "IPv4", (Endpoint(("10.244.0.5",), True, "web-0", "web-0", "node-a"),),
                      HTTP_PORT),
    ),
    ObjCase(
        "slice-without-ports-gets-sentinel",
        eps_slice([{"addresses": ["10.244.0.6"]}]),
        EndpointSlice("default", "hl-abc", "hl", "IPv4", (Endpoint(("10.244.0.6",), True, "", "", ""),),
                      (EndpointPort("", -1, "tcp"),)),
    ),
    ObjCase(
        "slice-ipv6-address-verbatim",
        eps_slice([{"addresses": ["2001:db8:0:0::7"]}], HTTP, family="IPv6"),
        EndpointSlice("default", "hl-abc", "hl", "IPv6", (Endpoint(("2001:db8:0:0::7",), True, "", "", ""),),
                      HTTP_PORT),
    ),
    ObjCase("slice-without-service-label-ignored", eps_slice([{"addresses": ["10.244.0.1"]}], HTTP, service=None),
            None),
    ObjCase("configmap-ignored", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, None),
    ObjCase("deployment-ignored", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, None),
]  # fmt: skip


@pytest.mark.parametrize("case", OBJ_CASES, ids=[c.id for c in OBJ_CASES])
def test_object_from(case: ObjCase) -> None:
    assert object_from(case.doc) == case.want


def test_v1_endpoints_ready_and_not_ready() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "legacy", "namespace": "data"},
        "subsets": [
            {
                "addresses": [{"ip": "10.244.3.5", "hostname": "db-0"}, {"ip": "10.244.3.6"}],
                "notReadyAddresses": [{"ip": "10.244.3.7"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }
        ],
    }
    obj = object_from(doc)
    assert isinstance(obj, EndpointSlice)
    assert (obj.namespace, obj.service) == ("data", "legacy")
    got = sorted((ep.addresses, ep.ready, ep.hostname) for ep in obj.endpoints)
    assert got == [(("10.244.3.5",), True, "db-0"), (("10.244.3.6",), True, ""), (("10.244.3.7",), False, "")]
    assert [(p.name, p.port, p.protocol) for p in obj.ports] == [("pg", 5432, "tcp")]


def test_pod_ips() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default"},
        "status": {"phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}, {"ip": "fd00::9"}]},
    }
    obj = object_from(doc)
    assert isinstance(obj, Pod)
    assert (obj.namespace, obj.name, obj.ips[0], obj.phase) == ("default", "web-0", "10.244.0.9", "Running")
    assert set(obj.ips) == {"10.244.0.9", "fd00::9"}


@dataclass(frozen=True)
class BadObj:
    id: str
    doc: dict[str, Any]
    reason: str  # a regex the error message must match


BAD_OBJ_CASES = [
    BadObj("service-missing-name", {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default"},
                                    "spec": {"clusterIP": "10.96.0.1"}}, r"name"),
    BadObj("service-clusterip-not-an-ip", svc({"clusterIP": "not-an-ip"}), r"not-an-ip"),
    BadObj("service-clusterips-bad-second", svc({"clusterIPs": ["10.96.0.1", "10.96.0.256"]}), r"10\.96\.0\.256"),
    BadObj("service-port-too-big", svc({"clusterIP": "10.96.0.1", "ports": [{"name": "x", "port": 70000}]}), r"70000"),
    BadObj("service-port-zero", svc({"clusterIP": "10.96.0.1", "ports": [{"name": "x", "port": 0}]}), r"port"),
    BadObj("service-protocol", svc({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "protocol": "HTTP"}]}), r"HTTP"),
    BadObj("service-type", svc({"clusterIP": "10.96.0.1", "type": "Balanced"}), r"Balanced"),
    BadObj("service-bad-name", svc({"clusterIP": "10.96.0.1"}, name="Web_1"), r"Web_1"),
    BadObj("service-bad-namespace", svc({"clusterIP": "10.96.0.1"}, ns="Not A Namespace"), r"Not A Namespace"),
    BadObj("service-metadata-not-mapping", {"apiVersion": "v1", "kind": "Service", "metadata": "web"}, r"metadata"),
    BadObj("namespace-bad-name", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Shop!"}}, r"Shop!"),
    BadObj("slice-bad-address", eps_slice([{"addresses": ["10.244.0.300"]}], HTTP), r"10\.244\.0\.300"),
    BadObj("slice-ipv6-in-ipv4-slice", eps_slice([{"addresses": ["fd00::1"]}], HTTP), r"fd00::1"),
    BadObj("slice-address-type", eps_slice([{"addresses": ["10.244.0.1"]}], HTTP, family="IPv5"), r"IPv5"),
    BadObj("slice-bad-port", eps_slice([{"addresses": ["10.244.0.1"]}], [{"name": "x", "port": 99999}]), r"99999"),
    BadObj("slice-endpoints-not-list", {**eps_slice([], HTTP), "endpoints": {"addresses": ["10.244.0.1"]}},
           r"endpoints"),
    BadObj("endpoints-bad-ip", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "x"},
                                "subsets": [{"addresses": [{"ip": "nope"}]}]}, r"nope"),
    BadObj("pod-bad-ip", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "status": {"podIP": "10.0.0.999"}}, r"10\.0\.0\.999"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_OBJ_CASES, ids=[c.id for c in BAD_OBJ_CASES])
def test_object_from_rejects(case: BadObj) -> None:
    with pytest.raises(ManifestError) as info:
        object_from(case.doc)
    assert re.search(case.reason, str(info.value)), str(info.value)


# ---------------------------------------------------------------- one file


Key = tuple[str, str, str, int]  # (type name, namespace, name, line)


def keys(path: Path) -> list[Key]:
    parsed = parse_file(path)
    assert parsed.objects is not None, parsed.error
    out: list[Key] = []
    for obj, line in parsed.objects:
        ns = getattr(obj, "namespace", "")
        out.append((type(obj).__name__, ns, obj.name, line))
    return out


@dataclass(frozen=True)
class FileCase:
    id: str
    filename: str
    text: str
    want: list[Key]


FILE_CASES = [
    FileCase(
        "multi-document-lines",
        "a.yaml",
        "# comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.1}\n---\n",
        [("Namespace", "", "shop", 3), ("Service", "shop", "web", 8)],
    ),
    FileCase(
        "kind-list-item-lines",
        "list.yml",
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: default}\n  spec: {clusterIP: 10.96.0.1}\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: default}\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: default}\n"
        "  spec: {clusterIP: 10.96.0.2}\n",
        [("Service", "default", "a", 4), ("Service", "default", "b", 11)],
    ),
    FileCase(
        "typed-list-items-without-kind",
        "services.json",
        '{"kind": "ServiceList", "apiVersion": "v1", "items": [\n'
        '  {"metadata": {"name": "a", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.1"}},\n'
        '  {"metadata": {"name": "b", "namespace": "default"}, "spec": {"clusterIP": "None"}}\n]}\n',
        [("Service", "default", "a", 2), ("Service", "default", "b", 3)],
    ),
    FileCase(
        "bom-and-crlf",
        "win.yaml",
        "\ufeffapiVersion: v1\r\nkind: Service\r\nmetadata: {name: web, namespace: default}\r\n"
        "spec: {clusterIP: 10.96.0.1}\r\n",
        [("Service", "default", "web", 1)],
    ),
    FileCase("empty-file", "empty.yaml", "", []),
    FileCase("only-comments", "c.yaml", "# nothing here\n---\n# still nothing\n", []),
    FileCase("other-kinds-only", "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n", []),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_parse_file(tmp_path: Path, case: FileCase) -> None:
    p = tmp_path / case.filename
    p.write_text(case.text)
    assert keys(p) == case.want


@dataclass(frozen=True)
class BadFile:
    id: str
    filename: str
    text: str
    line: int
    reason: str  # regex, matched case-insensitively against the message


BAD_FILES = [
    BadFile("unterminated-quote", "a.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: \"10.96.", 5, r"yaml|stream"),
    BadFile("tab-indentation", "a.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n\tname: web\n", 4, r"yaml|tab"),
    BadFile("json-missing-comma", "a.json",
            '{\n  "apiVersion": "v1",\n  "kind": "Service"\n  "metadata": {"name": "web"}\n}\n', 4,
            r"json|delimiter|expected"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES, ids=[c.id for c in BAD_FILES])
def test_parse_file_reports_path_line_reason(tmp_path: Path, case: BadFile) -> None:
    p = tmp_path / case.filename
    p.write_text(case.text)
    parsed = parse_file(p)
    assert parsed.objects is None
    assert parsed.error.startswith(f"{p}:{case.line}:"), parsed.error
    assert re.search(case.reason, parsed.error[len(str(p)) :], re.I), parsed.error


@dataclass(frozen=True)
class BadObjectInFile:
    id: str
    text: str
    good: list[Key]  # the file's valid objects, still read
    line: int  # the line the invalid object's report names
    key: tuple[str, str, str] | None  # its identity, when readable
    reason: str  # regex


BAD_OBJECTS_IN_FILES = [
    BadObjectInFile("invalid-object-second-document",
                    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"
                    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: not-an-ip}\n",
                    [("Namespace", "", "shop", 1)], 5, ("Service", "default", "web"), r"not-an-ip"),
    BadObjectInFile("scalar-document", "just a string\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
                    [("Namespace", "", "a", 3)], 1, None, r"mapping"),
    BadObjectInFile("items-not-a-list", "apiVersion: v1\nkind: List\nitems: {a: b}\n", [], 1, None, r"items"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_OBJECTS_IN_FILES, ids=[c.id for c in BAD_OBJECTS_IN_FILES])
def test_bad_object_is_its_own_error(tmp_path: Path, case: BadObjectInFile) -> None:
    """Per object, not per file: the invalid object is reported with path, line and reason; the rest is read."""
    p = tmp_path / "a.yaml"
    p.write_text(case.text)
    parsed = parse_file(p)
    assert parsed.objects is not None, parsed.error
    assert keys(p) == case.good
    assert [(e.key, e.line) for e in parsed.errors] == [(case.key, case.line)]
    message = parsed.errors[0].message
    assert message.startswith(f"{p}:{case.line}:") and re.search(case.reason, message), message


# ---------------------------------------------------------------- one directory


def test_manifest_files_selection(tmp_path: Path) -> None:
    root = tmp_path / "m"
    wanted = ["a.yaml", "b.yml", "c.json", "sub/d.yaml", "sub/deeper/e.yml"]
    skipped = [".hidden.yaml", ".dir/f.yaml", "sub/.g.yaml", "notes.txt", "h.yaml.bak", "i.yaml~", "README.md"]
    for rel in wanted + skipped:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}\n")
    assert {str(p.relative_to(root)) for p in manifest_files(root)} == set(wanted)


def test_manifest_files_configmap_layout(tmp_path: Path) -> None:
    """A ConfigMap volume: files are reached through the top-level symlinks; ..data and ..<timestamp> are skipped."""
    root = tmp_path / "cm"
    stamp = root / "..2025_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "svc.yaml").write_text("{}\n")
    (stamp / "ns.yaml").write_text("{}\n")
    os.symlink(stamp.name, root / "..data")
    os.symlink("..data/svc.yaml", root / "svc.yaml")
    os.symlink("..data/ns.yaml", root / "ns.yaml")
    assert sorted(str(p.relative_to(root)) for p in manifest_files(root)) == ["ns.yaml", "svc.yaml"]


def test_manifest_files_missing_directory(tmp_path: Path) -> None:
    assert list(manifest_files(tmp_path / "absent")) == []

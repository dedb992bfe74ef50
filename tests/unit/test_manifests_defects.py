"""Real-world manifest defects (dnsd issue 5, section 1), without a server: each table is a regression test that
failed on the code before the fix. The same rules through DNS: tests/integration/test_manifests_realworld.py.

Rules tested (dnsd/sources/manifests.py and dnsd/store/model.py docstrings): `=` is a string; objects that are not
ours are skipped (other kinds, other API groups and versions, slices without the service-name label); invalid
objects are their own error and keep their last good version; v1 Endpoints keep per-subset ports; endpoint
hostnames that are not DNS labels are dropped with a warning; names on the wire obey RFC 1035 2.3.4 and RFC 1123;
any exception a file causes is that file's error; UTF-8/16/32 are decoded (YAML 1.2 section 5.2); limits.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dnsd.errors import ManifestError
from dnsd.sources import manifests
from dnsd.sources.manifests import MAX_FILE_BYTES, Parsed, parse_file
from dnsd.store import model
from dnsd.store.model import (
    EndpointSlice,
    Service,
    convert,
    describe,
    object_from,
    object_key,
)
from dnsd.store.store import Store

Key = tuple[str, str, str]


def svc_doc(name: str = "web", ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec or {"clusterIP": "10.96.0.20"}}  # fmt: skip


def slice_doc(endpoints: list[dict[str, Any]], *, ports: list[dict[str, Any]] | None = None,
              api: str = "discovery.k8s.io/v1", service: str | None = "hl") -> dict[str, Any]:  # fmt: skip
    labels = {"kubernetes.io/service-name": service} if service is not None else {"app": "hl"}
    return {"apiVersion": api, "kind": "EndpointSlice", "addressType": "IPv4", "endpoints": endpoints,
            "metadata": {"name": "hl-abc", "namespace": "default", "labels": labels},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}] if ports is None else ports}  # fmt: skip


def v1_endpoints(subsets: list[dict[str, Any]], name: str = "legacy") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "default"},
            "subsets": subsets}  # fmt: skip


def write(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def keys_of(parsed: Parsed) -> list[Key]:
    assert parsed.objects is not None, parsed.error
    return [object_key(obj) for obj, _ in parsed.objects]


WEB: Key = ("Service", "default", "web")


# ---------------------------------------------------------------- 1. `=` scalars

EQUALS_CASES = {
    "crd-enum": "  enum:\n  - '!='\n  - =\n  - =~\n",
    "env-value": "  env:\n  - name: OP\n    value: =\n",
    "mapping-value": "  op: =\n",
}


@pytest.mark.parametrize("body", EQUALS_CASES.values(), ids=EQUALS_CASES.keys())
def test_plain_equals_is_a_string(tmp_path: Path, body: str) -> None:
    """Go's YAML writer leaves `=` unquoted; YAML 1.1's `value` type has no constructor in PyYAML."""
    text = yaml.safe_dump(svc_doc()) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n" + body
    assert keys_of(parse_file(write(tmp_path, text))) == [WEB]
    # And it is read as the string "=", by the loader parse_file uses.
    assert yaml.load("k:\n" + body, Loader=manifests._Loader)["k"] in ({"enum": ["!=", "=", "=~"]},
        {"env": [{"name": "OP", "value": "="}]}, {"op": "="})  # fmt: skip


def test_unknown_tags_and_impossible_dates_do_not_cost_the_file(tmp_path: Path) -> None:
    text = yaml.safe_dump(svc_doc()) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n" \
        "data:\n  a: !custom {x: 1}\n  b: !other [1, 2]\n  c: !scalar text\n  d: 2024-13-45\n"  # fmt: skip
    parsed = parse_file(write(tmp_path, text))
    assert keys_of(parsed) == [WEB] and parsed.errors == ()


# ---------------------------------------------------------------- 2, 3. objects that are not ours

NOT_OURS = {
    "slice-without-service-label": slice_doc([{"addresses": ["10.244.0.1"]}], service=None),
    "slice-v1beta1": slice_doc([{"addresses": ["10.244.0.1"]}], api="discovery.k8s.io/v1beta1"),
    "knative-service": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
    "service-v2": {**svc_doc(), "apiVersion": "v2"},
    "endpoints-other-group": {**v1_endpoints([]), "apiVersion": "example.com/v1"},
    "crd": {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"}, "spec": {"group": "example.com"}},
    "service-import": {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                       "metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "ClusterSetIP"}},
    "kind-not-a-string": {"apiVersion": "v1", "kind": ["Service"], "metadata": {"name": "x"}},
    "no-kind": {"apiVersion": "v1", "metadata": {"name": "x"}},
}  # fmt: skip


@pytest.mark.parametrize("doc", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_objects_that_are_not_ours_are_skipped(
    tmp_path: Path, doc: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Never an error, never a lost file: skipped, counted and logged at debug level (CoreDNS never sees them)."""
    caplog.set_level(logging.DEBUG, logger="dnsd.sources.manifests")
    p = write(tmp_path, yaml.safe_dump_all([doc, svc_doc("other")]))
    parsed = parse_file(p)
    assert keys_of(parsed) == [("Service", "default", "other")]
    assert (parsed.errors, parsed.skipped) == ((), 1)
    assert object_from(doc) is None
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith(f"{p}:1: skipped") for m in debug), debug


@pytest.mark.parametrize("order", ["core-first", "knative-first"])
def test_knative_service_never_replaces_the_core_service(tmp_path: Path, order: str) -> None:
    core = svc_doc(type="ExternalName", externalName="kourier-internal.kourier-system.svc.cluster.local")
    docs = [core, NOT_OURS["knative-service"]]
    parsed = parse_file(write(tmp_path, yaml.safe_dump_all(docs if order == "core-first" else docs[::-1])))
    assert parsed.objects is not None and len(parsed.objects) == 1
    obj = parsed.objects[0][0]
    assert isinstance(obj, Service) and obj.external_name == "kourier-internal.kourier-system.svc.cluster.local"


API_CASES = [
    ("missing-apiversion-accepted", {k: v for k, v in svc_doc().items() if k != "apiVersion"}, [WEB]),
    ("typed-list-items-inherit-apiversion",
     {"apiVersion": "v1", "kind": "ServiceList", "items": [{"metadata": {"name": "web"}, "spec": {}}]}, [WEB]),
    ("typed-list-of-another-group",
     {"apiVersion": "serving.knative.dev/v1", "kind": "ServiceList", "items": [{"metadata": {"name": "web"}}]}, []),
    ("v1beta1-slice-list",
     {"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSliceList",
      "items": [{k: v for k, v in slice_doc([]).items() if k not in ("kind", "apiVersion")}]}, []),
    ("generic-list-items-keep-their-own-apiversion",
     {"apiVersion": "v1", "kind": "List", "items": [NOT_OURS["knative-service"], svc_doc("other")]},
     [("Service", "default", "other")]),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "want"), [(d, w) for _, d, w in API_CASES], ids=[i for i, _, _ in API_CASES])
def test_api_group_and_version(tmp_path: Path, doc: dict[str, Any], want: list[Key]) -> None:
    parsed = parse_file(write(tmp_path, json.dumps(doc), "m.json"))
    assert keys_of(parsed) == want and parsed.errors == ()


# ---------------------------------------------------------------- 4. per object, not per file


def doc_line(text: str, n: int) -> int:
    """The 1-based line on which document n (0-based) of a `---`-separated text starts."""
    lines = text.splitlines()
    starts = [0] + [i + 1 for i, line in enumerate(lines) if line == "---"]
    return starts[n] + 1


GOOD2 = yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.40"), svc_doc("web", clusterIP="10.96.0.20")])


@dataclass(frozen=True)
class PerObject:
    id: str
    text: str
    served: dict[Key, str]  # key -> cluster IP served after resolve() against GOOD2's objects ("" = no IP)
    report: str  # regex on the one report
    doc: int  # the document (0-based) the report names by its first line
    key: Key | None = None


PER_OBJECT = [
    PerObject("bad-ip-keeps-last-good",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.41"), svc_doc("web", clusterIP="not-an-ip")]),
              {("Service", "default", "web2"): "10.96.0.41", WEB: "10.96.0.20"},
              r"not-an-ip.*last good Service default/web keeps serving", 1, WEB),
    PerObject("bad-port-keeps-last-good",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.41"),
                                  svc_doc("web", clusterIP="10.96.0.21", ports=[{"port": 70000}])]),
              {("Service", "default", "web2"): "10.96.0.41", WEB: "10.96.0.20"}, r"70000", 1, WEB),
    PerObject("unknown-identity-withdraws-nothing",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.41"),
                                  {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default"}}]),
              {("Service", "default", "web2"): "10.96.0.41", WEB: "10.96.0.20"},
              r"metadata\.name is missing.*no object the file served before is withdrawn", 1),
    PerObject("document-not-a-mapping",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.41")]) + "---\n- a\n- list\n",
              {("Service", "default", "web2"): "10.96.0.41", WEB: "10.96.0.20"}, r"mapping", 1),
    PerObject("bad-explicit-tag-in-one-document",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.41")])
              + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: !!int x}\n",
              {("Service", "default", "web2"): "10.96.0.41", WEB: "10.96.0.20"}, r"int", 1, WEB),
    PerObject("later-valid-version-wins",
              yaml.safe_dump_all([svc_doc("web", clusterIP="bad"), svc_doc("web", clusterIP="10.96.0.22")]),
              {WEB: "10.96.0.22"}, r"later valid Service default/web", 0, WEB),
    PerObject("new-object-invalid-stays-absent",
              yaml.safe_dump_all([svc_doc("web2", clusterIP="10.96.0.40"), svc_doc("web", clusterIP="10.96.0.20"),
                                  svc_doc("new", clusterIP="bad")]),
              {("Service", "default", "web2"): "10.96.0.40", WEB: "10.96.0.20"},
              r"Service default/new is not served", 2, ("Service", "default", "new")),
]  # fmt: skip


@pytest.mark.parametrize("case", PER_OBJECT, ids=[c.id for c in PER_OBJECT])
def test_invalid_object_is_its_own_error(tmp_path: Path, case: PerObject) -> None:
    line = doc_line(case.text, case.doc)
    previous = parse_file(write(tmp_path, GOOD2, "prev.yaml"))
    assert previous.objects is not None and previous.errors == ()
    p = write(tmp_path, case.text)
    parsed = parse_file(p)
    assert parsed.objects is not None, parsed.error  # the file as a whole is read
    assert [(e.key, e.line) for e in parsed.errors] == [(case.key, line)]
    served, reports = parsed.resolve(previous.objects)
    got = {object_key(o): ",".join(o.cluster_ips) for o, _ in served if isinstance(o, Service)}
    assert got == case.served
    assert len(reports) == 1 and reports[0].startswith(f"{p}:{line}: "), reports
    assert re.search(case.report, reports[0]), reports[0]


# ---------------------------------------------------------------- 5. v1 Endpoints subsets


def test_each_subset_keeps_its_ports() -> None:
    """Every address gets the ports of its own subset (before: the first subset's ports for everyone)."""
    doc = v1_endpoints([
        {"addresses": [{"ip": "10.244.1.1"}], "ports": [{"name": "http", "port": 8080}]},
        {"addresses": [{"ip": "10.244.1.2"}], "notReadyAddresses": [{"ip": "10.244.1.3"}],
         "ports": [{"name": "http", "port": 9090}, {"name": "dns", "port": 53, "protocol": "UDP"}]},
    ])  # fmt: skip
    obj = object_from(doc)
    assert isinstance(obj, EndpointSlice) and obj.from_endpoints
    store = Store()
    store.apply([obj], [])
    got = sorted((r.address, tuple((p.name, p.port, p.protocol) for p in r.slice.ports))
                 for r in store.ready_addresses("default", "legacy"))  # fmt: skip
    assert got == [("10.244.1.1", (("http", 8080, "tcp"),)),
                   ("10.244.1.2", (("http", 9090, "tcp"), ("dns", 53, "udp")))]  # fmt: skip


# ---------------------------------------------------------------- 6. endpoint hostnames

BAD_HOSTNAMES = {
    "dot": "web.0",
    "80-characters": "h" * 80,
    "underscore": "web_0",
    "leading-dash": "-web",
    "space": "web 0",
    "number": 123,
    "list": ["web-0"],
}


@pytest.mark.parametrize("kind", ["EndpointSlice", "Endpoints"])
@pytest.mark.parametrize("hostname", BAD_HOSTNAMES.values(), ids=BAD_HOSTNAMES.keys())
def test_bad_hostname_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, hostname: Any
) -> None:
    """Never a label with an escaped dot: the endpoint stays, under its dashed IP name."""
    if kind == "EndpointSlice":
        doc = slice_doc([{"addresses": ["10.244.0.5"], "hostname": hostname}])
    else:
        doc = v1_endpoints([{"addresses": [{"ip": "10.244.0.5", "hostname": hostname}], "ports": [{"port": 80}]}])
    p = write(tmp_path, "# a comment line\n" + yaml.safe_dump(doc))
    parsed = parse_file(p)
    assert parsed.objects is not None and parsed.errors == ()
    ((obj, _),) = parsed.objects
    assert isinstance(obj, EndpointSlice)
    assert [(ep.addresses, ep.hostname) for ep in obj.endpoints] == [(("10.244.0.5",), "")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"{p}:2: ") and "hostname" in warnings[0], warnings


@pytest.mark.parametrize("kind", ["EndpointSlice", "Endpoints"])
def test_good_hostname_is_lower_cased(kind: str) -> None:
    if kind == "EndpointSlice":
        doc = slice_doc([{"addresses": ["10.244.0.5"], "hostname": "Web-0"}])
    else:
        doc = v1_endpoints([{"addresses": [{"ip": "10.244.0.5", "hostname": "Web-0"}]}])
    obj = object_from(doc)
    assert isinstance(obj, EndpointSlice) and [ep.hostname for ep in obj.endpoints] == ["web-0"]


def test_hostname_warnings_are_capped_per_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = manifests.MAX_WARNINGS_PER_FILE + 5
    doc = slice_doc([{"addresses": [f"10.244.0.{i}"], "hostname": f"bad.{i}"} for i in range(1, n + 1)])
    p = write(tmp_path, yaml.safe_dump(doc))
    parsed = parse_file(p)
    assert parsed.objects is not None
    obj = parsed.objects[0][0]
    assert isinstance(obj, EndpointSlice) and len(obj.endpoints) == n
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == manifests.MAX_WARNINGS_PER_FILE + 1
    assert warnings[-1] == f"{p}: 5 more warnings like the above"


def test_pod_name_with_a_dot_never_names_an_endpoint() -> None:
    """targetRef.name (endpoint_pod_names) is a DNS subdomain and may hold dots: only a label can be a name."""
    doc = slice_doc([{"addresses": ["10.244.0.5"], "targetRef": {"kind": "Pod", "name": "web.0"}},
                     {"addresses": ["10.244.0.6"], "targetRef": {"kind": "Pod", "name": "web-1"}}])  # fmt: skip
    obj = object_from(doc)
    assert isinstance(obj, EndpointSlice) and [ep.pod_name for ep in obj.endpoints] == ["", "web-1"]


# ---------------------------------------------------------------- 7. describe


@pytest.mark.parametrize(("key", "text"), [
    (("Namespace", "", "shop"), "Namespace shop"),
    (("Service", "shop", "api"), "Service shop/api"),
    (("Endpoints", "default", "legacy"), "Endpoints default/legacy"),
])  # fmt: skip
def test_describe(key: Key, text: str) -> None:
    assert describe(key) == text


def test_invalid_namespace_is_named_without_a_stray_slash() -> None:
    with pytest.raises(ManifestError) as info:
        object_from({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Bad!"}})
    assert "/" not in str(info.value)


# ---------------------------------------------------------------- 8. names on the wire

LABEL63 = "a" * 63
NAME253 = ".".join([LABEL63, LABEL63, LABEL63, "b" * 61])  # 63*3 + 61 + 3 dots = 253

GOOD_EXTERNAL = [
    ("Example.COM.", "example.com"),
    ("my.database.example.com", "my.database.example.com"),
    (LABEL63 + ".example", LABEL63 + ".example"),
    (NAME253, NAME253),
    (NAME253 + ".", NAME253),
    ("10.0.0.1", "10.0.0.1"),  # IP-like: accepted, ignored at answer time (CoreDNS quirk)
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
]
BAD_EXTERNAL = [
    ("a" * 100 + ".example", r"label of 100 characters"),
    (NAME253 + "b", r"254 characters"),
    ("a..b", r"empty label"),
    (".example.com", r"empty label"),
    ("..", r"missing"),
    ("bad_char.example", r"'bad_char'.*letters, digits"),
    ("exa mple.com", r"letters, digits"),
    ("-lead.example", r"letters, digits"),
    ("trail-.example", r"letters, digits"),
    ("caf\u00e9.example", r"letters, digits"),
    (42, r"missing"),
]


@pytest.mark.parametrize(("value", "want"), GOOD_EXTERNAL, ids=[str(v)[:30] for v, _ in GOOD_EXTERNAL])
def test_external_name_accepted(value: str, want: str) -> None:
    obj = object_from(svc_doc(type="ExternalName", externalName=value))
    assert isinstance(obj, Service) and obj.external_name == want


@pytest.mark.parametrize(("value", "reason"), BAD_EXTERNAL, ids=[str(v)[:30] for v, _ in BAD_EXTERNAL])
def test_external_name_rejected(value: Any, reason: str) -> None:
    with pytest.raises(ManifestError) as info:
        object_from(svc_doc(type="ExternalName", externalName=value))
    assert re.search(reason, str(info.value)), str(info.value)


@pytest.mark.parametrize(("doc", "reason"), [
    (svc_doc(name="a" * 64), r"not a valid DNS name"),
    (svc_doc(ns="n" * 64), r"namespace"),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n" * 64}}, r"not a valid DNS name"),
    (slice_doc([], service="s" * 64), r"service-name"),
    (slice_doc([], service="Not_A_Name"), r"service-name"),
], ids=["service-64", "namespace-field-64", "namespace-64", "slice-service-64", "slice-service-chars"])  # fmt: skip
def test_other_wire_names_rejected(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(ManifestError) as info:
        object_from(doc)
    assert re.search(reason, str(info.value)), str(info.value)


# ---------------------------------------------------------------- 9. every exception is the file's error

DEPTH = 100_000
DEEP = {
    "json-arrays.json": "[" * DEPTH + "]" * DEPTH,
    "json-objects.json": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "yaml-flow.yaml": "[" * DEPTH + "]" * DEPTH,
    "yaml-block.yaml": "- " * DEPTH + "x\n",
    "yaml-in-a-service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: " + "[" * DEPTH,
}


@pytest.mark.parametrize("name", DEEP.keys())
def test_deep_nesting_is_the_files_error(tmp_path: Path, name: str) -> None:
    """100,000 levels: libyaml stops at 1000, json.loads raises RecursionError; neither escapes parse_file."""
    p = write(tmp_path, DEEP[name], name)
    parsed = parse_file(p)
    assert parsed.objects is None
    assert parsed.error.startswith(f"{p}:") and re.search(r"nest|depth", parsed.error), parsed.error


def test_unreadable_path_is_the_files_error(tmp_path: Path) -> None:
    d = tmp_path / "dir.yaml"
    d.mkdir()
    parsed = parse_file(d)
    assert parsed.objects is None and parsed.error == f"{d}: cannot read: Is a directory (EISDIR)", parsed.error


def test_unexpected_library_exception_is_the_files_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a library raises (here: a converter bug) is reported with the path, never raised to the source."""

    def boom(doc: Any, notes: Any = None) -> Any:
        raise LookupError("library bug")

    monkeypatch.setattr("dnsd.sources.manifests.convert", boom)
    p = write(tmp_path, yaml.safe_dump(svc_doc()))
    parsed = parse_file(p)
    assert parsed.objects is None and parsed.error.startswith(f"{p}: ") and "library bug" in parsed.error


def test_unhashable_key_is_that_documents_error(tmp_path: Path) -> None:
    text = yaml.safe_dump(svc_doc("web2")) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n" \
        "data: {[1, 2]: x}\n"  # fmt: skip
    parsed = parse_file(write(tmp_path, text))
    assert keys_of(parsed) == [("Service", "default", "web2")]
    assert [(e.key, e.line) for e in parsed.errors] == [(None, doc_line(text, 1))]


# ---------------------------------------------------------------- 10. encodings

SERVICE_TEXT = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {note: caf\u00e9}\nspec:\n" \
    "  clusterIP: 10.96.0.20\n"  # fmt: skip
ENCODED = {
    "utf-8": SERVICE_TEXT.encode("utf-8"),
    "utf-8-bom": codecs.BOM_UTF8 + SERVICE_TEXT.encode("utf-8"),
    "utf-16-le-bom": codecs.BOM_UTF16_LE + SERVICE_TEXT.encode("utf-16-le"),
    "utf-16-be-bom": codecs.BOM_UTF16_BE + SERVICE_TEXT.encode("utf-16-be"),
    "utf-32-le-bom": codecs.BOM_UTF32_LE + SERVICE_TEXT.encode("utf-32-le"),
    "utf-32-be-bom": codecs.BOM_UTF32_BE + SERVICE_TEXT.encode("utf-32-be"),
    "utf-16-le-no-bom": SERVICE_TEXT.encode("utf-16-le"),
    "utf-16-be-no-bom": SERVICE_TEXT.encode("utf-16-be"),
    "utf-32-le-no-bom": SERVICE_TEXT.encode("utf-32-le"),
    "utf-32-be-no-bom": SERVICE_TEXT.encode("utf-32-be"),
}


@pytest.mark.parametrize("data", ENCODED.values(), ids=ENCODED.keys())
def test_yaml_encodings(tmp_path: Path, data: bytes) -> None:
    """YAML 1.2 section 5.2: UTF-8, UTF-16 and UTF-32, by BOM or by the null bytes of the first character."""
    parsed = parse_file(write(tmp_path, data))
    assert keys_of(parsed) == [WEB] and parsed.errors == ()


BAD_BYTES = [
    ("latin-1", SERVICE_TEXT.encode("latin-1"), 5, r"not valid UTF-8: bytes e9"),
    ("latin-1-json", b'{"kind": "Service",\n "apiVersion": "v1",\n "metadata": {"name": "caf\xe9"}}', 3,
     r"not valid UTF-8: bytes e9"),
    ("cut-utf-8", b"apiVersion: v1\nkind: Service\n" + "\u00e9".encode()[:1], 3, r"not valid UTF-8"),
    ("lone-utf-16-surrogate", codecs.BOM_UTF16_LE + "a: 1\nb: ".encode("utf-16-le") + b"\x00\xd8" + b"x\x00", 2,
     r"not valid UTF-16"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "line", "reason"), [c[1:] for c in BAD_BYTES], ids=[c[0] for c in BAD_BYTES])
def test_undecodable_bytes_name_their_line(tmp_path: Path, data: bytes, line: int, reason: str) -> None:
    p = write(tmp_path, data, "m.json" if data.startswith(b"{") else "m.yaml")
    parsed = parse_file(p)
    assert parsed.objects is None
    assert parsed.error.startswith(f"{p}:{line}: ") and re.search(reason, parsed.error), parsed.error


# ---------------------------------------------------------------- 11. limits


def test_file_over_the_byte_limit_is_refused_before_reading(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    with open(p, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written, and nothing must be read
    parsed = parse_file(p)
    assert parsed.objects is None
    assert parsed.error == f"{p}: {MAX_FILE_BYTES + 1} bytes; files over {MAX_FILE_BYTES} bytes are not read"


def _eps(n: int, addresses: int = 1) -> list[dict[str, Any]]:
    return [{"addresses": [f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}" if a == 0 else f"10.200.{a}.{i % 256}"
                           for a in range(addresses)]} for i in range(n)]  # fmt: skip


def _ports(n: int) -> list[dict[str, Any]]:
    return [{"name": f"p{i}", "port": 1 + i, "protocol": "TCP"} for i in range(n)]


def _v1_addresses(n: int) -> list[dict[str, Any]]:
    return [{"addresses": [{"ip": f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}"} for i in range(n)]}]


@dataclass(frozen=True)
class Limit:
    id: str
    at_limit: dict[str, Any]
    over_limit: dict[str, Any]
    reason: str = field(default=r"at most")


LIMITS = [
    Limit("slice-endpoints-1000", slice_doc(_eps(model.MAX_SLICE_ENDPOINTS)),
          slice_doc(_eps(model.MAX_SLICE_ENDPOINTS + 1)), r"endpoints has 1001 entries; at most 1000"),
    Limit("slice-ports-100", slice_doc(_eps(1), ports=_ports(model.MAX_SLICE_PORTS)),
          slice_doc(_eps(1), ports=_ports(model.MAX_SLICE_PORTS + 1)), r"ports has 101 entries; at most 100"),
    Limit("endpoint-addresses-100", slice_doc(_eps(1, addresses=model.MAX_ENDPOINT_ADDRESSES)),
          slice_doc(_eps(1, addresses=model.MAX_ENDPOINT_ADDRESSES + 1)), r"addresses has 101 entries"),
    Limit("service-ports-1024", svc_doc(clusterIP="10.96.0.1", ports=_ports(model.MAX_SERVICE_PORTS)),
          svc_doc(clusterIP="10.96.0.1", ports=_ports(model.MAX_SERVICE_PORTS + 1)), r"1025 entries; at most 1024"),
    Limit("service-cluster-ips-2", svc_doc(clusterIPs=["10.96.0.1", "fd00::1"]),
          svc_doc(clusterIPs=["10.96.0.1", "fd00::1", "10.96.0.2"]), r"clusterIPs has 3 entries"),
    Limit("v1-subsets-1000", v1_endpoints([{}] * model.MAX_V1_SUBSETS),
          v1_endpoints([{}] * (model.MAX_V1_SUBSETS + 1)), r"subsets has 1001 entries"),
    Limit("v1-addresses-10000", v1_endpoints(_v1_addresses(model.MAX_V1_ADDRESSES)),
          v1_endpoints(_v1_addresses(model.MAX_V1_ADDRESSES + 1)), r"more than 10000 addresses"),
    Limit("v1-subset-ports-1024", v1_endpoints([{"ports": _ports(model.MAX_V1_PORTS)}]),
          v1_endpoints([{"ports": _ports(model.MAX_V1_PORTS + 1)}]), r"1025 entries"),
]  # fmt: skip


@pytest.mark.parametrize("case", LIMITS, ids=[c.id for c in LIMITS])
def test_limits(case: Limit) -> None:
    """At the limit the object is read; one more is that object's error (the Kubernetes API's own maxima where it
    has them: pkg/apis/discovery/validation maxEndpoints=1000, maxPorts=100, maxAddresses=100)."""
    assert not isinstance(convert(case.at_limit), model.Skipped)
    with pytest.raises(ManifestError) as info:
        convert(case.over_limit)
    assert re.search(case.reason, str(info.value)), str(info.value)


def test_limit_error_is_per_object(tmp_path: Path) -> None:
    text = yaml.safe_dump_all([LIMITS[0].over_limit, svc_doc()])
    parsed = parse_file(write(tmp_path, text))
    assert keys_of(parsed) == [WEB]
    assert [e.key for e in parsed.errors] == [("EndpointSlice", "default", "hl-abc")]

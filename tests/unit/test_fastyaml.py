"""The fast path of manifest reading (dnsd/sources/fastyaml.py) against PyYAML's, without a server.

Every case is read both ways, parse_file(path) and parse_file(path, fast=True), and must give the same Parsed:
the same objects with the same lines, the same errors, the same count of skipped objects. Where the fast path is
expected to read the text itself (not hand it back to PyYAML), that is asserted too, so the comparison is never
between PyYAML and PyYAML; where the text holds something YAML 1.1 and 1.2 read differently, the fast path must
hand it back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dnsd.sources import fastyaml, manifests
from dnsd.sources.manifests import parse_file

DATA = Path(__file__).resolve().parent.parent / "data"
# Every manifest of the test suite: third-party ones (ingress-nginx, kube-prometheus, knative, the MCS KEP, the
# API docs) and the fixtures the integration tests serve.
SUFFIXES = (".yaml", ".yml", ".json")
SUITE = sorted(p for d in ("manifests", "cluster", "kube") for p in (DATA / d).rglob("*") if p.suffix in SUFFIXES)


def read_both(path: Path) -> tuple[manifests.Parsed, manifests.Parsed]:
    return parse_file(path), parse_file(path, fast=True)


def took_fast_path(path: Path) -> bool:
    text = manifests._decode(path, manifests._read(path))
    docs = fastyaml.json_documents(text) if path.suffix == ".json" else fastyaml.yaml_documents(text)
    return docs is not None


@pytest.mark.parametrize("path", SUITE, ids=[str(p.relative_to(DATA)) for p in SUITE])
def test_suite_manifests_read_alike(path: Path) -> None:
    slow, fast = read_both(path)
    assert fast == slow


def test_most_suite_manifests_take_the_fast_path() -> None:
    """Not a vacuous comparison: the gate lets ordinary manifests through."""
    fast = [p for p in SUITE if took_fast_path(p)]
    assert len(SUITE) >= 20 and len(fast) >= len(SUITE) * 3 // 4, [str(p) for p in SUITE if p not in fast]


SVC = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  clusterIP: {ip}\n"
SLICE = (
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: default\n"
    "  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- addresses:\n  - {ep}\n"
    "  conditions:\n    ready: {ready}\n  hostname: {host}\nports:\n- name: http\n  port: 80\n  protocol: TCP\n"
)


def svc(name: str = "web", ip: str = "10.96.0.10") -> str:
    return SVC.format(name=name, ip=ip)


def eps(name: str = "web", ep: str = "10.244.0.5", ready: str = "true", host: str = "web-0") -> str:
    return SLICE.format(name=name, ep=ep, ready=ready, host=host)


def as_list(*docs: str, indent: str = "") -> str:
    items = []
    for d in docs:
        lines = d.splitlines()
        items.append(f"{indent}- {lines[0]}\n" + "".join(f"{indent}  {line}\n" for line in lines[1:]))
    return "apiVersion: v1\nkind: List\nitems:\n" + "".join(items) + 'metadata:\n  resourceVersion: ""\n'


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    fast: bool  # whether the fast path reads it itself (True) or hands it to PyYAML (False)
    name: str = "m.yaml"


CASES = [
    # documents and their lines
    Case("multi-document", svc("a") + "---\n" + eps("a") + "---\n" + svc("b", "10.96.0.11"), True),
    Case("comments-blank-lines-empty-documents",
         "# head\n\n---\n# c\n\n" + svc("a") + "---\n---\n# only a comment\n---   # marker comment\n" + svc("b"), True),
    Case("content-on-the-marker-line", "--- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}\n---\n" + svc(),
         True),
    Case("crlf", (svc("a") + "---\n" + svc("b", "10.96.0.11")).replace("\n", "\r\n"), True),
    Case("no-trailing-newline", svc().rstrip("\n"), True),
    Case("three-dashes-in-a-value", svc().replace("namespace: default", "namespace: default\n  annotations:\n"
                                                  "    note: '---'\n    text: |\n      ---x\n      a"), True),
    # kind: List, with kubectl's layout, indented items, flow items, items ending at the next key
    Case("list-kubectl", as_list(svc("a"), eps("a"), svc("b", "10.96.0.11")), True),
    Case("list-indented-items", as_list(svc("a"), svc("b", "10.96.0.11"), indent="  "), True),
    Case("list-item-on-next-line", "apiVersion: v1\nkind: List\nitems:\n-\n  apiVersion: v1\n  kind: Namespace\n"
         "  metadata:\n    name: shop\n- # a comment\n  apiVersion: v1\n  kind: Namespace\n"
         "  metadata: {name: web}\n", True),
    Case("list-flow-items", "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: "
         "{name: shop}}]\n", False),
    Case("typed-list", "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: a, namespace: default}\n"
         "  spec: {clusterIP: 10.96.0.1}\n- metadata: {name: b}\n  spec: {clusterIP: None}\n", True),
    Case("two-lists", as_list(svc("a")) + "---\n" + as_list(svc("b", "10.96.0.11"), svc("c", "10.96.0.12")), True),
    # values both read alike
    Case("equals", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  op: =\n", True),
    Case("ready-false-null", eps(ready="false") + "---\n" + eps("b", ready="null", host="''"), True),
    Case("duplicate-keys-last-wins", svc().replace("  clusterIP: 10.96.0.10\n", "  clusterIP: 10.96.0.10\n"
                                                   "  clusterIP: 10.96.0.99\n"), True),
    Case("ipv6-and-floats", svc(ip="fd00:10:96::a") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
         "data: {a: 0.5, b: 1.10, c: -3, d: 2001:db8::1, e: 1.2.3, f: 10.0.0.1}\n", True),
    Case("quoted-risky-words", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
         "data: {a: 'yes', b: \"no\", c: '0777', d: \"2024-01-01\", e: '1e3', f: 'on'}\n", True),
    Case("block-scalars", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  a: |\n"
         "    line one\n     indented\n  b: >-\n    folded\n    text\n  c: |+\n    keep\n\n", True),
    Case("multi-line-plain-and-quoted", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
         "data:\n  a: plain text\n    continued here\n  b: \"quoted\n    continued \\\"x\\\"\"\n", True),
    Case("unicode", svc().replace("  namespace: default\n",
                                  "  namespace: default\n  annotations: {n: caf\u00e9 \u2603}\n"), True),
    Case("invalid-object-is-pyyamls-report", svc() + "---\n" + svc("b", "not-an-ip"), True),
    Case("not-ours", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n" + svc(), True),
    Case("hostname-warning", eps(host="web.0"), True),
    Case("empty", "", True),
    Case("only-comments", "# nothing\n---\n# still nothing\n", True),
    # what YAML 1.1 (PyYAML) and YAML 1.2 (yaml_rs) read differently: handed to PyYAML
    Case("yaml11-booleans", eps(ready="no"), False),
    Case("yaml11-on-off", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: on, b: Off}\n",
         False),
    Case("yaml11-boolean-key", "on: push\n", False),
    Case("yaml11-octal", svc().replace("spec:\n", "spec:\n  ports:\n  - port: 0120\n"), False),
    Case("yaml12-octal", svc().replace("spec:\n", "spec:\n  ports:\n  - port: 0o120\n"), False),
    Case("sexagesimal", svc(ip="1000:0:0:0:0:0:0:1"), False),
    Case("exponent", svc().replace("spec:\n", "spec:\n  ports:\n  - port: 8e1\n"), False),
    Case("underscore-number", svc().replace("spec:\n", "spec:\n  ports:\n  - port: 8_0\n"), False),
    Case("timestamp", svc().replace("  name: web\n", "  name: web\n  creationTimestamp: 2024-01-01T00:00:00Z\n"),
         False),
    Case("impossible-date", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
         "data: {d: 2024-13-45}\n", False),
    Case("merge-key", "base: &b {clusterIP: 10.96.0.1}\n---\n" + svc().replace("spec:\n  clusterIP: 10.96.0.10\n",
         "spec:\n  <<: {clusterIP: 10.96.0.1}\n"), False),
    Case("anchor-alias", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: &n shop\n  labels: {a: *n}\n", False),
    Case("unknown-tag", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: !custom x}\n",
         False),
    Case("bad-explicit-tag", svc().replace("clusterIP: 10.96.0.10", "clusterIP: !!int x"), False),
    Case("explicit-key", "? apiVersion\n: v1\nkind: Namespace\nmetadata: {name: shop}\n", False),
    Case("directive", "%YAML 1.1\n---\n" + svc(), False),
    Case("document-end-marker", svc() + "...\n---\n" + svc("b", "10.96.0.11"), False),
    Case("tab", svc().replace("  clusterIP", "  clusterIP:\t10.96.0.10\n  x"), False),
    Case("nel-line-break", svc().replace("default", "default\x85"), False),
    Case("surrogate-escape", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
         "data: {a: \"\\ud83d\\ude00\"}\n", False),
    Case("unhashable-key", svc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {[1, 2]: x}\n",
         False),
    Case("deep-block-nesting", "- " * 100_000 + "x\n", False),
    Case("deep-indentation", "".join(" " * i + "a:\n" for i in range(300)) + " " * 300 + "b: 1\n", False),
    # JSON (read by the C scanner, PyYAML's reading as the reference)
    Case("json-list", json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        yaml.safe_load(svc("a")), yaml.safe_load(eps("a")), yaml.safe_load(svc("b", "10.96.0.11"))]}, indent=4),
         True, "m.json"),
    Case("json-typed-list-one-line", json.dumps({"kind": "ServiceList", "apiVersion": "v1", "items": [
        {"metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1"}}]}), True, "m.json"),
    Case("json-object", json.dumps(yaml.safe_load(svc()), indent=2), True, "m.json"),
    Case("json-floats", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1.5}}',
         True, "m.json"),
    Case("json-exponent", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1e5}}',
         False, "m.json"),
    Case("json-nan", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": NaN}}',
         False, "m.json"),
    Case("json-surrogates", '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "x": "\\ud83d"}}',
         False, "m.json"),
    Case("json-two-items-keys", '{"kind": "List", "items": [], "items": [{"kind": "Namespace", '
         '"metadata": {"name": "a"}}]}', False, "m.json"),
    Case("json-missing-comma", '{\n  "apiVersion": "v1",\n  "kind": "Service"\n  "metadata": {"name": "web"}\n}\n',
         False, "m.json"),
    Case("json-deep", "[" * 100_000 + "]" * 100_000, False, "m.json"),
    Case("yaml-in-a-json-file", svc(), False, "m.json"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fast_path_reads_like_pyyaml(tmp_path: Path, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / case.name
    p.write_text(case.text)
    caplog.set_level(logging.DEBUG, logger="dnsd.sources.manifests")
    slow = parse_file(p)
    slow_logs = [r.getMessage() for r in caplog.records]
    caplog.clear()
    fast = parse_file(p, fast=True)
    assert fast == slow
    assert [r.getMessage() for r in caplog.records] == slow_logs  # warnings and skips, once each, same lines
    assert took_fast_path(p) == case.fast


def test_fast_path_lines_of_a_bench_sized_file(tmp_path: Path) -> None:
    """2,000 documents and a 2,000-item List, as bench/gen.py and `kubectl get -o yaml` write them."""
    docs = [svc(f"s{i}", f"10.96.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    docs += [eps(f"s{i}", f"10.244.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    (tmp_path / "multi.yaml").write_text("---\n".join(docs))
    (tmp_path / "list.yaml").write_text(as_list(*docs))
    for name in ("multi.yaml", "list.yaml"):
        slow, fast = read_both(tmp_path / name)
        assert slow.objects is not None and len(slow.objects) == 2000
        assert fast == slow and took_fast_path(tmp_path / name)


def test_a_crash_in_yaml_rs_is_not_a_crash_of_the_caller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pyo3 turns a Rust panic into PanicException, a BaseException: the fast path hands the file to PyYAML."""

    class PanicException(BaseException):
        pass

    class Exploding:
        DuplicateKeyPolicy = fastyaml._rs.DuplicateKeyPolicy

        @staticmethod
        def loads(*args: object, **kwargs: object) -> object:
            raise PanicException("boom")

    monkeypatch.setattr(fastyaml, "_rs", Exploding)
    p = tmp_path / "m.yaml"
    p.write_text(svc())
    assert fastyaml.yaml_documents(svc()) is None
    assert parse_file(p, fast=True) == parse_file(p)


ENCODINGS = ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("codec", ENCODINGS)
def test_encodings_read_alike(tmp_path: Path, codec: str) -> None:
    """YAML 1.2 section 5.2 encodings (by BOM or null bytes): decoded once, then read by either path alike."""
    p = tmp_path / "m.yaml"
    p.write_bytes((svc() + "---\n" + eps()).replace("web-0", "caf\u00e9").encode(codec))
    slow, fast = read_both(p)
    assert slow.objects is not None and len(slow.objects) == 2
    assert fast == slow and took_fast_path(p)

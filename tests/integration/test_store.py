"""The watched manifest store (issue 2 section 4), tested through a real server socket.

Every test writes manifests into a directory, starts dnsd on it, asserts the DNS answers, changes the directory
(in-place write, atomic rename, ConfigMap-style `..data` symlink swap, new file, deleted file, bad file,
duplicate definitions) and asserts the answers after the change. Expected answers are zone-file text written
from the Kubernetes DNS spec 1.1.0: ClusterIP A (2.3.1), headless A per ready endpoint (2.4.1), TTL 5.
Changes are awaited with wait_until (or the store generation), never with sleep.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, DnsdHandle, base_config, query, rcode_text, rr_lines, run_dnsd, wait_until, zone_lines

KINDS = REPO / "tests" / "data" / "store" / "kinds"
CHANGE_TIMEOUT = 5.0

Result = tuple[str, frozenset[str]]  # (rcode, answer section as zone-file lines)
Expect = tuple[str, str, Result]  # (qname, qtype, result)


# ---------------------------------------------------------------- answers


def answer(h: DnsdHandle, name: str, rtype: str = "A", **kw: Any) -> Result:
    msg = query(h, name, rtype, **kw)
    return rcode_text(msg), frozenset(rr_lines(msg.answer))


def ok(text: str) -> Result:
    """NOERROR with exactly these records (zone-file text)."""
    return "NOERROR", frozenset(zone_lines(text))


NX: Result = ("NXDOMAIN", frozenset())
NODATA: Result = ("NOERROR", frozenset())


def a_rr(name: str, *ips: str, ttl: int = 5) -> Result:
    return ok("\n".join(f"{name} {ttl} IN A {ip}" for ip in ips))


def wait_answer(h: DnsdHandle, name: str, rtype: str, want: Result, timeout: float = CHANGE_TIMEOUT) -> None:
    last: list[Result] = []

    def seen() -> bool:
        got = answer(h, name, rtype)
        last[:] = [got]
        return got == want

    try:
        wait_until(seen, timeout)
    except AssertionError:
        raise AssertionError(f"{name} {rtype}: expected {want}, still answering {last[0] if last else None}") from None


def check_now(h: DnsdHandle, expects: list[Expect]) -> None:
    for name, rtype, want in expects:
        got = answer(h, name, rtype)
        assert got == want, f"{name} {rtype}: expected {want}, got {got}"


def generation(h: DnsdHandle) -> int:
    """The store generation, read on the server loop (used only to wait for a change to be applied)."""
    return int(h.call(lambda: h.app.store.generation))


# ---------------------------------------------------------------- manifests


def ns_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def svc_doc(
    name: str, ns: str, cluster_ip: str, ports: tuple[tuple[str, int], ...] = (("http", 80),)
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
        },
    }


def slice_doc(service: str, ns: str, name: str, endpoints: list[tuple[str, str | None]]) -> dict[str, Any]:
    """An IPv4 EndpointSlice; each endpoint is (address, hostname or None), all ready."""
    eps: list[dict[str, Any]] = []
    for addr, hostname in endpoints:
        ep: dict[str, Any] = {"addresses": [addr], "conditions": {"ready": True}}
        if hostname:
            ep["hostname"] = hostname
        eps.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }


def yaml_text(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def populate(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


_counter = iter(range(1_000_000))


def write_atomic(path: Path, text: str, staging: Path | None = None) -> None:
    """Write a temporary file (a dot file next to the target, or in a staging dir) and os.replace it."""
    tmp_dir = staging if staging is not None else path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{path.name}.tmp{next(_counter)}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# A small cluster: two namespaces, a ClusterIP service per namespace, a headless service with a slice.
def base_files() -> dict[str, str]:
    return {
        "ns.yaml": yaml_text(ns_doc("default"), ns_doc("shop")),
        "web.yaml": yaml_text(svc_doc("web", "default", "10.96.0.20")),
        "shop/cart.yaml": yaml_text(svc_doc("cart", "shop", "10.96.1.30")),
        "shop/orders.yaml": yaml_text(
            svc_doc("orders", "shop", "None"),
            slice_doc("orders", "shop", "orders-abc", [("10.244.1.20", "orders-0"), ("10.244.1.21", None)]),
        ),
    }


WEB = "web.default.svc.cluster.local."
CART = "cart.shop.svc.cluster.local."
ORDERS = "orders.shop.svc.cluster.local."
WEB_20 = a_rr(WEB, "10.96.0.20")
WEB_21 = a_rr(WEB, "10.96.0.21")
CART_30 = a_rr(CART, "10.96.1.30")
ORDERS_BOTH = a_rr(ORDERS, "10.244.1.20", "10.244.1.21")


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    d = tmp_path / "staging"
    d.mkdir()
    return d


# ---------------------------------------------------------------- what is read


@pytest.fixture(scope="module")
def kinds_server() -> Iterator[DnsdHandle]:
    """tests/data/store/kinds: every file shape and kind; pods verified so Pod objects matter."""
    handle = run_dnsd(base_config(KINDS, pods="verified"))
    yield handle
    handle.stop()


@dataclass(frozen=True)
class ReadCase:
    id: str
    qname: str
    qtype: str
    want: Result


READ_CASES = [
    ReadCase("multi-doc-yaml", WEB, "A", WEB_20),
    ReadCase(
        "multi-doc-yaml-srv",
        "_http._tcp." + WEB,
        "SRV",
        ok("_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."),
    ),
    ReadCase("namespace-flow-mapping", "data.svc.cluster.local.", "A", NODATA),
    ReadCase("namespace-missing", "nosuch.svc.cluster.local.", "A", NX),
    ReadCase(
        "kind-list-clusterip",
        "checkout.shop.svc.cluster.local.",
        "A",
        a_rr("checkout.shop.svc.cluster.local.", "10.96.1.31"),
    ),
    ReadCase(
        "kind-list-headless",
        "catalog.shop.svc.cluster.local.",
        "A",
        a_rr("catalog.shop.svc.cluster.local.", "10.244.1.10", "10.244.1.11"),
    ),
    ReadCase(
        "kind-list-slice-hostname",
        "catalog-0.catalog.shop.svc.cluster.local.",
        "A",
        a_rr("catalog-0.catalog.shop.svc.cluster.local.", "10.244.1.10"),
    ),
    ReadCase(
        "kind-list-slice-dashed-ip",
        "10-244-1-11.catalog.shop.svc.cluster.local.",
        "A",
        a_rr("10-244-1-11.catalog.shop.svc.cluster.local.", "10.244.1.11"),
    ),
    ReadCase(
        "kubectl-output-service", "api.data.svc.cluster.local.", "A", a_rr("api.data.svc.cluster.local.", "10.96.2.40")
    ),
    ReadCase(
        "kubectl-output-srv",
        "_grpc._tcp.api.data.svc.cluster.local.",
        "SRV",
        ok("_grpc._tcp.api.data.svc.cluster.local. 5 IN SRV 0 100 9090 api.data.svc.cluster.local."),
    ),
    ReadCase(
        "kubectl-output-slice",
        "10-244-2-7.api.data.svc.cluster.local.",
        "A",
        a_rr("10-244-2-7.api.data.svc.cluster.local.", "10.244.2.7"),
    ),
    ReadCase(
        "api-typed-list-json",
        "rawsvc.data.svc.cluster.local.",
        "A",
        a_rr("rawsvc.data.svc.cluster.local.", "10.96.2.41"),
    ),
    ReadCase(
        "api-typed-list-srv",
        "_http._tcp.rawsvc.data.svc.cluster.local.",
        "SRV",
        ok("_http._tcp.rawsvc.data.svc.cluster.local. 5 IN SRV 0 100 8080 rawsvc.data.svc.cluster.local."),
    ),
    ReadCase(
        "api-typed-slice-list",
        "10-244-2-9.rawsvc.data.svc.cluster.local.",
        "A",
        a_rr("10-244-2-9.rawsvc.data.svc.cluster.local.", "10.244.2.9"),
    ),
    ReadCase("json-slice-headless", ORDERS, "A", a_rr(ORDERS, "10.244.1.20")),
    ReadCase("json-slice-hostname", "orders-0." + ORDERS, "A", a_rr("orders-0." + ORDERS, "10.244.1.20")),
    ReadCase("json-slice-not-ready-dropped", "orders-1." + ORDERS, "A", NX),
    ReadCase(
        "json-list-v1-endpoints",
        "legacy.data.svc.cluster.local.",
        "A",
        a_rr("legacy.data.svc.cluster.local.", "10.244.3.5", "10.244.3.6"),
    ),
    ReadCase(
        "pod-verified",
        "10-244-1-50.shop.pod.cluster.local.",
        "A",
        a_rr("10-244-1-50.shop.pod.cluster.local.", "10.244.1.50"),
    ),
    ReadCase("pod-verified-no-such-pod", "10-244-1-51.shop.pod.cluster.local.", "A", NX),
    ReadCase(
        "service-among-other-kinds",
        "mixed.shop.svc.cluster.local.",
        "A",
        a_rr("mixed.shop.svc.cluster.local.", "10.96.1.33"),
    ),
    ReadCase(
        "recursive-subdirectories",
        "deep.default.svc.cluster.local.",
        "A",
        a_rr("deep.default.svc.cluster.local.", "10.96.0.44"),
    ),
    ReadCase("dot-file-skipped", "hidden.default.svc.cluster.local.", "A", NX),
    ReadCase("dot-dir-skipped", "hiddendir.default.svc.cluster.local.", "A", NX),
    ReadCase("txt-file-not-read", "txtsvc.default.svc.cluster.local.", "A", NX),
    ReadCase("bak-file-not-read", "backup.default.svc.cluster.local.", "A", NX),
]


@pytest.mark.parametrize("case", READ_CASES, ids=[c.id for c in READ_CASES])
def test_manifest_shapes_are_read(kinds_server: DnsdHandle, case: ReadCase) -> None:
    wait_answer(kinds_server, WEB, "A", WEB_20)  # the directory has been loaded
    assert answer(kinds_server, case.qname, case.qtype) == case.want


def test_other_kinds_and_shapes_give_no_warnings(
    dnsd_factory: Callable[..., DnsdHandle], logs: pytest.LogCaptureFixture
) -> None:
    """Nothing in tests/data/store/kinds is invalid: no file of it is reported."""
    h = dnsd_factory(KINDS, pods="verified")
    wait_answer(h, "deep.default.svc.cluster.local.", "A", a_rr("deep.default.svc.cluster.local.", "10.96.0.44"))
    names = [p.name for p in KINDS.rglob("*") if p.is_file()]
    noisy = [
        r.getMessage()
        for r in list(logs.records)
        if r.levelno >= logging.WARNING and any(n in r.getMessage() for n in names)
    ]
    assert noisy == []


# ---------------------------------------------------------------- changes


@dataclass(frozen=True)
class ChangeCase:
    id: str
    change: Callable[[Path, Path], None]  # (root, staging)
    before: list[Expect]
    after: list[Expect]  # the changed names first: later entries are checked once those are seen
    extra: dict[str, str] = field(default_factory=dict)  # more initial files
    staged: dict[str, str] = field(default_factory=dict)  # files written to the staging dir first


def _rewrite_web(ip: str, how: str) -> Callable[[Path, Path], None]:
    def change(root: Path, staging: Path) -> None:
        text = yaml_text(svc_doc("web", "default", ip))
        if how == "in-place":
            with open(root / "web.yaml", "w") as f:
                f.write(text)
        elif how == "rename-in-dir":
            write_atomic(root / "web.yaml", text)
        else:
            write_atomic(root / "web.yaml", text, staging)

    return change


def _new_file(rel: str, text: str) -> Callable[[Path, Path], None]:
    def change(root: Path, staging: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    return change


def _unlink(rel: str) -> Callable[[Path, Path], None]:
    return lambda root, staging: (root / rel).unlink()


def _rmtree(rel: str) -> Callable[[Path, Path], None]:
    return lambda root, staging: shutil.rmtree(root / rel)


def _rename(src: str, dst: str) -> Callable[[Path, Path], None]:
    return lambda root, staging: os.replace(root / src, root / dst)


def _replace(rel: str, text: str) -> Callable[[Path, Path], None]:
    return lambda root, staging: write_atomic(root / rel, text)


def _move_cart_into_web_yaml(root: Path) -> None:
    both = yaml_text(svc_doc("web", "default", "10.96.0.20"), svc_doc("cart", "shop", "10.96.1.30"))
    write_atomic(root / "web.yaml", both)
    (root / "shop" / "cart.yaml").unlink()


FRESH = "fresh.default.svc.cluster.local."
BLUE = "blue.default.svc.cluster.local."
LATER = "later.default.svc.cluster.local."
GUEST = "guest.extra.svc.cluster.local."
UNCHANGED: list[Expect] = [(WEB, "A", WEB_20), (CART, "A", CART_30), (ORDERS, "A", ORDERS_BOTH)]

CHANGE_CASES = [
    ChangeCase(
        "in-place-write",
        _rewrite_web("10.96.0.21", "in-place"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", WEB_21), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "atomic-rename-same-dir",
        _rewrite_web("10.96.0.21", "rename-in-dir"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", WEB_21), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "atomic-rename-from-outside",
        _rewrite_web("10.96.0.21", "rename-from-staging"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", WEB_21), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "new-file",
        _new_file("fresh.yaml", yaml_text(svc_doc("fresh", "default", "10.96.0.50"))),
        [(FRESH, "A", NX)],
        [(FRESH, "A", a_rr(FRESH, "10.96.0.50")), *UNCHANGED],
    ),
    ChangeCase(
        "new-file-in-new-subdir",
        _new_file("teams/blue/svc.yml", yaml_text(svc_doc("blue", "default", "10.96.0.51"))),
        [(BLUE, "A", NX)],
        [(BLUE, "A", a_rr(BLUE, "10.96.0.51")), *UNCHANGED],
    ),
    ChangeCase(
        "new-json-file",
        _new_file(
            "fresh.json",
            '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fresh", '
            '"namespace": "default"}, "spec": {"clusterIP": "10.96.0.50"}}',
        ),
        [(FRESH, "A", NX)],
        [(FRESH, "A", a_rr(FRESH, "10.96.0.50")), *UNCHANGED],
    ),
    ChangeCase(
        "delete-file",
        _unlink("shop/cart.yaml"),
        [(CART, "A", CART_30)],
        [(CART, "A", NX), (WEB, "A", WEB_20), (ORDERS, "A", ORDERS_BOTH)],
    ),
    ChangeCase(
        "delete-directory",
        _rmtree("shop"),
        [(CART, "A", CART_30), (ORDERS, "A", ORDERS_BOTH)],
        [(CART, "A", NX), (ORDERS, "A", NX), (WEB, "A", WEB_20)],
    ),
    ChangeCase(
        "rename-out-of-pattern",
        _rename("web.yaml", "web.yaml.disabled"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", NX), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "rename-to-dot-file",
        _rename("web.yaml", ".web.yaml"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", NX), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "directory-renamed-inside",
        _rename("shop", "shop-renamed"),
        [(CART, "A", CART_30)],
        [(CART, "A", CART_30), (ORDERS, "A", ORDERS_BOTH)],
    ),
    ChangeCase(
        "directory-moved-out",
        lambda root, staging: os.replace(root / "shop", staging / "shop"),
        [(CART, "A", CART_30)],
        [(CART, "A", NX), (ORDERS, "A", NX), (WEB, "A", WEB_20)],
    ),
    ChangeCase(
        "directory-moved-in",
        lambda root, staging: os.replace(staging / "incoming", root / "incoming"),
        [(FRESH, "A", NX)],
        [(FRESH, "A", a_rr(FRESH, "10.96.0.50")), *UNCHANGED],
        staged={"incoming/deep/fresh.yaml": yaml_text(svc_doc("fresh", "default", "10.96.0.50"))},
    ),
    ChangeCase(
        "rename-within-pattern",
        _rename("web.yaml", "zz-web.yaml"),
        [(WEB, "A", WEB_20)],
        [(WEB, "A", WEB_20), (CART, "A", CART_30)],
    ),
    ChangeCase(
        "rename-into-pattern",
        _rename("later.txt", "later.yaml"),
        [(LATER, "A", NX)],
        [(LATER, "A", a_rr(LATER, "10.96.0.52")), *UNCHANGED],
        extra={"later.txt": yaml_text(svc_doc("later", "default", "10.96.0.52"))},
    ),
    ChangeCase(
        "endpoints-changed",
        _replace(
            "shop/orders.yaml",
            yaml_text(
                svc_doc("orders", "shop", "None"),
                slice_doc("orders", "shop", "orders-abc", [("10.244.1.20", "orders-0"), ("10.244.1.22", "orders-2")]),
            ),
        ),
        [(ORDERS, "A", ORDERS_BOTH), ("10-244-1-21." + ORDERS, "A", a_rr("10-244-1-21." + ORDERS, "10.244.1.21"))],
        [
            (ORDERS, "A", a_rr(ORDERS, "10.244.1.20", "10.244.1.22")),
            ("orders-2." + ORDERS, "A", a_rr("orders-2." + ORDERS, "10.244.1.22")),
            ("10-244-1-21." + ORDERS, "A", NX),
        ],
    ),
    ChangeCase(
        "namespace-removed",
        _replace("ns.yaml", yaml_text(ns_doc("default"))),
        [(CART, "A", CART_30)],
        [(CART, "A", NX), (ORDERS, "A", NX), (WEB, "A", WEB_20)],
    ),
    ChangeCase(
        "namespace-added",
        _replace("ns.yaml", yaml_text(ns_doc("default"), ns_doc("shop"), ns_doc("extra"))),
        [(GUEST, "A", NX)],
        [(GUEST, "A", a_rr(GUEST, "10.96.3.10")), *UNCHANGED],
        extra={"guest.yaml": yaml_text(svc_doc("guest", "extra", "10.96.3.10"))},
    ),
    ChangeCase(
        "service-moves-between-files",
        lambda root, staging: _move_cart_into_web_yaml(root),
        [(CART, "A", CART_30)],
        [(CART, "A", CART_30), (WEB, "A", WEB_20)],
    ),
]


@pytest.mark.parametrize("case", CHANGE_CASES, ids=[c.id for c in CHANGE_CASES])
def test_change_is_served(dnsd_factory: Callable[..., DnsdHandle], root: Path, staging: Path, case: ChangeCase) -> None:
    populate(root, {**base_files(), **case.extra})
    populate(staging, case.staged)
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    check_now(h, case.before)
    case.change(root, staging)
    for name, rtype, want in case.after:
        wait_answer(h, name, rtype, want)
    # The watch is still alive after the change: one more change is seen.
    _new_file("probe.yaml", yaml_text(svc_doc("probe", "default", "10.96.0.99")))(root, staging)
    wait_answer(h, "probe.default.svc.cluster.local.", "A", a_rr("probe.default.svc.cluster.local.", "10.96.0.99"))
    check_now(h, case.after)


def test_changes_inside_a_renamed_directory_are_seen(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """inotify keeps watching a moved directory under its new name; the server must follow it."""
    populate(root, base_files())
    h = dnsd_factory(root)
    wait_answer(h, CART, "A", CART_30)
    os.rename(root / "shop", root / "shop2")
    (root / "shop2" / "cart.yaml").write_text(yaml_text(svc_doc("cart", "shop", "10.96.1.31")))
    wait_answer(h, CART, "A", a_rr(CART, "10.96.1.31"))
    (root / "shop2" / "new.yaml").write_text(yaml_text(svc_doc("new", "shop", "10.96.1.32")))
    wait_answer(h, "new.shop.svc.cluster.local.", "A", a_rr("new.shop.svc.cluster.local.", "10.96.1.32"))


def test_burst_of_changes_converges(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """Forty quick changes (writes, rewrites, renames, deletes) with no pause: the answers end up equal to the
    final directory, whatever batches the watcher saw."""
    populate(root, {"ns.yaml": yaml_text(ns_doc("default"))})
    h = dnsd_factory(root)
    wait_answer(h, "default.svc.cluster.local.", "A", NODATA)
    final: dict[str, str | None] = {}  # service name -> ClusterIP, None when deleted
    for i in range(40):
        name = f"s{i % 12}"
        path = root / f"{name}.yaml"
        ip = f"10.96.5.{i + 1}"
        if i % 7 == 6 and path.exists():
            path.unlink()
            final[name] = None
        elif i % 3 == 0:
            write_atomic(path, yaml_text(svc_doc(name, "default", ip)))
            final[name] = ip
        else:
            path.write_text(yaml_text(svc_doc(name, "default", ip)))
            final[name] = ip
    for name, last_ip in sorted(final.items()):
        fq = f"{name}.default.svc.cluster.local."
        wait_answer(h, fq, "A", NX if last_ip is None else a_rr(fq, last_ip))


def test_atomic_rename_seen_every_time(dnsd_factory: Callable[..., DnsdHandle], root: Path, staging: Path) -> None:
    """A watch on the file's inode loses track after the first rename; the second and third must be seen too."""
    populate(root, base_files())
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    for i, ip in enumerate(["10.96.0.21", "10.96.0.22", "10.96.0.23", "10.96.0.24"]):
        write_atomic(root / "web.yaml", yaml_text(svc_doc("web", "default", ip)), staging if i % 2 else None)
        wait_answer(h, WEB, "A", a_rr(WEB, ip))
    check_now(h, [(CART, "A", CART_30)])


def test_in_place_rewrite_seen_every_time(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    populate(root, base_files())
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    for ip in ["10.96.0.21", "10.96.0.22", "10.96.0.20", "10.96.0.23"]:
        (root / "web.yaml").write_text(yaml_text(svc_doc("web", "default", ip)))
        wait_answer(h, WEB, "A", a_rr(WEB, ip))


def _configmap_swap(root: Path, stamp: str, files: dict[str, str]) -> None:
    """What the kubelet's AtomicWriter does: a new timestamped dir, a temp symlink to it renamed onto ..data,
    user-visible symlinks for new keys created and those of removed keys deleted, the old dir removed."""
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    new_dir = root / stamp
    new_dir.mkdir()
    for name, text in files.items():
        (new_dir / name).write_text(text)
    tmp_link = root / "..data_tmp"
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for link in root.iterdir():
        if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
            link.unlink()
    if old is not None:
        shutil.rmtree(root / old)


def test_configmap_symlink_swap(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    ns = yaml_text(ns_doc("default"), ns_doc("shop"))
    extra = "extra.default.svc.cluster.local."
    _configmap_swap(
        root,
        "..2025_01_01_00_00_00.000000001",
        {"ns.yaml": ns, "svc.yaml": yaml_text(svc_doc("web", "default", "10.96.0.20"))},
    )
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    check_now(h, [(extra, "A", NX)])

    # 1: a changed key
    _configmap_swap(
        root,
        "..2025_01_02_00_00_00.000000001",
        {"ns.yaml": ns, "svc.yaml": yaml_text(svc_doc("web", "default", "10.96.0.21"))},
    )
    wait_answer(h, WEB, "A", WEB_21)

    # 2: the swap still works the second time, and a key added to the ConfigMap appears
    _configmap_swap(
        root,
        "..2025_01_03_00_00_00.000000001",
        {
            "ns.yaml": ns,
            "svc.yaml": yaml_text(svc_doc("web", "default", "10.96.0.22")),
            "extra.yaml": yaml_text(svc_doc("extra", "default", "10.96.0.55")),
        },
    )
    wait_answer(h, WEB, "A", a_rr(WEB, "10.96.0.22"))
    wait_answer(h, extra, "A", a_rr(extra, "10.96.0.55"))

    # 3: a key removed from the ConfigMap disappears
    _configmap_swap(
        root,
        "..2025_01_04_00_00_00.000000001",
        {"ns.yaml": ns, "svc.yaml": yaml_text(svc_doc("web", "default", "10.96.0.22"))},
    )
    wait_answer(h, extra, "A", NX)
    check_now(h, [(WEB, "A", a_rr(WEB, "10.96.0.22"))])

    # The timestamped directories are never read as files of their own (that would be a duplicate of every object).
    dup = [r.getMessage() for r in list(logs.records) if r.levelno >= logging.WARNING and "..20" in r.getMessage()]
    assert dup == []


# ---------------------------------------------------------------- bad files


def _reports(logs: pytest.LogCaptureFixture, path: Path, root: Path) -> list[str]:
    """WARNING-or-worse log records that name the file (absolute or relative to the manifest dir)."""
    rel = str(path.relative_to(root))
    out: list[str] = []
    for r in list(logs.records):
        if r.levelno < logging.WARNING:
            continue
        text = r.getMessage()
        if r.exc_info:
            text += "\n" + logging.Formatter().formatException(r.exc_info)
        if str(path) in text or rel in text:
            out.append(text)
    return out


def _lines_named(text: str, path: Path, root: Path) -> set[int]:
    """Line numbers a report gives: 'FILE:N', 'FILE, line N' or 'line N'."""
    body = text.replace(str(path), "FILE").replace(str(path.relative_to(root)), "FILE")
    return {int(n) for n in re.findall(r"FILE:(\d+)|line (\d+)", body) for n in n if n}


@dataclass(frozen=True)
class BadCase:
    id: str
    filename: str
    bad: str  # the new, broken content (it would also have changed web2 to 10.96.0.41)
    lines: frozenset[int]  # acceptable line numbers in the report
    reason: tuple[str, ...]  # the report (path removed) contains one of these, lower-cased
    per_object: bool = False  # an invalid object in a readable file: the file's other objects apply (web2 .41)


GOOD_YAML = yaml_text(svc_doc("web2", "default", "10.96.0.40"), svc_doc("web", "default", "10.96.0.20"))
FIXED_YAML = yaml_text(svc_doc("web2", "default", "10.96.0.42"), svc_doc("web", "default", "10.96.0.22"))

WEB2_DOC = """apiVersion: v1
kind: Service
metadata:
  name: web2
  namespace: default
spec:
  clusterIP: 10.96.0.41
---
"""  # 8 lines: the second document starts on line 9
WEB_HEAD = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n"  # lines 9-14

BAD_CASES = [
    BadCase(
        "half-written-yaml",
        "svc.yaml",
        WEB2_DOC
        + 'apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  clusterIP: "10.96.0.',
        frozenset({15, 16}),
        ("yaml", "scan", "quoted", "end of stream", "parse", "syntax", "unexpected"),
    ),
    BadCase(
        "bad-indentation",
        "svc.yaml",
        WEB2_DOC + WEB_HEAD.replace("  namespace", "   namespace") + "  clusterIP: 10.96.0.21\n",
        frozenset({12, 13}),
        ("yaml", "mapping", "parse", "syntax", "not allowed"),
    ),
    BadCase(
        "bad-json",
        "svc.json",
        '{\n  "apiVersion": "v1",\n  "kind": "List",\n  "items": [\n'
        '    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web2", "namespace": "default"}, '
        '"spec": {"clusterIP": "10.96.0.41"}},\n'
        '    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"} '
        '"spec": {"clusterIP": "10.96.0.21"}}\n  ]\n}\n',
        frozenset({6}),
        ("json", "delimiter", "expect", "parse", "syntax", "flow"),
    ),
    BadCase(
        "cluster-ip-not-an-ip",
        "svc.yaml",
        WEB2_DOC + WEB_HEAD + "  clusterIP: not-an-ip\n",
        frozenset({8, 9, 14, 15}),
        ("not-an-ip",),
        per_object=True,
    ),
    BadCase(
        "missing-metadata-name",
        "svc.yaml",
        WEB2_DOC + "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: default\nspec:\n  clusterIP: 10.96.0.21\n",
        frozenset({8, 9, 11}),
        ("name",),
        per_object=True,
    ),
    BadCase(
        "bad-port",
        "svc.yaml",
        WEB2_DOC + WEB_HEAD + "  clusterIP: 10.96.0.21\n  ports:\n  - {name: http, port: 70000}\n",
        frozenset({8, 9, 16, 17}),
        ("70000",),
        per_object=True,
    ),
    BadCase(
        "document-not-a-mapping",
        "svc.yaml",
        WEB2_DOC + "- just\n- a list\n",
        frozenset({8, 9}),
        ("mapping", "object", "list", "dict"),
        per_object=True,
    ),
    BadCase(
        "bad-item-in-kind-list",
        "svc.yaml",
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: web2, namespace: default}\n"
        "  spec: {clusterIP: 10.96.0.41}\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: web, namespace: default}\n"
        "  spec: {clusterIP: 10.96.0.300}\n",
        frozenset({1, 3, 8, 11}),  # the file, items, the item (line 8) or its clusterIP (line 11)
        ("10.96.0.300",),
        per_object=True,
    ),
]

SLICE_GOOD = yaml_text(svc_doc("hl", "default", "None"), slice_doc("hl", "default", "hl-1", [("10.244.0.5", "hl-0")]))
SLICE_FIXED = yaml_text(svc_doc("hl", "default", "None"), slice_doc("hl", "default", "hl-1", [("10.244.0.7", "hl-0")]))
HL = "hl.default.svc.cluster.local."


def _as(filename: str, yaml_docs: str) -> str:
    """The documents as the file's format: YAML as is, JSON as a kind: List."""
    if filename.endswith(".json"):
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(yaml.safe_load_all(yaml_docs))}, indent=2)
    return yaml_docs


def _bad_start(root: Path, filename: str) -> dict[str, str]:
    return {
        "ns.yaml": yaml_text(ns_doc("default")),
        "other.yaml": yaml_text(svc_doc("other", "default", "10.96.0.30")),
        filename: _as(filename, GOOD_YAML),
    }


OTHER = "other.default.svc.cluster.local."
WEB2 = "web2.default.svc.cluster.local."


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_bad_file_keeps_last_good_content(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture, case: BadCase
) -> None:
    populate(root, _bad_start(root, case.filename))
    path = root / case.filename
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    check_now(h, [(WEB2, "A", a_rr(WEB2, "10.96.0.40")), (OTHER, "A", a_rr(OTHER, "10.96.0.30"))])
    assert _reports(logs, path, root) == []

    path.write_text(case.bad)
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    # The file's last good objects keep serving (an unreadable file: all of them; an invalid object: that one, and
    # the file's valid objects are applied, so web2 moves to .41), and so does the rest.
    web2 = a_rr(WEB2, "10.96.0.41" if case.per_object else "10.96.0.40")
    check_now(h, [(WEB, "A", WEB_20), (WEB2, "A", web2), (OTHER, "A", a_rr(OTHER, "10.96.0.30"))])

    # Other files are unaffected: a change to one is served.
    write_atomic(root / "other.yaml", yaml_text(svc_doc("other", "default", "10.96.0.31")))
    wait_answer(h, OTHER, "A", a_rr(OTHER, "10.96.0.31"))
    (root / "other.yaml").write_text(yaml_text(svc_doc("other", "default", "10.96.0.32")))
    wait_answer(h, OTHER, "A", a_rr(OTHER, "10.96.0.32"))
    check_now(h, [(WEB, "A", WEB_20), (WEB2, "A", web2)])

    # Reported once, with the path, a line and the reason.
    reports = _reports(logs, path, root)
    assert len(reports) == 1, f"reported {len(reports)} times: {reports}"
    report = reports[0]
    lines = _lines_named(report, path, root)
    assert lines & case.lines, f"no line among {sorted(case.lines)} in {report!r}"
    reason = report.replace(str(path), "").replace(str(path.relative_to(root)), "").lower()
    assert any(word in reason for word in case.reason), f"no reason ({case.reason}) in {report!r}"

    # Fixing the file brings the new content.
    path.write_text(_as(case.filename, FIXED_YAML))
    wait_answer(h, WEB, "A", a_rr(WEB, "10.96.0.22"))
    check_now(h, [(WEB2, "A", a_rr(WEB2, "10.96.0.42")), (OTHER, "A", a_rr(OTHER, "10.96.0.32"))])


def test_bad_slice_address_keeps_last_good_content(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    populate(
        root,
        {
            "ns.yaml": yaml_text(ns_doc("default")),
            "hl.yaml": SLICE_GOOD,
            "other.yaml": yaml_text(svc_doc("other", "default", "10.96.0.30")),
        },
    )
    path = root / "hl.yaml"
    h = dnsd_factory(root)
    wait_answer(h, HL, "A", a_rr(HL, "10.244.0.5"))
    bad = SLICE_GOOD.replace("10.244.0.5", "10.244.0.300")
    assert bad != SLICE_GOOD
    path.write_text(bad)
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    check_now(h, [(HL, "A", a_rr(HL, "10.244.0.5")), ("hl-0." + HL, "A", a_rr("hl-0." + HL, "10.244.0.5"))])
    write_atomic(root / "other.yaml", yaml_text(svc_doc("other", "default", "10.96.0.31")))
    wait_answer(h, OTHER, "A", a_rr(OTHER, "10.96.0.31"))
    reports = _reports(logs, path, root)
    assert len(reports) == 1, reports
    assert "10.244.0.300" in reports[0].replace(str(path), "")
    lines = _lines_named(reports[0], path, root)
    # the slice document starts after the Service's 8 lines; the address sits on its endpoints line
    doc_start = SLICE_GOOD.split("---")[0].count("\n") + 1
    addr_line = bad.splitlines().index(next(x for x in bad.splitlines() if "10.244.0.300" in x)) + 1
    assert lines & {doc_start, doc_start + 1, addr_line - 1, addr_line}, reports[0]
    path.write_text(SLICE_FIXED)
    wait_answer(h, HL, "A", a_rr(HL, "10.244.0.7"))


def test_bad_file_at_startup(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A file that is bad from the start: reported once, the rest of the directory serves, fixing it loads it."""
    bad = (
        WEB2_DOC
        + "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  clusterIP: not-an-ip\n"
    )
    populate(
        root,
        {
            "ns.yaml": yaml_text(ns_doc("default")),
            "svc.yaml": bad,
            "other.yaml": yaml_text(svc_doc("other", "default", "10.96.0.30")),
        },
    )
    path = root / "svc.yaml"
    h = dnsd_factory(root)
    wait_answer(h, OTHER, "A", a_rr(OTHER, "10.96.0.30"))
    check_now(h, [(WEB, "A", NX), (WEB2, "A", a_rr(WEB2, "10.96.0.41"))])  # per object: the valid web2 serves
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    write_atomic(root / "other.yaml", yaml_text(svc_doc("other", "default", "10.96.0.31")))
    wait_answer(h, OTHER, "A", a_rr(OTHER, "10.96.0.31"))
    reports = _reports(logs, path, root)
    assert len(reports) == 1, reports
    assert "not-an-ip" in reports[0]
    path.write_text(GOOD_YAML)
    wait_answer(h, WEB, "A", WEB_20)
    check_now(h, [(WEB2, "A", a_rr(WEB2, "10.96.0.40"))])


HALF_SOURCE = """apiVersion: v1
kind: Service
metadata:
  name: web2
  namespace: default
spec:
  clusterIP: "10.96.0.41"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: "10.96.0.21"
"""


def test_half_write_then_completion(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A writer stops half-way (the file is closed in the middle of a quoted IP), then finishes the file."""
    populate(root, _bad_start(root, "svc.yaml"))
    path = root / "svc.yaml"
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    cut = HALF_SOURCE.index('"10.96.0.21"') + 6
    with open(path, "w") as f:
        f.write(HALF_SOURCE[:cut])
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    check_now(h, [(WEB, "A", WEB_20), (WEB2, "A", a_rr(WEB2, "10.96.0.40"))])
    with open(path, "a") as f:
        f.write(HALF_SOURCE[cut:])
    wait_answer(h, WEB, "A", WEB_21)
    check_now(h, [(WEB2, "A", a_rr(WEB2, "10.96.0.41")), (OTHER, "A", a_rr(OTHER, "10.96.0.30"))])
    assert len(_reports(logs, path, root)) == 1


def test_new_bad_content_is_reported_again(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Unrelated changes (which rescan the directory) do not repeat a report; a different bad content is reported."""
    populate(root, _bad_start(root, "svc.yaml"))
    path = root / "svc.yaml"
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    path.write_text(GOOD_YAML.replace("10.96.0.20", "not-an-ip"))
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    for ip in ("10.96.0.31", "10.96.0.32", "10.96.0.33"):
        write_atomic(root / "other.yaml", yaml_text(svc_doc("other", "default", ip)))
        wait_answer(h, OTHER, "A", a_rr(OTHER, ip))
    assert len(_reports(logs, path, root)) == 1
    path.write_text(GOOD_YAML.replace("10.96.0.20", "also-not-an-ip"))
    wait_until(lambda: any("also-not-an-ip" in r for r in _reports(logs, path, root)), CHANGE_TIMEOUT)
    check_now(h, [(WEB, "A", WEB_20), (WEB2, "A", a_rr(WEB2, "10.96.0.40"))])
    assert len(_reports(logs, path, root)) == 2


def test_deleting_a_bad_file_withdraws_its_last_good_objects(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    populate(root, _bad_start(root, "svc.yaml"))
    path = root / "svc.yaml"
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    path.write_text(GOOD_YAML.replace("10.96.0.20", "not-an-ip"))
    wait_until(lambda: _reports(logs, path, root), CHANGE_TIMEOUT)
    check_now(h, [(WEB, "A", WEB_20)])
    path.unlink()
    wait_answer(h, WEB, "A", NX)
    check_now(h, [(WEB2, "A", NX), (OTHER, "A", a_rr(OTHER, "10.96.0.30"))])


def _replace_dir_rmtree(root: Path, files: dict[str, str]) -> None:
    shutil.rmtree(root)
    populate(root, files)


def _replace_dir_rename(root: Path, files: dict[str, str]) -> None:
    new = root.with_name(root.name + ".new")
    populate(new, files)
    old = root.with_name(root.name + ".old")
    os.rename(root, old)
    os.rename(new, root)
    shutil.rmtree(old)


@pytest.mark.parametrize("replace_dir", [_replace_dir_rmtree, _replace_dir_rename], ids=["rmtree-mkdir", "rename-swap"])
def test_manifest_directory_replaced(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, replace_dir: Callable[[Path, dict[str, str]], None]
) -> None:
    """The whole directory is replaced (rm -r and re-created, or a new directory renamed into place): the new
    content is served and the watch follows the new directory."""
    populate(root, base_files())
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    files = base_files()
    files["web.yaml"] = yaml_text(svc_doc("web", "default", "10.96.0.21"))
    replace_dir(root, files)
    wait_answer(h, WEB, "A", WEB_21)
    (root / "web.yaml").write_text(yaml_text(svc_doc("web", "default", "10.96.0.22")))
    wait_answer(h, WEB, "A", a_rr(WEB, "10.96.0.22"))
    check_now(h, [(CART, "A", CART_30)])


# ---------------------------------------------------------------- duplicates


@dataclass(frozen=True)
class DupCase:
    id: str
    loser: str  # file sorting first
    winner: str  # file sorting later


DUP_CASES = [
    DupCase("numbered-files", "10-first.yaml", "20-second.yaml"),
    DupCase("subdir-sorts-first", "a/web.yaml", "b.yaml"),
    DupCase("yaml-before-yml", "web.yaml", "web.yml"),
    DupCase("json-before-yaml", "svc.json", "svc.yaml"),
]


def _svc_file(rel: str, *docs: dict[str, Any]) -> str:
    return _as(rel, yaml_text(*docs))


@pytest.mark.parametrize("case", DUP_CASES, ids=[c.id for c in DUP_CASES])
def test_duplicate_object_later_file_wins(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture, case: DupCase
) -> None:
    populate(
        root,
        {
            "00-ns.yaml": yaml_text(ns_doc("default")),
            case.loser: _svc_file(case.loser, svc_doc("web", "default", "10.96.0.20")),
            case.winner: _svc_file(case.winner, svc_doc("web", "default", "10.96.0.21")),
        },
    )
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_21)

    def warned() -> list[str]:
        return [
            r.getMessage()
            for r in list(logs.records)
            if r.levelno >= logging.WARNING and case.loser in r.getMessage() and case.winner in r.getMessage()
        ]

    wait_until(warned, CHANGE_TIMEOUT)
    # Deleting the winning file makes the other definition serve.
    (root / case.winner).unlink()
    wait_answer(h, WEB, "A", WEB_20)


def test_duplicate_in_a_file_sorting_earlier_does_not_win(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    marker = "marker.default.svc.cluster.local."
    populate(
        root,
        {
            "00-ns.yaml": yaml_text(ns_doc("default")),
            "20-second.yaml": yaml_text(svc_doc("web", "default", "10.96.0.21")),
        },
    )
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_21)
    # A new file sorting earlier defines web too (and a marker, so we know it has been read).
    (root / "10-first.yaml").write_text(
        yaml_text(svc_doc("web", "default", "10.96.0.20"), svc_doc("marker", "default", "10.96.0.60"))
    )
    wait_answer(h, marker, "A", a_rr(marker, "10.96.0.60"))
    check_now(h, [(WEB, "A", WEB_21)])
    wait_until(
        lambda: [
            r
            for r in list(logs.records)
            if r.levelno >= logging.WARNING and "10-first.yaml" in r.getMessage() and "20-second.yaml" in r.getMessage()
        ],
        CHANGE_TIMEOUT,
    )
    # Editing the losing definition does not change the answer either.
    (root / "10-first.yaml").write_text(
        yaml_text(svc_doc("web", "default", "10.96.0.25"), svc_doc("marker", "default", "10.96.0.61"))
    )
    wait_answer(h, marker, "A", a_rr(marker, "10.96.0.61"))
    check_now(h, [(WEB, "A", WEB_21)])
    # Editing the winner does.
    (root / "20-second.yaml").write_text(yaml_text(svc_doc("web", "default", "10.96.0.26")))
    wait_answer(h, WEB, "A", a_rr(WEB, "10.96.0.26"))
    # Removing the object from the winner hands it to the loser's current definition.
    (root / "20-second.yaml").write_text(yaml_text(svc_doc("other", "default", "10.96.0.30")))
    wait_answer(h, WEB, "A", a_rr(WEB, "10.96.0.25"))


def test_same_name_different_namespace_or_kind_is_no_duplicate(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, logs: pytest.LogCaptureFixture
) -> None:
    populate(
        root,
        {
            "ns.yaml": yaml_text(ns_doc("default"), ns_doc("shop")),
            "a.yaml": yaml_text(svc_doc("web", "default", "10.96.0.20")),
            "b.yaml": yaml_text(
                svc_doc("web", "shop", "10.96.1.20"),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "default"}},
            ),
        },
    )
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    check_now(h, [("web.shop.svc.cluster.local.", "A", a_rr("web.shop.svc.cluster.local.", "10.96.1.20"))])
    assert [
        r.getMessage()
        for r in list(logs.records)
        if r.levelno >= logging.WARNING and "a.yaml" in r.getMessage() and "b.yaml" in r.getMessage()
    ] == []


# ---------------------------------------------------------------- nothing stale


@dataclass(frozen=True)
class StaleCase:
    id: str
    change: Callable[[Path, Path], None]
    warm: list[tuple[str, str]]  # queries asked many times before the change
    after: list[Expect]  # asserted right after the store applied the change, without waiting


STALE_CASES = [
    StaleCase(
        "service-deleted",
        _replace("web.yaml", yaml_text(svc_doc("fresh", "default", "10.96.0.50"))),
        [
            (WEB, "A"),
            ("WeB.DeFaUlT.sVc.ClUsTeR.lOcAl.", "A"),
            ("_http._tcp." + WEB, "SRV"),
            (WEB, "SRV"),
            (WEB, "AAAA"),
            ("20.0.96.10.in-addr.arpa.", "PTR"),
        ],
        [
            (WEB, "A", NX),
            ("WeB.DeFaUlT.sVc.ClUsTeR.lOcAl.", "A", NX),
            ("_http._tcp." + WEB, "SRV", NX),
            (WEB, "SRV", NX),
            (WEB, "AAAA", NX),
            ("20.0.96.10.in-addr.arpa.", "PTR", NX),
        ],
    ),
    StaleCase(
        "file-deleted",
        _unlink("web.yaml"),
        [(WEB, "A"), ("_http._tcp." + WEB, "SRV"), ("20.0.96.10.in-addr.arpa.", "PTR")],
        [(WEB, "A", NX), ("_http._tcp." + WEB, "SRV", NX), ("20.0.96.10.in-addr.arpa.", "PTR", NX)],
    ),
    StaleCase(
        "cluster-ip-changed",
        _replace("web.yaml", yaml_text(svc_doc("web", "default", "10.96.0.21"))),
        [(WEB, "A"), ("20.0.96.10.in-addr.arpa.", "PTR")],
        [
            (WEB, "A", WEB_21),
            ("20.0.96.10.in-addr.arpa.", "PTR", NX),
            ("21.0.96.10.in-addr.arpa.", "PTR", ok(f"21.0.96.10.in-addr.arpa. 5 IN PTR {WEB}")),
        ],
    ),
    StaleCase(
        "endpoint-removed",
        _replace(
            "shop/orders.yaml",
            yaml_text(
                svc_doc("orders", "shop", "None"),
                slice_doc("orders", "shop", "orders-abc", [("10.244.1.20", "orders-0")]),
            ),
        ),
        [
            (ORDERS, "A"),
            ("10-244-1-21." + ORDERS, "A"),
            ("_http._tcp." + ORDERS, "SRV"),
            ("21.1.244.10.in-addr.arpa.", "PTR"),
        ],
        [
            (ORDERS, "A", a_rr(ORDERS, "10.244.1.20")),
            ("10-244-1-21." + ORDERS, "A", NX),
            ("_http._tcp." + ORDERS, "SRV", ok(f"_http._tcp.{ORDERS} 5 IN SRV 0 100 80 orders-0.{ORDERS}")),
            ("21.1.244.10.in-addr.arpa.", "PTR", NX),
        ],
    ),
    StaleCase(
        "namespace-deleted",
        _replace("ns.yaml", yaml_text(ns_doc("default"))),
        [(CART, "A"), (ORDERS, "A"), ("shop.svc.cluster.local.", "A")],
        [(CART, "A", NX), (ORDERS, "A", NX), ("shop.svc.cluster.local.", "A", NX), (WEB, "A", WEB_20)],
    ),
]

VARIANTS: list[dict[str, Any]] = [{}, {"edns": 0}, {"tcp": True}, {"edns": 0, "dnssec": True}]


@pytest.mark.parametrize("case", STALE_CASES, ids=[c.id for c in STALE_CASES])
def test_no_stale_answer_after_change(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, staging: Path, case: StaleCase
) -> None:
    populate(root, base_files())
    h = dnsd_factory(root)
    wait_answer(h, WEB, "A", WEB_20)
    for _ in range(25):  # warm every cache and pre-rendered answer, in every EDNS/transport variant
        for name, rtype in case.warm:
            for kw in VARIANTS:
                query(h, name, rtype, **kw)
    g0 = generation(h)
    case.change(root, staging)
    wait_until(lambda: generation(h) > g0, CHANGE_TIMEOUT)
    for name, rtype, want in case.after:
        for kw in VARIANTS:
            got = answer(h, name, rtype, **kw)
            assert got == want, f"{name} {rtype} {kw}: expected {want}, got {got} (stale?)"

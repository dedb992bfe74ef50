"""`ns.dns.<zone>` and the apex NS with its glue, as CoreDNS's kubernetes plugin answers them (ns.go nsAddrs).

dnsd is reached at the ClusterIPs of the services whose ready endpoints hold one of its own IPs (or, headless,
at those endpoints), else at its own IPs. App takes its own IPs from the listen addresses and leaves out loopback
(app.server_ips, as CoreDNS's boundIPs), so a test server on 127.0.0.1 has none: the table's servers are given
their own IPs (the pod IPs the manifests name) through ClusterRecords.server_ips, the list App fills at start.
test_listen_address_in_a_namespace checks App's own path end to end in a network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.rdatatype
import pytest
import yaml
from support import REPO, DnsdHandle, query, rcode_text, rr_lines, wait_until, zone_lines

OWN = "10.244.0.5"  # dnsd's pod IP in most cases
OWN6 = "fd00:244::5"
PEER = "10.244.1.6"  # another dnsd replica
TIMEOUT = 10.0


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, ips: list[str] | None, ns: str = "kube-system") -> dict[str, Any]:
    """A Service with a DNS port; ips None is headless."""
    spec: dict[str, Any] = {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
    if ips is None:
        spec["clusterIP"] = "None"
    else:
        spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def slice_of(
    svc: str, addrs: dict[str, bool], ns: str = "kube-system", family: str = "IPv4", suffix: str = "a"
) -> dict[str, Any]:
    """An EndpointSlice of svc: address -> ready."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{svc}-{suffix}", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": r}} for a, r in addrs.items()],
    }


BASE = [namespace("kube-system"), namespace("default")]
KUBE_DNS = service("kube-dns", ["10.96.0.10"])
KUBE_DNS_DUAL = service("kube-dns", ["10.96.0.10", "fd00:96::a"])
KUBE_DNS_SLICE = slice_of("kube-dns", {OWN: True, PEER: True})


def write(root: Path, objects: list[dict[str, Any]]) -> None:
    (root / "objects.yaml").write_text(yaml.safe_dump_all(objects))


def serve(
    factory: Callable[..., DnsdHandle], root: Path, objects: list[dict[str, Any]], own: list[str], **cluster: Any
) -> DnsdHandle:
    write(root, objects)
    h = factory(root, **cluster)
    # What App.__init__ passes from app.server_ips(cfg), set before the first query (nothing is cached yet).
    h.call(lambda: setattr(h.app.records, "server_ips", own))
    return h


@dataclass(frozen=True)
class Case:
    name: str
    objects: list[dict[str, Any]]
    own: list[str]
    ns_a: str  # ns.dns.cluster.local. A, answer section
    ns_aaaa: str
    ns: str  # cluster.local. NS, answer section
    glue: str  # its additional section (the OPT aside)
    cluster: dict[str, Any] = field(default_factory=dict)


# The answers the table repeats: kube-dns's ClusterIPs (10.96.0.10, and fd00:96::a when dual-stack) under ns.dns
# and as the apex NS's glue, or dnsd's own address (OWN) under ns.dns, named by the apex NS.
CIP_A = "ns.dns.cluster.local. 5 IN A 10.96.0.10"
CIP_AAAA = "ns.dns.cluster.local. 5 IN AAAA fd00:96::a"
KUBE_DNS_NS = "cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."
KUBE_DNS_GLUE = "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"
KUBE_DNS_GLUE6 = "kube-dns.kube-system.svc.cluster.local. 5 IN AAAA fd00:96::a"
OWN_A = f"ns.dns.cluster.local. 5 IN A {OWN}"
OWN_NS = "cluster.local. 5 IN NS ns.dns.cluster.local."

CASES = [
    Case(
        "our IP in a ClusterIP service's slice: its ClusterIP",
        [*BASE, KUBE_DNS, KUBE_DNS_SLICE], [OWN],
        ns_a=CIP_A,
        ns_aaaa="",
        ns=KUBE_DNS_NS,
        glue=KUBE_DNS_GLUE,
    ),
    Case(
        "dual-stack service: both ClusterIPs",
        [*BASE, KUBE_DNS_DUAL, KUBE_DNS_SLICE], [OWN],
        ns_a=CIP_A,
        ns_aaaa=CIP_AAAA,
        ns=KUBE_DNS_NS,
        glue=f"{KUBE_DNS_GLUE}\n{KUBE_DNS_GLUE6}",
    ),
    Case(
        "our IPv6 address in an IPv6 slice",
        [*BASE, KUBE_DNS_DUAL, slice_of("kube-dns", {OWN6: True}, family="IPv6")], ["10.1.2.3", OWN6],
        ns_a=CIP_A,
        ns_aaaa=CIP_AAAA,
        ns=KUBE_DNS_NS,
        glue=f"{KUBE_DNS_GLUE}\n{KUBE_DNS_GLUE6}",
    ),
    Case(
        "our IP in no slice: our own addresses under ns.dns",
        [*BASE, KUBE_DNS, slice_of("kube-dns", {PEER: True})], [OWN, OWN6],
        ns_a=OWN_A,
        ns_aaaa=f"ns.dns.cluster.local. 5 IN AAAA {OWN6}",
        ns=OWN_NS,
        glue=f"""ns.dns.cluster.local. 5 IN A {OWN}
                 ns.dns.cluster.local. 5 IN AAAA {OWN6}""",
    ),
    Case(
        "our endpoint not ready: not counted",
        [*BASE, KUBE_DNS, slice_of("kube-dns", {OWN: False, PEER: True})], [OWN],
        ns_a=OWN_A,
        ns_aaaa="",
        ns=OWN_NS,
        glue=OWN_A,
    ),
    Case(
        "headless service: every ready endpoint by name",
        [*BASE, service("dnsd", None), slice_of("dnsd", {OWN: True, PEER: True, "10.244.2.7": False})], [OWN],
        ns_a=f"""ns.dns.cluster.local. 5 IN A {OWN}
                 ns.dns.cluster.local. 5 IN A {PEER}""",
        ns_aaaa="",
        ns="""cluster.local. 5 IN NS 10-244-0-5.dnsd.kube-system.svc.cluster.local.
              cluster.local. 5 IN NS 10-244-1-6.dnsd.kube-system.svc.cluster.local.""",
        glue=f"""10-244-0-5.dnsd.kube-system.svc.cluster.local. 5 IN A {OWN}
                 10-244-1-6.dnsd.kube-system.svc.cluster.local. 5 IN A {PEER}""",
    ),
    Case(
        "two services select us: both, each address once",
        [*BASE, KUBE_DNS, KUBE_DNS_SLICE, service("dnsd-metrics", ["10.96.0.11"]),
         slice_of("dnsd-metrics", {OWN: True}), service("alias", ["10.96.0.10"], ns="default"),
         slice_of("alias", {OWN: True}, ns="default")],
        [OWN],
        ns_a="""ns.dns.cluster.local. 5 IN A 10.96.0.10
                ns.dns.cluster.local. 5 IN A 10.96.0.11""",
        ns_aaaa="",
        ns="""cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local.
              cluster.local. 5 IN NS dnsd-metrics.kube-system.svc.cluster.local.""",
        glue="""kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10
                dnsd-metrics.kube-system.svc.cluster.local. 5 IN A 10.96.0.11""",
    ),
    Case(
        "the service's namespace is not exposed: our own addresses",
        [*BASE, KUBE_DNS, KUBE_DNS_SLICE], [OWN],
        ns_a=OWN_A,
        ns_aaaa="",
        ns=OWN_NS,
        glue=OWN_A,
        cluster={"namespaces": ["default"]},
    ),
    Case(
        "no own address (loopback only): the NS without glue, ns.dns NODATA",
        [*BASE, KUBE_DNS, KUBE_DNS_SLICE], [],
        ns_a="",
        ns_aaaa="",
        ns=OWN_NS,
        glue="",
    ),
]  # fmt: skip


def answer_of(h: DnsdHandle, name: str, qtype: str) -> tuple[str, set[str], set[str]]:
    reply = query(h, name, qtype, edns=0)
    assert reply.flags & dns.flags.AA, reply
    return rcode_text(reply), rr_lines(reply.answer), rr_lines(reply.additional)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ns_dns_and_apex(dnsd_factory: Callable[..., DnsdHandle], root: Path, case: Case) -> None:
    h = serve(dnsd_factory, root, case.objects, case.own, **case.cluster)
    assert answer_of(h, "ns.dns.cluster.local.", "A")[:2] == ("NOERROR", zone_lines(case.ns_a))
    assert answer_of(h, "ns.dns.cluster.local.", "AAAA")[:2] == ("NOERROR", zone_lines(case.ns_aaaa))
    assert answer_of(h, "cluster.local.", "NS") == ("NOERROR", zone_lines(case.ns), zone_lines(case.glue))


def test_ns_dns_other_types_are_nodata(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    h = serve(dnsd_factory, root, [*BASE, KUBE_DNS, KUBE_DNS_SLICE], [OWN])
    for qtype in ("TXT", "SRV", "NS", "MX"):
        reply = query(h, "ns.dns.cluster.local.", qtype, edns=0)
        assert (rcode_text(reply), reply.answer) == ("NOERROR", []), qtype
        assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA], qtype


def test_glue_names_resolve(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """Every NS target of the apex answers A with its glue: the glue agrees with the records themselves."""
    h = serve(dnsd_factory, root, CASES[5].objects, [OWN])  # headless
    _, ns, glue = answer_of(h, "cluster.local.", "NS")
    assert len(ns) == 2
    for line in ns:
        target = line.split()[-1]
        _, got, _ = answer_of(h, target, "A")
        assert got == {g for g in glue if g.startswith(target + " ")}, target


def test_endpoint_moves(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """A store change changes the answers (and drops any cached apex answer): our endpoint leaves kube-dns's
    slice, then comes back."""
    h = serve(dnsd_factory, root, [*BASE, KUBE_DNS, KUBE_DNS_SLICE], [OWN])
    via_service = (
        zone_lines("ns.dns.cluster.local. 5 IN A 10.96.0.10"),
        zone_lines("cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."),
    )
    own = (
        zone_lines(f"ns.dns.cluster.local. 5 IN A {OWN}"),
        zone_lines("cluster.local. 5 IN NS ns.dns.cluster.local."),
    )

    def now() -> tuple[set[str], set[str]]:
        return answer_of(h, "ns.dns.cluster.local.", "A")[1], answer_of(h, "cluster.local.", "NS")[1]

    assert now() == via_service
    write(root, [*BASE, KUBE_DNS, slice_of("kube-dns", {PEER: True})])
    wait_until(lambda: now() == own, TIMEOUT)
    write(root, [*BASE, KUBE_DNS, slice_of("kube-dns", {PEER: True, OWN: True})])
    wait_until(lambda: now() == via_service, TIMEOUT)
    # the service gets a new ClusterIP: the glue follows
    write(root, [*BASE, service("kube-dns", ["10.96.0.99"]), slice_of("kube-dns", {OWN: True})])
    wait_until(lambda: now()[0] == zone_lines("ns.dns.cluster.local. 5 IN A 10.96.0.99"), TIMEOUT)
    _, _, glue = answer_of(h, "cluster.local.", "NS")
    assert glue == zone_lines("kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.99")


# ---------------------------------------------------------------- App's own IPs, end to end


def _can_make_namespaces() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.skipif(os.geteuid() != 0 or not _can_make_namespaces(), reason="needs root for a network namespace")
def test_listen_address_in_a_namespace(tmp_path: Path) -> None:
    """dnsd listening on a pod-like address (10.244.0.5, put on the loopback interface: no dummy interface is
    needed) in a network namespace of its own: App finds
    that address (app.server_ips), finds it in kube-dns's slice, and answers kube-dns's ClusterIP. Queried with
    `dnsd query` inside the same namespace; no traffic leaves it."""
    write(tmp_path, [*BASE, KUBE_DNS, KUBE_DNS_SLICE])
    py = sys.executable
    script = f"""
set -e
ip link set lo up
ip addr add {OWN}/32 dev lo
{py} -m dnsd --listen {OWN}:1053 --manifests {tmp_path} --http off > {tmp_path}/dnsd.log 2>&1 &
pid=$!
trap 'kill $pid' EXIT
i=0
until grep -q 'listening on' {tmp_path}/dnsd.log; do i=$((i+1)); [ $i -lt 200 ] || exit 3; sleep 0.05; done
{py} -m dnsd query ns.dns.cluster.local A --server {OWN}:1053
{py} -m dnsd query cluster.local NS --server {OWN}:1053
"""
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + _read(tmp_path / "dnsd.log")
    out = proc.stdout
    assert "ns.dns.cluster.local. 5 IN A 10.96.0.10" in out, out
    assert "cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local." in out, out
    assert "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10" in out, out
    assert OWN not in out.replace(f"SERVER: {OWN}", ""), out

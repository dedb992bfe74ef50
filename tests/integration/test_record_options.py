"""Kubernetes records under the `cluster:` options: ttl, namespaces, pods, endpoint_pod_names,
ignore_empty_service, fallthrough, reverse_zones and domain.

One table of (options, case) rows; every row gets its own dnsd_factory(...) server over the
fixture cluster (tests/data/cluster) with those options, so no option leaks into another case.
Expected answers are zone-file text from CoreDNS's `kubernetes` plugin options (the apex, `pods`, the option block); the comparison
is the exact one of test_records.py (names compared with their case, SOA serial left open).
"""

# ruff: noqa: E501  (zone-file lines are kept whole, one record a line)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support import DnsdHandle
from test_records import Case, check, ptr4, ptr6  # shared helpers only, no test functions


@dataclass(frozen=True)
class OptCase:
    label: str
    options: dict[str, Any]
    case: Case

    @property
    def served_zones(self) -> tuple[str, ...]:
        domain = str(self.options.get("domain", "cluster.local")).rstrip(".") + "."
        reverse = self.options.get("reverse_zones", ["in-addr.arpa", "ip6.arpa"])
        return (domain, *(str(z).rstrip(".") + "." for z in reverse))

    @property
    def ttl(self) -> int:
        return int(self.options.get("ttl", 5))


def rows(label: str, options: dict[str, Any], *cases: Case) -> list[OptCase]:
    return [OptCase(label, options, c) for c in cases]


# ---------------------------------------------------------------- ttl (spec 2.1; CoreDNS's apex)

TTL = (
    rows(
        "ttl30",
        {"ttl": 30},
        Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 30 IN A 10.0.0.1"),
        Case(
            "_http._tcp.svc1.testns.svc.cluster.local.",
            "SRV",
            answer="_http._tcp.svc1.testns.svc.cluster.local. 30 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
            extra="svc1.testns.svc.cluster.local. 30 IN A 10.0.0.1",
        ),
        Case(
            "hdls1.testns.svc.cluster.local.",
            "AAAA",
            answer="""
            hdls1.testns.svc.cluster.local. 30 IN AAAA 5678:abcd::1
            hdls1.testns.svc.cluster.local. 30 IN AAAA 5678:abcd::2
            """,
        ),
        Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 30 IN PTR svc1.testns.svc.cluster.local."),
        Case(
            "external.testns.svc.cluster.local.",
            "CNAME",
            answer="external.testns.svc.cluster.local. 30 IN CNAME ext.interwebs.test.",
        ),
        Case(
            "ext-in-zone.testns.svc.cluster.local.",
            "A",
            answer="""
            ext-in-zone.testns.svc.cluster.local. 30 IN CNAME svc1.testns.svc.cluster.local.
            svc1.testns.svc.cluster.local. 30 IN A 10.0.0.1
            """,
        ),
        Case(
            "cluster.local.",
            "SOA",
            answer="cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 30",
        ),
        Case("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", note="SOA TTL 30, minimum 30"),
        Case("svc1.testns.svc.cluster.local.", "AAAA", note="NODATA: SOA TTL 30, minimum 30"),
        Case(ptr4("10.99.99.99"), "PTR", "NXDOMAIN", note="reverse-zone SOA TTL 30 too"),
        Case(
            "dns-version.cluster.local.",
            "TXT",
            answer='dns-version.cluster.local. 28800 IN TXT "1.1.0"',
            note="always 28800",
        ),
    )
    + rows(
        "ttl0",
        {"ttl": 0},
        Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 0 IN A 10.0.0.1"),
        Case(
            "cluster.local.",
            "SOA",
            answer="cluster.local. 0 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 0",
        ),
        Case("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", note="SOA TTL 0, minimum 0"),
        Case("testns.svc.cluster.local.", "A", note="NODATA: SOA TTL 0, minimum 0"),
        Case("dns-version.cluster.local.", "TXT", answer='dns-version.cluster.local. 28800 IN TXT "1.1.0"'),
    )
    + rows(
        "ttl600",
        {"ttl": 600},
        Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 600 IN A 10.0.0.1"),
        Case(
            "cluster.local.",
            "SOA",
            answer="cluster.local. 300 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 600",
            note="SOA TTL min(ttl, 300), minimum = ttl",
        ),
        Case("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", note="SOA TTL 300, minimum 600"),
    )
)

# ---------------------------------------------------------------- namespaces (CoreDNS `namespaces`)

NAMESPACES = rows(
    "ns-testns",
    {"namespaces": ["testns"]},
    Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("testns.svc.cluster.local.", "A", note="exposed namespace: NODATA"),
    Case("kube-dns.kube-system.svc.cluster.local.", "A", "NXDOMAIN", note="not listed"),
    Case("_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("kube-system.svc.cluster.local.", "A", "NXDOMAIN", note="not listed: NXDOMAIN, not NODATA"),
    Case("kubernetes.default.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("svc2.testns2.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("172-0-3-21.hdls-multi.testns2.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
    Case(
        ptr4("172.0.0.1"),
        "PTR",
        answer=f"""
        {ptr4("172.0.0.1")} 5 IN PTR ep1a.svc1.testns.svc.cluster.local.
        {ptr4("172.0.0.1")} 5 IN PTR 172-0-0-1.shared.testns.svc.cluster.local.
        """,
    ),
    Case(ptr4("10.0.0.10"), "PTR", "NXDOMAIN", note="ClusterIP of a service in an unlisted namespace"),
    Case(ptr4("172.0.1.10"), "PTR", "NXDOMAIN", note="endpoint in an unlisted namespace"),
    Case(ptr4("172.0.3.21"), "PTR", "NXDOMAIN"),
    Case(ptr4("10.0.1.1"), "PTR", "NXDOMAIN"),
) + rows(
    "ns-testns2-nons",
    {"namespaces": ["testns2", "nons"]},
    Case("svc2.testns2.svc.cluster.local.", "A", answer="svc2.testns2.svc.cluster.local. 5 IN A 10.0.1.1"),
    Case("ghost.nons.svc.cluster.local.", "A", "NXDOMAIN", note="listed, but no Namespace object"),
    Case("nons.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("svc1.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(ptr4("10.0.1.1"), "PTR", answer=f"{ptr4('10.0.1.1')} 5 IN PTR svc2.testns2.svc.cluster.local."),
    Case(ptr4("10.0.0.1"), "PTR", "NXDOMAIN"),
    Case(ptr4("172.0.0.11"), "PTR", "NXDOMAIN"),
)

# ---------------------------------------------------------------- pods (CoreDNS `pods`)

PODS = (
    rows(
        "pods-disabled",
        {"pods": "disabled"},
        Case("172-0-2-1.testns.pod.cluster.local.", "A", "NXDOMAIN"),
        Case("1-2-3-4.testns.pod.cluster.local.", "A", "NXDOMAIN"),
        Case("testns.pod.cluster.local.", "A", "NXDOMAIN", note="<ns>.pod is NXDOMAIN when pods are disabled"),
        Case("pod.cluster.local.", "A", note="pod.<zone> is NODATA in every mode"),
    )
    + rows(
        "pods-insecure",
        {"pods": "insecure"},
        Case("1-2-3-4.testns.pod.cluster.local.", "A", answer="1-2-3-4.testns.pod.cluster.local. 5 IN A 1.2.3.4"),
        Case(
            "172-0-2-2.testns.pod.cluster.local.",
            "A",
            answer="172-0-2-2.testns.pod.cluster.local. 5 IN A 172.0.2.2",
            note="no check: a Succeeded pod's IP, or any IP",
        ),
        Case(
            "1-2-3-4.testns2.pod.cluster.local.",
            "A",
            answer="1-2-3-4.testns2.pod.cluster.local. 5 IN A 1.2.3.4",
        ),
        Case("1-2-3-4.testns.pod.cluster.local.", "AAAA", note="IPv4 pod name: AAAA is NODATA"),
        Case(
            "5678-abcd--1.testns.pod.cluster.local.",
            "AAAA",
            answer="5678-abcd--1.testns.pod.cluster.local. 5 IN AAAA 5678:abcd::1",
        ),
        Case("5678-abcd--1.testns.pod.cluster.local.", "A", note="IPv6 pod name: A is NODATA"),
        Case(
            "5678-abcd-1--0.testns.pod.cluster.local.",
            "AAAA",
            answer="5678-abcd-1--0.testns.pod.cluster.local. 5 IN AAAA 5678:abcd:1::",
        ),
        Case(
            "1-2--3.testns.pod.cluster.local.",
            "AAAA",
            answer="1-2--3.testns.pod.cluster.local. 5 IN AAAA 1:2::3",
            note="3 dashes but a '--': decoded as IPv6",
        ),
        Case("testns.pod.cluster.local.", "A", note="<ns>.pod: NODATA"),
        Case("pod.cluster.local.", "A"),
        Case("1-2-3-4.nons.pod.cluster.local.", "A", "NXDOMAIN", note="namespace without a Namespace object"),
        Case("1-2-3-4.nosuchns.pod.cluster.local.", "A", "NXDOMAIN"),
        Case("blah.testns.pod.cluster.local.", "A", "NXDOMAIN", note="not an IP"),
        Case("1-2-3-999.testns.pod.cluster.local.", "A", "NXDOMAIN", note="not an IP"),
        Case(
            "1-2-3-4.TESTNS.pod.Cluster.Local.",
            "A",
            answer="1-2-3-4.TESTNS.pod.Cluster.Local. 5 IN A 1.2.3.4",
        ),
    )
    + rows(
        "pods-verified",
        {"pods": "verified"},
        Case(
            "172-0-2-1.testns.pod.cluster.local.",
            "A",
            answer="172-0-2-1.testns.pod.cluster.local. 5 IN A 172.0.2.1",
            note="Running pod client-a",
        ),
        Case("172-0-2-1.testns.pod.cluster.local.", "AAAA", note="existing pod name, IPv4: NODATA"),
        Case(
            "5678-abcd-2--5.testns.pod.cluster.local.",
            "AAAA",
            answer="5678-abcd-2--5.testns.pod.cluster.local. 5 IN AAAA 5678:abcd:2::5",
            note="IPv6 pod client-v6",
        ),
        Case(
            "5678-abcd-2--1.testns.pod.cluster.local.",
            "AAAA",
            "NXDOMAIN",
            note="client-a's second podIPs entry: only status.podIP is indexed",
        ),
        Case(
            "172-0-2-3.testns.pod.cluster.local.",
            "A",
            answer="172-0-2-3.testns.pod.cluster.local. 5 IN A 172.0.2.3",
            note="Pending pod with an IP: CoreDNS `pods` skips only Succeeded, Failed and Unknown",
        ),
        Case("172-0-2-2.testns.pod.cluster.local.", "A", "NXDOMAIN", note="phase Succeeded"),
        Case("172-0-2-6.testns.pod.cluster.local.", "A", "NXDOMAIN", note="phase Failed"),
        Case("172-0-2-4.testns.pod.cluster.local.", "A", "NXDOMAIN", note="phase Unknown"),
        Case("172-0-2-9.testns.pod.cluster.local.", "A", "NXDOMAIN", note="that pod is in testns2"),
        Case(
            "172-0-2-9.testns2.pod.cluster.local.",
            "A",
            answer="172-0-2-9.testns2.pod.cluster.local. 5 IN A 172.0.2.9",
        ),
        Case(
            "172-0-0-100.testns.pod.cluster.local.",
            "A",
            answer="172-0-0-100.testns.pod.cluster.local. 5 IN A 172.0.0.100",
        ),
        Case("1-2-3-4.testns.pod.cluster.local.", "A", "NXDOMAIN", note="no such pod"),
        Case("172-0-2-99.nons.pod.cluster.local.", "A", "NXDOMAIN", note="namespace without a Namespace object"),
        Case("testns.pod.cluster.local.", "A", note="<ns>.pod: NODATA"),
        Case("pod.cluster.local.", "A"),
        Case(
            "172-0-2-1.TESTNS.pod.cluster.local.",
            "A",
            answer="172-0-2-1.TESTNS.pod.cluster.local. 5 IN A 172.0.2.1",
        ),
    )
)

# ---------------------------------------------------------------- endpoint_pod_names (spec 2.4.1; CoreDNS `endpoint_pod_names`)

POD63 = "pod-name-with-exactly-sixty-three-characters-abcdefghijklmnopqr"
assert len(POD63) == 63

ENDPOINT_POD_NAMES = rows(
    "endpoint-pod-names",
    {"endpoint_pod_names": True},
    Case(
        "web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.100",
    ),
    Case(
        "172-0-0-100.hdls-pods.testns.svc.cluster.local.",
        "A",
        "NXDOMAIN",
        note="an endpoint with a pod name is not under its dashed IP",
    ),
    Case(
        "172-0-0-101.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-101.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.101",
        note="64-character pod name is ignored: dashed IP",
    ),
    Case(
        f"{POD63}.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer=f"{POD63}.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.104",
        note="63 characters is short enough",
    ),
    Case("172-0-0-104.hdls-pods.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(
        "named.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="named.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.102",
        note="the hostname still wins",
    ),
    Case("pod-with-hostname.hdls-pods.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(
        "172-0-0-103.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-103.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.103",
        note="no targetRef: dashed IP",
    ),
    Case(
        "_http._tcp.hdls-pods.testns.svc.cluster.local.",
        "SRV",
        answer=f"""
        _http._tcp.hdls-pods.testns.svc.cluster.local. 5 IN SRV 0 20 80 web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local.
        _http._tcp.hdls-pods.testns.svc.cluster.local. 5 IN SRV 0 20 80 172-0-0-101.hdls-pods.testns.svc.cluster.local.
        _http._tcp.hdls-pods.testns.svc.cluster.local. 5 IN SRV 0 20 80 named.hdls-pods.testns.svc.cluster.local.
        _http._tcp.hdls-pods.testns.svc.cluster.local. 5 IN SRV 0 20 80 172-0-0-103.hdls-pods.testns.svc.cluster.local.
        _http._tcp.hdls-pods.testns.svc.cluster.local. 5 IN SRV 0 20 80 {POD63}.hdls-pods.testns.svc.cluster.local.
        """,
        extra=f"""
        web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.100
        172-0-0-101.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.101
        named.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.102
        172-0-0-103.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.103
        {POD63}.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.104
        """,
        note="SRV targets and glue use the pod names",
    ),
    Case(
        "hdls1-pod-11.hdls1.testns.svc.cluster.local.",
        "A",
        answer="hdls1-pod-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11",
    ),
    Case("172-0-0-11.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(
        "coredns-5d78c9869d-4kq2x.kube-dns.kube-system.svc.cluster.local.",
        "A",
        answer="coredns-5d78c9869d-4kq2x.kube-dns.kube-system.svc.cluster.local. 5 IN A 172.0.1.10",
        note="endpoint of a ClusterIP service, from the JSON file",
    ),
    Case(
        ptr4("172.0.0.100"),
        "PTR",
        answer=f"{ptr4('172.0.0.100')} 5 IN PTR web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.101"),
        "PTR",
        answer=f"{ptr4('172.0.0.101')} 5 IN PTR 172-0-0-101.hdls-pods.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.1"),
        "PTR",
        answer=f"""
        {ptr4("172.0.0.1")} 5 IN PTR ep1a.svc1.testns.svc.cluster.local.
        {ptr4("172.0.0.1")} 5 IN PTR svc1-pod-a.shared.testns.svc.cluster.local.
        """,
        note="svc1's endpoint keeps its hostname; shared's has only the pod name",
    ),
    Case(
        "ep1a.svc1.testns.svc.cluster.local.",
        "A",
        answer="ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1",
    ),
)

# ---------------------------------------------------------------- ignore_empty_service (CoreDNS `ignore empty_service`)

IGNORE_EMPTY = rows(
    "ignore-empty",
    {"ignore_empty_service": True},
    Case("svc-empty.testns.svc.cluster.local.", "A", "NXDOMAIN", note="ClusterIP, zero ready endpoints"),
    Case("svc-empty.testns.svc.cluster.local.", "AAAA", "NXDOMAIN"),
    Case("svc-empty.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("_http._tcp.svc-empty.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("svc-noslice.testns.svc.cluster.local.", "A", "NXDOMAIN", note="ClusterIP without any slice"),
    Case("svc-noslice.testns.svc.cluster.local.", "TXT", "NXDOMAIN"),
    Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("svc6.testns.svc.cluster.local.", "AAAA", answer="svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"),
    Case(
        "legacy-ip.testns.svc.cluster.local.",
        "A",
        answer="legacy-ip.testns.svc.cluster.local. 5 IN A 10.0.0.81",
        note="ready addresses from v1 Endpoints count",
    ),
    Case(
        "hdlsprtls.testns.svc.cluster.local.",
        "A",
        answer="hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20",
        note="headless unaffected",
    ),
    Case("hdls-empty.testns.svc.cluster.local.", "A", "NXDOMAIN", note="headless: NXDOMAIN as without the option"),
    Case(
        "external.testns.svc.cluster.local.",
        "CNAME",
        answer="external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
        note="ExternalName unaffected (it has no endpoints at all)",
    ),
    Case(
        "ext-in-zone.testns.svc.cluster.local.",
        "A",
        answer="""
        ext-in-zone.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.
        svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
        """,
    ),
)

# ---------------------------------------------------------------- fallthrough (CoreDNS `fallthrough`)
# There is no forwarder yet: a fallen-through name reaches the terminal link, REFUSED.

FALLTHROUGH = (
    rows(
        "fallthrough-in-addr",
        {"fallthrough": ["in-addr.arpa"]},
        Case(ptr4("10.99.99.99"), "PTR", "REFUSED", note="unknown IP falls through"),
        Case(ptr4("172.0.0.15"), "PTR", "REFUSED", note="not-ready endpoint falls through"),
        Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
        Case(ptr6("dead:beef::1"), "PTR", "NXDOMAIN", note="ip6.arpa is not listed"),
        Case("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", note="cluster.local is not listed"),
        Case("foo.cluster.local.", "A", "NXDOMAIN"),
    )
    + rows(
        "fallthrough-cluster",
        {"fallthrough": ["cluster.local"]},
        Case("svc0.testns.svc.cluster.local.", "A", "REFUSED"),
        Case("ghost.nons.svc.cluster.local.", "A", "REFUSED"),
        Case("hdls-empty.testns.svc.cluster.local.", "A", "REFUSED"),
        Case("foo.cluster.local.", "A", "REFUSED"),
        Case("svc1.testns.svc.cluster.local.", "AAAA", note="NODATA never falls through"),
        Case("testns.svc.cluster.local.", "A", note="NODATA never falls through"),
        Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
        Case(ptr4("10.99.99.99"), "PTR", "NXDOMAIN", note="in-addr.arpa is not listed"),
    )
    + rows(
        "fallthrough-every-zone",
        {"fallthrough": ["."]},
        Case("svc0.testns.svc.cluster.local.", "A", "REFUSED", note="'.': every zone, as CoreDNS's bare fallthrough"),
        Case(ptr4("10.99.99.99"), "PTR", "REFUSED"),
        Case(ptr6("dead:beef::1"), "PTR", "REFUSED"),
        Case("svc1.testns.svc.cluster.local.", "AAAA", note="NODATA never falls through"),
        Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
    )
)

# ---------------------------------------------------------------- reverse_zones (spec 2.1, 2.3.3; CoreDNS's apex)

REVERSE_ZONES = (
    rows(
        "reverse-none",
        {"reverse_zones": []},
        Case(ptr4("10.0.0.1"), "PTR", "REFUSED", note="no reverse zone: nobody serves PTR names"),
        Case(ptr6("1234:abcd::1"), "PTR", "REFUSED"),
        Case("in-addr.arpa.", "SOA", "REFUSED"),
        Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    )
    + rows(
        "reverse-subzone",
        {"reverse_zones": ["0.0.10.in-addr.arpa"]},
        Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
        Case(ptr4("10.0.0.250"), "PTR", "NXDOMAIN", note="SOA owner 0.0.10.in-addr.arpa."),
        Case("250.0.0.10.In-Addr.Arpa.", "PTR", "NXDOMAIN", note="SOA owner 0.0.10.In-Addr.Arpa."),
        Case(
            "0.0.10.in-addr.arpa.",
            "SOA",
            answer="0.0.10.in-addr.arpa. 5 IN SOA ns.dns.0.0.10.in-addr.arpa. hostmaster.0.0.10.in-addr.arpa. "
            "SERIAL 7200 1800 86400 5",
        ),
        Case(ptr4("172.0.0.1"), "PTR", "REFUSED", note="outside the only reverse zone"),
        Case(ptr6("1234:abcd::1"), "PTR", "REFUSED"),
    )
    + rows(
        "reverse-nested",
        {"reverse_zones": ["in-addr.arpa", "0.0.10.in-addr.arpa"]},
        Case(ptr4("10.0.0.250"), "PTR", "NXDOMAIN", note="longest zone wins: SOA owner 0.0.10.in-addr.arpa."),
        Case(ptr4("10.99.99.99"), "PTR", "NXDOMAIN", note="SOA owner in-addr.arpa."),
        Case(ptr4("172.0.0.2"), "PTR", answer=f"{ptr4('172.0.0.2')} 5 IN PTR ep1b.svc1.testns.svc.cluster.local."),
        Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
    )
)

# ---------------------------------------------------------------- domain (spec 2.1)

DOMAIN = rows(
    "domain-example-internal",
    {"domain": "example.internal"},
    Case(
        "svc1.testns.svc.example.internal.",
        "A",
        answer="svc1.testns.svc.example.internal. 5 IN A 10.0.0.1",
    ),
    Case("svc1.testns.svc.cluster.local.", "A", "REFUSED", note="cluster.local is not served"),
    Case(
        "example.internal.",
        "SOA",
        answer="example.internal. 5 IN SOA ns.dns.example.internal. hostmaster.example.internal. SERIAL 7200 1800 86400 5",
    ),
    Case("svc0.testns.svc.example.internal.", "A", "NXDOMAIN"),
    Case("testns.svc.example.internal.", "A"),
    Case(
        "_http._tcp.svc1.testns.svc.example.internal.",
        "SRV",
        answer="_http._tcp.svc1.testns.svc.example.internal. 5 IN SRV 0 100 80 svc1.testns.svc.example.internal.",
        extra="svc1.testns.svc.example.internal. 5 IN A 10.0.0.1",
    ),
    Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.example.internal."),
    Case(
        ptr4("172.0.0.1"),
        "PTR",
        answer=f"""
        {ptr4("172.0.0.1")} 5 IN PTR ep1a.svc1.testns.svc.example.internal.
        {ptr4("172.0.0.1")} 5 IN PTR 172-0-0-1.shared.testns.svc.example.internal.
        """,
    ),
    Case(
        "dns-version.example.internal.",
        "TXT",
        answer='dns-version.example.internal. 28800 IN TXT "1.1.0"',
    ),
    Case(
        "ext-in-zone.testns.svc.example.internal.",
        "A",
        answer="ext-in-zone.testns.svc.example.internal. 5 IN CNAME svc1.testns.svc.cluster.local.",
        note="the target is now out of zone and there is no forwarder: the CNAME alone",
    ),
)

OPTION_CASES = TTL + NAMESPACES + PODS + ENDPOINT_POD_NAMES + IGNORE_EMPTY + FALLTHROUGH + REVERSE_ZONES + DOMAIN


@pytest.mark.parametrize("row", OPTION_CASES, ids=[f"{r.label}:{r.case.id}" for r in OPTION_CASES])
def test_option(dnsd_factory: Callable[..., DnsdHandle], row: OptCase) -> None:
    server = dnsd_factory(**row.options)
    check(server, row.case, zones=row.served_zones, ttl=row.ttl)

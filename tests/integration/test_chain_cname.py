"""CNAMEs chased from link to link: an ExternalName or a zone file's CNAME whose target another link serves (the
zone files, the cluster, or an upstream through forwarding) is answered with the CNAME plus the target's records
and the target's rcode (RFC 6604), as CoreDNS answers an ExternalName. Where the target cannot be resolved (no
forwarding, a client outside allow_recursion) the CNAME alone is the answer and the client's resolver chases it.

The upstream is a real NSD on loopback serving tests/data/forward/example.test.zone; the cluster and the zone
file are written by the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from support import DnsdHandle, base_config, rcode_text, rr_lines, run_dnsd, zone_lines

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {type: ExternalName, externalName: www.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: apps}
spec: {type: ExternalName, externalName: alias.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: gone, namespace: apps}
spec: {type: ExternalName, externalName: nosuch.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: apps}
spec: {type: ExternalName, externalName: www.corp.internal}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: apps}
spec: {clusterIP: 10.96.5.5, ports: [{name: http, port: 80}]}
"""

ZONE = """\
$ORIGIN corp.internal.
$TTL 3600
@     IN SOA ns.corp.internal. hostmaster.corp.internal. 1 7200 1800 86400 60
      IN NS  ns.corp.internal.
ns    IN A   192.0.2.53
www   IN A   192.0.2.80
back  IN CNAME api.apps.svc.cluster.local.
out   IN CNAME www.example.test.
"""

NSD_SOA = "example.test. 60 IN SOA ns.example.test. hostmaster.example.test. 2026120101 3600 600 86400 60"


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    answer: str
    rcode: str = "NOERROR"
    authority: str = ""
    source: str = "127.0.0.1"
    note: str = ""


CASES = [
    Case(
        "web.apps.svc.cluster.local.",
        "A",
        """
        web.apps.svc.cluster.local. 5 IN CNAME www.example.test.
        www.example.test. 300 IN A 192.0.2.10
        """,
        note="ExternalName chased upstream, as CoreDNS does",
    ),
    Case(
        "alias.apps.svc.cluster.local.",
        "AAAA",
        """
        alias.apps.svc.cluster.local. 5 IN CNAME alias.example.test.
        alias.example.test. 300 IN CNAME www.example.test.
        www.example.test. 300 IN AAAA 2001:db8::10
        """,
        note="the upstream's own CNAME chain follows ours",
    ),
    Case(
        "gone.apps.svc.cluster.local.",
        "A",
        "gone.apps.svc.cluster.local. 5 IN CNAME nosuch.example.test.",
        rcode="NXDOMAIN",
        authority=NSD_SOA,
        note="RFC 6604: the rcode is the target's; the SOA is the target zone's",
    ),
    Case(
        "internal.apps.svc.cluster.local.",
        "A",
        """
        internal.apps.svc.cluster.local. 5 IN CNAME www.corp.internal.
        www.corp.internal. 3600 IN A 192.0.2.80
        """,
        note="cluster to zone file: no upstream needed",
    ),
    Case(
        "back.corp.internal.",
        "A",
        """
        back.corp.internal. 3600 IN CNAME api.apps.svc.cluster.local.
        api.apps.svc.cluster.local. 5 IN A 10.96.5.5
        """,
        note="zone file to cluster",
    ),
    Case(
        "out.corp.internal.",
        "A",
        """
        out.corp.internal. 3600 IN CNAME www.example.test.
        www.example.test. 300 IN A 192.0.2.10
        """,
        note="zone file to upstream",
    ),
    Case("web.apps.svc.cluster.local.", "CNAME", "web.apps.svc.cluster.local. 5 IN CNAME www.example.test."),
    Case(
        "web.apps.svc.cluster.local.",
        "A",
        "web.apps.svc.cluster.local. 5 IN CNAME www.example.test.",
        source="127.0.0.2",
        note="a client outside allow_recursion gets the CNAME alone, and no upstream query is made",
    ),
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("chain")
    (root / "manifests").mkdir()
    (root / "manifests" / "apps.yaml").write_text(CLUSTER)
    (root / "zones").mkdir()
    (root / "zones" / "corp.internal.zone").write_text(ZONE)
    return root / "manifests", root / "zones"


def _config(dirs: tuple[Path, Path], upstreams: list[str] | None) -> dict[str, Any]:
    cfg = base_config(dirs[0])
    cfg["zones"] = str(dirs[1])
    if upstreams is not None:
        cfg["recursion"] = "forward"
        cfg["forward"] = {"upstreams": upstreams, "timeout": 1.0}
        cfg["allow_recursion"] = ["127.0.0.1/32"]
    return cfg


@pytest.fixture(scope="module")
def forwarding(dirs: tuple[Path, Path], nsd: str) -> Iterator[DnsdHandle]:
    handle = run_dnsd(_config(dirs, [nsd]))
    try:
        yield handle
    finally:
        handle.stop()


def _ask(h: DnsdHandle, name: str, qtype: str, source: str) -> dns.message.Message:
    wire = dns.message.make_query(name, qtype).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.sendto(wire, h.addr)
        return dns.message.from_wire(s.recv(65535))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.qname}{c.qtype}@{c.source}" for c in CASES])
def test_cname_chased_through_the_chain(forwarding: DnsdHandle, case: Case) -> None:
    msg = _ask(forwarding, case.qname, case.qtype, case.source)
    assert rcode_text(msg) == case.rcode, case.note
    assert rr_lines(msg.answer) == zone_lines(case.answer), case.note
    assert rr_lines(msg.authority) == zone_lines(case.authority), case.note
    assert msg.flags & dns.flags.AA, "the first name is ours: authoritative (RFC 1035 4.1.1)"


def test_without_forwarding_the_cname_alone(dirs: tuple[Path, Path]) -> None:
    handle = run_dnsd(_config(dirs, None))
    try:
        msg = _ask(handle, "web.apps.svc.cluster.local.", "A", "127.0.0.1")
        assert rcode_text(msg) == "NOERROR"
        assert rr_lines(msg.answer) == zone_lines("web.apps.svc.cluster.local. 5 IN CNAME www.example.test.")
        # The chase between our own links needs no forwarding.
        msg = _ask(handle, "back.corp.internal.", "A", "127.0.0.1")
        assert rr_lines(msg.answer) == zone_lines(
            """
            back.corp.internal. 3600 IN CNAME api.apps.svc.cluster.local.
            api.apps.svc.cluster.local. 5 IN A 10.96.5.5
            """
        )
    finally:
        handle.stop()

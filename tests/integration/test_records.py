"""Kubernetes records, default options: one table of cases through a real server socket.

Every case is a question and the full expected reply written as zone-file text: rcode, answer,
additional, and (for every negative answer) the SOA in authority. Expected records come from
the Kubernetes DNS spec 1.1.0 as CoreDNS's `kubernetes` plugin answers it; where the spec is
silent the case says so and gives what CoreDNS answers (the notes cite the spec's sections, or the
CoreDNS behaviour or option where the spec is silent). The fixture cluster is
tests/data/cluster (its README lists every object and what it is for).

Names are compared exactly, case included (the owner must be the query name as sent, and the
zone part of SRV targets, glue and the SOA is spelled as in the query), so the comparison here
does not lower-case anything. The SOA serial is the one value not written in the table: it must
be a positive 32-bit integer, and is then substituted for SERIAL.

The helpers at the top (Case, check, ptr4, ptr6, soa_line) are also used by
test_record_options.py.
"""

# ruff: noqa: E501  (zone-file lines are kept whole, one record a line)

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from support import DnsdHandle, query, rcode_text

DEFAULT_ZONES: tuple[str, ...] = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")


# ---------------------------------------------------------------- helpers


def ptr4(ip: str) -> str:
    """The in-addr.arpa name of an IPv4 address."""
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


def ptr6(ip: str) -> str:
    """The ip6.arpa name of an IPv6 address: 32 reversed nibbles."""
    nibbles = ipaddress.IPv6Address(ip).exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + ".ip6.arpa."


def soa_line(zone: str, ttl: int = 5) -> str:
    """The SOA of a served zone (CoreDNS's apex): TTL min(ttl, 300), minimum = ttl; serial left open."""
    return f"{zone} {min(ttl, 300)} IN SOA ns.dns.{zone} hostmaster.{zone} SERIAL 7200 1800 86400 {ttl}"


def matched_zone(qname: str, zones: tuple[str, ...]) -> str | None:
    """The longest served zone containing qname, spelled as in qname."""
    low = qname.lower()
    best: str | None = None
    for zone in zones:
        z = zone.lower()
        if (low == z or low.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    if best is None:
        return None
    return qname[len(qname) - len(best) :]


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: str = ""  # zone-file text, exact case
    extra: str = ""  # the additional section (without OPT), zone-file text
    soa_zone: str | None = None  # negative answers: SOA owner as spelled; None: the matched zone
    ordered: bool = False  # answer RRsets must appear in the order written (CNAME chains)
    chain_ends_negative: bool = False  # a CNAME answer whose chain ends in NODATA/NXDOMAIN: SOA in authority too
    tcp: bool = False
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.qname}{self.qtype}{'-tcp' if self.tcp else ''}"


def _line(name: str, ttl: int, rdclass: int, rdtype: int, rdata: str) -> str:
    cls = dns.rdataclass.to_text(dns.rdataclass.RdataClass(rdclass))
    typ = dns.rdatatype.to_text(dns.rdatatype.RdataType(rdtype))
    return f"{name} {ttl} {cls} {typ} {rdata}"


def exact_lines(section: list[dns.rrset.RRset]) -> set[str]:
    """A section as zone-file lines, names exactly as on the wire (no lower-casing)."""
    return {_line(r.name.to_text(), r.ttl, r.rdclass, r.rdtype, rd.to_text()) for r in section for rd in r}


def expected_lines(text: str, serial: int | None) -> set[str]:
    out: set[str] = set()
    for raw in text.strip().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        line = line.replace("SERIAL", str(serial if serial is not None else 0))
        name, ttl, cls, typ, rdata = line.split(None, 4)
        rrset = dns.rrset.from_text(name, int(ttl), cls, typ, rdata)
        out |= exact_lines([rrset])
    return out


def expected_order(text: str) -> list[tuple[str, str]]:
    order: list[tuple[str, str]] = []
    for raw in text.strip().splitlines():
        parts = raw.split(";", 1)[0].split()
        if not parts:
            continue
        key = (parts[0], parts[3].upper())
        if not order or order[-1] != key:
            order.append(key)
    return order


def _soa_serial(msg: dns.message.Message) -> int | None:
    for rrset in msg.answer + msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def _diff(what: str, got: set[str], want: set[str]) -> str | None:
    if got == want:
        return None
    return f"{what} differs\n    missing:    {sorted(want - got)}\n    unexpected: {sorted(got - want)}"


def check(
    server: DnsdHandle,
    case: Case,
    *,
    zones: tuple[str, ...] = DEFAULT_ZONES,
    ttl: int = 5,
) -> dns.message.Message:
    """Send the case's question and compare the whole reply; report every difference at once."""
    reply: dns.message.Message = query(server, case.qname, case.qtype, tcp=case.tcp, edns=0)
    problems: list[str] = []
    got_rcode = rcode_text(reply)
    if got_rcode != case.rcode:
        problems.append(f"rcode {got_rcode}, expected {case.rcode}")
    if not reply.question or reply.question[0].name.to_text() != case.qname:
        problems.append(f"question not echoed as sent: {reply.question}")
    if reply.flags & dns.flags.TC:
        problems.append("TC set on an answer that fits")
    if case.rcode in ("NOERROR", "NXDOMAIN") and not reply.flags & dns.flags.AA:
        problems.append("AA not set on an authoritative answer (spec 2.1)")

    serial = _soa_serial(reply)
    if serial is not None and not 0 < serial < 2**32:
        problems.append(f"SOA serial {serial} is not a positive 32-bit integer")

    if problem := _diff("answer", exact_lines(reply.answer), expected_lines(case.answer, serial)):
        problems.append(problem)
    if case.ordered:
        got_order = [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in reply.answer]
        if got_order != expected_order(case.answer):
            problems.append(f"answer order {got_order}, expected {expected_order(case.answer)}")

    if case.rcode in ("NOERROR", "NXDOMAIN"):
        if problem := _diff("additional", exact_lines(reply.additional), expected_lines(case.extra, serial)):
            problems.append(problem)
        negative = not case.answer.strip() or case.chain_ends_negative
        want_auth = ""
        if negative:
            zone = case.soa_zone or matched_zone(case.qname, zones)
            assert zone is not None, f"test bug: {case.qname} is in no served zone"
            want_auth = soa_line(zone, ttl)
        # Positive answers carry nothing in authority (CoreDNS never adds NS there; spec silent).
        if problem := _diff("authority", exact_lines(reply.authority), expected_lines(want_auth, serial)):
            problems.append(problem)
    elif reply.answer:
        problems.append(f"{got_rcode} with records in the answer: {exact_lines(reply.answer)}")

    note = f" ({case.note})" if case.note else ""
    assert not problems, f"{case.qname} {case.qtype}{note}:\n  " + "\n  ".join(problems)
    return reply


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# ---------------------------------------------------------------- ClusterIP A/AAAA (spec 2.3.1)

CLUSTER_IP = [
    Case(
        "svc1.testns.svc.cluster.local.",
        "ANY",
        answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        note="RFC 8482 lets ANY be answered with a subset: dnsd gives the address records (as NSD, Knot and "
        "BIND answer ANY for a small node); CoreDNS answers NODATA (documented deviation)",
    ),
    Case("svc1.testns.svc.cluster.local.", "A", answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("svc1.testns.svc.cluster.local.", "AAAA", note="IPv4-only service: AAAA is NODATA"),
    Case("svc6.testns.svc.cluster.local.", "AAAA", answer="svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"),
    Case("svc6.testns.svc.cluster.local.", "A", note="IPv6-only service: A is NODATA"),
    Case(
        "svc-dual-stack.testns.svc.cluster.local.",
        "A",
        answer="svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
    ),
    Case(
        "svc-dual-stack.testns.svc.cluster.local.",
        "AAAA",
        answer="svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA fd00::3",
    ),
    Case(
        "svc-empty.testns.svc.cluster.local.",
        "A",
        answer="svc-empty.testns.svc.cluster.local. 5 IN A 10.0.0.5",
        note="no ready endpoints: the ClusterIP is still answered",
    ),
    Case(
        "svc-noslice.testns.svc.cluster.local.",
        "A",
        answer="svc-noslice.testns.svc.cluster.local. 5 IN A 10.0.0.6",
        note="no slices at all",
    ),
    Case(
        "svc-nodeport.testns.svc.cluster.local.",
        "A",
        answer="svc-nodeport.testns.svc.cluster.local. 5 IN A 10.0.0.11",
    ),
    Case("svc-lb.testns.svc.cluster.local.", "A", answer="svc-lb.testns.svc.cluster.local. 5 IN A 10.0.0.12"),
    Case(
        "kubernetes.default.svc.cluster.local.",
        "A",
        answer="kubernetes.default.svc.cluster.local. 5 IN A 10.0.0.100",
    ),
    Case(
        "kube-dns.kube-system.svc.cluster.local.",
        "A",
        answer="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
        note="from a JSON kind: List file",
    ),
    Case("svc2.testns2.svc.cluster.local.", "A", answer="svc2.testns2.svc.cluster.local. 5 IN A 10.0.1.1"),
    Case(
        "svc1.testns.svc.cluster.local.",
        "A",
        tcp=True,
        answer="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
    ),
]

# ---------------------------------------------------------------- headless services (spec 2.4.1)

HEADLESS = [
    Case(
        "hdls1.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11
        hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.12
        hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        """,
        note="the 4 ready IPv4 endpoints; 172.0.0.15 is not ready",
    ),
    Case(
        "hdls1.testns.svc.cluster.local.",
        "AAAA",
        answer="""
        hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1
        hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2
        """,
    ),
    Case(
        "hdls-v6.testns.svc.cluster.local.", "AAAA", answer="hdls-v6.testns.svc.cluster.local. 5 IN AAAA 5678:abcd:1::"
    ),
    Case("hdls-v6.testns.svc.cluster.local.", "A", note="ready endpoints of the other family only: NODATA"),
    Case(
        "hdlsprtls.testns.svc.cluster.local.",
        "A",
        answer="hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20",
        note="portless endpoints still get A",
    ),
    Case("hdls-empty.testns.svc.cluster.local.", "A", "NXDOMAIN", note="headless, zero ready endpoints"),
    Case("hdls-empty.testns.svc.cluster.local.", "AAAA", "NXDOMAIN"),
    Case("hdls-empty.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("hdls-empty.testns.svc.cluster.local.", "TXT", "NXDOMAIN"),
    Case("_http._tcp.hdls-empty.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("hdls-noslice.testns.svc.cluster.local.", "A", "NXDOMAIN", note="headless without any slice"),
    Case(
        "hdls-multiaddr.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.110
        hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.111
        """,
        note="every address of an endpoint is used",
    ),
    Case(
        "hdls-label.testns.svc.cluster.local.",
        "A",
        answer="hdls-label.testns.svc.cluster.local. 5 IN A 172.0.0.120",
        note="slice named svc1-lbl9x but labelled hdls-label",
    ),
    Case("shared.testns.svc.cluster.local.", "A", answer="shared.testns.svc.cluster.local. 5 IN A 172.0.0.1"),
    Case(
        "hdls-multi.testns2.svc.cluster.local.",
        "A",
        answer="""
        hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.21
        hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.22
        hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.23
        """,
        note="from a kind: List YAML file",
    ),
    # ready conditions (spec 2.4.1)
    Case(
        "hdls-ready.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls-ready.testns.svc.cluster.local. 5 IN A 172.0.0.40
        hdls-ready.testns.svc.cluster.local. 5 IN A 172.0.0.41
        """,
        note="ready absent and ready null count; terminating and not-ready are dropped",
    ),
    Case(
        "172-0-0-41.hdls-ready.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-41.hdls-ready.testns.svc.cluster.local. 5 IN A 172.0.0.41",
        note="ready: null",
    ),
    Case(
        "172-0-0-42.hdls-ready.testns.svc.cluster.local.",
        "A",
        "NXDOMAIN",
        note="terminating (ready false, serving true) is dropped",
    ),
    Case("172-0-0-43.hdls-ready.testns.svc.cluster.local.", "A", "NXDOMAIN", note="not ready"),
    Case(
        "hdls-pna.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls-pna.testns.svc.cluster.local. 5 IN A 172.0.0.44
        hdls-pna.testns.svc.cluster.local. 5 IN A 172.0.0.45
        """,
        note="publishNotReadyAddresses: the slice says ready: true, serving is ignored",
    ),
    Case(
        "hdls-dup.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls-dup.testns.svc.cluster.local. 5 IN A 172.0.0.60
        hdls-dup.testns.svc.cluster.local. 5 IN A 172.0.0.61
        """,
        note="172.0.0.60 is in two slices: one A",
    ),
    # v1 Endpoints (issue 2 section 3): used only when a Service has no slice
    Case(
        "legacy-hdls.testns.svc.cluster.local.",
        "A",
        answer="legacy-hdls.testns.svc.cluster.local. 5 IN A 172.0.0.80",
        note="v1 Endpoints only; notReadyAddresses are not served",
    ),
    Case(
        "legacy-0.legacy-hdls.testns.svc.cluster.local.",
        "A",
        answer="legacy-0.legacy-hdls.testns.svc.cluster.local. 5 IN A 172.0.0.80",
    ),
    Case("legacy-1.legacy-hdls.testns.svc.cluster.local.", "A", "NXDOMAIN", note="in notReadyAddresses"),
    Case(
        "both-hdls.testns.svc.cluster.local.",
        "A",
        answer="both-hdls.testns.svc.cluster.local. 5 IN A 172.0.0.90",
        note="slices win over v1 Endpoints",
    ),
    Case("from-endpoints.both-hdls.testns.svc.cluster.local.", "A", "NXDOMAIN", note="v1 Endpoints ignored"),
    Case("legacy-ip.testns.svc.cluster.local.", "A", answer="legacy-ip.testns.svc.cluster.local. 5 IN A 10.0.0.81"),
]

# ---------------------------------------------------------------- endpoint names (spec 2.4.1)

ENDPOINT_NAMES = [
    Case(
        "ep1a.svc1.testns.svc.cluster.local.",
        "A",
        answer="ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1",
        note="endpoint names resolve under ClusterIP services too (CoreDNS extension)",
    ),
    Case("ep1b.svc1.testns.svc.cluster.local.", "A", answer="ep1b.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.2"),
    Case("ep1a.svc1.testns.svc.cluster.local.", "AAAA", note="existing endpoint, other family: NODATA"),
    Case("ep1a.svc1.testns.svc.cluster.local.", "TXT", note="existing endpoint name: NODATA"),
    Case("ep1a.svc1.testns.svc.cluster.local.", "MX", note="existing endpoint name: NODATA"),
    Case(
        "172-0-0-11.hdls1.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11",
        note="dashed IPv4",
    ),
    Case("172-0-0-11.hdls1.testns.svc.cluster.local.", "AAAA"),
    Case(
        "5678-abcd--1.hdls1.testns.svc.cluster.local.",
        "AAAA",
        answer="5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
        note="dashed IPv6",
    ),
    Case("5678-abcd--1.hdls1.testns.svc.cluster.local.", "A"),
    Case(
        "5678-abcd-1--0.hdls-v6.testns.svc.cluster.local.",
        "AAAA",
        answer="5678-abcd-1--0.hdls-v6.testns.svc.cluster.local. 5 IN AAAA 5678:abcd:1::",
        note="dashed IPv6 ending in '-' gets a '0'",
    ),
    Case("5678-abcd-1-.hdls-v6.testns.svc.cluster.local.", "AAAA", "NXDOMAIN", note="without the appended 0"),
    Case(
        "dup-name.hdls1.testns.svc.cluster.local.",
        "A",
        answer="""
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        """,
        note="duplicate hostname returns every address",
    ),
    Case(
        "172-0-0-13.hdls1.testns.svc.cluster.local.",
        "A",
        "NXDOMAIN",
        note="an endpoint with a hostname is not under its dashed IP",
    ),
    Case("not-ready.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN", note="hostname of a not-ready endpoint"),
    Case("172-0-0-15.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN", note="not ready"),
    Case("bogusendpoint.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case(
        "multi.hdls-multiaddr.testns.svc.cluster.local.",
        "A",
        answer="""
        multi.hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.110
        multi.hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.111
        """,
    ),
    Case(
        "172-0-0-30.svc-dual-stack.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-30.svc-dual-stack.testns.svc.cluster.local. 5 IN A 172.0.0.30",
    ),
    Case(
        "5678-abcd--30.svc-dual-stack.testns.svc.cluster.local.",
        "AAAA",
        answer="5678-abcd--30.svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::30",
    ),
    Case(
        "5678-abcd--10.svc6.testns.svc.cluster.local.",
        "AAAA",
        answer="5678-abcd--10.svc6.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::10",
    ),
    Case(
        "172-0-0-1.shared.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-1.shared.testns.svc.cluster.local. 5 IN A 172.0.0.1",
    ),
    Case(
        "172-0-0-120.hdls-label.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-120.hdls-label.testns.svc.cluster.local. 5 IN A 172.0.0.120",
    ),
    Case(
        "172-0-0-120.svc1.testns.svc.cluster.local.",
        "A",
        "NXDOMAIN",
        note="slice svc1-lbl9x is labelled for hdls-label, not svc1",
    ),
    Case(
        "172-0-0-20.hdlsprtls.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20",
    ),
    Case(
        "172-0-0-100.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="172-0-0-100.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.100",
        note="endpoint_pod_names off: the dashed IP",
    ),
    Case("web-7d4b9c-abcde.hdls-pods.testns.svc.cluster.local.", "A", "NXDOMAIN", note="pod names off"),
    Case(
        "named.hdls-pods.testns.svc.cluster.local.",
        "A",
        answer="named.hdls-pods.testns.svc.cluster.local. 5 IN A 172.0.0.102",
    ),
    Case(
        "dup-name.HDLS1.testns.svc.cluster.local.",
        "A",
        answer="""
        dup-name.HDLS1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.HDLS1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        """,
    ),
]

# ---------------------------------------------------------------- SRV (spec 2.3.2)

SRV = [
    Case(
        "_http._tcp.svc1.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
        extra="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
    ),
    Case(
        "svc1.testns.svc.cluster.local.",
        "SRV",
        answer="svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
        extra="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        note="bare SRV",
    ),
    Case(
        "http.tcp.svc1.testns.svc.cluster.local.",
        "SRV",
        answer="http.tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
        extra="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        note="any two labels are port and protocol; the underscore is optional",
    ),
    Case(
        "_HTTP._TCP.svc1.testns.svc.cluster.local.",
        "SRV",
        answer="_HTTP._TCP.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
        extra="svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
    ),
    Case("_http._udp.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", note="right port, wrong protocol"),
    Case("_https._tcp.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", note="no such port"),
    Case("a.b.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", note="port a, protocol b"),
    Case(
        "_http._tcp.svc-empty.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.svc-empty.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc-empty.testns.svc.cluster.local.",
        extra="svc-empty.testns.svc.cluster.local. 5 IN A 10.0.0.5",
        note="ClusterIP SRV does not depend on endpoints",
    ),
    Case(
        "_http._tcp.svc6.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local.",
        extra="svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1",
    ),
    Case(
        "_http._tcp.svc-dual-stack.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local.",
        extra="""
        svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3
        svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA fd00::3
        """,
        note="2 items, 1 record after de-dup, weight 50, both glue families",
    ),
    Case(
        "svc-dual-stack.testns.svc.cluster.local.",
        "SRV",
        answer="svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local.",
        extra="""
        svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3
        svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA fd00::3
        """,
    ),
    Case(
        "_https._tcp.kubernetes.default.svc.cluster.local.",
        "SRV",
        answer="_https._tcp.kubernetes.default.svc.cluster.local. 5 IN SRV 0 100 443 kubernetes.default.svc.cluster.local.",
        extra="kubernetes.default.svc.cluster.local. 5 IN A 10.0.0.100",
    ),
    Case(
        "_http._tcp.hdls1.testns.svc.cluster.local.",
        "SRV",
        answer="""
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-11.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-12.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local.
        """,
        extra="""
        172-0-0-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11
        172-0-0-12.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.12
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1
        5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2
        """,
        note="6 ready items: weight floor(100/6)=16 counted before the dup-name de-dup",
    ),
    Case(
        "hdls1.testns.svc.cluster.local.",
        "SRV",
        answer="""
        hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-11.hdls1.testns.svc.cluster.local.
        hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-12.hdls1.testns.svc.cluster.local.
        hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.
        hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.
        hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local.
        """,
        extra="""
        172-0-0-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11
        172-0-0-12.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.12
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1
        5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2
        """,
        note="bare SRV on a headless service (the Service has no ports; the slices do)",
    ),
    Case(
        "dup-name.hdls1.testns.svc.cluster.local.",
        "SRV",
        answer="dup-name.hdls1.testns.svc.cluster.local. 5 IN SRV 0 50 80 dup-name.hdls1.testns.svc.cluster.local.",
        extra="""
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        """,
        note="SRV on an endpoint name: that endpoint's ports; 2 items -> 50, one record, two glue",
    ),
    Case(
        "ep1a.svc1.testns.svc.cluster.local.",
        "SRV",
        answer="ep1a.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 ep1a.svc1.testns.svc.cluster.local.",
        extra="ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1",
    ),
    Case(
        "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
        "SRV",
        answer="_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
        extra="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
    ),
    Case(
        "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.",
        "SRV",
        answer="_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
        extra="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
    ),
    Case(
        "_metrics._tcp.kube-dns.kube-system.svc.cluster.local.",
        "SRV",
        answer="_metrics._tcp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 9153 kube-dns.kube-system.svc.cluster.local.",
        extra="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
    ),
    Case("_dns._tcp.kube-dns.kube-system.svc.cluster.local.", "SRV", "NXDOMAIN", note="dns is UDP only"),
    Case(
        "_DNS._UDP.kube-dns.kube-system.svc.cluster.local.",
        "SRV",
        answer="_DNS._UDP.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
        extra="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
    ),
    Case(
        "kube-dns.kube-system.svc.cluster.local.",
        "SRV",
        answer="""
        kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 33 53 kube-dns.kube-system.svc.cluster.local.
        kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 33 9153 kube-dns.kube-system.svc.cluster.local.
        """,
        extra="kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
        note="3 items (53/UDP, 53/TCP, 9153) -> weight 33; 53 collapses to one record",
    ),
    Case(
        "svc-unnamed.testns.svc.cluster.local.",
        "SRV",
        answer="svc-unnamed.testns.svc.cluster.local. 5 IN SRV 0 100 8080 svc-unnamed.testns.svc.cluster.local.",
        extra="svc-unnamed.testns.svc.cluster.local. 5 IN A 10.0.0.7",
        note="bare SRV lists unnamed ports too",
    ),
    Case("_http._tcp.svc-unnamed.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case(
        "hdls-multi.testns2.svc.cluster.local.",
        "SRV",
        answer="""
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 80 172-0-3-21.hdls-multi.testns2.svc.cluster.local.
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 80 172-0-3-22.hdls-multi.testns2.svc.cluster.local.
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 80 172-0-3-23.hdls-multi.testns2.svc.cluster.local.
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 514 172-0-3-21.hdls-multi.testns2.svc.cluster.local.
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 514 172-0-3-22.hdls-multi.testns2.svc.cluster.local.
        hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 16 514 172-0-3-23.hdls-multi.testns2.svc.cluster.local.
        """,
        extra="""
        172-0-3-21.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.21
        172-0-3-22.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.22
        172-0-3-23.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.23
        """,
        note="spec 2.3.2: 3 endpoints x (http/TCP/80, syslog/UDP/514): 6 records, weight 16, 3 glue",
    ),
    Case(
        "_syslog._udp.hdls-multi.testns2.svc.cluster.local.",
        "SRV",
        answer="""
        _syslog._udp.hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 33 514 172-0-3-21.hdls-multi.testns2.svc.cluster.local.
        _syslog._udp.hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 33 514 172-0-3-22.hdls-multi.testns2.svc.cluster.local.
        _syslog._udp.hdls-multi.testns2.svc.cluster.local. 5 IN SRV 0 33 514 172-0-3-23.hdls-multi.testns2.svc.cluster.local.
        """,
        extra="""
        172-0-3-21.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.21
        172-0-3-22.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.22
        172-0-3-23.hdls-multi.testns2.svc.cluster.local. 5 IN A 172.0.3.23
        """,
    ),
    Case("_syslog._tcp.hdls-multi.testns2.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case(
        "_http._tcp.hdls-dup.testns.svc.cluster.local.",
        "SRV",
        answer="""
        _http._tcp.hdls-dup.testns.svc.cluster.local. 5 IN SRV 0 33 80 172-0-0-60.hdls-dup.testns.svc.cluster.local.
        _http._tcp.hdls-dup.testns.svc.cluster.local. 5 IN SRV 0 33 80 172-0-0-61.hdls-dup.testns.svc.cluster.local.
        """,
        extra="""
        172-0-0-60.hdls-dup.testns.svc.cluster.local. 5 IN A 172.0.0.60
        172-0-0-61.hdls-dup.testns.svc.cluster.local. 5 IN A 172.0.0.61
        """,
        note="3 items before de-dup (172.0.0.60 twice): weight 33, not 50",
    ),
    Case(
        "_http._tcp.hdls-ready.testns.svc.cluster.local.",
        "SRV",
        answer="""
        _http._tcp.hdls-ready.testns.svc.cluster.local. 5 IN SRV 0 50 80 172-0-0-40.hdls-ready.testns.svc.cluster.local.
        _http._tcp.hdls-ready.testns.svc.cluster.local. 5 IN SRV 0 50 80 172-0-0-41.hdls-ready.testns.svc.cluster.local.
        """,
        extra="""
        172-0-0-40.hdls-ready.testns.svc.cluster.local. 5 IN A 172.0.0.40
        172-0-0-41.hdls-ready.testns.svc.cluster.local. 5 IN A 172.0.0.41
        """,
        note="dropped endpoints are not counted in N",
    ),
    Case(
        "_http._tcp.hdls-multiaddr.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.hdls-multiaddr.testns.svc.cluster.local. 5 IN SRV 0 50 80 multi.hdls-multiaddr.testns.svc.cluster.local.",
        extra="""
        multi.hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.110
        multi.hdls-multiaddr.testns.svc.cluster.local. 5 IN A 172.0.0.111
        """,
    ),
    Case(
        "_http._tcp.legacy-hdls.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.legacy-hdls.testns.svc.cluster.local. 5 IN SRV 0 100 80 legacy-0.legacy-hdls.testns.svc.cluster.local.",
        extra="legacy-0.legacy-hdls.testns.svc.cluster.local. 5 IN A 172.0.0.80",
        note="v1 Endpoints ports",
    ),
    Case("hdlsprtls.testns.svc.cluster.local.", "SRV", note="portless headless: bare SRV is NODATA"),
    Case(
        "_http._tcp.hdls-mixedports.testns.svc.cluster.local.",
        "SRV",
        answer="_http._tcp.hdls-mixedports.testns.svc.cluster.local. 5 IN SRV 0 100 80 172-0-0-130.hdls-mixedports.testns.svc.cluster.local.",
        extra="172-0-0-130.hdls-mixedports.testns.svc.cluster.local. 5 IN A 172.0.0.130",
        note="a port query selects only the http items: N=1",
    ),
    Case(
        "hdls-mixedports.testns.svc.cluster.local.",
        "SRV",
        answer="hdls-mixedports.testns.svc.cluster.local. 5 IN SRV 0 50 80 172-0-0-130.hdls-mixedports.testns.svc.cluster.local.",
        extra="172-0-0-130.hdls-mixedports.testns.svc.cluster.local. 5 IN A 172.0.0.130",
        note="bare SRV: the portless item counts in N (weight 50) but gives no record",
    ),
    Case(
        "hdls-mixedports.testns.svc.cluster.local.",
        "A",
        answer="""
        hdls-mixedports.testns.svc.cluster.local. 5 IN A 172.0.0.130
        hdls-mixedports.testns.svc.cluster.local. 5 IN A 172.0.0.131
        """,
    ),
    Case("_http._tcp.hdlsprtls.testns.svc.cluster.local.", "SRV", "NXDOMAIN", note="portless: no such port"),
    Case("external.testns.svc.cluster.local.", "SRV", note="SRV on an ExternalName: NODATA"),
]

# ---------------------------------------------------------------- PTR (spec 2.3.3)

PTR = [
    Case(ptr4("10.0.0.1"), "PTR", answer=f"{ptr4('10.0.0.1')} 5 IN PTR svc1.testns.svc.cluster.local."),
    Case(
        "3.0.0.10.in-addr.arpa.",
        "PTR",
        answer="3.0.0.10.in-addr.arpa. 5 IN PTR svc-dual-stack.testns.svc.cluster.local.",
    ),
    Case(
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.",
        "PTR",
        answer="1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa. 5 IN PTR svc6.testns.svc.cluster.local.",
        note="IPv6 ClusterIP 1234:abcd::1",
    ),
    Case(ptr6("fd00::3"), "PTR", answer=f"{ptr6('fd00::3')} 5 IN PTR svc-dual-stack.testns.svc.cluster.local."),
    Case(ptr4("10.0.0.10"), "PTR", answer=f"{ptr4('10.0.0.10')} 5 IN PTR kube-dns.kube-system.svc.cluster.local."),
    Case(ptr4("10.0.0.5"), "PTR", answer=f"{ptr4('10.0.0.5')} 5 IN PTR svc-empty.testns.svc.cluster.local."),
    Case(ptr4("10.0.0.11"), "PTR", answer=f"{ptr4('10.0.0.11')} 5 IN PTR svc-nodeport.testns.svc.cluster.local."),
    Case(
        ptr4("172.0.0.1"),
        "PTR",
        answer=f"""
        {ptr4("172.0.0.1")} 5 IN PTR ep1a.svc1.testns.svc.cluster.local.
        {ptr4("172.0.0.1")} 5 IN PTR 172-0-0-1.shared.testns.svc.cluster.local.
        """,
        note="an endpoint of two services: two PTRs",
    ),
    Case(
        ptr4("172.0.0.2"),
        "PTR",
        answer=f"{ptr4('172.0.0.2')} 5 IN PTR ep1b.svc1.testns.svc.cluster.local.",
        note="endpoint of a ClusterIP service",
    ),
    Case(
        ptr4("172.0.0.11"),
        "PTR",
        answer=f"{ptr4('172.0.0.11')} 5 IN PTR 172-0-0-11.hdls1.testns.svc.cluster.local.",
        note="endpoint without hostname: dashed name",
    ),
    Case(ptr4("172.0.0.13"), "PTR", answer=f"{ptr4('172.0.0.13')} 5 IN PTR dup-name.hdls1.testns.svc.cluster.local."),
    Case(
        ptr6("5678:abcd::1"),
        "PTR",
        answer=f"{ptr6('5678:abcd::1')} 5 IN PTR 5678-abcd--1.hdls1.testns.svc.cluster.local.",
    ),
    Case(
        ptr6("5678:abcd:1::"),
        "PTR",
        answer=f"{ptr6('5678:abcd:1::')} 5 IN PTR 5678-abcd-1--0.hdls-v6.testns.svc.cluster.local.",
    ),
    Case(
        ptr6("5678:abcd::10"),
        "PTR",
        answer=f"{ptr6('5678:abcd::10')} 5 IN PTR 5678-abcd--10.svc6.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.60"),
        "PTR",
        answer=f"{ptr4('172.0.0.60')} 5 IN PTR 172-0-0-60.hdls-dup.testns.svc.cluster.local.",
        note="same address in two slices of one service: one PTR",
    ),
    Case(
        ptr4("172.0.0.40"),
        "PTR",
        answer=f"{ptr4('172.0.0.40')} 5 IN PTR 172-0-0-40.hdls-ready.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.41"),
        "PTR",
        answer=f"{ptr4('172.0.0.41')} 5 IN PTR 172-0-0-41.hdls-ready.testns.svc.cluster.local.",
        note="ready: null",
    ),
    Case(
        ptr4("172.0.0.44"), "PTR", answer=f"{ptr4('172.0.0.44')} 5 IN PTR 172-0-0-44.hdls-pna.testns.svc.cluster.local."
    ),
    Case(
        ptr4("172.0.0.80"),
        "PTR",
        answer=f"{ptr4('172.0.0.80')} 5 IN PTR legacy-0.legacy-hdls.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.85"),
        "PTR",
        answer=f"{ptr4('172.0.0.85')} 5 IN PTR 172-0-0-85.legacy-ip.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.90"),
        "PTR",
        answer=f"{ptr4('172.0.0.90')} 5 IN PTR 172-0-0-90.both-hdls.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.110"),
        "PTR",
        answer=f"{ptr4('172.0.0.110')} 5 IN PTR multi.hdls-multiaddr.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.120"),
        "PTR",
        answer=f"{ptr4('172.0.0.120')} 5 IN PTR 172-0-0-120.hdls-label.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.20"),
        "PTR",
        answer=f"{ptr4('172.0.0.20')} 5 IN PTR 172-0-0-20.hdlsprtls.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.100"),
        "PTR",
        answer=f"{ptr4('172.0.0.100')} 5 IN PTR 172-0-0-100.hdls-pods.testns.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.0.102"), "PTR", answer=f"{ptr4('172.0.0.102')} 5 IN PTR named.hdls-pods.testns.svc.cluster.local."
    ),
    Case(
        ptr4("172.0.1.10"),
        "PTR",
        answer=f"{ptr4('172.0.1.10')} 5 IN PTR 172-0-1-10.kube-dns.kube-system.svc.cluster.local.",
    ),
    Case(
        ptr4("172.0.3.21"),
        "PTR",
        answer=f"{ptr4('172.0.3.21')} 5 IN PTR 172-0-3-21.hdls-multi.testns2.svc.cluster.local.",
    ),
    # negative PTRs: NXDOMAIN with the SOA of the matched reverse zone
    Case(ptr4("172.0.0.15"), "PTR", "NXDOMAIN", note="not-ready endpoint"),
    Case(ptr4("172.0.0.42"), "PTR", "NXDOMAIN", note="terminating endpoint"),
    Case(ptr4("172.0.0.43"), "PTR", "NXDOMAIN", note="not-ready endpoint"),
    Case(ptr4("172.0.0.50"), "PTR", "NXDOMAIN", note="svc-empty's not-ready endpoint"),
    Case(ptr4("172.0.0.81"), "PTR", "NXDOMAIN", note="v1 Endpoints notReadyAddresses"),
    Case(ptr4("172.0.0.91"), "PTR", "NXDOMAIN", note="v1 Endpoints of a service that has slices"),
    Case(ptr4("172.0.2.1"), "PTR", "NXDOMAIN", note="a pod IP that is no endpoint"),
    Case(ptr4("10.99.99.99"), "PTR", "NXDOMAIN", note="unknown IP"),
    Case(ptr6("dead:beef::1"), "PTR", "NXDOMAIN", note="unknown IPv6: SOA of ip6.arpa."),
    Case("foo.in-addr.arpa.", "PTR", "NXDOMAIN", note="forward-style name inside a reverse zone"),
    Case("svc1.testns.svc.cluster.local.", "PTR", note="PTR on an existing forward name: NODATA"),
]

# ---------------------------------------------------------------- ExternalName (spec 2.5)

EXTERNAL_NAME = [
    Case(
        "external.testns.svc.cluster.local.",
        "CNAME",
        answer="external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
    ),
    Case(
        "external.testns.svc.cluster.local.",
        "A",
        answer="external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
        note="out-of-zone target and no forwarder yet: the CNAME alone",
    ),
    Case(
        "external.testns.svc.cluster.local.",
        "AAAA",
        answer="external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
        note="out-of-zone target and no forwarder yet: the CNAME alone",
    ),
    Case("external.testns.svc.cluster.local.", "TXT", note="quirk: NODATA without the CNAME"),
    Case("endpoint.external.testns.svc.cluster.local.", "A", "NXDOMAIN", note="nothing below an ExternalName"),
    Case("endpoint.external.testns.svc.cluster.local.", "CNAME", "NXDOMAIN"),
    Case("a.b.external.testns.svc.cluster.local.", "A", "NXDOMAIN", note="spec 2.5: a.b.external is NXDOMAIN"),
    Case(
        "ext-in-zone.testns.svc.cluster.local.",
        "A",
        answer="""
        ext-in-zone.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.
        svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
        """,
        ordered=True,
        note="in-zone target chased locally",
    ),
    Case(
        "ext-in-zone.testns.svc.cluster.local.",
        "CNAME",
        answer="ext-in-zone.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
        note="CNAME query: the CNAME alone, not chased",
    ),
    Case(
        "ext-in-zone.testns.svc.cluster.local.",
        "AAAA",
        answer="ext-in-zone.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
        chain_ends_negative=True,
        note="spec silent. CoreDNS (backend_lookup.go AAAA) drops the CNAME when the in-zone target has no "
        "AAAA; dnsd answers as RFC 2308 2.2 describes a NODATA reached through a CNAME: the CNAME, and the "
        "SOA in authority (a documented deviation, README 'How it answers')",
    ),
    Case(
        "chain5-1.testns.svc.cluster.local.",
        "A",
        answer="""
        chain5-1.testns.svc.cluster.local. 5 IN CNAME chain5-2.testns.svc.cluster.local.
        chain5-2.testns.svc.cluster.local. 5 IN CNAME chain5-3.testns.svc.cluster.local.
        chain5-3.testns.svc.cluster.local. 5 IN CNAME chain5-4.testns.svc.cluster.local.
        chain5-4.testns.svc.cluster.local. 5 IN CNAME chain5-5.testns.svc.cluster.local.
        chain5-5.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.
        svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
        """,
        ordered=True,
        note="chain of 5 answered in full, in order",
    ),
    Case(
        "chain5-4.testns.svc.cluster.local.",
        "A",
        answer="""
        chain5-4.testns.svc.cluster.local. 5 IN CNAME chain5-5.testns.svc.cluster.local.
        chain5-5.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.
        svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
        """,
        ordered=True,
    ),
    Case(
        "chain5-1.testns.svc.cluster.local.",
        "CNAME",
        answer="chain5-1.testns.svc.cluster.local. 5 IN CNAME chain5-2.testns.svc.cluster.local.",
    ),
    Case("chain12-1.testns.svc.cluster.local.", "A", "SERVFAIL", note="chain of 12: too long (robustness P12)"),
    Case("loop-a.testns.svc.cluster.local.", "A", "SERVFAIL", note="loop a -> b -> a (robustness P12)"),
    Case("loop-b.testns.svc.cluster.local.", "AAAA", "SERVFAIL", note="loop b -> a -> b"),
    Case(
        "loop-a.testns.svc.cluster.local.",
        "CNAME",
        answer="loop-a.testns.svc.cluster.local. 5 IN CNAME loop-b.testns.svc.cluster.local.",
        note="a CNAME query is not chased, so the loop does not matter",
    ),
    Case(
        "ext-trailing-dot.testns.svc.cluster.local.",
        "CNAME",
        answer="ext-trailing-dot.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
        note="a trailing dot in externalName is accepted",
    ),
    Case("ext-ip.testns.svc.cluster.local.", "A", "NXDOMAIN", note="quirk: an externalName that is an IP"),
    Case("ext-ip.testns.svc.cluster.local.", "CNAME", "NXDOMAIN"),
]

# ---------------------------------------------------------------- apex, SOA, dns-version (spec 2.2; CoreDNS's apex)

APEX = [
    Case(
        "cluster.local.",
        "SOA",
        answer="cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5",
    ),
    Case("cluster.local.", "A", note="apex A: NODATA"),
    Case("cluster.local.", "AAAA"),
    Case("cluster.local.", "SRV"),
    Case("cluster.local.", "MX"),
    Case("cluster.local.", "HINFO"),
    Case("cluster.local.", "TXT", note="the apex exists: NODATA (RFC 8020; CoreDNS answers NXDOMAIN)"),
    Case(
        "Cluster.local.",
        "NS",
        answer="Cluster.local. 5 IN NS ns.dns.Cluster.local.",
        note="CoreDNS's quirk (spec 2.1: a mixed-case apex NS fails its name == zone test and gets NODATA) is a "
        "case-sensitivity bug against RFC 4343; dnsd answers the NS (documented deviation). The fixture "
        "server has no non-loopback listen address, so no glue",
    ),
    Case("dns-version.cluster.local.", "TXT", answer='dns-version.cluster.local. 28800 IN TXT "1.1.0"'),
    Case("dns-version.cluster.local.", "A", "NXDOMAIN", note="quirk: non-TXT on dns-version"),
    Case("dns-version.cluster.local.", "AAAA", "NXDOMAIN"),
    Case("dns-version.cluster.local.", "SRV", "NXDOMAIN"),
    Case("svc1.testns.svc.cluster.local.", "SOA", note="SOA below the apex: NODATA"),
    Case("testns.svc.cluster.local.", "SOA"),
]

# ---------------------------------------------------------------- NXDOMAIN vs NODATA (RFC 2308, RFC 8020; CoreDNS `namespaces`)

NEGATIVE = [
    Case("svc1.testns.svc.cluster.local.", "TXT", note="existing service, missing type"),
    Case("svc1.testns.svc.cluster.local.", "CNAME"),
    Case("svc1.testns.svc.cluster.local.", "MX"),
    Case("svc1.testns.svc.cluster.local.", "HINFO"),
    Case("svc1.testns.svc.cluster.local.", "CAA"),
    Case("svc1.testns.svc.cluster.local.", "NS", note="NS below the apex"),
    Case("svc1.testns.svc.cluster.local.", "MB", note="CoreDNS: types without a handler get the hidden A lookup"),
    Case("hdlsprtls.testns.svc.cluster.local.", "TXT", note="existing headless service"),
    Case("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", note="missing service"),
    Case("svc0.testns.svc.cluster.local.", "AAAA", "NXDOMAIN"),
    Case("svc0.testns.svc.cluster.local.", "MX", "NXDOMAIN", note="hidden A lookup says: no such name"),
    Case("svc0.testns.svc.cluster.local.", "HINFO", "NXDOMAIN"),
    Case("bogusendpoint.svc0.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("testns.svc.cluster.local.", "A", note="existing namespace: NODATA"),
    Case("testns.svc.cluster.local.", "SRV"),
    Case("testns.svc.cluster.local.", "NS"),
    Case("testns.svc.cluster.local.", "TXT", note="empty non-terminal: NODATA (RFC 8020; CoreDNS: NXDOMAIN)"),
    Case("kube-system.svc.cluster.local.", "AAAA"),
    Case("nons.svc.cluster.local.", "A", "NXDOMAIN", note="no Namespace object"),
    Case("ghost.nons.svc.cluster.local.", "A", "NXDOMAIN", note="service whose namespace has no Namespace object"),
    Case("ghost.nons.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("_http._tcp.ghost.nons.svc.cluster.local.", "SRV", "NXDOMAIN"),
    Case("spooky.ghost.nons.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("svc0.svc-nons.svc.cluster.local.", "A", "NXDOMAIN", note="nonexistent namespace"),
    Case("svc.cluster.local.", "A", note="empty non-terminal: NODATA"),
    Case("svc.cluster.local.", "NS"),
    Case("svc.cluster.local.", "TXT", note="empty non-terminal: NODATA (RFC 8020; CoreDNS: NXDOMAIN)"),
    Case("pod.cluster.local.", "A", note="empty non-terminal: NODATA"),
    Case("pod.cluster.local.", "AAAA"),
    Case("foo.cluster.local.", "A", "NXDOMAIN", note="second label neither svc nor pod"),
    Case("foo.cluster.local.", "NS", "NXDOMAIN"),
    Case("foo.svc.cluster.local.", "NS", "NXDOMAIN"),
    Case("100.0.0.10.cluster.local.", "A", "NXDOMAIN"),
    Case("a.b.c.svc1.testns.svc.cluster.local.", "A", "NXDOMAIN", note="too many labels"),
    Case("a.b.c.hdls1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", note="too many labels"),
    Case("*.testns.svc.cluster.local.", "A", "NXDOMAIN", note="no wildcards since CoreDNS 1.9"),
    Case("*.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("svc1.*.svc.cluster.local.", "A", "NXDOMAIN"),
    Case("any.testns.svc.cluster.local.", "A", "NXDOMAIN", note="'any' is no wildcard either"),
    Case("_*._*.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN"),
]

# ---------------------------------------------------------------- case (spec 2.1)

CASE = [
    Case(
        "SvC1.TeStNs.SvC.cLuStEr.LoCaL.",
        "A",
        answer="SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN A 10.0.0.1",
    ),
    Case(
        "_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.",
        "SRV",
        answer="_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL.",
        extra="svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1",
        note="spec 2.1 example: the zone part of the target as asked, <svc>.<ns> from the objects",
    ),
    Case(
        "_http._tcp.HDLS1.testns.svc.CLUSTER.local.",
        "SRV",
        answer="""
        _http._tcp.HDLS1.testns.svc.CLUSTER.local. 5 IN SRV 0 16 80 172-0-0-11.hdls1.testns.svc.CLUSTER.local.
        _http._tcp.HDLS1.testns.svc.CLUSTER.local. 5 IN SRV 0 16 80 172-0-0-12.hdls1.testns.svc.CLUSTER.local.
        _http._tcp.HDLS1.testns.svc.CLUSTER.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.CLUSTER.local.
        _http._tcp.HDLS1.testns.svc.CLUSTER.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.CLUSTER.local.
        _http._tcp.HDLS1.testns.svc.CLUSTER.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.CLUSTER.local.
        """,
        extra="""
        172-0-0-11.hdls1.testns.svc.CLUSTER.local. 5 IN A 172.0.0.11
        172-0-0-12.hdls1.testns.svc.CLUSTER.local. 5 IN A 172.0.0.12
        dup-name.hdls1.testns.svc.CLUSTER.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.CLUSTER.local. 5 IN A 172.0.0.14
        5678-abcd--1.hdls1.testns.svc.CLUSTER.local. 5 IN AAAA 5678:abcd::1
        5678-abcd--2.hdls1.testns.svc.CLUSTER.local. 5 IN AAAA 5678:abcd::2
        """,
    ),
    Case(
        "not-a-service.testns.svc.ClUsTeR.lOcAl.",
        "A",
        "NXDOMAIN",
        note="SOA owner, MNAME and RNAME spelled as in the query",
    ),
    Case("TESTNS.svc.Cluster.Local.", "A", note="NODATA; SOA owner Cluster.Local."),
    Case(
        "Cluster.local.",
        "SOA",
        answer="Cluster.local. 5 IN SOA ns.dns.Cluster.local. hostmaster.Cluster.local. SERIAL 7200 1800 86400 5",
    ),
    Case(
        "DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL.",
        "A",
        answer="""
        DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL. 5 IN A 172.0.0.13
        DUP-NAME.HDLS1.TESTNS.SVC.CLUSTER.LOCAL. 5 IN A 172.0.0.14
        """,
    ),
    Case(
        "5678-ABCD--1.hdls1.testns.svc.cluster.local.",
        "AAAA",
        answer="5678-ABCD--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
        note="dashed-IP endpoint names match case-insensitively too",
    ),
    Case(
        "DNS-VERSION.Cluster.Local.",
        "TXT",
        answer='DNS-VERSION.Cluster.Local. 28800 IN TXT "1.1.0"',
    ),
    Case(
        "EXTERNAL.testns.svc.cluster.local.",
        "CNAME",
        answer="EXTERNAL.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
    ),
    Case(
        "1.0.0.10.IN-ADDR.ARPA.",
        "PTR",
        answer="1.0.0.10.IN-ADDR.ARPA. 5 IN PTR svc1.testns.svc.cluster.local.",
        note="PTR targets use the primary zone",
    ),
    Case("99.99.99.10.In-Addr.Arpa.", "PTR", "NXDOMAIN", note="SOA owner In-Addr.Arpa."),
    Case("svc1.TESTNS.svc.cluster.local.", "A", answer="svc1.TESTNS.svc.cluster.local. 5 IN A 10.0.0.1"),
]

CASES = CLUSTER_IP + HEADLESS + ENDPOINT_NAMES + SRV + PTR + EXTERNAL_NAME + APEX + NEGATIVE + CASE


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_record(fixture_server: DnsdHandle, case: Case) -> None:
    check(fixture_server, case)


# ---------------------------------------------------------------- apex NS and ns.dns (CoreDNS's apex)


def _assert_server_addresses(section: list[dns.rrset.RRset], owner: str) -> None:
    for rrset in section:
        assert rrset.name.to_text() == owner, f"glue owned by {rrset.name}, expected {owner}"
        assert rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA), rrset
        assert rrset.ttl == 5, rrset
        for rd in rrset:
            assert not ipaddress.ip_address(rd.address).is_loopback, f"loopback address in {rrset}"


def test_apex_ns(fixture_server: DnsdHandle) -> None:
    """No server IP is in any slice, so the NS is ns.dns.<zone> with the server's own IPs as glue."""
    reply = query(fixture_server, "cluster.local.", "NS", edns=0)
    assert rcode_text(reply) == "NOERROR"
    assert reply.flags & dns.flags.AA
    assert exact_lines(reply.answer) == expected_lines("cluster.local. 5 IN NS ns.dns.cluster.local.", None)
    assert reply.authority == []
    _assert_server_addresses(reply.additional, "ns.dns.cluster.local.")


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_ns_dns_addresses(fixture_server: DnsdHandle, qtype: str) -> None:
    """ns.dns.<zone> answers the server's own non-loopback addresses (possibly none of a family)."""
    reply = query(fixture_server, "ns.dns.cluster.local.", qtype, edns=0)
    assert rcode_text(reply) == "NOERROR"
    assert reply.flags & dns.flags.AA
    _assert_server_addresses(reply.answer, "ns.dns.cluster.local.")
    for rrset in reply.answer:
        assert dns.rdatatype.to_text(rrset.rdtype) == qtype
    if not reply.answer:
        assert exact_lines(reply.authority) == expected_lines(soa_line("cluster.local."), _soa_serial(reply))


def test_soa_serial_is_the_same_in_answers_and_denials(fixture_server: DnsdHandle) -> None:
    """One store snapshot, one serial: the apex SOA and a negative answer's SOA agree."""
    positive = query(fixture_server, "cluster.local.", "SOA")
    negative = query(fixture_server, "svc0.testns.svc.cluster.local.", "A")
    s1, s2 = _soa_serial(positive), _soa_serial(negative)
    assert s1 is not None and s2 is not None and s1 > 0
    assert s1 == s2


def test_axfr_refused(fixture_server: DnsdHandle) -> None:
    """Spec 3.7: AXFR is REFUSED unless a transfer plugin is configured (dnsd has none)."""
    reply = query(fixture_server, "cluster.local.", "AXFR", tcp=True)
    assert rcode_text(reply) == "REFUSED"
    assert reply.answer == []

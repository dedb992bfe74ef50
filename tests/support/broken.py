"""A scripted authoritative server that misbehaves with QNAME minimisation as real broken servers do (RFC 9156 3).

It serves zones from zone-file text on port 53 of its own address (UDP), answers like an authoritative server
(answers, NODATA, NXDOMAIN with the SOA, referrals with glue for cuts inside a zone), except for names that are
empty non-terminals (no records of their own, some below them), where each zone has one fault:

    nxdomain  NXDOMAIN (with the SOA), as servers that do not know about empty non-terminals (RFC 8020 3)
    formerr   FORMERR for QTYPE A
    notimp    NOTIMP for QTYPE A
    drop      no answer at all

Every query it receives goes into the hierarchy's log (support.hierarchy.Logged).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone

FAULTS = ("nxdomain", "formerr", "notimp", "drop")


@dataclass(frozen=True)
class BrokenZone:
    origin: str  # absolute, lower case
    fault: str  # one of FAULTS
    text: str  # zone-file text, absolute names


class BrokenServer:
    """UDP port 53 of ip, answering for the zones with their faults; `record(ip, qname, qtype, transport)` logs."""

    def __init__(self, ip: str, zones: list[BrokenZone], record: Callable[[str, str, str, str], None]) -> None:
        for z in zones:
            if z.fault not in FAULTS:
                raise ValueError(f"unknown fault {z.fault!r}")
        self.ip = ip
        self.record = record
        self.zones = [
            (dns.name.from_text(z.origin), z.fault, dns.zone.from_text(z.text, z.origin, relativize=False))
            for z in zones
        ]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((ip, 53))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"broken {ip}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self.udp], [], [], 0.1)
            if not ready:
                continue
            data, addr = self.udp.recvfrom(65535)
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            if not query.question:
                continue
            q = query.question[0]
            self.record(self.ip, q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype), "udp")
            reply = self.answer(query)
            if reply is not None:
                self.udp.sendto(reply.to_wire(), addr)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The reply to a query (None: dropped)."""
        q = query.question[0]
        reply = dns.message.make_response(query)
        reply.flags &= ~dns.flags.RA
        found = [(o, f, z) for o, f, z in self.zones if q.name.is_subdomain(o)]
        if not found:
            reply.set_rcode(dns.rcode.REFUSED)
            return reply
        origin, fault, zone = max(found, key=lambda t: len(t[0]))
        soa = zone.find_rrset(origin, dns.rdatatype.SOA)
        negative = dns.rrset.from_rdata_list(origin, min(soa.ttl, soa[0].minimum), list(soa))
        # A cut between the origin and the name: a referral with the glue inside the zone (RFC 1034 4.3.2).
        for depth in range(len(origin) + 1, len(q.name) + 1):
            cut = q.name.split(depth)[1]
            ns = zone.get_rrset(cut, dns.rdatatype.NS)
            if ns is not None:
                reply.authority.append(ns)
                for rd in ns:
                    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        glue = zone.get_rrset(rd.target, rdtype)
                        if glue is not None:
                            reply.additional.append(glue)
                return reply
        reply.flags |= dns.flags.AA
        node = zone.get_node(q.name)
        if node is not None and len(node.rdatasets) > 0:
            data = zone.get_rrset(q.name, q.rdtype)
            if data is not None:
                reply.answer.append(data)
            else:
                reply.authority.append(negative)
            return reply
        ent = any(n != q.name and n.is_subdomain(q.name) for n in zone.nodes)
        if not ent:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(negative)
            return reply
        if fault == "drop":
            return None
        if fault == "nxdomain":
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(negative)
        elif q.rdtype == dns.rdatatype.A:
            reply.set_rcode(dns.rcode.FORMERR if fault == "formerr" else dns.rcode.NOTIMP)
            reply.flags &= ~dns.flags.AA
        else:
            reply.authority.append(negative)
        return reply

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.udp.close()

"""Zone transfer requests: NOTIMP over UDP, REFUSED over TCP (none configured), for AXFR and for an IXFR that
carries the client's SOA in authority as RFC 1995 asks."""

from __future__ import annotations

import socket

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from support import DnsdHandle, read_tcp_message, tcp_frame


def _request(rdtype: str, with_soa: bool) -> bytes:
    q = dns.message.make_query("cluster.local.", rdtype)
    if with_soa:
        q.authority.append(
            dns.rrset.from_text(
                "cluster.local.", 5, "IN", "SOA", "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"
            )
        )
    return q.to_wire()


CASES = [
    ("AXFR", False, "udp", dns.rcode.NOTIMP),
    ("AXFR", False, "tcp", dns.rcode.REFUSED),
    ("IXFR", True, "udp", dns.rcode.NOTIMP),
    ("IXFR", True, "tcp", dns.rcode.REFUSED),
    ("IXFR", False, "tcp", dns.rcode.REFUSED),
]


@pytest.mark.parametrize(
    ("rdtype", "with_soa", "transport", "rcode"), CASES, ids=[f"{c[0]}-soa{c[1]}-{c[2]}" for c in CASES]
)
def test_transfer_requests(fixture_server: DnsdHandle, rdtype: str, with_soa: bool, transport: str, rcode: int) -> None:
    wire = _request(rdtype, with_soa)
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(wire, fixture_server.addr)
            reply = s.recv(65535)
    else:
        with socket.create_connection(fixture_server.addr, timeout=2) as s:
            s.sendall(tcp_frame(wire))
            got = read_tcp_message(s)
            assert got is not None
            reply = got
    assert reply[:2] == wire[:2], "ID echoed"
    assert reply[2] & 0x80, "QR set"
    assert reply[3] & 0x0F == rcode, f"rcode {reply[3] & 0x0F}, expected {rcode}"

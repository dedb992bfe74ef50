"""Hostile UDP clients: one spoofed datagram must not silence the replies to the others in its batch.

A datagram forged through a raw socket (we run as root) carries a source the kernel will not send to: port 0
(sendto fails with EINVAL; RFC 768 calls port 0 "no port") or the broadcast address (EACCES without
SO_BROADCAST). sendmmsg stops at the first message it cannot send, so before the fix every reply after the
forged one in the batch was dropped. The server loop is held while the datagrams queue up, so they are read by
one recvmmsg call (the test checks that it was one batch).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, run_dnsd, wait_until

from dnsd.transport import udp_batch

PATHS = ["batch", "plain"] if udp_batch.available() else ["plain"]
NAME = "svc1.testns.svc.cluster.local."
CLIENTS = 10

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets (IP_HDRINCL) need root")


@dataclass(frozen=True)
class Forged:
    what: str
    source: str  # the forged source address
    port: int  # the forged source port
    unsendable_reply: bool  # the server reads it, answers it, and the kernel refuses the reply


FORGED = [
    Forged("source port 0", "127.0.0.1", 0, False),  # dropped on receive: no reply is even tried
    Forged("broadcast source", "255.255.255.255", 5353, True),  # a reply is made; sendmmsg fails on it (EACCES)
]
# Where the forged datagram sits in the batch: first, in the middle, second to last (one reply after it), last.
POSITIONS = [0, CLIENTS // 2, CLIENTS - 1, CLIENTS]
WARM_ROUNDS = 2  # batches of normal queries first, so the send slots past this batch hold older replies


def start(path: str) -> DnsdHandle:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DNSD_UDP_BATCH", "1" if path == "batch" else "0")
        return run_dnsd(base_config(FIXTURE_CLUSTER))


@pytest.fixture(params=PATHS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, DnsdHandle]]:
    handle = start(request.param)
    yield request.param, handle
    handle.stop()


def query_wire(qid: int) -> bytes:
    q = dns.message.make_query(NAME, "A")
    q.id = qid
    return q.to_wire()


def forged_datagram(src: str, sport: int, dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 header and a UDP header by hand (RFC 791, RFC 768); the UDP checksum 0 means "none" over IPv4,
    the kernel fills in the IP total length and header checksum for IP_HDRINCL sockets (raw(7))."""
    udp = struct.pack("!HHHH", sport, dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, socket.inet_aton(src), socket.inet_aton(dst[0]),
    )  # fmt: skip
    return ip + udp


class Gate:
    """Holds the server's event loop (a callback that waits on an event) while datagrams queue on its socket."""

    def __init__(self, handle: DnsdHandle) -> None:
        self.release = threading.Event()
        self.held = threading.Event()
        handle.loop.call_soon_threadsafe(self._hold)
        assert self.held.wait(5), "the server loop did not run the gate"

    def _hold(self) -> None:
        self.held.set()
        self.release.wait(10)  # bounded: the test opens it at once after sending


@pytest.mark.parametrize("position", POSITIONS, ids=["first", "middle", "second-to-last", "last"])
@pytest.mark.parametrize("forged", FORGED, ids=lambda f: f.what)
def test_forged_datagram_does_not_silence_its_batch(
    server: tuple[str, DnsdHandle], forged: Forged, position: int
) -> None:
    path, handle = server
    listener = handle.app.server.udp[0]
    batch_sizes: list[int] = []
    if listener.batch is not None:
        real = listener.batch.recvmmsg

        def recording(fd: int, msgs: int, vlen: int, flags: int, timeout: None) -> int:
            n = real(fd, msgs, vlen, flags, timeout)
            batch_sizes.append(n)
            return n

        handle.call(lambda: setattr(listener.batch, "recvmmsg", recording))
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        # Earlier batches, twice the size of the forged one: a send that ran past this batch's replies would
        # resend their stale replies (a client would then get more than one reply).
        gate = Gate(handle)
        try:
            for r in range(WARM_ROUNDS):
                for i, sock in enumerate(clients):
                    sock.sendto(query_wire(2000 + r * 100 + i), handle.addr)
        finally:
            gate.release.set()
        for sock in clients:
            sock.settimeout(2.0)
            got = sorted(dns.message.from_wire(sock.recv(65535)).id for _ in range(WARM_ROUNDS))
            assert got == sorted(2000 + r * 100 + clients.index(sock) for r in range(WARM_ROUNDS))
        spoofed = forged_datagram(forged.source, forged.port, handle.addr, query_wire(0xF00D))
        gate = Gate(handle)
        try:
            for i, sock in enumerate(clients):
                if i == position:
                    raw.sendto(spoofed, handle.addr)
                sock.sendto(query_wire(1000 + i), handle.addr)
            if position == CLIENTS:
                raw.sendto(spoofed, handle.addr)
        finally:
            gate.release.set()
        for i, sock in enumerate(clients):
            sock.settimeout(2.0)
            try:
                reply = dns.message.from_wire(sock.recv(65535))
            except TimeoutError:
                pytest.fail(f"client {i} of {CLIENTS} got no reply ({forged.what} at position {position}, {path})")
            assert reply.id == 1000 + i
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply.to_text()
        # And nothing more (no stale or repeated reply): 0.2 s of silence on all the clients at once.
        extra, _, _ = select.select(clients, [], [], 0.2)
        assert not extra, f"clients {[clients.index(s) for s in extra]} got an extra datagram"
        if path == "batch":
            assert WARM_ROUNDS * CLIENTS in batch_sizes, f"the warm-up was not one batch: {batch_sizes}"
            assert CLIENTS + 1 in batch_sizes, f"the datagrams were not read as one batch: {batch_sizes}"
        want_errors = 1 if forged.unsendable_reply else 0
        wait_until(lambda: listener.send_errors >= want_errors, timeout=2.0)
        assert handle.call(lambda: listener.send_errors) == want_errors
    finally:
        raw.close()
        for sock in clients:
            sock.close()

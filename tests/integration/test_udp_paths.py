"""Both UDP paths (recvmmsg/sendmmsg batches, and recvfrom/sendto) answer the same, and in a batch where some
datagrams get no reply every reply still goes to its own sender."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, query, run_dnsd

from dnsd.transport import udp_batch

PATHS = ["batch", "plain"] if udp_batch.available() else ["plain"]


def start(path: str, listen: str = "127.0.0.1:0") -> DnsdHandle:
    """A server whose UDP listener uses the given path (DNSD_UDP_BATCH is read when the App is built)."""
    cfg = base_config(FIXTURE_CLUSTER)
    cfg["listen"] = [listen]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DNSD_UDP_BATCH", "1" if path == "batch" else "0")
        return run_dnsd(cfg)


@pytest.fixture(params=PATHS)
def server(request: pytest.FixtureRequest) -> Iterator[DnsdHandle]:
    handle = start(request.param)
    listener = handle.app.server.udp[0]
    assert (listener.batch is not None) == (request.param == "batch")
    yield handle
    handle.stop()


def _query(name: str, qid: int, rdtype: str = "A") -> bytes:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q.to_wire()


def _response_bit(wire: bytes) -> bytes:
    return wire[:2] + bytes((wire[2] | 0x80,)) + wire[3:]  # a QR=1 message: must get no reply


@dataclass(frozen=True)
class Sent:
    kind: str  # "good", "qr", "short", "formerr"
    data: bytes
    expect_reply: bool


def _mix(qid_base: int) -> list[Sent]:
    good = _query("svc1.testns.svc.cluster.local.", qid_base)
    return [
        Sent("good", good, True),
        Sent("qr", _response_bit(_query("svc1.testns.svc.cluster.local.", qid_base + 1)), False),
        Sent("short", b"\x12\x34\x01", False),
        Sent("formerr", struct.pack("!HHHHHH", qid_base + 3, 0x0100, 0, 0, 0, 0), True),
        Sent("nx", _query("nope.testns.svc.cluster.local.", qid_base + 4), True),
        Sent("qr", _response_bit(_query("nope.testns.svc.cluster.local.", qid_base + 5)), False),
        Sent("good", _query("svc1.testns.svc.cluster.local.", qid_base + 6), True),
    ]


def _drain(sock: socket.socket, want: int) -> list[bytes]:
    got: list[bytes] = []
    sock.settimeout(2.0)
    while len(got) < want:
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            break
    sock.settimeout(0.2)
    try:  # anything beyond what was expected is a wrong reply
        while True:
            got.append(sock.recv(65535))
    except TimeoutError:
        pass
    return got


def test_each_reply_goes_to_its_own_sender(server: DnsdHandle) -> None:
    """Eight clients each send bursts mixing queries with packets that get no reply; every client gets exactly
    the replies to its own queries (IDs and questions match), however the server batches them."""
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    try:
        expected: dict[int, set[int]] = {}
        for c, sock in enumerate(clients):
            sock.bind(("127.0.0.1", 0))
            expected[c] = set()
        for burst in range(5):
            for c, sock in enumerate(clients):
                base = (c << 12) | (burst << 4)
                for sent in _mix(base):
                    sock.sendto(sent.data, server.addr)
                    if sent.expect_reply:
                        expected[c].add(struct.unpack("!H", sent.data[:2])[0])
        for c, sock in enumerate(clients):
            replies = _drain(sock, len(expected[c]))
            ids = [struct.unpack("!H", r[:2])[0] for r in replies]
            assert sorted(ids) == sorted(expected[c]), f"client {c}: got IDs {sorted(ids)}"
            for r in replies:
                assert r[2] & 0x80, "every reply has QR set"
    finally:
        for sock in clients:
            sock.close()


CASES: list[tuple[str, str, Callable[[dns.message.Message], bool]]] = [
    ("svc1.testns.svc.cluster.local.", "A", lambda m: m.rcode() == dns.rcode.NOERROR and len(m.answer) == 1),
    ("SVC1.TestNS.svc.cluster.local.", "A", lambda m: m.question[0].name.to_text() == "SVC1.TestNS.svc.cluster.local."),
    ("nope.testns.svc.cluster.local.", "A", lambda m: m.rcode() == dns.rcode.NXDOMAIN and len(m.authority) == 1),
    ("example.com.", "A", lambda m: m.rcode() == dns.rcode.REFUSED),
]


@pytest.mark.parametrize(("name", "rdtype", "ok"), CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_answers_are_the_same_on_both_paths(
    server: DnsdHandle, name: str, rdtype: str, ok: Callable[[dns.message.Message], bool]
) -> None:
    counters = server.app.engine.counters
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        for qid in (1, 2, 3):  # the first is answered by the full path, the next from the fast path
            hits = server.call(lambda: counters.fast_hits)
            sock.sendto(_query(name, qid, rdtype), server.addr)
            reply = dns.message.from_wire(sock.recv(65535))
            assert reply.id == qid
            assert ok(reply), reply.to_text()
            # REFUSED is not cached; a negative answer is kept from its second ask (engine/fastpath.py), so its
            # third is the first exact-query hit.
            first_hit = 3 if reply.rcode() == dns.rcode.NXDOMAIN else 2
            if qid >= first_hit and reply.rcode() != dns.rcode.REFUSED:
                assert server.call(lambda: counters.fast_hits) == hits + 1, "a repeat must be an exact-query hit"


@pytest.mark.parametrize("path", PATHS)
def test_ipv6_listener(path: str) -> None:
    """An IPv6 listen address ("[::1]:0") answers over UDP (either path) and TCP."""
    handle = start(path, "[::1]:0")
    try:
        assert handle.host == "::1"
        for tcp in (False, True, False):
            reply = query(handle, "svc1.testns.svc.cluster.local.", "A", tcp=tcp)
            assert [rd.address for rd in reply.answer[0]] == ["10.0.0.1"]
    finally:
        handle.stop()


@pytest.mark.parametrize("path", PATHS)
def test_stdlib_event_loop(path: str) -> None:
    """Without uvloop dnsd runs on asyncio's own loop: UDP (either path) and TCP answer there too."""
    cfg = base_config(FIXTURE_CLUSTER)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DNSD_UDP_BATCH", "1" if path == "batch" else "0")
        handle = run_dnsd(cfg, stdlib_loop=True)
    try:
        assert type(handle.loop).__module__.startswith("asyncio")
        for tcp in (False, True, False):
            reply = query(handle, "svc1.testns.svc.cluster.local.", "A", tcp=tcp)
            assert [rd.address for rd in reply.answer[0]] == ["10.0.0.1"]
    finally:
        handle.stop()

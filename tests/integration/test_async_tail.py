"""The engine's async tail, through real sockets: a link that waits does not hold up other queries (UDP, and TCP
out of order per RFC 7766 6.2.1.1), the number waiting is bounded (shed with SERVFAIL), each waits at most the
deadline, and an exception in a waiting link becomes SERVFAIL in the one place.

The waiting link is a test link (GateLink) added to the chain's tail of an in-process server: names under
gate.test. wait until the test opens their gate; names under now.test. are answered at once from the tail.
Forwarding and recursion (later issues) are the production links that will sit there.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.rcode
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, read_tcp_message, run_dnsd, tcp_frame, wait_until

from dnsd.engine.context import QueryContext
from dnsd.proto.answer import NOERROR, RR, A, Answer
from dnsd.proto.wire import Query


class GateLink:
    """Answers `<anything>.gate.test.` with 192.0.2.1 once the test opens that name's gate; `now.test.` at once."""

    name = "gate"

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: set[str] = set()

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None:
        assert ctx.client is not None, "the tail knows who asked"
        name = q.name_text
        if name.endswith("boom.test."):
            raise RuntimeError("a link failed")
        if name.endswith("gate.test."):
            self.waiting.add(name)
            await self.gate(name).wait()
            self.waiting.discard(name)
        elif not name.endswith("now.test."):
            return None
        return Answer(NOERROR, [RR(q.labels, A, 30, ("192.0.2.1",))], aa=False, cacheable=False)


@pytest.fixture()
def gated() -> Iterator[tuple[DnsdHandle, GateLink]]:
    cfg = base_config(FIXTURE_CLUSTER)
    cfg["tcp"] = {"max_pipeline": 3}
    handle = run_dnsd(cfg)
    link = GateLink()
    handle.call(lambda: handle.app.chain.tail.append(link))
    try:
        yield handle, link
    finally:
        handle.call(lambda: [e.set() for e in link.gates.values()])
        handle.stop()


def _open(handle: DnsdHandle, link: GateLink, name: str) -> None:
    handle.call(lambda: link.gate(name).set())


def _wire(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def _udp_recv(sock: socket.socket, timeout: float) -> dns.message.Message | None:
    sock.settimeout(timeout)
    try:
        return dns.message.from_wire(sock.recv(65535))
    except TimeoutError:
        return None


def test_udp_waiting_query_does_not_hold_up_the_next(gated: tuple[DnsdHandle, GateLink]) -> None:
    handle, link = gated
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(handle.addr)
        s.send(_wire("a.gate.test.", 1))
        wait_until(lambda: "a.gate.test." in link.waiting)
        s.send(_wire("web.default.svc.cluster.local.", 2))  # the cluster link: answered at once
        s.send(_wire("x.now.test.", 3))  # the tail, without waiting
        first = [_udp_recv(s, 2.0), _udp_recv(s, 2.0)]
        assert sorted(m.id for m in first if m is not None) == [2, 3]
        _open(handle, link, "a.gate.test.")
        late = _udp_recv(s, 2.0)
        assert late is not None and late.id == 1 and late.rcode() == dns.rcode.NOERROR
        assert [str(rr) for rrset in late.answer for rr in rrset] == ["192.0.2.1"]


def test_tcp_replies_out_of_order(gated: tuple[DnsdHandle, GateLink]) -> None:
    handle, link = gated
    with socket.create_connection(handle.addr, timeout=3) as s:
        s.sendall(
            tcp_frame(_wire("b.gate.test.", 10))
            + tcp_frame(_wire("web.default.svc.cluster.local.", 11))
            + tcp_frame(_wire("y.now.test.", 12))
        )
        got = [dns.message.from_wire(read_tcp_message(s) or b"") for _ in range(2)]
        assert sorted(m.id for m in got) == [11, 12], "the waiting query must not hold up the ones behind it"
        _open(handle, link, "b.gate.test.")
        last = dns.message.from_wire(read_tcp_message(s) or b"")
        assert last.id == 10 and last.rcode() == dns.rcode.NOERROR


def test_tcp_pipeline_bound_stops_reading(gated: tuple[DnsdHandle, GateLink]) -> None:
    """With tcp.max_pipeline 3 waiting queries, the fourth query is not read until one of them finishes."""
    handle, link = gated
    with socket.create_connection(handle.addr, timeout=3) as s:
        s.sendall(b"".join(tcp_frame(_wire(f"p{i}.gate.test.", 20 + i)) for i in range(3)))
        wait_until(lambda: len(link.waiting) == 3)
        s.sendall(tcp_frame(_wire("web.default.svc.cluster.local.", 30)))
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(2)  # nothing: the connection is not being read
        s.settimeout(3)
        _open(handle, link, "p1.gate.test.")
        ids = {dns.message.from_wire(read_tcp_message(s) or b"").id for _ in range(2)}
        assert ids == {21, 30}


def test_tcp_half_close_still_gets_pending_replies(gated: tuple[DnsdHandle, GateLink]) -> None:
    handle, link = gated
    with socket.create_connection(handle.addr, timeout=3) as s:
        s.sendall(tcp_frame(_wire("h.gate.test.", 40)))
        wait_until(lambda: "h.gate.test." in link.waiting)
        s.shutdown(socket.SHUT_WR)
        _open(handle, link, "h.gate.test.")
        msg = read_tcp_message(s)
        assert msg is not None and struct.unpack("!H", msg[:2])[0] == 40


def test_inflight_bound_sheds_with_servfail(gated: tuple[DnsdHandle, GateLink]) -> None:
    handle, link = gated
    handle.call(lambda: setattr(handle.app.engine, "max_inflight", 2))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(handle.addr)
        for i in range(2):
            s.send(_wire(f"s{i}.gate.test.", 50 + i))
        wait_until(lambda: len(link.waiting) == 2)
        s.send(_wire("s9.gate.test.", 59))
        shed = _udp_recv(s, 2.0)
        assert shed is not None and shed.id == 59 and shed.rcode() == dns.rcode.SERVFAIL
        assert handle.call(lambda: handle.app.engine.counters.shed) == 1
        assert "s9.gate.test." not in link.waiting, "a shed query never reaches the link"
        _open(handle, link, "s0.gate.test.")
        ok = _udp_recv(s, 2.0)
        assert ok is not None and ok.id == 50 and ok.rcode() == dns.rcode.NOERROR


def test_deadline_gives_servfail(gated: tuple[DnsdHandle, GateLink]) -> None:
    handle, _link = gated
    handle.call(lambda: setattr(handle.app.engine, "deadline", 0.2))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(handle.addr)
        s.send(_wire("never.gate.test.", 60))
        msg = _udp_recv(s, 3.0)
        assert msg is not None and msg.id == 60 and msg.rcode() == dns.rcode.SERVFAIL
    assert handle.call(lambda: (handle.app.engine.counters.deadline, handle.app.engine.inflight)) == (1, 0)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_exception_in_a_waiting_link_is_servfail(
    gated: tuple[DnsdHandle, GateLink], tcp: bool, caplog: pytest.LogCaptureFixture
) -> None:
    handle, _link = gated
    caplog.set_level(logging.ERROR, logger="dnsd.engine.engine")
    wire = _wire("x.boom.test.", 70)
    if tcp:
        with socket.create_connection(handle.addr, timeout=3) as s:
            s.sendall(tcp_frame(wire))
            msg: Any = dns.message.from_wire(read_tcp_message(s) or b"")
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(handle.addr)
            s.send(wire)
            msg = _udp_recv(s, 2.0)
    assert msg is not None and msg.id == 70 and msg.rcode() == dns.rcode.SERVFAIL
    assert any("internal error" in r.getMessage() for r in caplog.records)
    assert handle.call(lambda: handle.app.engine.inflight) == 0


def test_query_log_names_the_waiting_link(gated: tuple[DnsdHandle, GateLink], caplog: pytest.LogCaptureFixture) -> None:
    handle, link = gated
    caplog.set_level(logging.INFO, logger="dnsd.query")
    handle.call(lambda: setattr(handle.app.engine, "log_queries", True))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(handle.addr)
        s.send(_wire("q.gate.test.", 80))
        wait_until(lambda: "q.gate.test." in link.waiting)
        _open(handle, link, "q.gate.test.")
        assert _udp_recv(s, 2.0) is not None
    line = wait_until(lambda: next((r.getMessage() for r in caplog.records if "q.gate.test." in r.getMessage()), None))
    assert " NOERROR gate " in line, line

"""DNS over TCP per RFC 7766 (pipelining 6.2.1, timeouts 6.2.3, one write 8).

Pipelining, framing split across writes, the idle and per-message timeouts, bad frames, the
connection cap and a client that never reads. Timeouts are set small through the `tcp:` config
section; time bounds are generous (the figures are printed) because CI machines are noisy.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import dns.message
import dns.rcode
import pytest
from support import (
    DnsdHandle,
    base_config,
    read_tcp_message,
    rr_lines,
    run_dnsd,
    tcp_frame,
    wait_until,
    zone_lines,
)
from support.rawdns import BIG, WEB, WEB_A, query_bytes, socket_count
from support.rawdns import PROTOCOL_MANIFESTS as MANIFESTS

BIG_A = "\n".join(f"big.default.svc.cluster.local. 5 IN A 10.1.0.{i}" for i in range(1, 201))

Factory = Callable[..., DnsdHandle]
expected_lines = functools.cache(zone_lines)  # BIG_A is 200 lines: parse it once


def assert_answer(reply: bytes | None, query: bytes, expected: str, what: str) -> None:
    assert reply is not None, f"{what}: no reply"
    assert reply[:2] == query[:2], f"{what}: ID mismatch"
    assert reply[12 : len(query)] == query[12:], f"{what}: question not echoed"
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.NOERROR, f"{what}: {dns.rcode.to_text(msg.rcode())}"
    got, want = rr_lines(msg.answer), expected_lines(expected)
    assert got == want, f"{what}: answer differs\n missing: {sorted(want - got)[:3]}\n extra: {sorted(got - want)[:3]}"


def connect(handle: DnsdHandle, timeout: float = 3.0, source: str | None = None) -> socket.socket:
    """A connection from 127.0.0.1, or from `source` (another loopback address: a distinct client for the
    per-client connection cap)."""
    return socket.create_connection(handle.addr, timeout=timeout, source_address=(source, 0) if source else None)


def ask(sock: socket.socket, name: str = WEB, expected: str = WEB_A, what: str = "query") -> None:
    q = query_bytes(name)
    sock.sendall(tcp_frame(q))
    assert_answer(read_tcp_message(sock), q, expected, what)


def assert_server_answers(handle: DnsdHandle, what: str) -> None:
    q = query_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(2)
        u.sendto(q, handle.addr)
        assert_answer(u.recv(65535), q, WEB_A, what + " (udp)")
    with connect(handle) as s:
        ask(s, what=what + " (tcp)")


def wait_for_close(sock: socket.socket, start: float, limit: float) -> tuple[float | None, bytes]:
    """Read until EOF or reset; return (seconds from start to the close, or None if still open at
    start+limit; every byte received)."""
    data = b""
    deadline = start + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, data
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65535)
        except TimeoutError:
            return None, data
        except ConnectionResetError:
            return time.monotonic() - start, data
        if not chunk:
            return time.monotonic() - start, data
        data += chunk


def rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def config(**tcp: Any) -> dict[str, Any]:
    cfg = base_config(MANIFESTS)
    cfg["tcp"] = tcp
    return cfg


@pytest.fixture(scope="module")
def server() -> Iterator[DnsdHandle]:
    """Default TCP settings (idle 10 s, message 2 s, 1000 connections, pipeline 100)."""
    handle = run_dnsd(base_config(MANIFESTS))
    yield handle
    handle.stop()


# ---------------------------------------------------------------- T1: pipelining and framing


def read_replies(sock: socket.socket, n: int) -> dict[int, bytes]:
    replies: dict[int, bytes] = {}
    for _ in range(n):
        reply = read_tcp_message(sock)
        assert reply is not None, f"connection closed after {len(replies)} of {n} replies"
        (qid,) = struct.unpack("!H", reply[:2])
        assert qid not in replies, f"two replies with ID {qid}"
        replies[qid] = reply
    return replies


def test_pipelined_queries_in_one_write(server: DnsdHandle) -> None:
    """RFC 7766 6.2.1: 3, then 100 queries sent in one write are all answered on the same connection,
    each reply matching its query by ID and question."""
    names = [(WEB, WEB_A), (BIG, BIG_A), ("nope.default.svc.cluster.local.", "")]
    with connect(server) as s:
        for batch in (3, 100):
            queries = {}
            for i in range(batch):
                name, want = names[i % 3]
                q = query_bytes(name, qid=(batch * 1000 + i) & 0xFFFF)
                queries[struct.unpack("!H", q[:2])[0]] = (q, want)
            s.sendall(b"".join(tcp_frame(q) for q, _ in queries.values()))
            replies = read_replies(s, batch)
            assert set(replies) == set(queries), "IDs of the replies do not match the queries"
            checked: dict[bytes, bytes] = {}  # question -> a fully checked reply to it
            for qid, (q, want) in queries.items():
                reply = replies[qid]
                if q[12:] in checked:  # the same question: the same reply apart from the ID
                    assert reply[2:] == checked[q[12:]][2:], f"pipelined query {qid}: reply differs"
                    continue
                if want:
                    assert_answer(reply, q, want, f"pipelined query {qid}")
                else:
                    msg = dns.message.from_wire(reply)
                    assert msg.rcode() == dns.rcode.NXDOMAIN
                    assert reply[12 : len(q)] == q[12:]
                checked[q[12:]] = reply


@pytest.mark.parametrize(
    "chunks",
    ["length-then-message", "byte-by-byte", "two-messages-split-mid-frame"],
)
def test_frames_split_across_writes(server: DnsdHandle, chunks: str) -> None:
    """RFC 7766 8: the length prefix and the message may arrive in separate segments."""
    q1, q2 = query_bytes(), query_bytes(BIG)
    f1, f2 = tcp_frame(q1), tcp_frame(q2)
    if chunks == "length-then-message":
        parts = [f1[:2], f1[2:]]
    elif chunks == "byte-by-byte":
        parts = [f1[i : i + 1] for i in range(len(f1))]
    else:
        both = f1 + f2
        parts = [both[: len(f1) + 5], both[len(f1) + 5 :]]
    with connect(server) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            s.sendall(part)
            time.sleep(0.002)  # pacing the client's writes, not waiting for the server
        assert_answer(read_tcp_message(s), q1, WEB_A, "first message")
        if chunks == "two-messages-split-mid-frame":
            assert_answer(read_tcp_message(s), q2, BIG_A, "second message")


# ---------------------------------------------------------------- T3: idle timeout


def test_idle_connection_is_closed(dnsd_factory: Factory) -> None:
    """RFC 7766 6.2.3: a connection with nothing sent is closed after idle_timeout (1 s here),
    within idle+0.5 s, and not before about idle (it is not the 0.5 s message timeout)."""
    handle = dnsd_factory(config=config(idle_timeout=1, message_timeout=0.5))
    with connect(handle) as s:
        start = time.monotonic()
        elapsed, data = wait_for_close(s, start, 4.0)
    print(f"idle connection closed after {elapsed} s")
    assert elapsed is not None, "idle connection still open after 4 s (idle_timeout 1 s)"
    assert data == b""
    assert 0.8 <= elapsed <= 1.5, f"closed after {elapsed:.3f} s, want 1 s (+0.5)"


def test_idle_timer_restarts_after_a_query(dnsd_factory: Factory) -> None:
    """The idle timer counts from the last activity: a query at 0.6 s is answered, and the close
    comes about idle_timeout after that answer (not 1 s after the connect)."""
    handle = dnsd_factory(config=config(idle_timeout=1, message_timeout=0.5))
    with connect(handle) as s:
        early, _ = wait_for_close(s, time.monotonic(), 0.6)  # 0.6 s of silence first
        assert early is None, f"closed after {early} s, before the 1 s idle timeout"
        ask(s, what="query after 0.6 s idle")
        start = time.monotonic()
        elapsed, data = wait_for_close(s, start, 4.0)
    print(f"connection closed {elapsed} s after the last answer")
    assert elapsed is not None and data == b""
    assert 0.8 <= elapsed <= 1.5, f"closed {elapsed:.3f} s after the last answer, want 1 s (+0.5)"


# ---------------------------------------------------------------- T4: partial messages (slow-loris)


PARTIALS = {
    "one byte of the length prefix": b"\x00",
    "length prefix only": b"\x00\x40",
    "length prefix and half a message": tcp_frame(query_bytes())[:20],
    "length 65535 and 10 bytes": b"\xff\xff" + bytes(10),
}


@pytest.mark.parametrize("partial", list(PARTIALS), ids=list(PARTIALS))
def test_partial_message_is_closed_by_the_message_timeout(dnsd_factory: Factory, partial: str) -> None:
    """A message that never completes is closed by message_timeout (0.5 s), long before the idle
    timeout (5 s here). Knot does this at 0.5 s; NSD keeps such connections for 120 s."""
    handle = dnsd_factory(config=config(idle_timeout=5, message_timeout=0.5))
    with connect(handle) as s:
        s.sendall(PARTIALS[partial])
        start = time.monotonic()
        elapsed, data = wait_for_close(s, start, 4.0)
    print(f"{partial}: closed after {elapsed} s")
    assert elapsed is not None, "partial message: still open after 4 s"
    assert data == b""
    assert elapsed <= 1.0, f"closed after {elapsed:.3f} s, want message_timeout 0.5 s (+0.5)"
    assert_server_answers(handle, "after a partial message")


def test_slow_loris_is_closed_by_the_message_timeout(dnsd_factory: Factory) -> None:
    """Length 65535 then one byte every 0.2 s: activity never stops, the message never completes."""
    handle = dnsd_factory(config=config(idle_timeout=1, message_timeout=0.5))
    with connect(handle) as s:
        s.sendall(b"\xff\xff")
        start = time.monotonic()
        closed_at: float | None = None
        data = b""
        while time.monotonic() - start < 4.0:
            readable, _, _ = select.select([s], [], [], 0.2)
            try:
                if readable:
                    chunk = s.recv(65535)
                    if not chunk:
                        closed_at = time.monotonic() - start
                        break
                    data += chunk
                s.send(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
    print(f"slow-loris: closed after {closed_at} s")
    assert data == b"", "the server answered a partial message"
    assert closed_at is not None, "slow-loris connection still open after 4 s"
    assert closed_at <= 1.2, f"closed after {closed_at:.3f} s, want message_timeout 0.5 s"
    assert_server_answers(handle, "after slow-loris")


# ---------------------------------------------------------------- T5: bad frames


BAD_FRAMES = {
    "length 0": b"\x00\x00",
    "length 1": b"\x00\x01\x00",
    "length 11": b"\x00\x0b" + query_bytes()[:11],
    "length 11 of zeros": b"\x00\x0b" + bytes(11),
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES), ids=list(BAD_FRAMES))
@pytest.mark.parametrize("after_query", [False, True], ids=["first", "after-a-query"])
def test_frames_shorter_than_a_header_close_at_once(server: DnsdHandle, frame: str, after_query: bool) -> None:
    """Length 0 and lengths under 12: no reply and the connection closed at once (the default
    message timeout is 2 s and the idle timeout 10 s, so a close under 0.5 s is the frame check)."""
    with connect(server) as s:
        if after_query:
            ask(s, what="query before the bad frame")
        s.sendall(BAD_FRAMES[frame])
        start = time.monotonic()
        elapsed, data = wait_for_close(s, start, 3.0)
    print(f"{frame}: closed after {elapsed} s")
    assert data == b"", f"the server replied to a {frame} frame: {data[:20]!r}"
    assert elapsed is not None and elapsed < 0.5, f"{frame}: closed after {elapsed} s, want at once"
    assert_server_answers(server, f"after a {frame} frame")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_mid_frame(server: DnsdHandle, how: str) -> None:
    """A client that half-sends a frame then FINs or resets: no crash, its socket is released, the
    next connection works (fds back to the baseline)."""
    before = socket_count()
    for _ in range(5 if how == "fin" else 20):
        s = connect(server)
        s.sendall(b"\x00\x64" + bytes(10))
        if how == "fin":
            s.shutdown(socket.SHUT_WR)
            elapsed, data = wait_for_close(s, time.monotonic(), 3.0)
            assert data == b""
            assert elapsed is not None, "the server kept a half-closed connection with a partial frame"
            s.close()
        else:
            rst_close(s)
    assert_server_answers(server, f"after clients gone mid-frame ({how})")
    wait_until(lambda: socket_count() <= before, timeout=3.0, interval=0.05)


# ---------------------------------------------------------------- T6: connection cap


def test_connection_cap(dnsd_factory: Factory) -> None:
    """max_connections 5: five connections (from five client addresses, so the per-client cap does not
    come first) are served, a sixth is refused or closed without an answer, and once one closes a new
    connection is served again."""
    handle = dnsd_factory(config=config(max_connections=5, idle_timeout=10, message_timeout=2))
    conns = [connect(handle, source=f"127.0.0.{10 + i}") for i in range(5)]
    try:
        for i, c in enumerate(conns):
            ask(c, what=f"connection {i + 1} of 5")
        try:
            sixth = connect(handle, source="127.0.0.20")
        except ConnectionRefusedError:
            sixth = None
        if sixth is not None:
            with sixth:
                q = query_bytes()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sixth.sendall(tcp_frame(q))
                elapsed, data = wait_for_close(sixth, time.monotonic(), 2.0)
            print(f"sixth connection closed after {elapsed} s")
            assert data == b"", "the connection over the cap was answered"
            assert elapsed is not None, "the connection over the cap was neither refused nor closed"
        for i, c in enumerate(conns):  # the five keep working
            ask(c, what=f"connection {i + 1} after the sixth")
        conns.pop(0).close()

        def new_one_served() -> bool:
            try:
                with connect(handle, timeout=1.0, source="127.0.0.21") as c:
                    q = query_bytes()
                    c.sendall(tcp_frame(q))
                    reply = read_tcp_message(c)
            except OSError:
                return False
            if reply is None:
                return False
            assert_answer(reply, q, WEB_A, "new connection after one closed")
            return True

        wait_until(new_one_served, timeout=3.0, interval=0.05)
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------- T7: a client that never reads


def test_client_that_never_reads(dnsd_factory: Factory) -> None:
    """A client pipelines thousands of queries for a 3 KB answer and never reads (RFC 7766 6.2.3):
    the server keeps answering everybody else, stops reading from that client (back-pressure), and
    gives up on it after its timeout (idle_timeout 1 s here): the server's socket is released while the
    client still holds its end open."""
    handle = dnsd_factory(config=config(idle_timeout=1, message_timeout=0.5))
    before = socket_count()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(handle.addr)
    s.setblocking(False)
    frame = tcp_frame(query_bytes(BIG, qid=0x5A5A))
    blob = frame * 5000
    sent = 0
    deadline = time.monotonic() + 3.0
    last_progress = time.monotonic()
    try:
        while sent < len(blob) and time.monotonic() < deadline:
            try:
                n = s.send(blob[sent : sent + 65536])
            except BlockingIOError:
                if time.monotonic() - last_progress > 0.5:
                    break  # the server stopped reading from us: back-pressure
                select.select([], [s], [], 0.05)
                continue
            sent += n
            last_progress = time.monotonic()
        print(f"slow reader: {sent // len(frame)} queries written")
        # the unread replies pile up; others must still be served promptly
        for i in range(3):
            t0 = time.monotonic()
            assert_server_answers(handle, f"while a client does not read ({i})")
            assert time.monotonic() - t0 < 1.0, "answers to other clients slowed to a crawl"
        t0 = time.monotonic()
        # our end is still open and unread: only the server's end may go away
        wait_until(lambda: socket_count() <= before + 1, timeout=5.0, interval=0.05)
        print(f"server released the non-reading connection {time.monotonic() - t0:.2f} s after the writes")
    finally:
        rst_close(s)
    assert_server_answers(handle, "after the slow reader left")
    wait_until(lambda: socket_count() <= before, timeout=3.0, interval=0.05)


def test_answers_unchanged_after_tcp_abuse(server: DnsdHandle) -> None:
    """Never lose good data: the full 200-record answer still comes back over TCP."""
    with connect(server) as s:
        ask(s, BIG, BIG_A, "big over TCP")
        ask(s, WEB, WEB_A, "web over TCP")

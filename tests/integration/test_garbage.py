"""A bounded garbage blaster (RFC 8906: bad input gets FORMERR or is dropped): bad input never crashes or stalls
the server and never loses good data.

For a fixed time at a fixed rate it sends, over UDP, random bytes, bit-flipped and truncated valid
queries and a list of crafted malformed packets, and over TCP random frames, short frames, frames cut
by FIN or RST and unfinished frames. Every CANARY_EVERY packets a valid query must be answered
correctly. Packets the server must drop (under 12 bytes, or QR=1) go out from their own socket, so
that any reply to them is counted. At the end: the server still answers, the answers are unchanged,
no asyncio task or socket is left behind and nothing was logged as an unhandled exception.

DNSD_GARBAGE_SEED=<int> replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

import dns.message
import dns.rcode
import pytest
from support import DnsdHandle, query, read_tcp_message, rr_lines, tcp_frame, wait_until, zone_lines
from support.rawdns import PROTOCOL_MANIFESTS as MANIFESTS
from support.rawdns import WEB, WEB_A, header, opt_rr, question, socket_count, wire_name

DURATION = 4.0  # seconds of blasting (monotonic deadline)
RATE = 1500  # UDP packets per second
CANARY_EVERY = 100  # packets between two canary queries
TCP_EVERY = 25  # UDP packets between two TCP actions
CANARY_TIMEOUT = 1.0

BIG_A = "\n".join(f"big.default.svc.cluster.local. 5 IN A 10.1.0.{i}" for i in range(1, 201))

Factory = Callable[..., DnsdHandle]


# Valid queries the mutations start from.
SEEDS: list[bytes] = [
    header(1) + question(),
    header(2, ar=1) + question() + opt_rr(),
    header(3, ar=1) + question("big.default.svc.cluster.local.") + opt_rr(4096, flags=0x8000),
    header(4) + question("nope.default.svc.cluster.local."),
    header(5) + question("cluster.local.", 6),
    header(6) + question(WEB, 33),
    header(7) + question(WEB, 666),
    header(8) + question("version.bind.", 16, 3),
    header(9) + question("cluster.local.", 252),
    header(10, ar=1) + question() + opt_rr(options=struct.pack("!HH", 10, 8) + bytes(range(8))),
    header(11) + question("10.0.96.10.in-addr.arpa.", 12),
    header(12) + question("www.example.com."),
]

# Crafted malformed packets (what BIND, NSD and Knot are tested with).
CRAFTED: list[bytes] = [
    header(20) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer to itself
    header(21) + b"\x01a\xc0\x0c\x00\x01\x00\x01",  # loop through a label
    header(22) + b"\xc0\x12\x00\x01\x00\x01" + wire_name(WEB),  # forward pointer
    header(23) + b"\x40" + b"a" * 64 + wire_name(WEB) + b"\x00\x01\x00\x01",  # label of 64
    header(24) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # name over 255
    header(25, qd=0),
    header(26, qd=2) + question() + question(),
    header(27, qd=65535) + question(),
    header(28, ar=65535) + question(),
    header(29, ar=2) + question() + opt_rr() + opt_rr(),
    header(30, ar=1) + question() + opt_rr(options=struct.pack("!HH", 100, 50) + b"ab"),
    header(31, ar=1) + question() + opt_rr(version=1),
    header(32, flags=0x7800 | 0x0100, qd=0),  # opcode 15
]


class Blaster:
    def __init__(self, addr: tuple[str, int], rng: random.Random) -> None:
        self.addr = addr
        self.rng = rng
        self.noisy = self._udp()  # packets that must be answered
        self.silent = self._udp()  # packets that must not be answered
        self.sent_ids: set[int] = set()
        self.sent = Counter[str]()
        self.replies = 0
        self.replies_to_silent = 0
        self.bad_replies: list[str] = []
        self.rcodes = Counter[str]()
        self.canary_times: list[float] = []
        self.tcp_open: list[socket.socket] = []
        self.tcp_actions = Counter[str]()

    def _udp(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        return s

    # ------------------------------------------------------------ packet generators

    def packet(self) -> tuple[str, bytes]:
        r = self.rng
        kind = r.choices(
            ["random", "random-header", "bitflip", "truncated", "crafted", "valid"],
            weights=[2, 3, 6, 3, 2, 1],
        )[0]
        if kind == "random":
            return kind, r.randbytes(r.randint(0, 600))
        if kind == "random-header":
            return kind, r.randbytes(r.randint(12, 100))
        if kind == "crafted":
            return kind, r.choice(CRAFTED)
        seed = bytearray(r.choice(SEEDS))
        struct.pack_into("!H", seed, 0, r.randrange(0x10000))
        if kind == "bitflip":
            for _ in range(r.randint(1, 3)):
                bit = r.randrange(len(seed) * 8)
                seed[bit // 8] ^= 1 << (bit % 8)
        elif kind == "truncated":
            seed = seed[: r.randrange(len(seed))]
        return kind, bytes(seed)

    def send(self, kind: str, data: bytes) -> None:
        must_drop = len(data) < 12 or bool(data[2] & 0x80)
        sock = self.silent if must_drop else self.noisy
        if not must_drop:
            self.sent_ids.add(struct.unpack("!H", data[:2])[0])
        with contextlib.suppress(BlockingIOError):
            sock.sendto(data, self.addr)
            self.sent[("drop:" if must_drop else "answer:") + kind] += 1

    def drain(self) -> None:
        for sock in (self.noisy, self.silent):
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                if sock is self.silent:
                    self.replies_to_silent += 1
                    continue
                self.replies += 1
                self.check_reply(data)

    def check_reply(self, data: bytes) -> None:
        if len(data) < 12:
            self.bad_replies.append(f"reply shorter than a header: {data!r}")
            return
        qid, flags = struct.unpack("!HH", data[:4])
        if not flags & 0x8000:
            self.bad_replies.append(f"reply without QR: {data[:16]!r}")
        if qid not in self.sent_ids:
            self.bad_replies.append(f"reply with an ID never sent: {qid}")
        if len(data) > 1232:
            self.bad_replies.append(f"UDP reply of {len(data)} octets")
        self.rcodes[dns.rcode.to_text(flags & 0xF)] += 1

    # ------------------------------------------------------------ canary and TCP

    def canary(self) -> None:
        q = dns.message.make_query(WEB, "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(CANARY_TIMEOUT)
            t0 = time.monotonic()
            s.sendto(q.to_wire(), self.addr)
            try:
                reply = dns.message.from_wire(s.recv(65535))
            except TimeoutError:
                pytest.fail(f"canary {len(self.canary_times) + 1} not answered within {CANARY_TIMEOUT} s")
            self.canary_times.append(time.monotonic() - t0)
        assert reply.id == q.id
        assert reply.rcode() == dns.rcode.NOERROR, f"canary got {dns.rcode.to_text(reply.rcode())}"
        assert rr_lines(reply.answer) == zone_lines(WEB_A), f"canary answer changed: {reply.answer}"

    def tcp_action(self) -> None:
        r = self.rng
        action = r.choice(["random-frame", "short-frame", "fin-mid-frame", "rst-mid-frame", "unfinished", "bitflip"])
        self.tcp_actions[action] += 1
        try:
            s = socket.create_connection(self.addr, timeout=1.0)
        except OSError:
            self.tcp_actions["connect-failed"] += 1
            return
        try:
            if action == "random-frame":
                s.sendall(tcp_frame(r.randbytes(r.randint(12, 300))))
            elif action == "short-frame":
                s.sendall(tcp_frame(r.randbytes(r.randint(0, 11))))
            elif action == "bitflip":
                _, data = self.packet()
                s.sendall(tcp_frame(data) + r.randbytes(r.randint(0, 40)))
            elif action == "fin-mid-frame":
                s.sendall(struct.pack("!H", r.randint(12, 65535)) + r.randbytes(r.randint(0, 40)))
                s.shutdown(socket.SHUT_WR)
            elif action == "rst-mid-frame":
                s.sendall(struct.pack("!H", r.randint(12, 65535)) + r.randbytes(r.randint(0, 40)))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:  # unfinished: left open, the server's message timeout must deal with it
                s.sendall(b"\xff\xff" + r.randbytes(10))
                if len(self.tcp_open) < 20:
                    self.tcp_open.append(s)
                    return
        except OSError:
            self.tcp_actions["send-failed"] += 1
        s.close()

    def close(self) -> None:
        for s in (self.noisy, self.silent, *self.tcp_open):
            s.close()

    # ------------------------------------------------------------ the run

    def run(self, duration: float, rate: int) -> int:
        start = time.monotonic()
        deadline = start + duration
        interval = 1.0 / rate
        next_send = start
        n = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now < next_send:
                select.select([self.noisy, self.silent], [], [], next_send - now)
                self.drain()
                continue
            kind, data = self.packet()
            self.send(kind, data)
            n += 1
            next_send += interval
            if n % CANARY_EVERY == 0:
                self.drain()
                self.canary()
            if n % TCP_EVERY == 0:
                self.tcp_action()
        # late replies
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            select.select([self.noisy, self.silent], [], [], 0.05)
            self.drain()
        return n


def lasting(names: list[str]) -> list[str]:
    """The tasks that are not a wait_for's wrapper around an Event.wait."""
    return [n for n in names if "Event.wait" not in n]


def task_names(handle: DnsdHandle) -> list[str]:
    """The loop's tasks by name and coroutine, for a failure message."""
    return sorted(handle.call(lambda: [f"{t.get_name()}:{t.get_coro()}" for t in asyncio.all_tasks(handle.loop)]))


def test_garbage_never_crashes_stalls_or_loses_data(dnsd_factory: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    handle = dnsd_factory(manifests=MANIFESTS)
    seed = int(os.environ.get("DNSD_GARBAGE_SEED", "20251125"))
    print(f"garbage blaster seed {seed} (DNSD_GARBAGE_SEED)")
    # baseline, once the server has answered once (lazy start-up work done)
    before_web = query(handle, WEB, "A")
    assert rr_lines(before_web.answer) == zone_lines(WEB_A)
    # The count leaves out the short-lived tasks asyncio.wait_for makes around an Event.wait (the files source's
    # watch makes a new one every wake-up, so whether one exists at a given instant is chance).
    sockets_before, names_before = socket_count(), task_names(handle)
    tasks_before = len(lasting(names_before))

    blaster = Blaster(handle.addr, random.Random(seed))
    try:
        n = blaster.run(DURATION, RATE)
    finally:
        blaster.close()

    times = sorted(blaster.canary_times)
    answered_share = blaster.replies / max(1, sum(v for k, v in blaster.sent.items() if k.startswith("answer:")))
    print(f"sent {n} UDP packets: {dict(sorted(blaster.sent.items()))}")
    print(f"TCP actions: {dict(sorted(blaster.tcp_actions.items()))}")
    print(f"replies {blaster.replies} ({answered_share:.1%} of the packets that must be answered)")
    print(f"rcodes {dict(blaster.rcodes)}")
    print(
        f"{len(times)} canaries: median {times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
        if times
        else "no canary"
    )

    assert n >= DURATION * RATE * 0.5, "the blaster could not keep its rate"
    assert len(times) >= n // CANARY_EVERY, "some canaries were not sent"
    assert blaster.replies_to_silent == 0, (
        f"{blaster.replies_to_silent} replies to packets under 12 octets or with QR=1 (must be dropped)"
    )
    assert not blaster.bad_replies, f"bad replies: {blaster.bad_replies[:5]}"
    assert answered_share >= 0.9, "RFC 8906: every packet with a readable query header gets a reply"
    assert blaster.rcodes["SERVFAIL"] == 0, "SERVFAIL means an internal error on bad input (FORMERR expected)"

    # never loses good data: the same answers as before, over UDP and TCP
    for tcp in (False, True):
        after = query(handle, WEB, "A", tcp=tcp)
        assert after.rcode() == dns.rcode.NOERROR
        assert rr_lines(after.answer) == rr_lines(before_web.answer)
    big = query(handle, "big.default.svc.cluster.local.", "A", tcp=True)
    assert rr_lines(big.answer) == zone_lines(BIG_A)
    with socket.create_connection(handle.addr, timeout=2) as s:
        q = dns.message.make_query(WEB, "A")
        s.sendall(tcp_frame(q.to_wire()))
        reply = read_tcp_message(s)
        assert reply is not None and dns.message.from_wire(reply).id == q.id

    # no leak: sockets and tasks back to the baseline once the unfinished frames time out
    wait_until(lambda: socket_count() <= sockets_before, timeout=5.0, interval=0.05)
    seen: list[list[str]] = [[]]

    def tasks_back() -> bool:
        seen[0] = task_names(handle)
        return len(lasting(seen[0])) <= tasks_before

    try:
        wait_until(tasks_back, timeout=5.0, interval=0.05)
    except AssertionError:
        raise AssertionError(f"tasks left over: {seen[0]}; before: {names_before}") from None

    # no crash: nothing escaped as an unhandled exception
    unhandled = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and (r.name == "asyncio" or r.name.startswith("dnsd") or "exception" in r.getMessage().lower())
    ]
    assert not unhandled, f"errors logged during the garbage run: {unhandled[:5]}"

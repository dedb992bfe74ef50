"""A scripted upstream on loopback (UDP and TCP on one port, in its own thread): answers written as zone-file
text per question, changed while it runs, and every query it receives counted. For what a real server will not
do on purpose: answer NXDOMAIN without an SOA, go silent, fail, slow down, or poison its extra sections. Its
serving loop, LoopbackServer, is also test_forward.py's FakeUpstream's."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass(frozen=True)
class Scripted:
    """One reply: the rcode and the sections as zone-file lines (owner TTL IN TYPE RDATA), absolute names."""

    rcode: str = "NOERROR"
    answer: str = ""
    authority: str = ""
    additional: str = ""
    tc_over_udp: bool = False  # UDP gets an empty reply with TC set; TCP gets the reply


def _rrsets(text: str) -> list[dns.rrset.RRset]:
    out: dict[tuple[str, str], list[str]] = {}
    ttls: dict[tuple[str, str], int] = {}
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        owner, ttl, _cls, rtype, rdata = line.split(None, 4)
        out.setdefault((owner, rtype), []).append(rdata)
        ttls[(owner, rtype)] = int(ttl)
    return [dns.rrset.from_text_list(o, ttls[(o, t)], "IN", t, rds) for (o, t), rds in out.items()]


class LoopbackServer:
    """UDP and TCP on one port of host (a free one unless given), served by an event loop in a thread of its own.
    A subclass says what to send back: on_datagram(data, addr) replies itself (loop.call_later for a delay);
    on_stream(data, peer) returns the framed replies [(wire, delay before it)], or None to close the connection.
    started() opens more sockets on the loop (kept in self.extra, closed by stop())."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "loopback-server") -> None:
        self.host = host
        self.extra: list[asyncio.BaseTransport] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self.loop).result(5)

    async def _start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(50):
            self.udp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(self.host, port))
            self.port: int = self.udp.get_extra_info("sockname")[1]
            try:
                self.tcp = await asyncio.start_server(self._tcp_client, self.host, self.port)
                break
            except OSError:
                self.udp.close()  # the kernel's free UDP port may be a busy TCP one: take another pair
                if port or attempt == 49:
                    raise
        await self.started()

    async def started(self) -> None:
        """Called on the loop once UDP and TCP are bound."""

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def on_datagram(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError

    def on_stream(self, data: bytes, peer: Any) -> list[tuple[bytes, float]] | None:
        raise NotImplementedError

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:  # one connection's messages until the client closes (or on_stream says close)
                size = int.from_bytes(await reader.readexactly(2), "big")
                replies = self.on_stream(await reader.readexactly(size), peer)
                if replies is None:
                    break
                for wire, delay in replies:
                    await asyncio.sleep(delay)
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            for transport in [self.udp, *self.extra]:
                transport.close()
            self.tcp.close()
            await self.tcp.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.on_datagram(data, addr)


class ScriptedUpstream(LoopbackServer):
    """`script[(name, type)] = Scripted(...)`; names lower-case and absolute ('a.example.', 'A'). Questions
    without a script get REFUSED. `mode`: 'answer', 'drop' (silence) or 'servfail'; `delay` seconds before
    each reply."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.script: dict[tuple[str, str], Scripted] = {}
        self.mode = "answer"
        self.delay = 0.0
        self.seen: Counter[tuple[str, str, bool, bool]] = Counter()  # (name, type, DO, CD)
        super().__init__(host, name="scripted-upstream")

    def count(self, name: str | None = None, rtype: str | None = None) -> int:
        """Queries received (loop probes aside), for one name/type or all."""
        return sum(n for (qn, qt, _do, _cd), n in list(self.seen.items()) if name in (None, qn) and rtype in (None, qt))

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return None
        question = q.question[0]
        name = question.name.to_text().lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        if name.endswith(".dnsd-loop."):
            return r.to_wire()  # dnsd's forwarding-loop probe at start: answered, not counted
        self.seen[(name, rtype, bool(q.ednsflags & dns.flags.DO), bool(q.flags & dns.flags.CD))] += 1
        if self.mode == "drop":
            return None
        script = self.script.get((name, rtype))
        if self.mode == "servfail" or script is None:
            r.set_rcode(dns.rcode.SERVFAIL if self.mode == "servfail" else dns.rcode.REFUSED)
            return r.to_wire()
        r.set_rcode(dns.rcode.from_text(script.rcode))
        if script.tc_over_udp and not tcp:
            r.flags |= dns.flags.TC
            return r.to_wire()
        r.answer.extend(_rrsets(script.answer))
        r.authority.extend(_rrsets(script.authority))
        r.additional.extend(_rrsets(script.additional))
        return r.to_wire(max_size=65535 if tcp else 0)  # 0: the size the query offered

    def on_stream(self, data: bytes, peer: Any) -> list[tuple[bytes, float]]:
        wire = self.reply(data, tcp=True)
        return [] if wire is None else [(wire, self.delay)]

    def on_datagram(self, data: bytes, addr: Any) -> None:
        wire = self.reply(data, tcp=False)
        if wire is not None:
            self.loop.call_later(self.delay, self.udp.sendto, wire, addr)

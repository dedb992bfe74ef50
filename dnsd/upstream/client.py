"""One query to one upstream server, over UDP (TCP when the reply is truncated), with the RFC 5452 checks.

Every UDP query goes out from a fresh socket bound to port 0, so the kernel picks a random ephemeral source port
(Linux randomises it), with a fresh ID from `secrets`: an off-path spoofer must guess both (RFC 5452 4, 9.2).
A datagram is accepted only when it comes from the server's address and port, carries our ID and QR, and repeats
our question (name compared case-insensitively, type, class: RFC 5452 4.1, 9.1); anything else is ignored while
we keep waiting for the right one. A reply that dnspython cannot parse is a failure of that server and never
reaches a client. This is the slow path: messages are built and parsed with dnspython.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from dnsd.config import parse_hostport

DNS_PORT = 53
UDP_PAYLOAD = 1232  # the EDNS buffer size we advertise upstream (DNS flag day 2020), as in our own replies


@dataclass(frozen=True, slots=True)
class Server:
    """An upstream server: an IP address (canonical text) and a port."""

    host: str
    port: int = DNS_PORT

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> Server:
    """'ip', 'ip:port' or '[v6]:port' (config.py has already checked the form)."""
    addr = parse_hostport(text, "upstream", default_port=DNS_PORT)
    return Server(str(ipaddress.ip_address(addr.host.split("%")[0])), addr.port)


class UpstreamError(Exception):
    """This server gave no usable reply: the caller tries the next one."""


class UpstreamTimeout(UpstreamError):
    pass


class MalformedReply(UpstreamError):
    pass


@dataclass(slots=True)
class Stats:
    """What the clients saw (tests and, later, metrics read them)."""

    sent_udp: int = 0
    sent_tcp: int = 0
    ignored: int = 0  # datagrams dropped by the RFC 5452 checks (wrong source, ID or question)
    malformed: int = 0
    timeouts: int = 0


STATS = Stats()


def make_request(qname: dns.name.Name, rdtype: int, do: bool = False) -> dns.message.QueryMessage:
    """A recursive query (RD) with a fresh random ID and EDNS (our buffer size, the client's DO bit)."""
    msg = dns.message.make_query(
        qname, dns.rdatatype.RdataType.make(rdtype), use_edns=0, payload=UDP_PAYLOAD, want_dnssec=do
    )
    msg.id = secrets.randbits(16)  # RFC 5452 9.2: unpredictable IDs
    return msg


def _question_matches(request: dns.message.Message, reply: dns.message.Message) -> bool:
    if len(reply.question) != 1 or len(request.question) != 1:
        return False
    want, got = request.question[0], reply.question[0]
    # dns.name.Name equality is case-insensitive (RFC 4343); RFC 5452 9.1 asks for the name, type and class.
    return got.name == want.name and got.rdtype == want.rdtype and got.rdclass == want.rdclass


def _reply_id(data: bytes) -> int | None:
    """The ID of a reply (whole header, QR set); None for anything else (RFC 5452 9.1)."""
    if len(data) < 12 or not data[2] & 0x80:
        return None
    return int(struct.unpack_from("!H", data)[0])


def _parse(wire: bytes, what: str = "malformed reply") -> dns.message.Message:
    try:
        return dns.message.from_wire(wire)
    except Exception as exc:  # dnspython raises many kinds on hostile input; none may reach a client
        STATS.malformed += 1
        raise MalformedReply(f"{what}: {exc}") from exc


def _stream_reply(request: dns.message.Message, data: bytes, server: object, transport: str) -> dns.message.Message:
    """A reply read over TCP or TLS (its ID and QR already matched): parsed, and for our question."""
    reply = _parse(data, f"{server}: malformed reply over {transport}")
    if not _question_matches(request, reply):
        STATS.ignored += 1
        raise MalformedReply(f"{server}: reply over {transport} for another question")
    return reply


class _UdpWaiter(asyncio.DatagramProtocol):
    def __init__(self, server: Server, request: dns.message.Message, result: asyncio.Future[bytes]) -> None:
        self.server_host = server.host  # canonical text (parse_server): compared as a string, per datagram
        self.port = server.port
        self.request = request
        self.result = result

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.result.done():
            return
        try:
            same_source = str(addr[0]).split("%")[0] == self.server_host and addr[1] == self.port
        except ValueError:
            same_source = False
        # RFC 5452 9.1: source address and port, ID, QR; then the question, once the message parses.
        if not same_source or _reply_id(data) != self.request.id:
            STATS.ignored += 1
            return
        self.result.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the server is not there; fail now rather than at the timeout.
        if not self.result.done():
            self.result.set_exception(UpstreamError(f"network error: {exc}"))


async def _udp_once(server: Server, request: dns.message.Message, deadline: float) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    wire = request.to_wire()
    sock = socket.socket(server.family, socket.SOCK_DGRAM)
    transport: asyncio.DatagramTransport | None = None
    try:
        sock.setblocking(False)
        sock.bind(("::" if server.family == socket.AF_INET6 else "0.0.0.0", 0))  # port 0: a random port
        # Connected: the kernel passes on only datagrams from the server's address and port (RFC 5452 9.1, checked
        # again below), and an ICMP port unreachable fails the try at once instead of at its timeout.
        sock.connect((server.host, server.port))
        result: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpWaiter(server, request, result), sock=sock)
        transport.sendto(wire)
        STATS.sent_udp += 1
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                data = await asyncio.shield(result)
            if data[2] & 0x02:
                # TC: the question may not even parse; the caller retries over TCP (RFC 1035 4.2.1, RFC 7766 5).
                try:
                    reply = dns.message.from_wire(data, question_only=True)
                except Exception:
                    raise dns.message.Truncated from None
                if not _question_matches(request, reply):
                    result = _rearm(loop, transport)
                    continue
                raise dns.message.Truncated
            reply = _parse(data)
            if not _question_matches(request, reply):
                STATS.ignored += 1
                result = _rearm(loop, transport)
                continue
            return reply
    except TimeoutError:
        STATS.timeouts += 1
        raise UpstreamTimeout(f"{server}: no reply in time") from None
    except OSError as exc:
        raise UpstreamError(f"{server}: {exc}") from exc
    finally:
        if transport is not None:
            transport.close()
        else:
            sock.close()


def _rearm(loop: asyncio.AbstractEventLoop, transport: asyncio.DatagramTransport) -> asyncio.Future[bytes]:
    """A wrong question with the right ID: keep waiting for the right reply on the same socket."""
    proto = transport.get_protocol()
    assert isinstance(proto, _UdpWaiter)
    proto.result = loop.create_future()
    return proto.result


async def query_tcp(server: Server, request: dns.message.Message, per_try: float) -> dns.message.Message:
    """One query over TCP (RFC 7766), with the same ID and question checks; a fresh connection, closed after."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(per_try):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            wire = request.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
            STATS.sent_tcp += 1
            await writer.drain()
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                if _reply_id(data) == request.id:
                    break
                STATS.ignored += 1  # not our reply: a server may send others on the connection; keep reading
        return _stream_reply(request, data, server, "TCP")
    except TimeoutError:
        STATS.timeouts += 1
        raise UpstreamTimeout(f"{server}: no reply over TCP in time") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise UpstreamError(f"{server}: TCP: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()


async def exchange(server: Server, request: dns.message.Message, per_try: float) -> dns.message.Message:
    """The server's reply to request: over UDP, then over TCP when it comes back truncated. Each transport gets
    the whole per-try timeout. Raises UpstreamError (timeout, network error, malformed reply)."""
    loop = asyncio.get_running_loop()
    try:
        return await _udp_once(server, request, loop.time() + per_try)
    except dns.message.Truncated:
        pass
    # A fresh ID for the TCP query too (RFC 5452 9.2: never reuse one).
    request.id = secrets.randbits(16)
    return await query_tcp(server, request, per_try)

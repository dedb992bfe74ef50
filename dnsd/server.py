"""DNS over UDP and TCP on every listen address: bounded intake, RFC 7766 framing, timeouts and caps."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable

from dnsd import udp_batch
from dnsd.config import ListenAddress, TcpConfig
from dnsd.engine import Engine
from dnsd.udp_batch import BatchSocket
from dnsd.wire import MAX_QUERY_SIZE

log = logging.getLogger(__name__)

Handle = Callable[[bytes, bool, object], bytes | None]

UDP_RCVBUF = 4 * 1024 * 1024  # the default ~208 KB dropped 0.5-3.6% of bursts (design.md, fast path)
UDP_BATCH = 512  # datagrams read per wake-up before yielding to the loop (fairness with TCP and timers)
TCP_WRITE_HIGH = 256 * 1024  # bytes queued for a client before we wait for it to read


class UdpListener:
    """Reads with loop.add_reader and drains the socket on every wake-up (recvmmsg batches, or non-blocking
    recvfrom until it would block): one callback per burst instead of one per datagram, which is what makes a
    Python responder fast. At most UDP_BATCH datagrams per wake-up, so TCP and timers are never starved."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, engine: Engine, batch_io: bool = True
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.engine = engine
        self.send_errors = 0
        self.batch: BatchSocket | None = None
        if batch_io and udp_batch.available():
            self.batch = BatchSocket(sock)
            loop.add_reader(sock.fileno(), self._on_readable_batch)
        else:
            loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable_batch(self) -> None:
        """recvmmsg/sendmmsg: one system call per batch each way (udp_batch.py)."""
        assert self.batch is not None
        engine = self.engine
        exact = {} if engine.log_queries else engine.table.exact_udp
        hits, unsent = self.batch.serve(exact, engine.handle_miss, engine.log_queries, UDP_BATCH // udp_batch.BATCH)
        self.send_errors += unsent
        engine.counters.queries += hits
        engine.counters.fast_hits += hits

    def _on_readable(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        handle = self.engine.handle_miss
        # The fast path inlined (see Engine._handle): this exact query after its ID was answered before.
        exact = {} if self.engine.log_queries else self.engine.table.exact_udp
        n = hits = 0
        while n < UDP_BATCH:
            try:
                # One octet more than the largest query we accept, so an oversized one is seen as such.
                data, addr = recvfrom(MAX_QUERY_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                n += 1  # e.g. an ICMP error surfaced on the socket: nothing to answer, but it counts
                continue
            n += 1
            rest = exact.get(data[2:])
            if rest is not None:
                hits += 1
                reply: bytes | None = data[:2] + rest
            else:
                reply = handle(data, False, addr)
            if reply is not None:
                try:
                    sendto(reply, addr)
                except OSError:
                    self.send_errors += 1  # full send buffer or unreachable client: UDP may drop
        self.engine.counters.queries += hits
        self.engine.counters.fast_hits += hits

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class TcpListener:
    """RFC 7766: pipelined queries, answered as each finishes; idle timeout before a message starts, a
    per-message timeout once it has; a connection cap; a bounded write buffer for clients that do not read."""

    def __init__(self, handle: Handle, cfg: TcpConfig) -> None:
        self.handle = handle
        self.cfg = cfg
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.refused = 0

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._serve, sock=sock, limit=70_000)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.writers) >= self.cfg.max_connections:
            self.refused += 1
            writer.close()
            return
        self.writers.add(writer)
        try:
            await self._loop(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("TCP connection failed")
        finally:
            self.writers.discard(writer)
            if writer.transport.get_write_buffer_size():
                # A close would wait for a client that does not read: drop the connection and its buffer.
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.cfg
        peer = writer.get_extra_info("peername")
        while True:
            first = await asyncio.wait_for(reader.readexactly(1), cfg.idle_timeout)
            async with asyncio.timeout(cfg.message_timeout):
                second = await reader.readexactly(1)
                (length,) = struct.unpack("!H", first + second)
                if length < 12:
                    return  # length 0 or shorter than a header: close at once (NSD, BIND)
                data = await reader.readexactly(length)
            reply = self.handle(data, True, peer)
            if reply is None:
                return  # a response sent to us (QR=1): close the connection
            writer.write(struct.pack("!H", len(reply)) + reply)
            if writer.transport.get_write_buffer_size() > TCP_WRITE_HIGH:
                # A client that does not read: wait a bounded time, then give up on it.
                await asyncio.wait_for(writer.drain(), cfg.idle_timeout)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)


def bind_pair(addr: ListenAddress, attempts: int = 50) -> tuple[socket.socket, socket.socket, int]:
    """A UDP and a TCP socket on the same port; port 0 picks a free port that both can use."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    for _ in range(attempts if addr.port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            udp.bind((addr.host, addr.port))
            port = udp.getsockname()[1]
            tcp.bind((addr.host, port))
            tcp.listen(1024)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp, port
        except OSError as exc:
            udp.close()
            tcp.close()
            if addr.port != 0 or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free port for UDP and TCP on {addr.host}")


class DnsServer:
    def __init__(
        self, engine: Engine, listen: tuple[ListenAddress, ...], tcp: TcpConfig, batch_io: bool = True
    ) -> None:
        self.engine = engine
        self.batch_io = batch_io
        self.handle: Handle = engine.handle
        self.listen = listen
        self.tcp_cfg = tcp
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpListener] = []
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for addr in self.listen:
                try:
                    udp_sock, tcp_sock, port = bind_pair(addr)
                except OSError as exc:
                    raise OSError(exc.errno, f"{addr}: {exc.strerror}") from None
                self.udp.append(UdpListener(loop, udp_sock, self.engine, self.batch_io))
                tcp = TcpListener(self.handle, self.tcp_cfg)
                await tcp.start(tcp_sock)
                self.tcp.append(tcp)
                self.addresses.append((addr.host, port))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for u in self.udp:
            u.close()
        for t in self.tcp:
            await t.close()
        self.udp.clear()
        self.tcp.clear()

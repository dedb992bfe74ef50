"""DNS over TCP (RFC 7766): framing, pipelining, idle and per-message timeouts, connection caps (one for the whole
server, one per client address), a bounded write buffer per connection."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import socket
import struct
from collections.abc import Callable

from dnsd.config import TcpConfig
from dnsd.engine.engine import Later, Reply, is_later

log = logging.getLogger(__name__)

Handle = Callable[[bytes, bool, object], Reply | Later]

# Octets queued for a client before we stop reading its queries and wait (a bounded time) for it to read; a
# connection whose queue passes TCP_WRITE_MAX (replies of the async tail are written without waiting) is aborted.
# With a 256 KB mark (and a 70,000-octet read buffer), 990 clients that never read took RSS from 39 to 391 MB.
TCP_WRITE_HIGH = 64 * 1024
TCP_WRITE_MAX = 4 * TCP_WRITE_HIGH
# The reader stops taking data from the socket once it holds 2 x this (asyncio StreamReader flow control);
# readexactly of a 65535-octet message still works (it resumes reading while it waits). A client that pipelines
# queries and never reads the replies parked ~150 KB in it per connection with the old limit of 70,000.
TCP_READ_LIMIT = 8 * 1024
# The receive buffer of the listening socket, inherited by every connection (set before accept, so it bounds the
# window from the first segment): one read takes what the kernel holds, so this bounds what a client that pipelines
# queries and never reads the replies parks in our read buffer. The kernel doubles it (socket(7)); queries are
# small, and a 64 KB message still arrives, in pieces.
TCP_RCVBUF = 16 * 1024
# One client address may hold at most this share of tcp.max_connections (RFC 7766 6.2.2 lets a server limit
# connections per client), so one client holding its maximum does not lock the others out.
PER_CLIENT_SHARE = 4  # max_connections // PER_CLIENT_SHARE per address, at least 1


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op where there is none (musl, macOS)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> None:
        fn(0)

    return trim


# Connection buffers are freed to the C heap when a connection goes, but glibc keeps freed memory in the middle of
# the heap, and some of it is only freed by the cycle collector: 500 clients that never read took RSS from 32 to
# 51 MB and it stayed there after they left. After a connection that left data behind (aborted with replies
# queued, or reset by the client) the server collects cycles and trims the heap once, TRIM_DELAY later
# (malloc_trim(3) returns free pages to the kernel), so a burst of such closes costs one collection and one trim.
TRIM_DELAY = 1.0
malloc_trim = _malloc_trim()


class ConnectionLimits:
    """The connection count of every TCP listener of a server together, and per client address."""

    def __init__(self, max_connections: int, per_client: int | None = None) -> None:
        self.max_connections = max_connections
        self.per_client = per_client if per_client is not None else max(1, max_connections // PER_CLIENT_SHARE)
        self.total = 0
        self.by_client: dict[str, int] = {}
        self.refused = 0
        self._trim: asyncio.TimerHandle | None = None

    def admit(self, client: str) -> bool:
        held = self.by_client.get(client, 0)
        if self.total >= self.max_connections or held >= self.per_client:
            self.refused += 1
            return False
        self.total += 1
        self.by_client[client] = held + 1
        return True

    def release(self, client: str, heavy: bool = False) -> None:
        """A connection is gone; heavy: it left data behind (aborted with replies queued, or reset), so its
        buffers are worth returning to the kernel."""
        self.total -= 1
        held = self.by_client[client] - 1
        if held:
            self.by_client[client] = held
        else:
            del self.by_client[client]  # the dict holds only clients with a connection open: bounded by the cap
        if heavy and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        gc.collect()  # the buffers of a closed connection can sit in reference cycles (exception tracebacks)
        malloc_trim()

    def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None


class TcpListener:
    """RFC 7766: pipelined queries, answered as each finishes (out of order when some wait on the async tail);
    idle timeout before a message starts, a per-message timeout once it has; a connection cap; a bounded write
    buffer for clients that do not read."""

    def __init__(self, handle: Handle, cfg: TcpConfig, limits: ConnectionLimits | None = None) -> None:
        self.handle = handle
        self.cfg = cfg
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        # Shared by all listeners of a DnsServer, so max_connections holds for the server as a whole.
        self.limits = limits if limits is not None else ConnectionLimits(cfg.max_connections)
        self.refused = 0

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._serve, sock=sock, limit=TCP_READ_LIMIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.limits.admit(client):
            self.refused += 1
            writer.transport.abort()  # nothing was sent on it: a RST frees the slot at once
            return
        writer.transport.set_write_buffer_limits(high=TCP_WRITE_HIGH, low=TCP_WRITE_HIGH // 4)
        self.writers.add(writer)
        heavy = False
        try:
            await self._loop(reader, writer)
        except ConnectionError:
            heavy = True
        except (asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("TCP connection from %s failed", client or "?", extra={"client": client})
        finally:
            self.writers.discard(writer)
            try:
                if writer.transport.get_write_buffer_size():
                    # A close would wait for a client that does not read: drop the connection and its buffer.
                    heavy = True
                    writer.transport.abort()
                else:
                    writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            finally:
                self.limits.release(client, heavy)  # once the socket is gone: the caps count descriptors

    async def _loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.cfg
        peer = writer.get_extra_info("peername")
        # Replies still to come from the async tail, at most max_pipeline of them: they go out as each is ready,
        # out of order (RFC 7766 6.2.1.1), while the next queries are read.
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    first = await asyncio.wait_for(reader.readexactly(1), cfg.idle_timeout)
                except asyncio.IncompleteReadError:
                    # The client closed its side: the replies it is still owed go out first (RFC 7766 6.2.4).
                    if pending:
                        await asyncio.wait(pending, timeout=cfg.idle_timeout)
                    return
                async with asyncio.timeout(cfg.message_timeout):
                    second = await reader.readexactly(1)
                    (length,) = struct.unpack("!H", first + second)
                    if length < 12:
                        return  # length 0 or shorter than a header: close at once (NSD, BIND)
                    data = await reader.readexactly(length)
                reply = self.handle(data, True, peer)
                if is_later(reply):
                    assert reply is not None and not isinstance(reply, bytes)
                    task = asyncio.get_running_loop().create_task(self._reply_later(reply, writer))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    if len(pending) >= cfg.max_pipeline:
                        # Stop reading until one finishes: the client's own queries are the back-pressure.
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if reply is None:
                    return  # a response sent to us (QR=1): close the connection
                assert isinstance(reply, bytes)
                writer.write(struct.pack("!H", len(reply)) + reply)
                buffered = writer.transport.get_write_buffer_size()
                if buffered > TCP_WRITE_MAX:
                    return  # past the hard limit: the connection is aborted and its queue freed (_serve)
                if buffered > TCP_WRITE_HIGH:
                    # A client that does not read: wait a bounded time, then give up on it.
                    await asyncio.wait_for(writer.drain(), cfg.idle_timeout)
        finally:
            for task in pending:
                task.cancel()

    async def _reply_later(self, later: Later, writer: asyncio.StreamWriter) -> None:
        reply = await later
        if reply is not None and not writer.is_closing():
            # One write per message, length and body together (RFC 7766 8).
            writer.write(struct.pack("!H", len(reply)) + reply)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

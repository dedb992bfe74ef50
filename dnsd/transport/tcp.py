"""DNS over TCP (RFC 7766): framing, pipelining, idle and per-message timeouts, a connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from dnsd.config import TcpConfig
from dnsd.engine.engine import Later, Reply, is_later

log = logging.getLogger(__name__)

Handle = Callable[[bytes, bool, object], Reply | Later]

TCP_WRITE_HIGH = 256 * 1024  # bytes queued for a client before we wait for it to read


class TcpListener:
    """RFC 7766: pipelined queries, answered as each finishes (out of order when some wait on the async tail);
    idle timeout before a message starts, a per-message timeout once it has; a connection cap; a bounded write
    buffer for clients that do not read."""

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
                if writer.transport.get_write_buffer_size() > TCP_WRITE_HIGH:
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

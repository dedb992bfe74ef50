"""DNS over TCP (RFC 7766): framing, pipelining, idle and per-message timeouts, a connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from dnsd.config import TcpConfig

log = logging.getLogger(__name__)

Handle = Callable[[bytes, bool, object], bytes | None]

TCP_WRITE_HIGH = 256 * 1024  # bytes queued for a client before we wait for it to read


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

"""DNS over TLS upstreams (RFC 7858): one kept-open, pipelined connection per upstream, verified by name.

A TlsUpstream owns at most one TLS connection to its server, opened on the first query and reused by the
following ones (RFC 7858 3.4: reuse connections, pipeline queries). Queries are sent with a fresh random ID
that is not in flight on the connection, and the reader task matches replies to them by ID; a reply is then
accepted only when it repeats the question (RFC 5452 9.1, as the UDP and TCP clients). The certificate is
verified against the configured server name (RFC 7858 4.2 "strict privacy" with an authentication name,
RFC 8310 8.1), TLS 1.2 or newer (RFC 7858 3.2, RFC 8310 9). A connection with nothing in flight is closed after
IDLE_TIMEOUT and reopened on demand (RFC 7766 6.2.3: clients should close idle connections). A failed connect
(refused, handshake, verification) starts a reconnect backoff during which queries fail at once; every
failure is an UpstreamError, so the forward link's failover and down-marking treat TLS as the other transports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import dns.message

from dnsd.config import parse_tls_upstream
from dnsd.upstream.client import STATS, UpstreamError, UpstreamTimeout, _reply_id, _stream_reply

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 10.0  # seconds a connection with nothing in flight stays open (RFC 7858 3.4 leaves it to us)
MAX_INFLIGHT = 100  # queries in flight on one connection; the next ones wait (bounded by their own timeout)
BACKOFF_MIN = 0.05  # seconds after a failed connect before the next try; doubles per failure in a row
CLOSE_TIMEOUT = 1.0  # seconds shutdown waits for the TLS close with one server before dropping the socket
BACKOFF_MAX = 2.0  # the cap: a down server is retried (by the health probe) at least this often


@dataclass(frozen=True, slots=True)
class TlsServer:
    """A DoT upstream: IP address (canonical text), port and the name its certificate must carry."""

    host: str
    port: int
    name: str

    def __str__(self) -> str:
        addr = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"tls://{addr}#{self.name}"


def parse_tls_server(text: str) -> TlsServer:
    """'tls://IP[:port]#server.name' (config.py has already checked the form)."""
    addr, name = parse_tls_upstream(text, "upstream")
    return TlsServer(str(ipaddress.ip_address(addr.host.split("%")[0])), addr.port, name)


def make_context(cafile: Path | None) -> ssl.SSLContext:
    """Verification on, by name (check_hostname), against the system CAs or the configured bundle; TLS 1.2+."""
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(slots=True)
class TlsStats:
    """Per upstream: what tests and, later, metrics read."""

    connects: int = 0  # TLS connections established
    connect_failures: int = 0  # refused, handshake or verification failures
    queries: int = 0  # queries written
    peak_inflight: int = 0  # the most queries in flight on one connection at once (pipelining)
    ignored: int = 0  # replies that matched no query in flight


class _Conn:
    """One open TLS connection: the writer, the reader task and the queries in flight (ID -> waiting future)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closed = False


class TlsUpstream:
    """The client side of one DoT upstream (owned by the forward link; close() on shutdown)."""

    def __init__(
        self,
        server: TlsServer,
        context: ssl.SSLContext,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self.server = server
        self.context = context
        self.idle_timeout = idle_timeout
        self.stats = TlsStats()
        self._conn: _Conn | None = None
        self._connect_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_inflight)
        self._backoff = 0.0
        self._retry_at = 0.0
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def query(self, request: dns.message.Message, per_try: float) -> dns.message.Message:
        """The reply to request within per_try seconds; UpstreamError on any failure."""
        if self._closed:
            raise UpstreamError(f"{self.server}: closed")
        try:
            async with asyncio.timeout(per_try), self._slots:
                conn = await self._connection()
                data = await self._send(conn, request)
        except TimeoutError:
            STATS.timeouts += 1
            raise UpstreamTimeout(f"{self.server}: no reply over TLS in time") from None
        return _stream_reply(request, data, self.server, "TLS")

    async def _send(self, conn: _Conn, request: dns.message.Message) -> bytes:
        loop = asyncio.get_running_loop()
        qid = secrets.randbits(16)
        while qid in conn.pending:  # at most MAX_INFLIGHT of 65536 taken: this ends fast
            qid = secrets.randbits(16)
        request.id = qid  # RFC 5452 9.2: unpredictable, and unique on the connection (RFC 7766 7)
        wire = request.to_wire()
        fut: asyncio.Future[bytes] = loop.create_future()
        conn.pending[qid] = fut
        self.stats.peak_inflight = max(self.stats.peak_inflight, len(conn.pending))
        try:
            conn.writer.write(struct.pack("!H", len(wire)) + wire)
            self.stats.queries += 1
            await conn.writer.drain()
            return await fut
        except (OSError, ConnectionError) as exc:
            self._drop(conn, f"write failed: {exc}")
            raise UpstreamError(f"{self.server}: TLS: {exc}") from exc
        finally:
            if conn.pending.get(qid) is fut:
                del conn.pending[qid]

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise UpstreamError(f"{self.server}: TLS connect failed recently; retrying in a moment")
            try:
                reader, writer = await asyncio.open_connection(
                    self.server.host, self.server.port, ssl=self.context, server_hostname=self.server.name
                )
            except (OSError, ssl.SSLError) as exc:  # refused, reset, handshake and verification errors
                self.stats.connect_failures += 1
                self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
                self._retry_at = loop.time() + self._backoff
                raise UpstreamError(f"{self.server}: TLS connect: {exc}") from exc
            self._backoff = 0.0
            self._retry_at = 0.0
            self.stats.connects += 1
            conn = _Conn(reader, writer)
            conn.task = loop.create_task(self._read(conn), name=f"dot reader {self.server}")
            self._conn = conn
            log.debug("forward: TLS connection to %s open", self.server)
            return conn

    async def _read(self, conn: _Conn) -> None:
        """Match replies to the queries in flight by ID until the connection closes, fails or idles out."""
        why = "closed by the server"
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        head = await conn.reader.readexactly(2)
                except TimeoutError:
                    if conn.pending:  # queries in flight time out on their own; keep the connection for them
                        continue
                    why = "idle"
                    return
                data = await conn.reader.readexactly(struct.unpack("!H", head)[0])
                qid = _reply_id(data)
                fut = conn.pending.get(qid) if qid is not None else None
                if fut is None or fut.done():
                    self.stats.ignored += 1  # a late reply to a query that timed out, or garbage
                    continue
                fut.set_result(data)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            why = f"read failed: {exc!r}"
        finally:
            self._drop(conn, why)

    def _drop(self, conn: _Conn, why: str) -> None:
        """Close the connection and fail what is in flight on it: the callers move to the next upstream."""
        if conn.closed:
            return
        conn.closed = True
        if self._conn is conn:
            self._conn = None
        log.debug("forward: TLS connection to %s closed (%s)", self.server, why)
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(UpstreamError(f"{self.server}: TLS connection {why}"))
        conn.pending.clear()
        conn.writer.close()
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    async def close(self) -> None:
        """Close the connection and wait for its reader task (app shutdown)."""
        self._closed = True
        conn = self._conn
        if conn is None:
            return
        task = conn.task
        self._drop(conn, "shutting down")
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        # The TLS close (close_notify, RFC 8446 6.1) waits on the peer: a server that never answers it must not
        # hold up shutdown, so the wait is bounded and the socket aborted after it.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.writer.wait_closed()
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError):
            conn.writer.transport.abort()

"""DNS over UDP: a reader that drains the socket on every wake-up, in recvmmsg batches where it can, and a
bounded set of replies still to come from the async tail."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from dnsd.engine.engine import Engine, Later, Reply, is_later
from dnsd.proto.wire import MAX_QUERY_SIZE
from dnsd.transport import udp_batch
from dnsd.transport.udp_batch import BatchSocket

UDP_BATCH = 512  # datagrams read per wake-up before yielding to the loop (fairness with TCP and timers)


class UdpListener:
    """Reads with loop.add_reader and drains the socket on every wake-up (recvmmsg batches, or non-blocking
    recvfrom until it would block): one callback per burst instead of one per datagram, which is what makes a
    Python responder fast. At most UDP_BATCH datagrams per wake-up, so TCP and timers are never starved.

    A query that waits on the async tail is not waited for: the reader goes on, and the reply is sent when it is
    ready, from a task this listener owns (the engine bounds how many wait at once)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, engine: Engine, batch_io: bool = True
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.v6 = sock.family == socket.AF_INET6  # which exact table (one per address family: the metrics' label)
        self.engine = engine
        self.send_errors = 0
        self.pending: set[asyncio.Task[None]] = set()
        self.batch: BatchSocket | None = None
        if batch_io and udp_batch.available():
            self.batch = BatchSocket(sock)
            loop.add_reader(sock.fileno(), self._on_readable_batch)
        else:
            loop.add_reader(sock.fileno(), self._on_readable)

    def _miss(self, data: bytes, tcp: bool, client: object) -> Reply:
        """The engine's answer for a query the exact table did not hold; a later reply is sent by a task."""
        out = self.engine.handle_miss(data, False, client)
        if is_later(out):
            assert not isinstance(out, bytes) and out is not None and isinstance(client, tuple)
            self._send_later(out, client)
            return None
        assert out is None or isinstance(out, bytes)
        return out

    def _send_later(self, later: Later, client: tuple[str, int]) -> None:
        task = self.loop.create_task(self._deliver(later, client))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _deliver(self, later: Later, client: tuple[str, int]) -> None:
        reply = await later
        if reply is not None:
            try:
                self.sock.sendto(reply, client)
            except OSError:
                self.send_errors += 1  # full send buffer or unreachable client: UDP may drop

    def _on_readable_batch(self) -> None:
        """recvmmsg/sendmmsg: one system call per batch each way (udp_batch.py)."""
        assert self.batch is not None
        engine = self.engine
        # The sender is always asked for on a miss: a reply from the async tail must know where to go.
        hits, unsent = self.batch.serve(
            engine.exact_table(False, self.v6), self._miss, True, UDP_BATCH // udp_batch.BATCH, engine.cache_table()
        )
        self.send_errors += unsent
        engine.counters.queries += hits
        engine.counters.fast_hits += hits

    def _on_readable(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        handle = self._miss
        # The fast path inlined (see Engine.handle): this exact query after its ID was answered before.
        exact = self.engine.exact_table(False, self.v6)
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
            if not addr[1]:
                continue  # source port 0: spoofed, and no reply can be sent to it (see udp_batch.py)
            slot = exact.get(data[2:])
            if slot is not None:
                hits += 1
                slot.hits += 1
                reply: bytes | None = data[:2] + slot.rest
            else:
                reply = handle(data, False, addr)
            if reply is not None:
                try:
                    sendto(reply, addr)
                except OSError:
                    self.send_errors += 1  # full send buffer or unreachable client: UDP may drop
        self.engine.counters.queries += hits
        self.engine.counters.fast_hits += hits

    def drain(self) -> None:
        """Stop reading, then answer what the socket already holds (those queries arrived before it stopped
        accepting): the last step of a graceful stop or of a listen address leaving the config."""
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(Exception):
            if self.batch is not None:
                self._on_readable_batch()
            else:
                self._on_readable()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        for task in list(self.pending):
            task.cancel()
        if self.pending:
            await asyncio.wait(self.pending, timeout=1.0)
        self.sock.close()

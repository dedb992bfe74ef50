"""DNS over UDP: a reader that drains the socket on every wake-up, in recvmmsg batches where it can."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from dnsd.engine.engine import Engine
from dnsd.proto.wire import MAX_QUERY_SIZE
from dnsd.transport import udp_batch
from dnsd.transport.udp_batch import BatchSocket

UDP_BATCH = 512  # datagrams read per wake-up before yielding to the loop (fairness with TCP and timers)


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

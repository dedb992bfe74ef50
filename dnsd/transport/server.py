"""The listeners on every listen address: a UDP and a TCP socket bound to the same port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket

from dnsd.config import ListenAddress, TcpConfig
from dnsd.engine.engine import Engine
from dnsd.transport.tcp import TCP_RCVBUF, ConnectionLimits, Handle, TcpListener
from dnsd.transport.udp import UdpListener

log = logging.getLogger(__name__)

UDP_RCVBUF = 4 * 1024 * 1024  # the default ~208 KB dropped 0.5-3.6% of bursts
FD_MARGIN = 256  # descriptors besides TCP connections: listeners, the event loop, watched files, logs


def raise_fd_limit(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `need` if it is lower, as far as the hard limit allows (the usual soft
    default of 1024 cannot hold tcp.max_connections of 1000 plus the rest). Returns the soft limit now; logs a
    warning when it stays below `need` (accept then fails with EMFILE before the connection cap is reached)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit %d (hard %d) is below the %d that tcp.max_connections needs; raise it (ulimit -n)",
            soft,
            hard,
            need,
        )
    return soft


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
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TCP_RCVBUF)  # see tcp.py
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
        # One count for all TCP listeners: tcp.max_connections is for the server, not per listen address.
        self.tcp_limits = ConnectionLimits(tcp.max_connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        raise_fd_limit(self.tcp_cfg.max_connections + 2 * len(self.listen) + FD_MARGIN)
        try:
            for addr in self.listen:
                try:
                    udp_sock, tcp_sock, port = bind_pair(addr)
                except OSError as exc:
                    raise OSError(exc.errno, f"{addr}: {exc.strerror}") from None
                self.udp.append(UdpListener(loop, udp_sock, self.engine, self.batch_io))
                tcp = TcpListener(self.handle, self.tcp_cfg, self.tcp_limits)
                await tcp.start(tcp_sock)
                self.tcp.append(tcp)
                self.addresses.append((addr.host, port))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for u in self.udp:
            await u.close()
        for t in self.tcp:
            await t.close()
        self.tcp_limits.close()
        self.udp.clear()
        self.tcp.clear()

"""The listeners on every listen address (a UDP and a TCP socket bound to the same port), rebound and drained; with
`workers` > 1, the SO_REUSEPORT groups a supervising parent binds and its workers serve."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from dataclasses import dataclass

from dnsd.config import ListenAddress, TcpConfig
from dnsd.engine.engine import Engine
from dnsd.transport.tcp import PER_CLIENT_SHARE, TCP_RCVBUF, ConnectionLimits, Handle, TcpListener
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


def bind_pair(
    addr: ListenAddress, attempts: int = 50, reuseport: bool = False
) -> tuple[socket.socket, socket.socket, int]:
    """A UDP and a TCP socket on the same port; port 0 picks a free port that both can use. reuseport: both join
    the port's SO_REUSEPORT group (workers > 1), in which the kernel spreads datagrams by a hash of their
    addresses and connections over the group's listening sockets (socket(7))."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    for _ in range(attempts if addr.port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if reuseport:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


Pair = tuple[socket.socket, socket.socket]  # a UDP and a TCP socket on one port


def bind_group(addr: ListenAddress, n: int, attempts: int = 50) -> tuple[list[Pair], int]:
    """n UDP+TCP pairs in one SO_REUSEPORT group on addr; returns the pairs and the port. The supervisor binds them
    before any worker starts, so that `--listen HOST:0` gives one port and a port in use fails the start, as with
    one process. Port 0 is first picked by a pair bound without SO_REUSEPORT (the kernel may hand a SO_REUSEPORT
    bind to port 0 a port that another group of the same user holds, which would join it), then released and
    bound as the group; a port 0 taken in between is tried again."""
    for _ in range(attempts if addr.port == 0 else 1):
        # Probed without SO_REUSEPORT first, also for a fixed port: a socket of another dnsd of the same user with
        # SO_REUSEPORT set would otherwise let this group join its own and share its traffic without a word.
        try:
            udp, tcp, port = bind_pair(addr)
        except OSError as exc:
            raise OSError(exc.errno, f"{addr}: {exc.strerror}") from None
        udp.close()
        tcp.close()
        pairs: list[Pair] = []
        try:
            for _i in range(n):
                udp, tcp, _port = bind_pair(ListenAddress(addr.host, port), reuseport=True)
                pairs.append((udp, tcp))
            return pairs, port
        except OSError as exc:
            for udp, tcp in pairs:
                udp.close()
                tcp.close()
            if addr.port != 0 or exc.errno != errno.EADDRINUSE:
                raise OSError(exc.errno, f"{addr}: {exc.strerror}") from None
    raise OSError(errno.EADDRINUSE, f"{addr}: no free port for UDP and TCP")


@dataclass(frozen=True, slots=True)
class Shared:
    """A listen address of a worker (workers > 1): the port the supervisor bound, and the pair of sockets it
    handed over (None: bind a new pair to `port` in the SO_REUSEPORT group, as a restarted worker does once its
    data is loaded)."""

    port: int
    pair: tuple[socket.socket, socket.socket] | None = None


@dataclass(slots=True, eq=False)
class Listener:
    """One listen address: its UDP and TCP listeners on one port."""

    addr: ListenAddress  # as configured (port 0: any)
    bound: tuple[str, int]  # where it listens
    udp: UdpListener
    tcp: TcpListener

    def serves(self, addr: ListenAddress) -> bool:
        """Whether this listener already is addr: the same configured address, or the port it was given."""
        return addr == self.addr or (addr.port != 0 and (addr.host, addr.port) == self.bound)


class DnsServer:
    """Every listen address. start() binds them; rebind() (a config reload) binds the new addresses before
    the ones no longer configured close; drain() (SIGTERM, after the lameduck period) stops accepting and lets
    what is in flight finish."""

    def __init__(
        self,
        engine: Engine,
        listen: tuple[ListenAddress, ...],
        tcp: TcpConfig,
        batch_io: bool = True,
        shared: dict[ListenAddress, Shared] | None = None,
    ) -> None:
        self.engine = engine
        # A worker's listen addresses (workers > 1): the supervisor's sockets or ports; None: bind them here.
        self.shared = shared
        self.batch_io = batch_io
        self.handle: Handle = engine.handle
        self.listen = listen
        self.tcp_cfg = tcp
        self.listeners: list[Listener] = []
        # One count for all TCP listeners: tcp.max_connections is for the server, not per listen address.
        self.tcp_limits = ConnectionLimits(tcp.max_connections)

    @property
    def udp(self) -> list[UdpListener]:
        return [li.udp for li in self.listeners]

    @property
    def tcp(self) -> list[TcpListener]:
        return [li.tcp for li in self.listeners]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [li.bound for li in self.listeners]

    @property
    def joins_late(self) -> bool:
        """A restarted worker: it binds into the SO_REUSEPORT groups once its data is loaded, so that its
        siblings, not a worker still loading (SERVFAIL for every cluster name), answer until then."""
        return self.shared is not None and any(s.pair is None for s in self.shared.values())

    def _pair(self, addr: ListenAddress) -> tuple[socket.socket, socket.socket, int]:
        shared = self.shared.get(addr) if self.shared is not None else None
        if shared is None:
            return bind_pair(addr)
        if shared.pair is None:
            return bind_pair(ListenAddress(addr.host, shared.port), reuseport=True)
        udp, tcp = shared.pair
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp, shared.port

    async def _bind(self, addr: ListenAddress) -> Listener:
        try:
            udp_sock, tcp_sock, port = self._pair(addr)
        except OSError as exc:
            raise OSError(exc.errno, f"{addr}: {exc.strerror}") from None
        udp = UdpListener(asyncio.get_running_loop(), udp_sock, self.engine, self.batch_io)
        tcp = TcpListener(self.handle, self.tcp_cfg, self.tcp_limits)
        try:
            await tcp.start(tcp_sock)
        except BaseException:
            await udp.close()
            tcp_sock.close()
            raise
        return Listener(addr, (addr.host, port), udp, tcp)

    async def start(self) -> None:
        raise_fd_limit(self.tcp_cfg.max_connections + 2 * len(self.listen) + FD_MARGIN)
        try:
            for addr in self.listen:
                self.listeners.append(await self._bind(addr))
        except BaseException:
            await self.close()
            raise

    async def rebind(self, listen: tuple[ListenAddress, ...], tcp: TcpConfig) -> list[Listener]:
        """Listen on `listen` from now on: bind every new address first (an address that cannot be bound fails
        the whole change and closes what it bound, so the old set keeps serving untouched), then swap the set
        in. An address in both sets keeps its sockets: not one query to it is dropped. Returns the listeners no
        longer listed, still open and answering: the caller retires them once the rest of the config is in."""
        self.set_tcp(tcp)
        raise_fd_limit(tcp.max_connections + 2 * (len(listen) + len(self.listeners)) + FD_MARGIN)
        kept: list[Listener] = []
        added: list[Listener] = []
        try:
            for addr in listen:
                same = next((li for li in self.listeners if li.serves(addr) and li not in kept), None)
                if same is not None:
                    kept.append(same)
                else:
                    added.append(await self._bind(addr))
        except BaseException:
            for li in added:
                await self._close_now(li)
            raise
        gone = [li for li in self.listeners if li not in kept]
        # In the configured order (the first address is the one `dnsd listening on` reports first).
        self.listeners = [next(li for li in kept + added if li.serves(addr)) for addr in listen]
        self.listen = listen
        for li in added:
            log.info("listening on udp+tcp %s:%d", *li.bound, extra={"listen": str(li.addr)})
        return gone

    async def retire(self, gone: list[Listener], grace: float) -> None:
        """Close listeners rebind() took out, draining each for at most `grace` seconds."""
        await asyncio.gather(*(self._drain_one(li, grace) for li in gone))
        for li in gone:
            log.info("stopped listening on %s:%d", *li.bound, extra={"listen": str(li.addr)})

    def set_tcp(self, tcp: TcpConfig) -> None:
        """New TCP limits: new connections take them; connections already open keep the ones they started with."""
        self.tcp_cfg = tcp
        self.tcp_limits.max_connections = tcp.max_connections
        self.tcp_limits.per_client = max(1, tcp.max_connections // PER_CLIENT_SHARE)
        for li in self.listeners:
            li.tcp.cfg = tcp

    async def drain(self, grace: float) -> None:
        """Stop accepting on every address (UDP: read no more, after one last pass over what the socket holds;
        TCP: accept no more), then give the queries in flight and the open TCP connections at most `grace`
        seconds to finish, then close everything."""
        listeners, self.listeners = self.listeners, []
        await asyncio.gather(*(self._drain_one(li, grace) for li in listeners))
        self.tcp_limits.close()

    async def _drain_one(self, li: Listener, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        udp = li.udp
        udp.drain()  # stop reading; one last pass over what the socket already holds
        if li.tcp.server is not None:
            li.tcp.server.close()  # the listening socket only: open connections go on being served
        while (udp.pending or li.tcp.writers) and loop.time() < deadline:
            # A bounded step: a TCP connection ends without a task to wait on.
            step = min(0.05, max(0.0, deadline - loop.time()))
            waiting = [t for t in udp.pending if not t.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=step)
            else:
                await asyncio.sleep(step)
        await self._close_now(li)

    async def _close_now(self, li: Listener) -> None:
        await li.udp.close()
        await li.tcp.close()

    async def close(self) -> None:
        listeners, self.listeners = self.listeners, []
        for li in listeners:
            await self._close_now(li)
        self.tcp_limits.close()

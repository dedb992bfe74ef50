"""The supervisor of `workers: N` (N > 1): binds the listen sockets (N per address, one SO_REUSEPORT group), starts
N `python -m dnsd --worker SPEC` processes that each serve one socket of every group with the whole of dnsd (its
own source, store, cache and fast path), restarts a worker that dies (with backoff, at most RESTART_LIMIT times a
minute), forwards SIGTERM/SIGINT (each worker drains) and SIGHUP (each reloads), serves HTTP for all of them
(dnsd.workers.web), and exits once every worker has exited after a stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnsd.config import Config, Overrides, read_config
from dnsd.errors import ConfigError
from dnsd.observe.logs import LogSetup
from dnsd.transport.server import bind_group
from dnsd.workers.spec import Endpoint, WorkerSpec

log = logging.getLogger("dnsd.workers")

RESTART_WINDOW = 60.0  # seconds
RESTART_LIMIT = 5  # restarts of one worker within RESTART_WINDOW; one more and the supervisor stops (exit 1)
BACKOFF_FIRST = 0.2  # seconds before the first restart; doubled for each restart in the window
BACKOFF_MAX = 5.0
STOP_MARGIN = 10.0  # seconds past drain.lameduck + drain.grace before a worker that has not exited is killed


@dataclass(eq=False)
class Worker:
    """One slot: its current process, and its restart history."""

    index: int
    http: str | None  # its private unix socket (None: http off)
    proc: asyncio.subprocess.Process | None = None
    control: socket.socket | None = None
    started: bool = False  # this incarnation has said "started" (its data is loaded, it listens)
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, within RESTART_WINDOW
    total_restarts: int = 0
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    def __init__(self, cfg: Config, argv: list[str], path: Path | None, flags: Overrides, logs: LogSetup) -> None:
        self.cfg = cfg
        self.argv = argv  # the command line the workers get too (the config file, the flags)
        self.path = path
        self.flags = flags
        self.logs = logs
        self.workers: list[Worker] = []
        self.ports: list[int] = []  # per listen address: the port of its group
        self.stop = asyncio.Event()
        self.gave_up = False
        self.all_started = asyncio.Event()
        self.stopping_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sockdir: str | None = None
        self._reload: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the run

    async def run(self) -> int:
        cfg = self.cfg
        n = cfg.workers
        groups = []
        try:
            for addr in cfg.listen:
                pairs, port = bind_group(addr, n)
                groups.append(pairs)
                self.ports.append(port)
        except BaseException:
            for pairs in groups:
                for udp, tcp in pairs:
                    udp.close()
                    tcp.close()
            raise
        if cfg.http is not None:
            self._sockdir = tempfile.mkdtemp(prefix="dnsd-workers-")  # mode 0700: only this user reads the workers
        self.workers = [
            Worker(i, os.path.join(self._sockdir, f"worker-{i}.sock") if self._sockdir else None) for i in range(n)
        ]
        from dnsd.workers.web import SupervisorHttp

        http = SupervisorHttp(self, cfg.http) if cfg.http is not None else None
        loop = asyncio.get_running_loop()
        self._signals(loop)
        try:
            if http is not None:
                await http.start()
            for w in self.workers:
                pairs = [group[w.index] for group in groups]
                self._tasks.append(asyncio.create_task(self._keep(w, pairs), name=f"dnsd-worker-{w.index}"))
            waiting = asyncio.ensure_future(self.all_started.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopping.cancel()
            if self.all_started.is_set() and not self.stop.is_set():
                self._print_listening()
            await self.stop.wait()
            await self._stop_all()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for w in self.workers:
                _kill(w)
            if self._reload is not None:
                self._reload.cancel()
                await asyncio.gather(self._reload, return_exceptions=True)
            if http is not None:
                await http.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                loop.remove_signal_handler(sig)
                if sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                    signal.signal(sig, signal.SIG_IGN)
            if self._sockdir is not None:
                shutil.rmtree(self._sockdir, ignore_errors=True)
        if self.gave_up:
            return 1
        log.info("stopped: every worker has exited")
        return 0

    def _print_listening(self) -> None:
        for addr, port in zip(self.cfg.listen, self.ports, strict=True):
            host = addr.host
            shown = f"[{host}]" if ":" in host else host
            print(
                f"dnsd listening on udp+tcp {shown}:{port} ({len(self.workers)} workers); try: "
                f"dig @{host} -p {port} web.default.svc.{self.cfg.cluster.domain}",
                flush=True,
            )

    # ------------------------------------------------------------ one slot

    async def _keep(self, w: Worker, pairs: list[tuple[socket.socket, socket.socket]]) -> None:
        """Run slot w: start its worker (the first time on the sockets bound above, later joining the groups by
        port), wait for it to exit, and start it again unless dnsd is stopping or it keeps dying."""
        first: list[tuple[socket.socket, socket.socket]] | None = pairs
        while not self.stop.is_set():
            try:
                await self._spawn(w, first)
            except OSError:
                log.exception("worker %d could not be started", w.index)
                code = 127  # as a shell says of a command it cannot run; counted as a death
            else:
                assert w.proc is not None
                code = await w.proc.wait()
            first = None
            if w.reader is not None:
                w.reader.cancel()
                await asyncio.gather(w.reader, return_exceptions=True)
            if w.control is not None:
                w.control.close()
                w.control = None
            w.started = False
            if self.stop.is_set():
                log.info("worker %d (pid %d) exited with %s", w.index, w.pid, _exit_text(code))
                return
            now = time.monotonic()
            while w.restarts and now - w.restarts[0] > RESTART_WINDOW:
                w.restarts.popleft()
            if len(w.restarts) >= RESTART_LIMIT:
                log.error(
                    "worker %d (pid %d) exited with %s, its %d restarts within %gs are used up: stopping dnsd",
                    w.index,
                    w.pid,
                    _exit_text(code),
                    len(w.restarts),
                    RESTART_WINDOW,
                )
                self.gave_up = True
                self._terminate(None)
                return
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** len(w.restarts))
            log.warning(
                "worker %d (pid %d) exited with %s: restarting it in %.1fs (restart %d within %gs)",
                w.index,
                w.pid,
                _exit_text(code),
                delay,
                len(w.restarts) + 1,
                RESTART_WINDOW,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            w.restarts.append(time.monotonic())
            w.total_restarts += 1

    async def _spawn(self, w: Worker, pairs: list[tuple[socket.socket, socket.socket]] | None) -> None:
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno()]
        endpoints = []
        for i, (addr, port) in enumerate(zip(self.cfg.listen, self.ports, strict=True)):
            if pairs is not None:
                udp, tcp = pairs[i]
                fds += [udp.fileno(), tcp.fileno()]
                endpoints.append(Endpoint(addr.host, addr.port, port, udp.fileno(), tcp.fileno()))
            else:
                endpoints.append(Endpoint(addr.host, addr.port, port))
        spec = WorkerSpec(w.index, theirs.fileno(), w.http, tuple(endpoints))
        if w.http is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(w.http)  # a dead incarnation's
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dnsd",
                "--worker",
                spec.encode(),
                *self.argv,
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                # Its own process group: a terminal's ^C reaches the supervisor only, which forwards it once.
                process_group=0,
            )
        finally:
            theirs.close()
            for udp, tcp in pairs or ():
                # The worker holds them now: when it dies they close with it and the kernel sends its share of
                # the traffic to the others until its successor joins the group.
                udp.close()
                tcp.close()
        ours.setblocking(False)
        w.control = ours
        w.reader = asyncio.create_task(self._read_control(w, ours), name=f"dnsd-worker-{w.index}-control")
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    async def _read_control(self, w: Worker, sock: socket.socket) -> None:
        """The worker's "started" line (its data is loaded and it listens); EOF when it exits."""
        loop = asyncio.get_running_loop()
        buf = b""
        while len(buf) < 1024:
            data = await loop.sock_recv(sock, 64)
            if not data:
                return
            buf += data
            if b"started\n" in buf and not w.started:
                w.started = True
                log.info("worker %d (pid %d) is serving", w.index, w.pid)
                if all(x.started for x in self.workers):
                    self.all_started.set()

    # ------------------------------------------------------------ signals

    def _signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._terminate, sig)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            loop.add_signal_handler(sig, log.info, "%s received: ignored", sig.name)

    def _terminate(self, sig: signal.Signals | None) -> None:
        """SIGTERM or SIGINT (sig None: the supervisor gives up): every worker drains (drain.lameduck, then
        drain.grace); a second one ends their lameduck at once."""
        if sig is not None:
            again = self.stop.is_set()
            log.info("%s received%s: forwarding SIGTERM to the workers", sig.name, " again" if again else "")
        self.stop.set()
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        for w in self.workers:
            if w.alive:
                assert w.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)

    def _hangup(self) -> None:
        """SIGHUP: every serving worker reloads the config and rescans its source; the supervisor re-reads the
        config for what it owns (the log settings)."""
        if self.stop.is_set():
            log.info("SIGHUP while stopping: ignored")
            return
        log.info("SIGHUP received: forwarding it to the workers")
        for w in self.workers:
            if w.alive and w.started:  # one still loading reads everything anyway (and may not handle it yet)
                assert w.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGHUP)
        if self.path is not None and (self._reload is None or self._reload.done()):
            self._reload = asyncio.create_task(self._reread(), name="dnsd-supervisor-reload")

    async def _reread(self) -> None:
        assert self.path is not None
        try:
            new = await asyncio.to_thread(read_config, self.path, self.flags)
        except ConfigError:
            return  # each worker logs the reasons
        old = self.cfg
        if new.log != old.log:
            self.logs.apply(new.log)
        for key in ("listen", "http"):  # the workers log the same of `workers` themselves
            if getattr(new, key) != getattr(old, key):
                log.warning("config reload: %s changes only at the next start when workers > 1", key)
        # Kept as started: a reload never changes the workers, their sockets or the HTTP port.
        self.cfg = replace(new, workers=old.workers, listen=old.listen, http=old.http)

    # ------------------------------------------------------------ the stop

    async def _stop_all(self) -> None:
        """Wait for every worker to exit; kill those still running past their drain time."""
        drain = self.cfg.drain
        limit = drain.lameduck + drain.grace + STOP_MARGIN
        waits = [w.proc.wait() for w in self.workers if w.alive and w.proc is not None]
        if waits:
            _done, pending = await asyncio.wait([asyncio.ensure_future(x) for x in waits], timeout=limit)
            for fut in pending:
                fut.cancel()
        for w in self.workers:
            if w.alive:
                log.error("worker %d (pid %d) still running %gs after SIGTERM: killing it", w.index, w.pid, limit)
                _kill(w)
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _kill(w: Worker) -> None:
    if w.alive:
        assert w.proc is not None
        with contextlib.suppress(ProcessLookupError):
            w.proc.kill()


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def supervise(cfg: Config, argv: list[str], path: Path | None, flags: Overrides, logs: LogSetup) -> int:
    """Run the supervisor on asyncio's own loop (it is not on the query path; its subprocess support is the
    standard library's)."""
    return asyncio.run(Supervisor(cfg, argv, path, flags, logs).run())

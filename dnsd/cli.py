"""The command line: `dnsd [--config FILE] [flags]`, `dnsd check-config FILE`, `dnsd query NAME [TYPE]`,
`dnsd --version`; and signals.

Signals while running: SIGTERM and SIGINT drain and stop dnsd (exit 0): /ready says 503 at once, DNS is answered
for drain.lameduck seconds more (a second SIGTERM or SIGINT cuts that short), then the listeners close and what is
in flight gets drain.grace seconds. SIGHUP, which logrotate and operators send to reload, reloads the config file
(as a change to the file does) and rescans the sources now. SIGUSR1 and SIGUSR2 are logged and ignored: their
default action would kill the process.

With `workers: N` (or --workers N) above 1 the process started is a supervisor (dnsd.workers.supervisor): it binds
the listen sockets, runs N workers (this same command line with a hidden `--worker SPEC`), forwards these signals
to them and restarts one that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dnsd import __version__
from dnsd.config import LOG_LEVELS, Config, ConfigErrors, Overrides, read_config
from dnsd.errors import DnsdError
from dnsd.observe.logs import LogSetup

if TYPE_CHECKING:
    from dnsd.workers.spec import WorkerSpec

DEFAULT_CONFIG = Path("config/dnsd.yaml")
log = logging.getLogger("dnsd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsd",
        description="DNS server for Kubernetes clusters. Also: `dnsd check-config FILE`, "
        "`dnsd query NAME [TYPE] [--server ADDR] [--tcp] [--trace]` (see `dnsd query --help`).",
    )
    p.add_argument("--version", action="version", version=f"dnsd {__version__}")
    p.add_argument("--config", help=f"YAML config file (default: {DEFAULT_CONFIG} if present, else built-in defaults)")
    p.add_argument("--listen", action="append", metavar="ADDR", help="host:port for DNS over UDP and TCP (repeatable)")
    p.add_argument("--manifests", metavar="DIR", help="directory of Kubernetes manifests (cluster.source.files)")
    p.add_argument("--domain", help="cluster domain (cluster.domain)")
    p.add_argument("--http", help="host:port for /health /ready /metrics, or 'off'")
    p.add_argument("--upstream", action="append", metavar="ADDR", help="forwarder upstream (repeatable)")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--workers", type=int, metavar="N", help="worker processes sharing the listen sockets (workers)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # set by the supervisor for each of its workers
    return p


def config_path(args: argparse.Namespace) -> Path | None:
    """The file dnsd reads its config from (and reloads): --config, else config/dnsd.yaml if present, else none
    (the built-in defaults)."""
    if args.config:
        return Path(args.config)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        listen=tuple(args.listen or ()),
        manifests=args.manifests,
        domain=args.domain,
        http=args.http,
        upstream=tuple(args.upstream or ()),
        log_level=args.log_level,
        workers=args.workers,
    )


def load(args: argparse.Namespace) -> Config:
    return read_config(config_path(args), overrides(args))


def error_lines(exc: DnsdError) -> str:
    """`dnsd: REASON`, one line per reason (a config can have several)."""
    reasons = exc.reasons if isinstance(exc, ConfigErrors) else [str(exc)]
    return "\n".join(f"dnsd: {r}" for r in reasons)


CHECK_USAGE = "usage: dnsd check-config FILE  (validate FILE as `dnsd --config FILE` would, then exit)"


def check_config(argv: list[str]) -> int:
    """Everything `dnsd --config FILE` (and a reload) would refuse before listening: the file, its keys and
    values (every bad key, one line each), and a source that cannot be built (dnsd.config.check_buildable).
    Whether the addresses can be bound is not checked."""
    if argv in (["-h"], ["--help"]):
        print(CHECK_USAGE)
        return 0
    if len(argv) != 1:
        print(CHECK_USAGE, file=sys.stderr)
        return 2
    try:
        read_config(Path(argv[0]))  # the one validation path: the start and every reload read through it too
    except DnsdError as exc:
        print(error_lines(exc), file=sys.stderr)
        return 1
    print(f"{argv[0]}: ok")
    return 0


class Resyncer:
    """SIGHUP: run resync() as one owned task at a time. A SIGHUP during a run coalesces with any others into
    one more run after it, so a change made after the running scan read its file is still picked up."""

    def __init__(self, resync: Callable[[], Awaitable[None]]) -> None:
        self._resync = resync
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.ready = False  # set once the sources have started: their first listing is a full scan anyway
        self.stopping = False  # set by SIGTERM: no reload or rescan from then on
        self.runs = 0

    def request(self) -> None:
        if self.stopping:
            log.info("SIGHUP while stopping: ignored")
            return
        if not self.ready:
            log.info("SIGHUP during startup: ignored, the first listing is being read now")
            return
        if self._task is not None and not self._task.done():
            self._again = True
            log.info("SIGHUP: coalesced with the rescan under way")
            return
        self._task = asyncio.create_task(self._run(), name="dnsd-sighup-rescan")

    async def _run(self) -> None:
        while True:
            self._again = False
            self.runs += 1
            log.info("SIGHUP: reloading the config and rescanning the sources")
            try:
                await self._resync()
            except Exception:
                log.exception("SIGHUP: reload or rescan failed; the last good config and objects keep serving")
            else:
                log.info("SIGHUP: rescanned the sources")
            if not self._again:
                return

    async def wait_idle(self) -> None:
        """Return once no rescan is running or due."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _ignored(sig: signal.Signals) -> None:
    log.info("%s received: ignored (dnsd defines no action for it; SIGHUP reloads, SIGTERM stops)", sig.name)


async def serve(
    cfg: Config,
    path: Path | None = None,
    flags: Overrides | None = None,
    logs: LogSetup | None = None,
    worker: WorkerSpec | None = None,
) -> int:
    from dnsd.app import App

    app = App(cfg, path, flags, worker)
    app.logs = logs
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second SIGTERM: the lameduck period ends now
    loop = asyncio.get_running_loop()
    resyncer = Resyncer(app.resync)

    def terminate(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received: stopping", sig.name)
            resyncer.stopping = True
            stop.set()
        elif not hurry.is_set():
            log.info("%s received again: closing the listeners now", sig.name)
            hurry.set()

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig)
    # Installed before start so that none of them can kill the process while it loads (their default action).
    loop.add_signal_handler(signal.SIGHUP, resyncer.request)
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        loop.add_signal_handler(sig, _ignored, sig)
    control = socket.socket(fileno=worker.control) if worker is not None else None
    if control is not None:
        control.setblocking(False)

        def supervisor_gone() -> None:
            try:
                if control.recv(64):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            loop.remove_reader(control.fileno())
            if not stop.is_set():
                log.warning("the supervisor is gone: stopping")
                resyncer.stopping = True
                stop.set()

        loop.add_reader(control.fileno(), supervisor_gone)
    try:
        # SIGTERM during the first load (a big manifest directory can take many seconds) stops it at once.
        starting = asyncio.ensure_future(app.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("stopped while loading")
            return 0
        stopping.cancel()
        starting.result()  # start-up errors (a port in use) propagate as before
        resyncer.ready = True
        if control is not None:
            control.send(b"started\n")  # the supervisor prints the listening line once every worker is serving
        for host, port in app.dns_addresses if control is None else ():
            shown = f"[{host}]" if ":" in host else host
            print(
                f"dnsd listening on udp+tcp {shown}:{port}; try: "
                f"dig @{host} -p {port} web.default.svc.{cfg.cluster.domain}",
                flush=True,
            )
        await stop.wait()
        await resyncer.close()
        await app.drain(hurry)
        await app.stop()
        log.info("stopped")
    finally:
        await resyncer.close()
        if control is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(control.fileno())
            control.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):  # still harmless while shutting down
                signal.signal(sig, signal.SIG_IGN)
    return 0


def _run(cfg: Config, path: Path | None, flags: Overrides, logs: LogSetup, worker: WorkerSpec | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(cfg, path, flags, logs, worker))
    return uvloop.run(serve(cfg, path, flags, logs, worker))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check-config"]:
        return check_config(argv[1:])
    if argv[:1] == ["query"]:
        from dnsd.query import main as query_main  # the client: none of the server's imports

        return query_main(argv[1:])
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # Until serve() installs its handlers, a SIGHUP from logrotate (or a stray SIGUSR1/2) must not kill
        # the process while it loads: their default action is to terminate.
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
    path = config_path(args)
    worker = None
    try:
        flags = overrides(args)
        cfg = read_config(path, flags)
        if args.worker is not None:
            from dnsd.workers.spec import WorkerSpec

            worker = WorkerSpec.decode(args.worker)
    except (DnsdError, ValueError) as exc:
        print(error_lines(exc) if isinstance(exc, DnsdError) else f"dnsd: {exc}", file=sys.stderr)
        return 1
    logs = LogSetup(sys.stderr, worker=worker.index if worker is not None else None)
    logs.apply(cfg.log)  # log.format, log.level (or --log-level), log.sample; again at every reload
    try:
        if worker is None and cfg.workers > 1:
            from dnsd.workers.supervisor import supervise

            return supervise(cfg, list(argv), path, flags, logs)
        return _run(cfg, path, flags, logs, worker)
    except DnsdError as exc:
        print(error_lines(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dnsd: cannot listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0

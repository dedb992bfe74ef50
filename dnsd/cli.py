"""The command line: `dnsd [--config FILE] [flags]`, `dnsd check-config FILE`, `dnsd --version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from dnsd import __version__
from dnsd.config import LOG_LEVELS, Config, load_config, parse_config, with_overrides
from dnsd.errors import DnsdError

DEFAULT_CONFIG = Path("config/dnsd.yaml")
log = logging.getLogger("dnsd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsd",
        description="DNS server for Kubernetes clusters. Also: `dnsd check-config FILE`.",
    )
    p.add_argument("--version", action="version", version=f"dnsd {__version__}")
    p.add_argument("--config", help=f"YAML config file (default: {DEFAULT_CONFIG} if present, else built-in defaults)")
    p.add_argument("--listen", action="append", metavar="ADDR", help="host:port for DNS over UDP and TCP (repeatable)")
    p.add_argument("--manifests", metavar="DIR", help="directory of Kubernetes manifests (cluster.source.files)")
    p.add_argument("--domain", help="cluster domain (cluster.domain)")
    p.add_argument("--http", help="host:port for /health /ready /metrics, or 'off'")
    p.add_argument("--upstream", action="append", metavar="ADDR", help="forwarder upstream (repeatable)")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    return p


def load(args: argparse.Namespace) -> Config:
    if args.config:
        cfg = load_config(args.config)
    elif DEFAULT_CONFIG.is_file():
        cfg = load_config(DEFAULT_CONFIG)
    else:
        cfg = parse_config({})
    return with_overrides(
        cfg,
        listen=args.listen,
        manifests=args.manifests,
        domain=args.domain,
        http=args.http,
        upstream=args.upstream,
        log_level=args.log_level,
    )


def check_config(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: dnsd check-config FILE", file=sys.stderr)
        return 2
    try:
        load_config(argv[0])
    except DnsdError as exc:
        print(f"dnsd: {exc}", file=sys.stderr)
        return 1
    print(f"{argv[0]}: ok")
    return 0


async def serve(cfg: Config) -> int:
    from dnsd.app import App

    app = App(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    for host, port in app.dns_addresses:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"dnsd listening on udp+tcp {shown}:{port}; try: "
            f"dig @{host} -p {port} web.default.svc.{cfg.cluster.domain}",
            flush=True,
        )
    await stop.wait()
    log.info("stopping")
    await app.stop()
    return 0


def _run(cfg: Config) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(cfg))
    return uvloop.run(serve(cfg))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check-config"]:
        return check_config(argv[1:])
    args = _parser().parse_args(argv)
    try:
        cfg = load(args)
    except DnsdError as exc:
        print(f"dnsd: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=cfg.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # watchfiles logs every batch of file events at INFO; dnsd logs what it does with them instead.
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return _run(cfg)
    except DnsdError as exc:
        print(f"dnsd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dnsd: cannot listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0

"""The `nameserver` lines of a resolv.conf file (resolv.conf(5)), as upstream servers."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path

from dnsd.config import ListenAddress
from dnsd.upstream.client import DNS_PORT, Server

log = logging.getLogger(__name__)


def parse_resolv_conf(text: str) -> list[Server]:
    """The nameservers in order; other lines, comments and unparsable addresses are skipped (as the C
    library does). resolv.conf has no port: always 53."""
    servers: list[Server] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(fields[1].split("%")[0])  # a link-local zone (fe80::1%eth0) is dropped
        except ValueError:
            continue
        server = Server(str(ip), DNS_PORT)
        if server not in servers:
            servers.append(server)
    return servers


def is_own(server: Server, listen: Iterable[ListenAddress]) -> bool:
    """Whether server is one of our own listen addresses (forwarding to ourselves would loop): the same
    address and port, or a wildcard listener on that port and a loopback server."""
    ip = ipaddress.ip_address(server.host)
    for addr in listen:
        if addr.port != server.port:
            continue
        own = ipaddress.ip_address(addr.host)
        if own == ip or (own.is_unspecified and ip.is_loopback and own.version == ip.version):
            return True
    return False


def read_resolv_conf(path: Path, listen: Iterable[ListenAddress]) -> list[Server]:
    """The servers of a resolv.conf file without our own addresses; [] (and a warning) when the file cannot
    be read or names no other server."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning(
            "forward: cannot read %s: %s; names it would serve get SERVFAIL",
            path,
            exc.strerror or exc,
            extra={"file": str(path)},
        )
        return []
    listen = list(listen)
    servers = [s for s in parse_resolv_conf(text) if not is_own(s, listen)]
    if not servers:
        log.warning(
            "forward: %s names no nameserver but ourselves; names it would serve get SERVFAIL",
            path,
            extra={"file": str(path)},
        )
    return servers

"""NSD on loopback, started by the tests: the reference authoritative server the zone-file tests compare dnsd
with, and a real upstream for the forwarding tests. Run in the foreground (-d) on a free port, stopped by its PID."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception

from support import REPO, query, stop_process, wait_until

FORWARD_ZONE = REPO / "tests" / "data" / "forward" / "example.test.zone"

NSD_CONF = """\
server:
  ip-address: {ip}@{port}
  port: {port}
  do-ip4: {ip4}
  do-ip6: {ip6}
  username: ""
  chroot: ""
  zonesdir: "{work}"
  pidfile: "{work}/nsd.pid"
  database: ""
  zonelistfile: "{work}/zone.list"
  xfrdfile: "{work}/xfrd.state"
  xfrdir: "{work}"
  logfile: "{work}/nsd.log"
  server-count: 1
  verbosity: {verbosity}
  hide-version: yes
  minimal-responses: {minimal}
  refuse-any: no
  rrl-ratelimit: 0  # no response rate limiting: tests and benchmarks ask NSD many times from one address
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
"""

# what an earlier run in the same directory leaves behind (the bench reuses bench/out/...)
STATE_FILES = ("nsd.pid", "nsd.log", "xfrd.state", "zone.list")


def nsd_conf(
    work: Path,
    port: int,
    zones: Mapping[str, Path],
    *,
    ip: str = "127.0.0.1",
    verbosity: int = 1,
    minimal: bool = True,
    note: str = "",
) -> str:
    """NSD's config: one server process on ip@port (IPv4 or IPv6 only, as ip is), its files in work, serving zones
    ({origin: zone file}); no chroot, no remote control, no rate limiting. minimal: minimal-responses (no NS in the
    authority section of positive answers, as dnsd and CoreDNS). note: a comment line at the top."""
    v6 = ":" in ip
    text = f"# {note}\n" if note else ""
    text += NSD_CONF.format(
        ip=ip,
        port=port,
        work=work,
        ip4="no" if v6 else "yes",
        ip6="yes" if v6 else "no",
        verbosity=verbosity,
        minimal="yes" if minimal else "no",
    )
    for origin, path in zones.items():
        text += f'zone:\n  name: "{origin}"\n  zonefile: "{path}"\n'
    return text


def write_nsd_conf(work: Path, port: int, zones: Mapping[str, Path], **options: Any) -> Path:
    """work/nsd.conf from nsd_conf(work, port, zones, **options), work created and an earlier run's state files
    removed; its path."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in STATE_FILES:
        (work / stale).unlink(missing_ok=True)
    conf = work / "nsd.conf"
    conf.write_text(nsd_conf(work, port, zones, **options))
    return conf


def nsd_binary() -> str:
    exe = shutil.which("nsd") or "/usr/sbin/nsd"
    if not Path(exe).exists():
        raise AssertionError("NSD is not installed: `make system-test-deps` installs the Debian package nsd")
    return exe


def free_port(host: str = "127.0.0.1", tries: int = 50) -> int:
    """A port free for both UDP and TCP on host (the server is told it; nothing else binds it meanwhile)."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue  # the free TCP port is a busy UDP one: take another
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} in {tries} tries")


@dataclass
class Nsd:
    proc: subprocess.Popen[bytes]
    addr: tuple[str, int]
    log: Path

    def stop(self) -> None:
        stop_process(self.proc)

    def wait_serving(self, origins: list[str], timeout: float = 20.0) -> None:
        """Until every zone (origin, "." for the root) answers SOA; an AssertionError if NSD exits meanwhile."""

        def serving() -> bool:
            assert self.proc.poll() is None, f"nsd exited: {self.log.read_text() if self.log.exists() else ''}"
            try:
                return all(query(self.addr, origin.rstrip(".") + ".", "SOA", timeout=0.2).answer for origin in origins)
            except (dns.exception.Timeout, OSError):
                return False

        wait_until(serving, timeout=timeout)


def start_nsd(work: Path, zones: dict[str, Path], minimal: bool = True) -> Nsd:
    """NSD serving zones ({origin: zone file}) with its files in work (created), once every zone answers SOA."""
    nsd = launch_nsd(work, free_port(), zones, minimal=minimal)
    try:
        nsd.wait_serving(list(zones))
    except BaseException:
        nsd.stop()
        raise
    return nsd


def launch_nsd(work: Path, port: int, zones: Mapping[str, Path], **options: Any) -> Nsd:
    """NSD started in the foreground on nsd_conf(work, port, zones, **options), not yet waited for."""
    conf = write_nsd_conf(work, port, zones, **options)
    proc = subprocess.Popen([nsd_binary(), "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Nsd(proc, (options.get("ip", "127.0.0.1"), port), work / "nsd.log")


@contextlib.contextmanager
def nsd_upstream(work: Path, zone: Path = FORWARD_ZONE) -> Iterator[str]:
    """NSD serving example.test (tests/data/forward/example.test.zone) as an upstream; yields 'ip:port'."""
    nsd = start_nsd(work, {"example.test": zone})
    try:
        yield f"{nsd.addr[0]}:{nsd.addr[1]}"
    finally:
        nsd.stop()

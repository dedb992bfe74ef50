"""NSD on loopback, started by the tests: the reference authoritative server the zone-file tests compare dnsd
with, and a real upstream for the forwarding tests. Run in the foreground (-d) on a free port, stopped by its PID."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception

from support import REPO, query, wait_until

FORWARD_ZONE = REPO / "tests" / "data" / "forward" / "example.test.zone"

NSD_CONF = """\
server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
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
  verbosity: 1
  hide-version: yes
  minimal-responses: {minimal}
  rrl-ratelimit: 0  # no response rate limiting: tests ask NSD many times from one address
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
"""


def nsd_binary() -> str:
    exe = shutil.which("nsd") or "/usr/sbin/nsd"
    if not Path(exe).exists():
        raise AssertionError("NSD is not installed: `make system-test-deps` installs the Debian package nsd")
    return exe


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (NSD is told it; nothing else binds it meanwhile)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@dataclass
class Nsd:
    proc: subprocess.Popen[bytes]
    addr: tuple[str, int]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nsd(work: Path, zones: dict[str, Path], minimal: bool = True) -> Nsd:
    """NSD serving zones ({origin: zone file}) with its files in work (created), once every zone answers SOA."""
    exe = nsd_binary()
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = NSD_CONF.format(port=port, work=work, minimal="yes" if minimal else "no")
    for origin, path in zones.items():
        conf += f'zone:\n  name: "{origin}"\n  zonefile: "{path}"\n'
    (work / "nsd.conf").write_text(conf)
    proc = subprocess.Popen(
        [exe, "-d", "-c", str(work / "nsd.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nsd = Nsd(proc, ("127.0.0.1", port), work / "nsd.log")

    def serving() -> bool:
        assert proc.poll() is None, f"nsd exited: {nsd.log.read_text() if nsd.log.exists() else ''}"
        try:
            return all(query(nsd.addr, f"{origin}.", "SOA", timeout=0.2).answer for origin in zones)
        except (dns.exception.Timeout, OSError):
            return False

    try:
        wait_until(serving, timeout=20)
    except BaseException:
        nsd.stop()
        raise
    return nsd


@contextlib.contextmanager
def nsd_upstream(work: Path, zone: Path = FORWARD_ZONE) -> Iterator[str]:
    """NSD serving example.test (tests/data/forward/example.test.zone) as an upstream; yields 'ip:port'."""
    nsd = start_nsd(work, {"example.test": zone})
    try:
        yield f"{nsd.addr[0]}:{nsd.addr[1]}"
    finally:
        nsd.stop()

"""A real upstream for the forwarding tests: NSD serving a test zone on loopback."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from support import REPO, query, wait_until

FORWARD_ZONE = REPO / "tests" / "data" / "forward" / "example.test.zone"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NSD_CONF = """\
server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{dir}"
  pidfile: "{dir}/nsd.pid"
  database: ""
  zonelistfile: "{dir}/zone.list"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  logfile: "{dir}/nsd.log"
  server-count: 1
  verbosity: 0
  minimal-responses: yes
  rrl-ratelimit: 0  # no response rate limiting: tests ask NSD many times from one address
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "example.test"
  zonefile: "{zone}"
"""


@contextlib.contextmanager
def nsd_upstream(d: Path, zone: Path = FORWARD_ZONE) -> Iterator[str]:
    """NSD serving example.test (tests/data/forward/example.test.zone) on 127.0.0.1, a free port, with its files
    in d; yields 'ip:port' and stops NSD by its PID."""
    exe = shutil.which("nsd") or "/usr/sbin/nsd"
    if not Path(exe).exists():
        pytest.fail("NSD is not installed (make system-test-deps installs it)")
    port = _free_port()
    conf = d / "nsd.conf"
    conf.write_text(NSD_CONF.format(port=port, dir=d, zone=zone))
    proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def ready() -> bool:
            try:
                return query(("127.0.0.1", port), "www.example.test.", timeout=0.2).rcode() == dns.rcode.NOERROR
            except Exception:
                return False

        wait_until(ready, timeout=15)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

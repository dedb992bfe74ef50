"""Unbound from Debian on loopback: one config generator (the tests, bench/resolver.py) and one launcher, by PID."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

from support import stop_process, wait_until
from support.nsd import free_port

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"

UNBOUND_CONF = """\
server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  chroot: ""
  username: ""
  directory: "{work}"
  pidfile: "{work}/unbound.pid"
  use-syslog: no
  logfile: "{logfile}"
  verbosity: {verbosity}
  num-threads: 1
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  # the zones served on loopback are unsigned and there is no trust anchor: the iterator alone, as dnsd
  module-config: "iterator"
{server}remote-control:
  control-enable: no
{tail}"""


def unbound_conf(
    work: Path,
    port: int,
    *,
    server: Sequence[str] = (),
    tail: str = "",
    logfile: str = "",
    verbosity: int = 1,
    note: str = "",
) -> str:
    """Unbound's config: one thread on 127.0.0.1@port (IPv4 only), no chroot, no remote control, no validator, its
    files in work. server: more `server:` lines, each a `name: value` (a `# comment` line too); tail: clauses
    after the server clause (`forward-zone:` ...); logfile: "" for stderr; note: a comment line at the top."""
    text = f"# {note}\n" if note else ""
    return text + UNBOUND_CONF.format(
        port=port,
        work=work,
        logfile=logfile,
        verbosity=verbosity,
        server="".join(f"  {line}\n" for line in server),
        tail=tail,
    )


@dataclass
class Unbound:
    """One Unbound process on 127.0.0.1:port from work/unbound.conf, its output in work/unbound.out; start() (again
    after stop(): same port, same config) waits until ready() (default: any reply to a CH TXT id.server. query)."""

    work: Path
    port: int
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def out(self) -> Path:
        return self.work / "unbound.out"

    def replies(self) -> bool:
        q = dns.message.make_query("id.server.", "TXT", "CH")
        try:
            dns.query.udp(q, self.addr[0], port=self.port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def start(self, timeout: float = 20.0) -> None:
        if not Path(UNBOUND).exists():
            raise AssertionError(
                "Unbound is not installed: `make system-test-deps` installs the Debian package unbound"
            )
        with open(self.out, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [UNBOUND, "-d", "-c", str(self.work / "unbound.conf")], stdout=out, stderr=subprocess.STDOUT
            )
        self.proc = proc
        ready = self.ready or self.replies

        def up() -> bool:
            assert proc.poll() is None, f"unbound exited: {self.out.read_text(errors='replace')[-2000:]}"
            return ready()

        try:
            wait_until(up, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None


def configure_unbound(
    work: Path, *, port: int | None = None, ready: Callable[[], bool] | None = None, **conf: Any
) -> Unbound:
    """work/unbound.conf from unbound_conf(work, port, **conf) (a free port unless given); not started yet."""
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    (work / "unbound.conf").write_text(unbound_conf(work, port, **conf))
    return Unbound(work, port, ready)


def start_unbound(work: Path, *, ready: Callable[[], bool] | None = None, **conf: Any) -> Unbound:
    """configure_unbound(work, ...), started and ready."""
    u = configure_unbound(work, ready=ready, **conf)
    u.start()
    return u


@contextlib.contextmanager
def running_unbound(work: Path, **options: Any) -> Iterator[Unbound]:
    """start_unbound(work, **options) for the block, then stopped by PID."""
    u = start_unbound(work, **options)
    try:
        yield u
    finally:
        u.stop()

"""Test support: start dnsd on port 0 (in a thread or as a process), query it, compare records."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
FIXTURE_CLUSTER = REPO / "tests" / "data" / "cluster"


def base_config(manifests: str | Path, **cluster: Any) -> dict[str, Any]:
    """A config dict for a test server on 127.0.0.1 port 0 with HTTP off, no zone files and no forwarding: a test
    server never sends a query anywhere (the default upstreams are the machine's own resolvers); a test that
    forwards names loopback upstreams it started itself."""
    cl: dict[str, Any] = {"source": {"files": str(manifests)}}
    cl.update(cluster)
    return {"listen": ["127.0.0.1:0"], "http": None, "zones": None, "forward": None, "recursion": "off", "cluster": cl}


@dataclass
class DnsdHandle:
    """A dnsd App running on its own event loop in a background thread."""

    host: str
    port: int
    app: Any
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    _stopped: bool = field(default=False)

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run fn() on the server's loop and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["v"] = fn()
            except BaseException as exc:  # re-raised in the caller
                box["e"] = exc
            done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError("server loop did not run the call")
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        fut = asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop)
        fut.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _new_loop() -> asyncio.AbstractEventLoop:
    """The loop production uses: uvloop when installed (the test extras install it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_dnsd(config: dict[str, Any], *, stdlib_loop: bool = False) -> DnsdHandle:
    """Start dnsd in-process on a fresh loop in a thread; return once it has started. The loop is uvloop when
    installed, as in production; stdlib_loop=True takes asyncio's own (dnsd's fallback)."""
    from dnsd.app import App
    from dnsd.config import parse_config

    cfg = parse_config(config)
    loop = asyncio.new_event_loop() if stdlib_loop else _new_loop()
    app = App(cfg)
    started = threading.Event()
    error: dict[str, BaseException] = {}

    def runner() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await app.start()
            except BaseException as exc:
                error["e"] = exc
            finally:
                started.set()

        boot_task = loop.create_task(boot())
        loop.run_forever()
        boot_task.cancel()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=runner, name="dnsd-test-server", daemon=True)
    thread.start()
    if not started.wait(20):
        raise TimeoutError("dnsd did not start within 20 s")
    if "e" in error:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        raise error["e"]
    host, port = app.dns_addresses[0]
    return DnsdHandle(host=host, port=port, app=app, loop=loop, thread=thread)


# ---------------------------------------------------------------- subprocess


LISTEN_RE = re.compile(r"listening on (?:udp\+tcp )?\[?([0-9a-fA-F:.]+)\]?:(\d+)")


@dataclass
class DnsdProcess:
    proc: subprocess.Popen[str]
    host: str
    port: int
    lines: list[str]

    def stop(self, timeout: float = 10.0) -> int:
        return stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL after timeout s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def start_dnsd_process(
    args: list[str], timeout: float = 20.0, cwd: Path = REPO, preexec_fn: Callable[[], Any] | None = None
) -> DnsdProcess:
    """Run `python -m dnsd ARGS` and wait for its 'listening on HOST:PORT' line; preexec_fn runs in the child
    before dnsd starts (e.g. to set a resource limit)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    config = args[args.index("--config") + 1] if "--config" in args else "config/dnsd.yaml"
    if "--http" not in args and config.endswith("config/dnsd.yaml"):
        # config/dnsd.yaml (make run's, also read when no --config is given) serves HTTP on 127.0.0.1:8080: tests
        # take a free port instead, so that servers can run side by side.
        args = [*args, "--http", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsd", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = LISTEN_RE.search(line)
        if m:
            handle = DnsdProcess(proc, m.group(1), int(m.group(2)), lines)
            # keep draining output so the pipe never fills
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return handle
    proc.kill()
    proc.wait(5)
    raise RuntimeError("dnsd did not report a listening address:\n" + "".join(lines))


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


# ---------------------------------------------------------------- querying


def make_query(
    name: str,
    rdtype: str | int = "A",
    *,
    edns: int | None = None,
    payload: int = 1232,
    dnssec: bool = False,
    rd: bool = True,
) -> dns.message.Message:
    q = dns.message.make_query(
        name,
        dns.rdatatype.RdataType.make(rdtype) if isinstance(rdtype, int) else rdtype,
        use_edns=edns,
        payload=payload,
        want_dnssec=dnssec,
    )
    if not rd:
        q.flags &= ~dns.flags.RD
    return q


def query(
    addr: tuple[str, int] | DnsdHandle | DnsdProcess,
    name: str,
    rdtype: str | int = "A",
    *,
    tcp: bool = False,
    edns: int | None = None,
    payload: int = 1232,
    dnssec: bool = False,
    timeout: float = 2.0,
) -> dns.message.Message:
    """Send one query over UDP (or TCP) with dnspython and return the reply."""
    host, port = _hostport(addr)
    q = make_query(name, rdtype, edns=edns, payload=payload, dnssec=dnssec)
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=timeout)
    return dns.query.udp(q, host, port=port, timeout=timeout, ignore_trailing=False)


def _hostport(addr: tuple[str, int] | DnsdHandle | DnsdProcess) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return addr
    return (addr.host, addr.port)


def raw_udp(addr: tuple[str, int] | DnsdHandle | DnsdProcess, data: bytes, timeout: float = 1.0) -> bytes | None:
    """Send raw bytes over UDP; return the reply bytes, or None if nothing came back in time."""
    host, port = _hostport(addr)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            reply, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
        return reply


def tcp_frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def read_tcp_message(sock: socket.socket) -> bytes | None:
    """Read one length-prefixed message; None on EOF."""
    hdr = _recv_exact(sock, 2)
    if hdr is None:
        return None
    (n,) = struct.unpack("!H", hdr)
    return _recv_exact(sock, n)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ---------------------------------------------------------------- assertions


def rr_lines(section: list[dns.rrset.RRset]) -> set[str]:
    """A section as a set of canonical zone-file lines (owner lower-cased, absolute names)."""
    out: set[str] = set()
    for rrset in section:
        for rd in rrset:
            out.add(
                f"{rrset.name.to_text().lower()} {rrset.ttl} "
                f"{dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)} "
                f"{rd.to_text().lower()}"
            )
    return out


def zone_lines(text: str) -> set[str]:
    """Expected records written as zone-file text (one RR a line, absolute names, TTL and class given)."""
    out: set[str] = set()
    for line in text.strip().splitlines():
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        rrset = dns.rrset.from_text(*_split_rr(line))
        out |= rr_lines([rrset])
    return out


def _split_rr(line: str) -> tuple[str, int, str, str, str]:
    parts = line.split(None, 4)
    if len(parts) != 5:
        raise ValueError(f"expected 'name ttl class type rdata': {line!r}")
    name, ttl, cls, typ, rdata = parts
    return name, int(ttl), cls, typ, rdata


def assert_section(section: list[dns.rrset.RRset], expected: str, what: str = "section") -> None:
    got = rr_lines(section)
    want = zone_lines(expected)
    assert got == want, f"{what} differs\n  missing: {sorted(want - got)}\n  unexpected: {sorted(got - want)}"


def rcode_text(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll pred() until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")


def config_expectations(path: Path) -> tuple[list[str], list[str]]:
    """The `# expect:` substrings and `# expect-re:` patterns written at the top of a bad config file."""
    subs: list[str] = []
    regexes: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            subs.append(line.split(":", 1)[1].strip())
        elif line.startswith("# expect-re:"):
            regexes.append(line.split(":", 1)[1].strip())
    return subs, regexes


# ---------------------------------------------------------------- manifests and answers of the files-source tests

NS_YAML = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n"


def svc_yaml(name: str, ip: str) -> str:
    """A ClusterIP Service in namespace default with one named port, as YAML."""
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}
    )  # fmt: skip


def a_answer(h: DnsdHandle | DnsdProcess, name: str) -> tuple[str, set[str]]:
    """(rcode, answer lines) of `<name>.default.svc.cluster.local. A`."""
    msg = query(h, f"{name}.default.svc.cluster.local.")
    return rcode_text(msg), rr_lines(msg.answer)


def a_ok(name: str, ip: str) -> tuple[str, set[str]]:
    """What a_answer gives for a service with that ClusterIP."""
    return "NOERROR", zone_lines(f"{name}.default.svc.cluster.local. 5 IN A {ip}")

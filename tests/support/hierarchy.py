"""A real DNS hierarchy on loopback for iterative resolution: root, TLDs and leaf zones served by NSD, each server on
its own 127.53.x.y address, port 53 (needs root: the suite runs in `unshare --net` as root). A query-logging proxy
sits on port 53 in front of each NSD (NSD itself listens on BACKEND_PORT of the same address), so tests can see
what every server was asked. Also Unbound, the reference resolver, started on the same root hints.

    with Hierarchy(tmp_path) as h:          # h.root_hints: the hints file; h.queries("127.53.0.1"): what root saw
        ...

The bench reuses it: `Hierarchy(work, leaves={"bench.test": leaf_zone("bench.test", 1000)}, log_queries=False)`
puts NSD straight on port 53 and delegates bench.test from test. to a server of its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from support import FIXTURE_CLUSTER, base_config, read_tcp_message, tcp_frame
from support.broken import BrokenServer, BrokenZone
from support.nsd import Nsd, launch_nsd
from support.unbound import running_unbound

BACKEND_PORT = 5300  # where NSD listens, on its own address, when the logging proxy holds port 53

ROOT_IP = "127.53.0.1"  # a.root-servers.net, the only root server in the hints file
ROOT2_IP = "127.53.0.2"  # b.root-servers.net: only in the root zone's NS set, learnt by priming (RFC 8109)
TEST_IP, EXAMPLE_IP, NET_IP = "127.53.1.1", "127.53.1.2", "127.53.1.3"
LEAF_IP = "127.53.2.1"  # example.test.
SITE_IP = "127.53.2.2"  # site.example.; it REFUSES lame.test. (it does not serve it)
HOSTING_IP = "127.53.2.3"  # glueless.test., lame.test., silent.test.
HOSTING_NS_IP = "127.53.2.4"  # hosting.net.
DEAD_IP = "127.53.9.1"  # nothing listens: ICMP port unreachable
SILENT_IP = "127.53.9.2"  # a socket that reads and never answers
V6_IP = "::1"  # v6only.test., whose NS ns-v6.hosting.net. has an AAAA record only (when ::1 can be bound)
BROKEN_IP = "127.53.4.1"  # support.broken: nxent.test., formerr.test., notimp.test., drop.test.
EXTRA_BASE = "127.53.3."  # the extra leaves (Hierarchy(leaves=...)): .1, .2, ...

SOA = "{origin}. 3600 IN SOA ns1.{origin}. hostmaster.{origin}. 1 3600 900 604800 300"

ROOT_ZONE = f"""\
. 86400 IN SOA a.root-servers.net. nstld.root-servers.net. 1 1800 900 604800 86400
. 518400 IN NS a.root-servers.net.
. 518400 IN NS b.root-servers.net.
a.root-servers.net. 518400 IN A {ROOT_IP}
b.root-servers.net. 518400 IN A {ROOT2_IP}
test. 172800 IN NS ns1.nic.test.
ns1.nic.test. 172800 IN A {TEST_IP}
example. 172800 IN NS ns1.nic.example.
ns1.nic.example. 172800 IN A {EXAMPLE_IP}
net. 172800 IN NS a.nic.net.
a.nic.net. 172800 IN A {NET_IP}
"""

# The NS sets (and glue) of lame.test. and silent.test.: the same in the parent (test.) and in the zones themselves
LAME_NS = f"""\
lame.test. 3600 IN NS ns-dead.lame.test.
lame.test. 3600 IN NS ns-refuses.lame.test.
lame.test. 3600 IN NS ns-good.lame.test.
ns-dead.lame.test. 3600 IN A {DEAD_IP}
ns-refuses.lame.test. 3600 IN A {SITE_IP}
ns-good.lame.test. 3600 IN A {HOSTING_IP}
"""
SILENT_NS = f"""\
silent.test. 3600 IN NS ns-silent.silent.test.
silent.test. 3600 IN NS ns-good.silent.test.
ns-silent.silent.test. 3600 IN A {SILENT_IP}
ns-good.silent.test. 3600 IN A {HOSTING_IP}
"""

TEST_ZONE = f"""\
test. 3600 IN SOA ns1.nic.test. hostmaster.nic.test. 1 3600 900 604800 300
test. 3600 IN NS ns1.nic.test.
ns1.nic.test. 3600 IN A {TEST_IP}
example.test. 3600 IN NS ns1.example.test.
ns1.example.test. 3600 IN A {LEAF_IP}
glueless.test. 3600 IN NS ns.hosting.net.
{LAME_NS}{SILENT_NS}loop.test. 3600 IN NS ns.loop.example.
v6only.test. 3600 IN NS ns-v6.hosting.net.
""" + "".join(
    f"{z}.test. 3600 IN NS ns.{z}.test.\nns.{z}.test. 3600 IN A {BROKEN_IP}\n"
    for z in ("nxent", "formerr", "notimp", "drop")
)

EXAMPLE_ZONE = f"""\
example. 3600 IN SOA ns1.nic.example. hostmaster.nic.example. 1 3600 900 604800 300
example. 3600 IN NS ns1.nic.example.
ns1.nic.example. 3600 IN A {EXAMPLE_IP}
site.example. 3600 IN NS ns1.site.example.
ns1.site.example. 3600 IN A {SITE_IP}
loop.example. 3600 IN NS ns.loop.test.
"""

NET_ZONE = f"""\
net. 3600 IN SOA a.nic.net. hostmaster.nic.net. 1 3600 900 604800 300
net. 3600 IN NS a.nic.net.
a.nic.net. 3600 IN A {NET_IP}
a.root-servers.net. 3600 IN A {ROOT_IP}
b.root-servers.net. 3600 IN A {ROOT2_IP}
hosting.net. 3600 IN NS ns1.hosting.net.
ns1.hosting.net. 3600 IN A {HOSTING_NS_IP}
"""

CHAIN = 12  # c1.example.test -> c2.site.example -> c3.example.test ... -> c13: 12 CNAMEs, each to the other zone


def _chain(origin: str) -> str:
    """The long cross-zone CNAME chain: odd links live in example.test, even ones in site.example."""
    lines = []
    for i in range(1, CHAIN + 2):
        here = "example.test" if i % 2 else "site.example"
        there = "site.example" if i % 2 else "example.test"
        if here != origin:
            continue
        if i <= CHAIN:
            lines.append(f"c{i}.{here}. 3600 IN CNAME c{i + 1}.{there}.")
        else:
            lines.append(f"c{i}.{here}. 3600 IN A 192.0.2.99")
    return "\n".join(lines) + "\n"


BIG_STRINGS = 12  # TXT strings of 200 octets: about 2.4 KB, more than the 1232 octets of EDNS over UDP

LEAF_ZONE = f"""\
{SOA.format(origin="example.test")}
example.test. 3600 IN NS ns1.example.test.
ns1.example.test. 3600 IN A {LEAF_IP}
www.example.test. 3600 IN A 192.0.2.1
a.b.example.test. 3600 IN A 192.0.2.2
alias.example.test. 3600 IN CNAME www.site.example.
inzone.example.test. 3600 IN CNAME www.example.test.
dangling.example.test. 3600 IN CNAME x.nothere.site.example.
big.example.test. 3600 IN TXT {" ".join(f'"{chr(97 + i) * 200}"' for i in range(BIG_STRINGS))}
""" + _chain("example.test")

SITE_ZONE = f"""\
{SOA.format(origin="site.example")}
site.example. 3600 IN NS ns1.site.example.
ns1.site.example. 3600 IN A {SITE_IP}
www.site.example. 3600 IN A 192.0.2.10
""" + _chain("site.example")

GLUELESS_ZONE = f"""\
{SOA.format(origin="glueless.test")}
glueless.test. 3600 IN NS ns.hosting.net.
www.glueless.test. 3600 IN A 192.0.2.20
"""

LAME_ZONE = f"""\
{SOA.format(origin="lame.test")}
{LAME_NS}www.lame.test. 3600 IN A 192.0.2.30
"""

SILENT_ZONE = f"""\
{SOA.format(origin="silent.test")}
{SILENT_NS}www.silent.test. 3600 IN A 192.0.2.40
"""

# The broken server's zones (support.broken): each has names below empty non-terminals; nxent.test also delegates
# deep.x.nxent.test (below the empty non-terminal x) to HOSTING_IP.
BROKEN_FAULTS = {"nxent": "nxdomain", "formerr": "formerr", "notimp": "notimp", "drop": "drop"}
BROKEN_ADDRESS = {"nxent": "192.0.2.51", "formerr": "192.0.2.53", "notimp": "192.0.2.54", "drop": "192.0.2.55"}


def broken_zone(name: str) -> str:
    origin = f"{name}.test"
    text = f"""\
{SOA.format(origin=origin)}
{origin}. 3600 IN NS ns.{origin}.
ns.{origin}. 3600 IN A {BROKEN_IP}
www.a.b.{origin}. 3600 IN A {BROKEN_ADDRESS[name]}
"""
    if name == "nxent":
        text += f"deep.x.{origin}. 3600 IN NS ns.deep.x.{origin}.\nns.deep.x.{origin}. 3600 IN A {HOSTING_IP}\n"
    return text


DEEP_ZONE = f"""\
{SOA.format(origin="deep.x.nxent.test")}
deep.x.nxent.test. 3600 IN NS ns.deep.x.nxent.test.
ns.deep.x.nxent.test. 3600 IN A {HOSTING_IP}
www.deep.x.nxent.test. 3600 IN A 192.0.2.52
"""

HOSTING_NET_ZONE = f"""\
{SOA.format(origin="hosting.net")}
hosting.net. 3600 IN NS ns1.hosting.net.
ns1.hosting.net. 3600 IN A {HOSTING_NS_IP}
ns.hosting.net. 3600 IN A {HOSTING_IP}
ns-v6.hosting.net. 3600 IN AAAA {V6_IP}
"""

V6ONLY_ZONE = f"""\
{SOA.format(origin="v6only.test")}
v6only.test. 3600 IN NS ns-v6.hosting.net.
www.v6only.test. 3600 IN A 192.0.2.60
"""

# server address -> {zone origin ("." for the root): zone text}
SERVERS: dict[str, dict[str, str]] = {
    ROOT_IP: {".": ROOT_ZONE},
    ROOT2_IP: {".": ROOT_ZONE},
    TEST_IP: {"test": TEST_ZONE},
    EXAMPLE_IP: {"example": EXAMPLE_ZONE},
    NET_IP: {"net": NET_ZONE},
    LEAF_IP: {"example.test": LEAF_ZONE},
    SITE_IP: {"site.example": SITE_ZONE},
    HOSTING_IP: {
        "glueless.test": GLUELESS_ZONE,
        "lame.test": LAME_ZONE,
        "silent.test": SILENT_ZONE,
        "deep.x.nxent.test": DEEP_ZONE,
    },
    HOSTING_NS_IP: {"hosting.net": HOSTING_NET_ZONE},
}


def root_hints_text() -> str:
    """A named.root for the hierarchy: one root server, a.root-servers.net at ROOT_IP (the root zone also names
    b.root-servers.net: a resolver that primes learns it)."""
    return f".  3600000  NS  a.root-servers.net.\na.root-servers.net.  3600000  A  {ROOT_IP}\n"


def leaf_zone(origin: str, n: int, *, ip: str = "192.0.2.1") -> str:
    """A leaf zone with n names h0.origin ... h{n-1}.origin, each with one A record (for the cold-cache bench).
    Its NS is ns1.origin; Hierarchy(leaves=...) fills in the address."""
    lines = [SOA.format(origin=origin), f"{origin}. 3600 IN NS ns1.{origin}."]
    lines += [f"h{i}.{origin}. 3600 IN A {ip}" for i in range(n)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Logged:
    """One query a server of the hierarchy received."""

    server: str
    qname: str  # lower case, absolute
    qtype: str
    transport: str  # "udp" or "tcp"


class QueryProxy:
    """Port 53 of one address: logs each query, then relays it to NSD on BACKEND_PORT (or drops it: silent)."""

    def __init__(self, ip: str, log: list[Logged], lock: threading.Lock, *, silent: bool = False) -> None:
        self.ip = ip
        self.log = log
        self.lock = lock
        self.silent = silent
        self.backend = (ip, BACKEND_PORT)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((ip, 53))
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((ip, 53))
        self.tcp.listen(64)
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"proxy {ip}")
        self.thread = threading.Thread(target=self._serve, name=f"proxy {ip}", daemon=True)
        self.thread.start()

    def _record(self, data: bytes, transport: str) -> None:
        try:
            q = dns.message.from_wire(data, question_only=True).question[0]
            entry = Logged(self.ip, q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype), transport)
        except (dns.exception.DNSException, IndexError):
            entry = Logged(self.ip, "?", "?", transport)
        with self.lock:
            self.log.append(entry)

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.1)
            for sock in ready:
                if sock is self.udp:
                    data, addr = self.udp.recvfrom(65535)
                    self._record(data, "udp")
                    if not self.silent:
                        self.pool.submit(self._relay_udp, data, addr)
                else:
                    conn, _ = self.tcp.accept()
                    self.pool.submit(self._relay_tcp, conn)

    def _relay_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        with socket.socket(self.udp.family, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(data, self.backend)
            with contextlib.suppress(OSError):
                self.udp.sendto(s.recv(65535), addr)

    def _relay_tcp(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(3)
            backend: socket.socket | None = None
            try:
                for _ in range(100):  # bounded: messages on one connection
                    data = read_tcp_message(conn)
                    if data is None:
                        return
                    self._record(data, "tcp")
                    if self.silent:
                        continue
                    if backend is None:
                        backend = socket.create_connection(self.backend, timeout=3)
                    backend.sendall(tcp_frame(data))
                    reply = read_tcp_message(backend)
                    if reply is None:
                        return
                    conn.sendall(tcp_frame(reply))
            finally:
                if backend is not None:
                    backend.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.udp.close()
        self.tcp.close()


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (a namespace or container may have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6_IP, 0))
    except OSError:
        return False
    return True


def can_bind_53() -> str | None:
    """Why the hierarchy cannot run here (None when it can): it binds port 53 on 127.53.x.y, which needs root."""
    if os.geteuid() != 0:
        return "the DNS hierarchy binds port 53 on 127.53.x.y addresses: run as root (CI runs the suite as root)"
    return None


class Hierarchy:
    """The root, TLD and leaf servers, started on enter and stopped (by PID) on exit."""

    def __init__(self, work: Path, *, leaves: dict[str, str] | None = None, log_queries: bool = True) -> None:
        self.work = work
        self.log_queries = log_queries
        self.servers: dict[str, dict[str, str]] = {ip: dict(zones) for ip, zones in SERVERS.items()}
        self.servers[TEST_IP] = dict(self.servers[TEST_IP])
        test_zone = TEST_ZONE
        for i, (origin, text) in enumerate((leaves or {}).items(), start=1):
            ip = f"{EXTRA_BASE}{i}"
            if not origin.endswith(".test"):
                raise ValueError(f"extra leaves are delegated from test.: {origin!r}")
            test_zone += f"{origin}. 3600 IN NS ns1.{origin}.\nns1.{origin}. 3600 IN A {ip}\n"
            self.servers[ip] = {origin: text + f"ns1.{origin}. 3600 IN A {ip}\n"}
        self.servers[TEST_IP]["test"] = test_zone
        self.ipv6 = ipv6_loopback()
        if self.ipv6:
            self.servers[V6_IP] = {"v6only.test": V6ONLY_ZONE}
        self.root_hints = work / "root.hints"
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._nsds: list[Nsd] = []
        self._proxies: list[QueryProxy] = []
        self._broken: BrokenServer | None = None

    def __enter__(self) -> Hierarchy:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.root_hints.write_text(root_hints_text())
        port = BACKEND_PORT if self.log_queries else 53
        for ip, zones in self.servers.items():
            self._nsds.append(self._launch(ip, port, zones))
        if self.log_queries:
            for ip in self.servers:
                self._proxies.append(QueryProxy(ip, self.log, self._lock))
        self._proxies.append(QueryProxy(SILENT_IP, self.log, self._lock, silent=True))
        broken = [BrokenZone(f"{n}.test.", fault, broken_zone(n)) for n, fault in BROKEN_FAULTS.items()]
        self._broken = BrokenServer(BROKEN_IP, broken, self._record)
        for nsd, origins in zip(self._nsds, self.servers.values(), strict=True):
            nsd.wait_serving(list(origins))

    def _launch(self, ip: str, port: int, zones: dict[str, str]) -> Nsd:
        work = self.work / ip.replace(":", "_")
        work.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        for origin, text in zones.items():
            files[origin] = work / ("root.zone" if origin == "." else f"{origin}.zone")
            files[origin].write_text(text)
        return launch_nsd(work, port, files, ip=ip)

    def _record(self, server: str, qname: str, qtype: str, transport: str) -> None:
        with self._lock:
            self.log.append(Logged(server, qname, qtype, transport))

    def close(self) -> None:
        if self._broken is not None:
            self._broken.stop()
            self._broken = None
        for proxy in self._proxies:
            proxy.stop()
        for nsd in self._nsds:
            nsd.stop()
        self._proxies.clear()
        self._nsds.clear()

    # ------------------------------------------------------------ what the servers saw

    def queries(self, server: str | None = None) -> list[Logged]:
        with self._lock:
            return [q for q in self.log if server is None or q.server == server]

    def clear(self) -> None:
        with self._lock:
            self.log.clear()


# ---------------------------------------------------------------- Unbound, the reference resolver


@contextlib.contextmanager
def unbound(work: Path, hints: Path) -> Iterator[tuple[str, int]]:
    """Debian's Unbound in the foreground on 127.0.0.1 (a free port), resolving from the given root hints; yields
    its address; stopped by PID."""
    server = [
        f'root-hints: "{hints}"',
        "qname-minimisation: yes",
        "do-not-query-localhost: no",  # the hierarchy is on 127.53.x.y
        # test. and example. are among Unbound's built-in local zones (RFC 6761): resolve them like any other
        'local-zone: "test." nodefault',
        'local-zone: "example." nodefault',
    ]
    with running_unbound(work, server=server) as u:
        yield u.addr


def iterative_config(h: Hierarchy, **extra: Any) -> dict[str, Any]:
    """A dnsd test config resolving iteratively from this hierarchy's root hints (never the real roots)."""
    cfg = base_config(FIXTURE_CLUSTER)
    cfg.update({"recursion": "iterative", "root_hints": str(h.root_hints)}, **extra)
    return cfg

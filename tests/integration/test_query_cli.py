"""`dnsd query` (issue 6 section 5): the real process asking a running dnsd, a scripted server, or nobody.

Replies are read back from the printed sections (zone-file lines) and compared with the records as the
Kubernetes DNS spec and tests/data/cluster give them. The scripted server (a UDP and a TCP socket on loopback
answering from a function) shows what dnsd cannot show yet or cannot be made to do: the query's option 65001, a
walk in the reply, a truncated UDP reply, a TCP-only server. The --trace cases against dnsd itself check the
engine's walk only loosely (which link answered, the rcode): its wording is the engine's.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest
from support import FIXTURE_CLUSTER, REPO, DnsdHandle, base_config, zone_lines

from dnsd.proto.trace import TRACE_OPTION, encode_trace
from dnsd.query import DEFAULT_PORT, Server, UsageError, parse_server

TIMEOUT = 1.0  # the client's --timeout in these tests
STARTUP = 5.0  # what a Python process may take to start and import dnspython on a loaded CI machine


@dataclass
class Run:
    rc: int
    out: str
    err: str
    took: float

    def section(self, title: str) -> set[str]:
        """A printed section (';; ANSWER SECTION:' ...) as canonical zone-file lines."""
        lines = self.out.splitlines()
        marker = f";; {title} SECTION:"
        if marker not in lines:
            return set()
        body: list[str] = []
        for line in lines[lines.index(marker) + 1 :]:
            if not line.strip():
                break
            body.append(line)
        return zone_lines("\n".join(body))

    def header(self) -> tuple[str, str]:
        """(status, flags) from the header lines."""
        status = flags = ""
        for line in self.out.splitlines():
            if line.startswith(";; ->>HEADER<<-"):
                status = line.split("status: ", 1)[1].split(",", 1)[0]
            if line.startswith(";; flags:"):
                flags = line.split(":", 1)[1].split(";", 1)[0].strip()
        return status, flags

    def trace(self) -> list[str] | None:
        lines = self.out.splitlines()
        start = [i for i, line in enumerate(lines) if line.startswith(";; TRACE (")]
        if not start:
            return None
        out: list[str] = []
        for line in lines[start[0] + 1 :]:
            if not line.startswith(";;   "):
                break
            out.append(line[len(";;   ") :])
        return out


def dnsd_query(*args: str, timeout: float = TIMEOUT) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dnsd", "query", *args, "--timeout", str(timeout)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout * 2 + STARTUP + 10,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def server_arg(h: DnsdHandle) -> str:
    return f"[{h.host}]:{h.port}" if ":" in h.host else f"{h.host}:{h.port}"


# ---------------------------------------------------------------- a scripted server


Answerer = Callable[[dns.message.Message, str], dns.message.Message | None]


@dataclass
class Scripted:
    """UDP and/or TCP on 127.0.0.1:port answering each query with answer(query, transport) (None: no reply);
    every query received is kept with its transport. One thread, a bounded select loop, stopped by close()."""

    answer: Answerer
    udp: bool = True
    tcp: bool = True
    port: int = 0
    received: list[tuple[str, dns.message.Message]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        if self.tcp:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind(("127.0.0.1", self.port))
            self.port = t.getsockname()[1]
            t.listen(8)
            self._socks.append(t)
        if self.udp:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", self.port))
            self.port = u.getsockname()[1]
            self._socks.append(u)
        self._thread = threading.Thread(target=self._run, name="scripted-dns", daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.05)
            for s in ready:
                if s.type == socket.SOCK_DGRAM:
                    data, peer = s.recvfrom(65535)
                    reply = self._reply(data, "udp")
                    if reply is not None:
                        s.sendto(reply.to_wire(max_size=65535), peer)
                else:
                    conn, _ = s.accept()
                    with conn:
                        conn.settimeout(2)
                        with contextlib.suppress(OSError, struct.error):
                            (n,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
                            reply = self._reply(conn.recv(n, socket.MSG_WAITALL), "tcp")
                            if reply is not None:
                                wire = reply.to_wire(max_size=65535)
                                conn.sendall(struct.pack("!H", len(wire)) + wire)

    def _reply(self, data: bytes, transport: str) -> dns.message.Message | None:
        q = dns.message.from_wire(data)
        self.received.append((transport, q))
        return self.answer(q, transport)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


@contextlib.contextmanager
def scripted(answer: Answerer, **kw: bool | int) -> Iterator[Scripted]:
    srv = Scripted(answer, **kw)  # type: ignore[arg-type]
    try:
        yield srv
    finally:
        srv.close()


def a_reply(q: dns.message.Message, ip: str = "192.0.2.1") -> dns.message.Message:
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", ip))
    return r


def traced(lines: list[str] | None) -> Answerer:
    """A reply with the walk in option 65001 (None: no option), as the contract has dnsd send it."""

    def answer(q: dns.message.Message, _: str) -> dns.message.Message:
        r = a_reply(q)
        if lines is not None:
            r.use_edns(0, options=[dns.edns.GenericOption(dns.edns.OptionType.make(TRACE_OPTION), encode_trace(lines))])
        return r

    return answer


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- plain queries against dnsd


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    status: str
    answer: str = ""
    authority_types: tuple[str, ...] = ()  # types in the authority section (its SOA serial changes)
    flags: str = "qr aa rd"


CASES = [
    Case("A, the default type", ("svc1.testns.svc.cluster.local",), "NOERROR",
         "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("A named", ("svc1.testns.svc.cluster.local.", "A"), "NOERROR",
         "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("type in lower case", ("svc1.testns.svc.cluster.local", "a"), "NOERROR",
         "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
    Case("SRV of a ClusterIP service", ("_http._tcp.svc1.testns.svc.cluster.local", "SRV"), "NOERROR",
         "_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."),
    Case("TXT dns-version", ("dns-version.cluster.local", "TXT"), "NOERROR",
         'dns-version.cluster.local. 28800 IN TXT "1.1.0"'),
    Case("PTR", ("1.0.0.10.in-addr.arpa", "PTR"), "NOERROR",
         "1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."),
    Case("NXDOMAIN is an answer (exit 0)", ("nope.testns.svc.cluster.local",), "NXDOMAIN",
         authority_types=("SOA",)),
    Case("NODATA", ("svc1.testns.svc.cluster.local", "MX"), "NOERROR", authority_types=("SOA",)),
    Case("REFUSED outside the zones is an answer (exit 0)", ("example.org",), "REFUSED", flags="qr rd"),
    Case("--tcp", ("svc1.testns.svc.cluster.local", "--tcp"), "NOERROR",
         "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_query(fixture_server: DnsdHandle, case: Case) -> None:
    run = dnsd_query(*case.args, "--server", server_arg(fixture_server))
    assert run.rc == 0, run.err
    assert run.header() == (case.status, case.flags), run.out
    assert run.section("ANSWER") == zone_lines(case.answer), run.out
    got_auth = sorted(line.split()[3] for line in run.section("AUTHORITY"))
    assert got_auth == list(case.authority_types), run.out
    transport = "TCP" if "--tcp" in case.args else "UDP"
    assert f";; SERVER: 127.0.0.1#{fixture_server.port}({transport})" in run.out
    assert ";; Query time: " in run.out
    assert run.err == ""


def test_glue_in_additional(fixture_server: DnsdHandle) -> None:
    """The additional section is printed too: a headless SRV's targets with their addresses."""
    run = dnsd_query("_http._tcp.hdls1.testns.svc.cluster.local", "SRV", "--server", server_arg(fixture_server))
    assert run.rc == 0, run.err
    additional = run.section("ADDITIONAL")
    assert "172-0-0-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11" in additional, run.out
    assert ";; OPT PSEUDOSECTION:" in run.out and "udp: 1232" in run.out


def test_ipv6_server(dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """--server [::1]:port against dnsd listening on ::1."""
    h = dnsd_factory(config={**base_config(FIXTURE_CLUSTER), "listen": ["[::1]:0"]})
    run = dnsd_query("svc1.testns.svc.cluster.local", "--server", f"[::1]:{h.port}")
    assert run.rc == 0, run.err
    assert run.section("ANSWER") == zone_lines("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")
    assert f";; SERVER: ::1#{h.port}(UDP)" in run.out


def test_host_name_server(fixture_server: DnsdHandle) -> None:
    """--server localhost:port is 127.0.0.1:port, as the config reads `listen: localhost:...`."""
    run = dnsd_query("svc1.testns.svc.cluster.local", "--server", f"localhost:{fixture_server.port}")
    assert run.rc == 0, run.err
    assert run.section("ANSWER") == zone_lines("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")


def test_default_server_is_127_0_0_1_port_1053() -> None:
    """No --server: 127.0.0.1:1053, dnsd's default listen address (a scripted server there answers)."""
    try:
        srv = Scripted(lambda q, _: a_reply(q, "192.0.2.53"), port=DEFAULT_PORT)
    except OSError as exc:
        pytest.skip(
            f"127.0.0.1:{DEFAULT_PORT} is in use on this machine ({exc}); the suite's namespace run has it free"
        )
    try:
        run = dnsd_query("x.example.")
    finally:
        srv.close()
    assert run.rc == 0, run.err
    assert run.section("ANSWER") == zone_lines("x.example. 5 IN A 192.0.2.53")
    assert f";; SERVER: 127.0.0.1#{DEFAULT_PORT}(UDP)" in run.out


# ---------------------------------------------------------------- transports (scripted server)


def test_tcp_flag_asks_over_tcp() -> None:
    """A TCP-only server answers --tcp; the same query without --tcp (UDP) gets no reply: exit 1."""
    with scripted(lambda q, _: a_reply(q), udp=False) as srv:
        with_tcp = dnsd_query("x.example.", "--tcp", "--server", srv.addr)
        assert [t for t, _ in srv.received] == ["tcp"]
        without = dnsd_query("x.example.", "--server", srv.addr)
    assert with_tcp.rc == 0, with_tcp.err
    assert with_tcp.section("ANSWER") == zone_lines("x.example. 5 IN A 192.0.2.1")
    assert without.rc == 1
    assert "no reply from 127.0.0.1:" in without.err


def test_truncated_udp_reply_is_asked_again_over_tcp() -> None:
    """TC=1 over UDP (RFC 1035 4.2.1): the client asks again over TCP and prints the full reply."""

    def answer(q: dns.message.Message, transport: str) -> dns.message.Message:
        if transport == "udp":
            r = dns.message.make_response(q)
            r.flags |= dns.flags.TC
            return r
        return a_reply(q, "192.0.2.7")

    with scripted(answer) as srv:
        run = dnsd_query("x.example.", "--server", srv.addr)
        transports = [t for t, _ in srv.received]
    assert run.rc == 0, run.err
    assert transports == ["udp", "tcp"]
    assert run.section("ANSWER") == zone_lines("x.example. 5 IN A 192.0.2.7")
    assert "(TCP)" in run.out


# ---------------------------------------------------------------- errors


def test_server_down_udp_is_exit_1_within_the_timeout() -> None:
    port = free_udp_port()  # nothing listens there
    run = dnsd_query("svc1.testns.svc.cluster.local", "--server", f"127.0.0.1:{port}")
    assert run.rc == 1
    assert run.out == ""
    assert run.err.strip() == f"dnsd query: no reply from 127.0.0.1:{port} within 1 s (is dnsd running there?)"
    assert TIMEOUT <= run.took < TIMEOUT + STARTUP


def test_server_down_tcp_is_exit_1_at_once() -> None:
    port = free_udp_port()
    run = dnsd_query("svc1.testns.svc.cluster.local", "--tcp", "--server", f"127.0.0.1:{port}", timeout=10)
    assert run.rc == 1
    assert "refused the TCP connection" in run.err
    assert run.took < 10  # refused at once, not waited for


def test_server_that_never_answers_is_exit_1() -> None:
    """A server that reads the query and says nothing: the same as no server."""
    with scripted(lambda q, _: None, tcp=False) as srv:
        run = dnsd_query("x.example.", "--server", srv.addr)
        assert len(srv.received) == 1
    assert run.rc == 1
    assert "no reply from" in run.err


@dataclass(frozen=True)
class Usage:
    name: str
    args: tuple[str, ...]
    message: str


USAGE = [
    Usage("unknown type", ("x.example.", "BOGUS"), "unknown record type 'BOGUS'"),
    Usage("AXFR is not a query", ("cluster.local", "AXFR"), "not a type a single query can ask for"),
    Usage("OPT is not a query", ("cluster.local", "OPT"), "not a type a single query can ask for"),
    Usage("empty label", ("a..example.",), "bad name 'a..example.'"),
    Usage("label over 63", ("a" * 64 + ".example.",), "bad name"),
    Usage("no name", (), "the following arguments are required: name"),
    Usage("extra argument", ("x.", "A", "IN"), "unrecognized arguments: IN"),
    Usage("bad port", ("x.", "--server", "127.0.0.1:99999"), "the port must be a number from 1 to 65535"),
    Usage("port 0", ("x.", "--server", "127.0.0.1:0"), "the port must be a number from 1 to 65535"),
    Usage("v6 without ]", ("x.", "--server", "[::1:53"), "expected [IPv6]:port"),
    Usage("bad timeout", ("x.", "--timeout", "0"), "--timeout must be above 0"),
]


@pytest.mark.parametrize("case", USAGE, ids=[c.name for c in USAGE])
def test_usage_errors(case: Usage) -> None:
    """Usage errors: exit 2, the usage line and the reason on stderr, nothing sent (no server is given)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dnsd", "query", *case.args],
        cwd=REPO, capture_output=True, text=True, timeout=STARTUP + 10,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: dnsd query"), proc.stderr
    assert case.message in proc.stderr


def test_help_is_exit_0() -> None:
    proc = subprocess.run([sys.executable, "-m", "dnsd", "query", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--server", "--trace", "--tcp", "127.0.0.1:1053"):
        assert word in proc.stdout


@dataclass(frozen=True)
class ServerCase:
    text: str
    want: Server | None  # None: a usage error


SERVERS = [
    ServerCase("127.0.0.1", Server("127.0.0.1", 1053)),
    ServerCase("127.0.0.2:53", Server("127.0.0.2", 53)),
    ServerCase("[::1]:5353", Server("::1", 5353)),
    ServerCase("[::1]", Server("::1", 1053)),
    ServerCase("::1", Server("::1", 1053)),
    ServerCase("fd00::0001", Server("fd00::1", 1053)),
    ServerCase("127.0.0.1:", None),
    ServerCase(":53", None),
    ServerCase("127.0.0.1:x", None),
    ServerCase("[::1]x", None),
    ServerCase("localhost", Server("127.0.0.1", 1053)),  # no lookup (a host name would ask the system resolver)
    ServerCase("localhost:5300", Server("127.0.0.1", 5300)),
]


@pytest.mark.parametrize("case", SERVERS, ids=[c.text for c in SERVERS])
def test_parse_server(case: ServerCase) -> None:
    if case.want is None:
        with pytest.raises(UsageError):
            parse_server(case.text)
    else:
        assert parse_server(case.text) == case.want


# ---------------------------------------------------------------- --trace: the client side (scripted server)


def test_trace_query_carries_option_65001_with_empty_data() -> None:
    with scripted(traced(["cluster: NOERROR"])) as srv:
        plain = dnsd_query("x.example.", "--server", srv.addr)
        traced_run = dnsd_query("x.example.", "--trace", "--server", srv.addr)
        (_, q_plain), (_, q_traced) = srv.received
    assert plain.rc == traced_run.rc == 0
    assert [o.otype for o in q_plain.options] == []
    assert [(o.otype, o.to_wire()) for o in q_traced.options] == [(TRACE_OPTION, b"")]
    assert q_traced.edns == 0


def test_trace_prints_the_walk_in_order() -> None:
    walk = [
        "cache: miss",
        "cluster: not in cluster.local, in-addr.arpa, ip6.arpa",
        "zones: not ours",
        "recurse: 127.0.0.1#5301 (.) -> referral example.",
        "recurse: 127.0.0.1#5302 (example.) -> NOERROR 1 answer",
    ]
    with scripted(traced(walk)) as srv:
        run = dnsd_query("x.example.", "--trace", "--server", srv.addr)
    assert run.rc == 0, run.err
    assert run.trace() == walk
    assert f";; TRACE ({len(walk)} steps):" in run.out
    assert run.section("ANSWER") == zone_lines("x.example. 5 IN A 192.0.2.1")
    assert "Generic 65001" not in run.out  # the walk is not also dumped as a raw option


def test_trace_without_the_option_in_the_reply_says_so() -> None:
    with scripted(traced(None)) as srv:
        run = dnsd_query("x.example.", "--trace", "--server", srv.addr)
    assert run.rc == 0
    assert run.trace() is None
    assert ";; TRACE: none in the reply (no option 65001" in run.out


def test_trace_large_walk_over_tcp_fallback() -> None:
    """A walk too big for the UDP reply: the scripted server truncates, the client gets it whole over TCP."""
    walk = [f"recurse: step {i} " + "z" * 80 for i in range(100)]  # about 9 KB

    def answer(q: dns.message.Message, transport: str) -> dns.message.Message:
        r = traced(walk)(q, transport)
        assert r is not None
        if transport == "udp" and len(r.to_wire(max_size=65535)) > q.payload:
            r = dns.message.make_response(q)
            r.flags |= dns.flags.TC
        return r

    with scripted(answer) as srv:
        run = dnsd_query("x.example.", "--trace", "--server", srv.addr)
    assert run.rc == 0, run.err
    assert run.trace() == walk
    assert "(TCP)" in run.out


# ---------------------------------------------------------------- --trace against dnsd (the engine's walk)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_trace_from_dnsd_names_the_cluster_link(fixture_server: DnsdHandle, tcp: bool) -> None:
    """A cluster name: the walk names the cluster link and what it returned; the answer is unchanged."""
    args = ["svc1.testns.svc.cluster.local", "--trace", "--server", server_arg(fixture_server)]
    run = dnsd_query(*args, *(["--tcp"] if tcp else []))
    assert run.rc == 0, run.err
    assert run.section("ANSWER") == zone_lines("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")
    walk = run.trace()
    assert walk, run.out
    assert any("cluster" in step and "NOERROR" in step for step in walk), walk


def test_trace_from_dnsd_refused_name_shows_the_chain(fixture_server: DnsdHandle) -> None:
    """A name no link serves: every link consulted appears, and the walk ends in REFUSED."""
    run = dnsd_query("example.org", "--trace", "--server", server_arg(fixture_server))
    assert run.rc == 0, run.err
    walk = run.trace()
    assert walk and any("cluster" in step for step in walk), run.out
    assert "REFUSED" in walk[-1], walk


def test_dnsd_answers_a_traced_query(fixture_server: DnsdHandle) -> None:
    """The walk changes nothing else: a traced query gets the plain query's answer."""
    run = dnsd_query("svc1.testns.svc.cluster.local", "--trace", "--server", server_arg(fixture_server))
    assert run.rc == 0, run.err
    assert run.header()[0] == "NOERROR"
    assert run.section("ANSWER") == zone_lines("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")


def test_trace_from_dnsd_through_the_cache(dnsd_factory: Callable[..., DnsdHandle], nsd: str) -> None:
    """A forwarded name asked twice: the first walk misses the cache and asks the upstream (NSD on loopback), the
    second is a cache hit that asks no one."""
    cfg = {**base_config(FIXTURE_CLUSTER), "recursion": "forward", "forward": {"upstreams": [nsd]}}
    cfg["allow_recursion"] = ["127.0.0.1/32"]
    h = dnsd_factory(config=cfg)
    first = dnsd_query("www.example.test", "--trace", "--server", server_arg(h))
    second = dnsd_query("www.example.test", "--trace", "--server", server_arg(h))
    for run in (first, second):
        assert run.rc == 0, run.err
        # the TTL counts down in the cache: compared without it
        assert {(r.split()[0], *r.split()[2:]) for r in run.section("ANSWER")} == {
            ("www.example.test.", "IN", "A", "192.0.2.10")
        }, run.out
    walk1, walk2 = first.trace() or [], second.trace() or []
    assert any(s.startswith("cache:") and "miss" in s for s in walk1), walk1
    assert any(s.startswith("forward:") and nsd in s for s in walk1), walk1
    assert any(s.startswith("cache:") and "hit" in s for s in walk2), walk2
    assert not any(s.startswith("forward:") and nsd in s for s in walk2), walk2

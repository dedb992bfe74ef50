"""DNS-over-TLS upstreams (RFC 7858, issue 6 section 3) against a real DoT server: Unbound on loopback.

The test makes a CA and a certificate for `dot.test` signed by it (and a second CA that signed nothing we
serve) with the openssl CLI, and starts `/usr/sbin/unbound -d` on a free 127.0.0.1 port with `tls-port`, that
certificate, and answers from `local-data` only: `local-zone: "." refuse` answers every other name itself, and
`do-not-query-address` covers every address, so Unbound never sends a query anywhere. dnsd runs in-process and
forwards to `tls://127.0.0.1:PORT#dot.test`; its per-upstream TLS stats say how many connections it opened and
how many queries it pipelined on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, assert_section, base_config, query, rcode_text, wait_until
from support.nsd import free_port
from support.unbound import UNBOUND, Unbound, configure_unbound

from dnsd.forward.link import Forwarder
from dnsd.upstream.tls import TlsUpstream

NAME = "dot.test"  # the name in Unbound's certificate
TIMEOUT = 0.5  # forward.timeout: TLS handshakes on loopback take a few ms

pytestmark = pytest.mark.skipif(not Path(UNBOUND).exists(), reason="unbound is not installed (make setup)")

LOCAL_DATA = [
    "www.example.test. 300 IN A 192.0.2.10",
    "www.example.test. 300 IN AAAA 2001:db8::10",
    "mail.example.test. 300 IN MX 10 www.example.test.",
    "example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300",
]


# ---------------------------------------------------------------- certificates


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, stem: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{stem}.key", "-out", f"{stem}.pem", "-days", "2", "-subj", f"/CN=dnsd test {stem}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's certificate
    other_ca: Path  # signed nothing we serve
    key: Path
    cert: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other")
    (d / "ext.cnf").write_text(
        f"subjectAltName=DNS:{NAME}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={NAME}", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )  # fmt: skip
    return Pki(d / "ca.pem", d / "other.pem", d / "server.key", d / "server.pem")


# ---------------------------------------------------------------- Unbound


def tls_ready(port: int, pki: Pki) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname=NAME),
        ):
            return True
    except OSError:
        return False


def dot_unbound(d: Path, pki: Pki) -> Unbound:
    """Unbound serving DoT (and plain DNS) on one free 127.0.0.1 port from LOCAL_DATA only: it never asks anyone;
    not started yet (start() and stop() by its PID, again on the same port)."""
    port = free_port()
    server = [
        f"tls-port: {port}",
        f'tls-service-key: "{pki.key}"',
        f'tls-service-pem: "{pki.cert}"',
        "do-not-query-address: 0.0.0.0/0",
        "do-not-query-address: ::/0",
        'local-zone: "." refuse',
        'local-zone: "example.test." static',
        *(f'local-data: "{rr}"' for rr in LOCAL_DATA),
    ]
    return configure_unbound(d, port=port, ready=lambda: tls_ready(port, pki), server=server)


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Unbound]:
    server = dot_unbound(tmp_path_factory.mktemp("unbound"), pki)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def forwarding(pki: Pki, dnsd_factory: Callable[..., DnsdHandle]) -> Callable[..., DnsdHandle]:
    """forwarding(upstreams, tls_ca=...) -> a dnsd forwarding to them (tls_ca: the test CA unless given)."""

    def make(upstreams: list[str], listen: str | None = None, **forward: Any) -> DnsdHandle:
        cfg = base_config(FIXTURE_CLUSTER)
        if listen is not None:
            cfg["listen"] = [listen]
        cfg["recursion"] = "forward"
        cfg["forward"] = {"upstreams": upstreams, "timeout": TIMEOUT, "tls_ca": str(pki.ca), **forward}
        cfg["cache"] = {"size": 0}  # every query must reach the DoT upstream (the cache: test_cache.py)
        cfg["allow_recursion"] = ["127.0.0.1/32"]
        handle = dnsd_factory(config=cfg)
        fwd = handle.app.forwarder
        assert isinstance(fwd, Forwarder)
        # The forwarding-loop probe (one HINFO query per upstream at start) is done before the test's own queries.
        wait_until(lambda: handle.call(lambda: fwd.loop_probes_done))
        return handle

    return make


def dot(port: int, name: str = NAME) -> str:
    return f"tls://127.0.0.1:{port}#{name}"


def tls_of(h: DnsdHandle, spec: str) -> TlsUpstream:
    fwd = h.app.forwarder
    assert isinstance(fwd, Forwarder)
    tls = fwd.upstream(spec).tls
    assert tls is not None
    return tls


# ---------------------------------------------------------------- answers over DoT


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    rdtype: str
    rcode: str
    answer: str  # zone-file text


CASES = [
    Case("a", "www.example.test.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10"),
    Case("aaaa", "www.example.test.", "AAAA", "NOERROR", "www.example.test. 300 IN AAAA 2001:db8::10"),
    Case("mx", "mail.example.test.", "MX", "NOERROR", "mail.example.test. 300 IN MX 10 www.example.test."),
    Case("mixed-case", "WWW.Example.TEST.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10"),
    Case("nxdomain", "absent.example.test.", "A", "NXDOMAIN", ""),
    # Unbound REFUSES names outside its local data (`.test.` is one of its default local zones: NXDOMAIN, so the
    # name is under .example.); dnsd moves on and, with no upstream left, says SERVFAIL.
    Case("refused-upstream", "www.elsewhere.example.", "A", "SERVFAIL", ""),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_answers_over_dot(forwarding: Callable[..., DnsdHandle], unbound: Unbound, case: Case) -> None:
    h = forwarding([dot(unbound.port)])
    msg = query(h, case.name, case.rdtype)
    assert rcode_text(msg) == case.rcode
    assert_section(msg.answer, case.answer, "answer")
    assert tls_of(h, dot(unbound.port)).stats.connects == 1


@pytest.mark.parametrize("count", [2, 10])
def test_connection_is_reused(forwarding: Callable[..., DnsdHandle], unbound: Unbound, count: int) -> None:
    h = forwarding([dot(unbound.port)])
    for i in range(count):
        name = "www.example.test." if i % 2 else "mail.example.test."
        assert rcode_text(query(h, name, "A" if i % 2 else "MX")) == "NOERROR"
    stats = tls_of(h, dot(unbound.port)).stats
    # count + 1: the loop probe at start opened the connection
    assert (stats.connects, stats.queries) == (1, count + 1), "one connection carried every query (RFC 7858 3.4)"


def test_pipelined_concurrent_queries(forwarding: Callable[..., DnsdHandle], unbound: Unbound) -> None:
    h = forwarding([dot(unbound.port)])
    assert rcode_text(query(h, "www.example.test.")) == "NOERROR"  # the connection is open before the burst
    names = [("www.example.test.", "A"), ("www.example.test.", "AAAA"), ("mail.example.test.", "MX")] * 20
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(lambda nt: query(h, nt[0], nt[1], timeout=3.0), names))
    for (name, rdtype), msg in zip(names, replies, strict=True):
        assert rcode_text(msg) == "NOERROR", (name, rdtype)
        assert [dns.rdatatype.to_text(r.rdtype) for r in msg.answer] == [rdtype]
        assert msg.question[0].name.to_text() == name
    stats = tls_of(h, dot(unbound.port)).stats
    assert stats.connects == 1
    assert stats.queries == len(names) + 2  # and the loop probe at start, and the first query
    assert stats.peak_inflight > 1, "queries were pipelined on the one connection"


# ---------------------------------------------------------------- verification failures


@dataclass(frozen=True)
class BadCase:
    id: str
    server_name: str
    ca: str  # "ca" (the signer) or "other"


BAD = [
    BadCase("wrong-name", "wrong.test", "ca"),
    BadCase("name-is-a-parent", "test", "ca"),
    BadCase("ca-that-did-not-sign", NAME, "other"),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_verification_failure_is_servfail(
    forwarding: Callable[..., DnsdHandle], unbound: Unbound, pki: Pki, case: BadCase
) -> None:
    ca = pki.ca if case.ca == "ca" else pki.other_ca
    spec = dot(unbound.port, case.server_name)
    h = forwarding([spec], tls_ca=str(ca))
    assert rcode_text(query(h, "www.example.test.")) == "SERVFAIL"
    stats = tls_of(h, spec).stats
    assert (stats.connects, stats.queries) == (0, 0), "no query is sent on an unverified connection"
    assert stats.connect_failures >= 1


BAD_NAMES = [c for c in BAD if c.ca == "ca"]  # one tls_ca per dnsd: the good upstream needs the signing CA


@pytest.mark.parametrize("case", BAD_NAMES, ids=[c.id for c in BAD_NAMES])
def test_verification_failure_fails_over(
    forwarding: Callable[..., DnsdHandle], unbound: Unbound, case: BadCase
) -> None:
    """An unverified upstream is that upstream's failure: the next one (the same Unbound under its right name)
    answers."""
    bad = dot(unbound.port, case.server_name)
    good = dot(unbound.port)
    h = forwarding([bad, good])
    msg = query(h, "www.example.test.")
    assert rcode_text(msg) == "NOERROR"
    assert_section(msg.answer, "www.example.test. 300 IN A 192.0.2.10", "answer")
    assert tls_of(h, bad).stats.connect_failures >= 1
    assert tls_of(h, good).stats.connects == 1


# ---------------------------------------------------------------- the connection's life


def test_server_going_away_and_back(forwarding: Callable[..., DnsdHandle], tmp_path: Path, pki: Pki) -> None:
    server = dot_unbound(tmp_path, pki)
    server.start()
    try:
        h = forwarding([dot(server.port)])
        tls = tls_of(h, dot(server.port))
        assert rcode_text(query(h, "www.example.test.")) == "NOERROR"
        server.stop()
        wait_until(lambda: not h.call(lambda: tls.connected))  # the reader saw the connection close
        assert rcode_text(query(h, "www.example.test.")) == "SERVFAIL"
        server.start()
        wait_until(lambda: rcode_text(query(h, "www.example.test.")) == "NOERROR")
        assert tls.stats.connects == 2, "a new connection once the server is back"
    finally:
        server.stop()


def test_idle_connection_is_closed_and_reopened(forwarding: Callable[..., DnsdHandle], unbound: Unbound) -> None:
    h = forwarding([dot(unbound.port)])
    tls = tls_of(h, dot(unbound.port))
    h.call(lambda: setattr(tls, "idle_timeout", 0.1))
    assert rcode_text(query(h, "www.example.test.")) == "NOERROR"
    wait_until(lambda: not h.call(lambda: tls.connected))
    assert rcode_text(query(h, "www.example.test.")) == "NOERROR"
    assert tls.stats.connects == 2


def test_shutdown_closes_the_connection(forwarding: Callable[..., DnsdHandle], unbound: Unbound) -> None:
    h = forwarding([dot(unbound.port)])
    tls = tls_of(h, dot(unbound.port))
    assert rcode_text(query(h, "www.example.test.")) == "NOERROR"
    conn = h.call(lambda: tls._conn)
    assert conn is not None and conn.task is not None
    h.stop()
    assert conn.closed and conn.task.done(), "the reader task is owned and ended on shutdown"


# ---------------------------------------------------------------- a scripted DoT upstream: the RFC 5452 checks

EVIL = "192.0.2.66"  # what every wrong reply carries: it must never reach a client


class FakeDot:
    """A TLS server on 127.0.0.1 (the test certificate) whose replies the first query label scripts:
    ok, wrongid (a reply with another ID, then the right one), wrongq (our ID, another question), garbage (our ID,
    then bytes that do not parse), close (hang up without a reply), drop (never answer)."""

    def __init__(self, pki: Pki) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(pki.cert), str(pki.key))
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        ready = threading.Event()
        self.port = 0

        async def boot() -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(boot(), self.loop).result(10)
        assert ready.is_set()

    @staticmethod
    def _answer(request: dns.message.Message, ip: str, qname: str | None = None) -> bytes:
        reply = dns.message.make_response(request)
        name = dns.name.from_text(qname) if qname else request.question[0].name
        if qname:
            reply.question = [dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.A)]
        reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", ip))
        return reply.to_wire()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        def send(wire: bytes) -> None:
            writer.write(struct.pack("!H", len(wire)) + wire)

        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                request = dns.message.from_wire(await reader.readexactly(size))
                how = request.question[0].name.labels[0].decode().lower()
                if how == "wrongid":
                    wire = bytearray(self._answer(request, EVIL))
                    struct.pack_into("!H", wire, 0, request.id ^ 0x5A5A)
                    send(bytes(wire))
                    send(self._answer(request, "192.0.2.10"))
                elif how == "wrongq":
                    send(self._answer(request, EVIL, "other.example.test."))
                elif how == "garbage":
                    send(struct.pack("!HH", request.id, 0x8180) + b"\xff" * 20)
                elif how == "close":
                    break
                elif how != "drop":
                    send(self._answer(request, "192.0.2.10"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def down() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture()
def fake_dot(pki: Pki) -> Iterator[FakeDot]:
    fake = FakeDot(pki)
    yield fake
    fake.stop()


@dataclass(frozen=True)
class FakeCase:
    id: str
    label: str
    rcode: str
    answer: str  # zone-file text
    ignored: int  # replies the reader dropped as matching no query in flight
    connects: int  # connections after the case's query and one `ok` query after it


FAKE_CASES = [
    FakeCase("ok", "ok", "NOERROR", "ok.example.test. 300 IN A 192.0.2.10", 0, 1),
    FakeCase("wrong-id-then-right", "wrongid", "NOERROR", "wrongid.example.test. 300 IN A 192.0.2.10", 1, 1),
    FakeCase("wrong-question", "wrongq", "SERVFAIL", "", 0, 1),
    FakeCase("garbage", "garbage", "SERVFAIL", "", 0, 1),
    FakeCase("closed-without-reply", "close", "SERVFAIL", "", 0, 2),
    FakeCase("no-reply", "drop", "SERVFAIL", "", 0, 1),
]


@pytest.mark.parametrize("case", FAKE_CASES, ids=[c.id for c in FAKE_CASES])
def test_reply_checks_over_dot(
    fake_dot: FakeDot,  # set up first, torn down last: dnsd's TLS close at shutdown gets its answer
    forwarding: Callable[..., DnsdHandle],
    case: FakeCase,
) -> None:
    """Replies are matched by ID and must repeat the question (RFC 5452 9.1); a bad one is that upstream's
    failure, never an answer, and the connection stays usable (or is reopened after a hang-up)."""
    h = forwarding([dot(fake_dot.port)])
    msg = query(h, f"{case.label}.example.test.")
    assert rcode_text(msg) == case.rcode
    assert_section(msg.answer, case.answer, "answer")
    assert EVIL not in msg.to_text()
    after = query(h, "ok.example.test.")
    assert rcode_text(after) == "NOERROR", "the upstream is still usable"
    stats = tls_of(h, dot(fake_dot.port)).stats
    assert (stats.ignored, stats.connects) == (case.ignored, case.connects)
    assert fake_dot.connections == case.connects


# ---------------------------------------------------------------- forwarding loops at run time


class Relay:
    """A UDP "resolver" on 127.0.0.1 that forwards every query to `target` and relays the reply: pointed back
    at dnsd, it closes a forwarding loop (dnsd -> relay -> dnsd)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[str] = []
        self.workers: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.sock.settimeout(0.05)  # close() does not wake a blocked recvfrom: poll the stop flag
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(dns.message.from_wire(data).question[0].name.to_text())
            worker = threading.Thread(target=self._relay, args=(data, client), daemon=True)
            self.workers.append(worker)
            worker.start()

    def _relay(self, data: bytes, client: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.settimeout(2)
            out.sendto(data, self.target)
            try:
                reply = out.recv(65535)
            except OSError:
                return
        with contextlib.suppress(OSError):
            self.sock.sendto(reply, client)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for worker in self.workers:
            worker.join(5)
        self.sock.close()


@dataclass(frozen=True)
class LoopCase:
    id: str
    upstreams: tuple[str, ...]  # "relay" (loops back to dnsd) or "dot" (Unbound, no loop)
    disabled: tuple[bool, ...]
    rcode: str  # of www.example.test. A after the probes


LOOP_CASES = [
    LoopCase("only-upstream-loops", ("relay",), (True,), "SERVFAIL"),
    LoopCase("first-loops-second-answers", ("relay", "dot"), (True, False), "NOERROR"),
    LoopCase("no-loop", ("dot",), (False,), "NOERROR"),
]


@pytest.mark.parametrize("case", LOOP_CASES, ids=[c.id for c in LOOP_CASES])
def test_forwarding_loop_disables_the_upstream(
    forwarding: Callable[..., DnsdHandle], unbound: Unbound, caplog: pytest.LogCaptureFixture, case: LoopCase
) -> None:
    """CoreDNS's `loop` idea: the HINFO probe `<random>.dnsd-loop.` sent to each upstream at start comes back
    to dnsd only through a loop; that upstream is then disabled, with an ERROR, and never asked again."""
    caplog.set_level(logging.ERROR, logger="dnsd.forward.link")
    port = free_port()
    relay = Relay(("127.0.0.1", port))
    try:
        specs = [f"127.0.0.1:{relay.port}" if u == "relay" else dot(unbound.port) for u in case.upstreams]
        h = forwarding(specs, listen=f"127.0.0.1:{port}")
        fwd = h.app.forwarder
        assert isinstance(fwd, Forwarder)
        assert [fwd.upstream(spec).disabled for spec in specs] == list(case.disabled)
        loops = [r.getMessage() for r in caplog.records if "forwarding loop" in r.getMessage()]
        assert len(loops) == sum(case.disabled), loops
        probes = list(relay.seen)
        assert all(name.endswith(".dnsd-loop.") for name in probes)
        msg = query(h, "www.example.test.")
        assert rcode_text(msg) == case.rcode
        assert relay.seen == probes, "a disabled upstream is never asked again"
    finally:
        relay.stop()

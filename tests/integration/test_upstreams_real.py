"""Forwarding and caching through real resolvers from Debian, each started by the test on loopback and stopped
by its PID: dnsmasq (dnsmasq-base) and Unbound as forwarding upstreams, each forwarding example.test on to NSD.
dnsd -> dnsmasq|Unbound -> NSD is the chain a node resolver really sits in. dnsmasq logs every query it gets,
so the tests count what dnsd sent it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.rdatatype
import pytest
from support import (
    FIXTURE_CLUSTER,
    DnsdHandle,
    assert_section,
    base_config,
    query,
    rcode_text,
    stop_process,
    wait_until,
)
from support.nsd import free_port
from support.unbound import configure_unbound

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def queries(self, name: str) -> int:
        """dnsmasq: the `query[TYPE] name from ...` lines of its log (Unbound: not counted)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if "query[" in line and f" {name} from " in line)

    def stop(self) -> None:
        stop_process(self.proc)


def serves(port: int) -> bool:
    """The peer answers www.example.test. (from NSD, through it): it is up and forwards."""
    try:
        return rcode_text(query(("127.0.0.1", port), "www.example.test.", timeout=0.3)) == "NOERROR"
    except (dns.exception.Timeout, OSError):
        return False


def _wait_serving(peer: Peer) -> None:
    def up() -> bool:
        assert peer.proc.poll() is None, f"{peer.name} exited: {peer.log.read_text(errors='replace')[-2000:]}"
        return serves(peer.port)

    try:
        wait_until(up, timeout=20)
    except BaseException:
        peer.stop()
        raise


def start_dnsmasq(work: Path, nsd: str) -> Peer:
    if not Path(DNSMASQ).exists():
        raise AssertionError(
            "dnsmasq is not installed: `make system-test-deps` installs the Debian package dnsmasq-base"
        )
    port = free_port()
    nsd_host, nsd_port = nsd.split(":")
    log = work / "dnsmasq.log"
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--no-daemon",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        f"--server=/example.test/{nsd_host}#{nsd_port}",
        "--address=/upstream.test/192.0.2.7",
        "--log-queries",
        f"--log-facility={log}",
        f"--pid-file={work / 'dnsmasq.pid'}",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = Peer("dnsmasq", proc, port, log)
    _wait_serving(peer)
    return peer


def start_unbound(work: Path, nsd: str) -> Peer:
    nsd_host, nsd_port = nsd.split(":")
    server = [
        "do-not-query-localhost: no",  # NSD is on 127.0.0.1
        'domain-insecure: "example.test."',
        'local-zone: "test." nodefault  # Unbound serves the RFC 6761 name test. as an empty zone by default',
        'local-zone: "upstream.test." static',
        'local-data: "ok.upstream.test. 300 IN A 192.0.2.7"',
    ]
    tail = f'forward-zone:\n  name: "example.test."\n  forward-addr: {nsd_host}@{nsd_port}\n'
    port = free_port()
    u = configure_unbound(work, port=port, ready=lambda: serves(port), server=server, tail=tail)
    u.start()
    assert u.proc is not None
    return Peer("unbound", u.proc, u.port, u.out)


@pytest.fixture(scope="module", params=["dnsmasq", "unbound"])
def peer(request: pytest.FixtureRequest, nsd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    start = start_dnsmasq if request.param == "dnsmasq" else start_unbound
    p = start(tmp_path_factory.mktemp(request.param), nsd)
    yield p
    p.stop()


@pytest.fixture()
def through(dnsd_factory: Callable[..., DnsdHandle], peer: Peer) -> DnsdHandle:
    cfg = base_config(FIXTURE_CLUSTER)
    cfg.update(
        {
            "recursion": "forward",
            "forward": {"upstreams": [peer.addr], "timeout": 1.0},
            "allow_recursion": ["127.0.0.1/32"],
        }
    )
    return dnsd_factory(config=cfg)


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    rtype: str
    rcode: str
    answer: str  # zone-file lines; TTLs as the peer passes them on from NSD (it may count them down: see below)


CASES = [
    Case("a", "www.example.test.", "A", "NOERROR", "www.example.test. 300 IN A 192.0.2.10"),
    Case("aaaa", "www.example.test.", "AAAA", "NOERROR", "www.example.test. 300 IN AAAA 2001:db8::10"),
    Case(
        "cname",
        "alias.example.test.",
        "A",
        "NOERROR",
        "alias.example.test. 300 IN CNAME www.example.test.\nwww.example.test. 300 IN A 192.0.2.10",
    ),
    Case("mx", "mail.example.test.", "MX", "NOERROR", "mail.example.test. 300 IN MX 10 www.example.test."),
    Case("nxdomain", "nope.example.test.", "A", "NXDOMAIN", ""),
    Case("nodata", "www.example.test.", "TXT", "NOERROR", ""),
]


def _ttl_free(text: str) -> set[str]:
    return {" ".join(line.split()[:1] + line.split()[2:]) for line in text.strip().splitlines() if line.strip()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_answers_through_a_real_resolver(through: DnsdHandle, peer: Peer, case: Case) -> None:
    msg = query(through, case.name, case.rtype)
    assert rcode_text(msg) == case.rcode
    assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA
    got = {
        " ".join(line.split()[:1] + line.split()[2:]) for rrset in msg.answer for line in rrset.to_text().splitlines()
    }
    assert got == _ttl_free(case.answer)
    if case.rcode == "NXDOMAIN" or (case.rcode == "NOERROR" and not case.answer):
        assert [rrset.rdtype for rrset in msg.authority] == [dns.rdatatype.SOA], "the negative answer keeps its SOA"
        assert msg.authority[0].ttl <= 60, "RFC 2308: min(SOA TTL, MINIMUM) = 60 from NSD's zone"


def test_cached_answers_are_not_asked_again(dnsd_factory: Callable[..., DnsdHandle], nsd: str, tmp_path: Path) -> None:
    """dnsmasq logs every query it receives: five queries for one name reach it once."""
    peer = start_dnsmasq(tmp_path, nsd)
    try:
        cfg = base_config(FIXTURE_CLUSTER)
        cfg.update({"recursion": "forward", "forward": {"upstreams": [peer.addr]}, "allow_recursion": ["127.0.0.1/32"]})
        h = dnsd_factory(config=cfg)
        for _ in range(5):
            assert rcode_text(query(h, "mail.example.test.", "MX")) == "NOERROR"
        wait_until(lambda: peer.queries("mail.example.test") >= 1)
        assert peer.queries("mail.example.test") == 1, "one upstream query, then the cache"
    finally:
        peer.stop()


def test_names_only_the_peer_knows(through: DnsdHandle, peer: Peer) -> None:
    name = "ok.upstream.test."
    msg = query(through, name)
    assert_section(msg.answer, f"{name} {msg.answer[0].ttl if msg.answer else 0} IN A 192.0.2.7")

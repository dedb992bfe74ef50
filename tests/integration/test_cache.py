"""The answer cache (issue 6 section 2; robustness rows C1-C5, F5-F7), through real sockets: dnsd in-process
forwarding to a scripted upstream on loopback that counts every query it gets, and to real NSD. The cache's clock
is a fake the tests move, so nothing sleeps to age an entry."""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, assert_section, base_config, make_query, query, rcode_text, wait_until
from support.scripted import Scripted, ScriptedUpstream

from dnsd.cache.link import CacheLink

SOA = "example. 300 IN SOA ns.example. host.example. 1 3600 600 86400 60"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    up.script.update(
        {
            ("a.example.", "A"): Scripted(answer="a.example. 10 IN A 192.0.2.1"),
            ("b.example.", "A"): Scripted(answer="b.example. 10 IN A 192.0.2.2"),
            ("nx.example.", "A"): Scripted("NXDOMAIN", authority=SOA),
            ("nodata.example.", "AAAA"): Scripted(authority=SOA),
            ("nosoa.example.", "A"): Scripted("NXDOMAIN"),
            ("longneg.example.", "A"): Scripted(
                "NXDOMAIN", authority="example. 7200 IN SOA ns.example. host.example. 1 3600 600 86400 7200"
            ),
            ("zero.example.", "A"): Scripted(answer="zero.example. 0 IN A 192.0.2.9"),
            ("long.example.", "A"): Scripted(answer="long.example. 86400 IN A 192.0.2.8"),
        }
    )
    yield up
    up.stop()


@dataclass
class Rig:
    h: DnsdHandle
    up: ScriptedUpstream
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def cache(self) -> CacheLink:
        link = self.h.app.cache
        assert isinstance(link, CacheLink)
        return link

    def at(self, t: float) -> None:
        """Move the cache's clock to t seconds after the start."""
        self.clock.now = 1000.0 + t

    def ask(self, name: str, rtype: str = "A", **kw: Any) -> dns.message.Message:
        return query(self.h, name, rtype, **kw)


@pytest.fixture()
def rig(dnsd_factory: Callable[..., DnsdHandle], upstream: ScriptedUpstream) -> Callable[..., Rig]:
    def make(timeout: float = 0.3, **cache: Any) -> Rig:
        cfg = base_config(FIXTURE_CLUSTER)
        cfg.update(
            {
                "recursion": "forward",
                "forward": {"upstreams": [upstream.addr], "timeout": timeout},
                "allow_recursion": ["127.0.0.1/32"],
                "cache": cache,
            }
        )
        r = Rig(dnsd_factory(config=cfg), upstream)
        r.h.call(lambda: r.cache.set_clock(r.clock))
        wait_until(lambda: r.h.call(lambda: r.h.app.forwarder.loop_probes_done))
        return r

    return make


def ttls(msg: dns.message.Message) -> list[int]:
    return [rrset.ttl for rrset in (*msg.answer, *msg.authority)]


# ---------------------------------------------------------------- C1: TTLs age; expiry asks again


@dataclass(frozen=True)
class AgeCase:
    id: str
    name: str
    rtype: str
    steps: tuple[tuple[float, int, list[int]], ...]  # (t, upstream queries after the step, reply TTLs)
    cache: dict[str, Any] = field(default_factory=dict)


AGE_CASES = [
    AgeCase("positive", "a.example.", "A", ((0, 1, [10]), (4, 1, [6]), (9.9, 1, [1]), (10, 2, [10]), (14, 2, [6]))),
    AgeCase("nxdomain-soa-minimum", "nx.example.", "A", ((0, 1, [60]), (59, 1, [1]), (60, 2, [60]))),
    AgeCase("nodata-soa-minimum", "nodata.example.", "AAAA", ((0, 1, [60]), (30, 1, [30]), (61, 2, [60]))),
    # Not kept: each of the two queries of a step goes upstream.
    AgeCase("nxdomain-without-soa", "nosoa.example.", "A", ((0, 2, []), (0, 4, []), (1, 6, []))),
    AgeCase("zero-ttl-never-kept", "zero.example.", "A", ((0, 2, [0]), (0, 4, [0]))),
    AgeCase(
        "success-ttl-max",
        "long.example.",
        "A",
        ((0, 1, [100]), (99, 1, [1]), (100, 2, [100])),
        {"success_ttl_max": 100},
    ),
    AgeCase(
        "denial-ttl-max", "longneg.example.", "A", ((0, 1, [50]), (49, 1, [1]), (50, 2, [50])), {"denial_ttl_max": 50}
    ),
]


@pytest.mark.parametrize("case", AGE_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ttls_age_and_expire(rig: Callable[..., Rig], case: AgeCase, tcp: bool) -> None:
    r = rig(**case.cache)
    for t, asked, want in case.steps:
        r.at(t)
        # Twice at each step: the second is the same exact query, answered from the kept wire reply.
        for _ in range(2):
            msg = r.ask(case.name, case.rtype, tcp=tcp)
            assert ttls(msg) == want, f"t={t}"
            assert not msg.flags & dns.flags.AA and msg.flags & dns.flags.RA
        assert r.up.count(case.name) == asked, f"t={t}: upstream queries so far"


def test_exact_and_full_path_agree(rig: Callable[..., Rig]) -> None:
    """The same entry through the exact wire reply (same bytes again), another spelling, and a query with an
    EDNS option (never kept exactly): the same records and TTLs, the question as asked."""
    r = rig()
    r.ask("a.example.")
    r.at(3)
    plain = r.ask("a.example.")
    again = r.ask("a.example.")
    shouted = r.ask("A.EXAMPLE.")
    q = make_query("a.example.", "A", edns=0)
    q.use_edns(0, options=[dns.edns.GenericOption(65000, b"x")])
    with_option = dns.query.udp(q, r.h.host, port=r.h.port, timeout=2)
    for msg in (plain, again, shouted, with_option):
        assert_section(msg.answer, "a.example. 7 IN A 192.0.2.1")
    assert shouted.question[0].name.to_text() == "A.EXAMPLE."
    assert r.up.count("a.example.") == 1


# ---------------------------------------------------------------- C3: key isolation


def test_do_and_cd_are_separate_entries_case_is_not(rig: Callable[..., Rig]) -> None:
    r = rig()
    for name in ("a.example.", "A.Example.", "a.EXAMPLE."):
        for dnssec in (False, True):
            for cd in (False, True):
                q = make_query(name, "A", dnssec=dnssec)
                if cd:
                    q.flags |= dns.flags.CD
                msg = dns.query.udp(q, r.h.host, port=r.h.port, timeout=2)
                assert rcode_text(msg) == "NOERROR"
                assert bool(msg.flags & dns.flags.CD) == cd, "CD copied to the reply"
    # One upstream query per (DO, CD) variant: four, whatever the case.
    assert sorted(k[2:] for k in r.up.seen if k[0] == "a.example.") == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    assert r.up.count("a.example.") == 4


def test_truncated_reply_to_a_small_client_is_not_what_a_big_one_gets(
    rig: Callable[..., Rig], upstream: ScriptedUpstream
) -> None:
    """The upstream answers over TCP after TC over UDP; the entry is the whole answer. A client without EDNS
    gets it cut to 512 octets with TC; a client with EDNS 1232 then gets all of it (about 950 octets), from the
    cache."""
    lines = "\n".join(f'big.example. 300 IN TXT "record-number-{i:02d}-padding-padding"' for i in range(20))
    upstream.script[("big.example.", "TXT")] = Scripted(answer=lines, tc_over_udp=True)
    r = rig()
    small = r.ask("big.example.", "TXT", edns=-1)  # dnspython: -1 is no EDNS
    assert small.flags & dns.flags.TC
    big = r.ask("big.example.", "TXT")
    assert not big.flags & dns.flags.TC
    assert len(big.answer[0]) == 20
    assert r.up.count("big.example.") == 2, "one UDP query that came back truncated, one over TCP; then the cache"


# ---------------------------------------------------------------- F6: SERVFAIL for 5 s; C5: serve stale


def test_upstream_servfail_is_kept_five_seconds(rig: Callable[..., Rig], upstream: ScriptedUpstream) -> None:
    r = rig()
    upstream.mode = "servfail"
    for t, asked in ((0, 1), (4.9, 1), (5, 2)):
        r.at(t)
        assert rcode_text(r.ask("a.example.")) == "SERVFAIL"
        assert upstream.count("a.example.") == asked, f"t={t}"
    upstream.mode = "answer"
    r.at(10)
    assert_section(r.ask("a.example.").answer, "a.example. 10 IN A 192.0.2.1")


@pytest.mark.parametrize("failure", ["servfail", "drop"])
def test_serve_stale(rig: Callable[..., Rig], upstream: ScriptedUpstream, failure: str) -> None:
    r = rig(serve_stale=3600)
    r.ask("a.example.")
    upstream.mode = failure
    r.at(11)
    msg = r.ask("a.example.")
    assert_section(msg.answer, "a.example. 30 IN A 192.0.2.1")  # RFC 8767 4: TTL 30
    assert upstream.count("a.example.") == 2, "one refresh attempt"
    for t in (12, 25, 40.9):  # no new attempt within 30 s of the failed one (RFC 8767 5)
        r.at(t)
        assert_section(r.ask("a.example.").answer, "a.example. 30 IN A 192.0.2.1")
    assert upstream.count("a.example.") == 2
    r.at(41)
    upstream.mode = "answer"
    assert_section(r.ask("a.example.").answer, "a.example. 10 IN A 192.0.2.1")
    assert upstream.count("a.example.") == 3
    assert r.h.call(lambda: r.cache.stats.stale_served) == 4
    r.at(3600 + 52)  # past the stale window: gone, and a failure is a SERVFAIL again
    upstream.mode = "servfail"
    assert rcode_text(r.ask("a.example.")) == "SERVFAIL"


def test_no_stale_without_serve_stale(rig: Callable[..., Rig], upstream: ScriptedUpstream) -> None:
    r = rig()
    r.ask("a.example.")
    upstream.mode = "servfail"
    r.at(11)
    assert rcode_text(r.ask("a.example.")) == "SERVFAIL"


# ---------------------------------------------------------------- F7: identical misses share one query


def test_identical_concurrent_misses_share_one_upstream_query(
    rig: Callable[..., Rig], upstream: ScriptedUpstream
) -> None:
    r = rig(timeout=2.0)
    upstream.delay = 0.5  # slow enough that the queries overlap, well inside the forwarder's 2 s per try
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        replies = list(pool.map(lambda _: r.ask("b.example.", timeout=4), range(100)))
    assert all(rcode_text(m) == "NOERROR" and m.answer for m in replies)
    assert upstream.count("b.example.") == 1  # those that came after the answer were cache hits
    assert r.h.call(lambda: r.cache.stats.coalesced) >= 1


# ---------------------------------------------------------------- prefetch


def test_prefetch_refreshes_a_popular_entry_before_it_expires(
    rig: Callable[..., Rig], upstream: ScriptedUpstream
) -> None:
    r = rig(prefetch=True)
    r.ask("a.example.")
    r.at(1)
    r.ask("a.example.")  # hit 1
    r.at(9)
    r.ask("a.example.")  # hit 2, 1 s left of 10: refreshed in the background
    wait_until(lambda: upstream.count("a.example.") == 2)
    wait_until(lambda: r.ask("a.example.").answer[0].ttl == 10)
    r.at(12)  # the old entry would have expired at 10
    assert r.ask("a.example.").answer[0].ttl == 7
    assert upstream.count("a.example.") == 2
    assert r.h.call(lambda: r.cache.stats.prefetches) == 1


def test_no_prefetch_when_off(rig: Callable[..., Rig], upstream: ScriptedUpstream) -> None:
    r = rig()
    for t in (0, 1, 9, 9.5):
        r.at(t)
        r.ask("a.example.")
    assert upstream.count("a.example.") == 1


# ---------------------------------------------------------------- F5: nothing of ours from upstream


POISON = Scripted(
    answer="""
        poison.example. 300 IN CNAME kubernetes.default.svc.cluster.local.
        kubernetes.default.svc.cluster.local. 300 IN A 6.6.6.6
    """,
    authority="cluster.local. 300 IN NS evil.example.",
    additional="kube-dns.kube-system.svc.cluster.local. 300 IN A 6.6.6.7",
)


def test_upstream_records_for_our_names_are_never_served_or_kept(
    rig: Callable[..., Rig], upstream: ScriptedUpstream
) -> None:
    upstream.script[("poison.example.", "A")] = POISON
    r = rig()
    for _ in range(2):  # the miss, then the cache hit
        msg = r.ask("poison.example.")
        text = msg.to_text()
        assert "6.6.6." not in text and "evil" not in text, text
        # The CNAME into the cluster domain is chased there: the store's answer.
        assert_section(
            msg.answer,
            """
            poison.example. 300 IN CNAME kubernetes.default.svc.cluster.local.
            kubernetes.default.svc.cluster.local. 5 IN A 10.0.0.100
            """,
        )
    assert_section(
        r.ask("kube-dns.kube-system.svc.cluster.local.").answer,
        "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
    )


def test_client_outside_allow_recursion_gets_no_cached_answer(rig: Callable[..., Rig]) -> None:
    r = rig()
    assert r.ask("a.example.").answer
    assert r.ask("a.example.").answer  # now kept as an exact wire reply too
    q = make_query("a.example.", "A")
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(2)
            s.sendto(q.to_wire(), (r.h.host, r.h.port))
            msg = dns.message.from_wire(s.recv(4096))
        assert rcode_text(msg) == "REFUSED" and not msg.answer


# ---------------------------------------------------------------- a zone file takes a cached name over


def test_zone_file_withdraws_cached_answers_under_it(
    dnsd_factory: Callable[..., DnsdHandle], upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    cfg = base_config(FIXTURE_CLUSTER)
    cfg.update(
        {
            "recursion": "forward",
            "forward": {"upstreams": [upstream.addr], "timeout": 0.3},
            "allow_recursion": ["127.0.0.1/32"],
            "zones": str(zones),
        }
    )
    h = dnsd_factory(config=cfg)
    for _ in range(2):
        assert_section(query(h, "a.example.").answer, "a.example. 10 IN A 192.0.2.1")
    (zones / "example.zone").write_text(
        "$ORIGIN example.\n$TTL 60\n@ IN SOA ns host 1 3600 600 86400 60\n@ IN NS ns\nns IN A 192.0.2.53\n"
        "a IN A 198.51.100.1\n"
    )
    msg = wait_until(lambda: (m := query(h, "a.example.")).flags & dns.flags.AA and m)
    assert_section(msg.answer, "a.example. 60 IN A 198.51.100.1")
    assert upstream.count("a.example.") == 1

"""The cache's storage rules and bounds (dnsd.cache.store) and the TTL-offset walker (dnsd.proto.ttl)."""

from __future__ import annotations

from dataclasses import dataclass

import dns.message
import dns.rrset
import pytest

from dnsd.cache.store import AnswerCache, wire_reply
from dnsd.config import CacheConfig
from dnsd.proto.answer import RR, A, Answer
from dnsd.proto.ttl import ttl_offsets
from dnsd.proto.wire import parse_query
from dnsd.upstream.answer import to_answer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def reply(name: str, text: str, rcode: int = 0, authority: str = "") -> tuple[bytes, Answer]:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for section, lines in ((r.answer, text), (r.authority, authority)):
        for line in filter(None, (ln.strip() for ln in lines.splitlines())):
            owner, ttl, cls, rtype, rdata = line.split(None, 4)
            section.append(dns.rrset.from_text(owner, int(ttl), cls, rtype, rdata))
    return q.to_wire(), to_answer(r)


def test_capacity_is_a_bound() -> None:
    """C4: 50,000 distinct names into a 10,000-entry cache: never more than 10,000, the oldest evicted."""
    clock = Clock()
    cache = AnswerCache(CacheConfig(size=10_000), lambda _labels: False, clock)
    for i in range(50_000):
        label = f"n{i}".encode()
        wire = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + bytes([len(label)]) + label
        q = parse_query(wire + b"\x07example\x00\x00\x01\x00\x01")
        ans = Answer(0, [RR((f"n{i}", "example"), A, 300, ("192.0.2.1",))], aa=False)
        assert cache.store(q, ans, None) is not None
        assert len(cache) <= 10_000
    assert len(cache) == 10_000
    assert cache.stats.evictions == 40_000


@dataclass(frozen=True)
class TtlCase:
    id: str
    answer: str
    authority: str
    rcode: int
    want: int | None


SOA = "example. {ttl} IN SOA ns.example. h.example. 1 3600 600 86400 {minimum}"
TTL_CASES = [
    TtlCase("smallest-answer-ttl", "a.example. 300 IN A 192.0.2.1\nb.example. 30 IN A 192.0.2.2", "", 0, 30),
    TtlCase("nxdomain-soa-ttl-smaller", "", SOA.format(ttl=20, minimum=60), 3, 20),
    TtlCase("nxdomain-minimum-smaller", "", SOA.format(ttl=300, minimum=60), 3, 60),
    TtlCase("nodata", "", SOA.format(ttl=300, minimum=60), 0, 60),
    TtlCase("nxdomain-no-soa", "", "", 3, None),
    TtlCase("servfail", "", "", 2, 5),
    TtlCase("refused-never", "", "", 5, None),
    TtlCase("denial-cap", "", SOA.format(ttl=86400, minimum=86400), 3, 1800),
    TtlCase("success-cap", "a.example. 86400 IN A 192.0.2.1", "", 0, 3600),
]


@pytest.mark.parametrize("case", TTL_CASES, ids=lambda c: c.id)
def test_ttl_rules(case: TtlCase) -> None:
    _wire, ans = reply("a.example.", case.answer, case.rcode, case.authority)
    assert AnswerCache(CacheConfig(), lambda _labels: False).ttl_of(ans) == case.want


def test_our_names_and_transient_answers_are_not_kept() -> None:
    wire, ans = reply("a.example.", "a.example. 300 IN A 192.0.2.1")
    q = parse_query(wire)
    assert AnswerCache(CacheConfig(), lambda labels: labels[-1:] == ("example",)).store(q, ans, None) is None
    ans.transient = True
    assert AnswerCache(CacheConfig(), lambda _labels: False).store(q, ans, None) is None


def test_ttl_offsets_skip_opt_and_follow_compression() -> None:
    q = dns.message.make_query("a.example.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("a.example.", 111, "IN", "CNAME", "b.example."))
    r.answer.append(dns.rrset.from_text("b.example.", 222, "IN", "A", "192.0.2.1", "192.0.2.2"))
    r.authority.append(dns.rrset.from_text("example.", 333, "IN", "NS", "ns.example."))
    wire = r.to_wire()
    got = [int.from_bytes(wire[off : off + 4], "big") for off in ttl_offsets(wire)]
    assert got == [111, 222, 222, 333]  # the OPT record's TTL field (flags) is not among them


def test_wire_reply_ages_and_stops_at_expiry() -> None:
    clock = Clock()
    cache = AnswerCache(CacheConfig(), lambda _labels: False, clock)
    wire, ans = reply("a.example.", "a.example. 10 IN A 192.0.2.1")
    entry = cache.store(parse_query(wire), ans, None)
    assert entry is not None
    r = dns.message.make_response(dns.message.from_wire(wire))
    r.answer.append(dns.rrset.from_text("a.example.", 10, "IN", "A", "192.0.2.1"))
    w = wire_reply(entry, r.to_wire())
    for t, ttl in ((0, 10), (3.5, 7), (9.99, 1)):
        clock.now = t
        out = w.at(t)
        assert out is not None and dns.message.from_wire(b"\x00\x00" + out).answer[0].ttl == ttl
    assert w.at(10) is None

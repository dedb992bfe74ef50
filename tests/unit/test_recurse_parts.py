"""The recurse link's pure parts: root hints, reply classification (bailiwick scrubbing), QNAME minimisation
steps and the infrastructure cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnsd.errors import DnsdError
from dnsd.recurse.classify import Kind, classify
from dnsd.recurse.hints import load_hints, parse_hints
from dnsd.recurse.infra import DOWN_FOR, Delegation, Infra
from dnsd.recurse.query import IterativeQuery
from dnsd.recurse.share import Flights
from dnsd.recurse.walk import _next_name, _primed
from dnsd.upstream.client import make_request

N = dns.name.from_text


def test_builtin_hints_are_iana_named_root() -> None:
    hints = load_hints(None)
    assert [n.to_text() for n in hints.ns] == [f"{c}.ROOT-SERVERS.NET." for c in "ABCDEFGHIJKLM"]
    assert dict(hints.addresses)[N("a.root-servers.net.")] == ("198.41.0.4", "2001:503:ba3e::2:30")
    assert all(len(addrs) == 2 for _, addrs in hints.addresses)


def test_hints_file(tmp_path: Path) -> None:
    path = tmp_path / "root.hints"
    path.write_text("; comment\n.  3600000 NS ns.root.\nns.root. 3600000 A 127.53.0.1\n")
    assert load_hints(path).addresses == ((N("ns.root."), ("127.53.0.1",)),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (". 3600 NS a.root.\na.root. 3600 A 1.2.3.4\nb.root. 3600 A 300.1.1.1\n", "line 3"),
        (". 3600 NS a.root.\n\na.root. 3600 XYZ 1.2.3.4\n", "line 3"),
        (". 3600 NS a.root.\n", "no root NS record with an address"),
    ],
)
def test_bad_hints_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DnsdError, match=f"root_hints: x.hints: {message}"):
        parse_hints(text, "x.hints")


def test_unreadable_hints_file(tmp_path: Path) -> None:
    with pytest.raises(DnsdError, match="cannot read"):
        load_hints(tmp_path / "missing")


def reply(
    qname: str,
    qtype: str = "A",
    *,
    rcode: int = 0,
    aa: bool = False,
    answer: str = "",
    authority: str = "",
    additional: str = "",
) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query(qname, qtype))
    msg.set_rcode(dns.rcode.Rcode.make(rcode))
    if not aa:
        msg.flags &= ~dns.flags.AA
    else:
        msg.flags |= dns.flags.AA
    for section, text in ((msg.answer, answer), (msg.authority, authority), (msg.additional, additional)):
        for line in text.strip().splitlines():
            name, ttl, cls, typ, rdata = line.split(None, 4)
            new = dns.rrset.from_text(name, int(ttl), cls, typ, rdata)
            same = next((r for r in section if r.name == new.name and r.rdtype == new.rdtype), None)
            if same is None:
                section.append(new)
            else:
                same.union_update(new)
    return msg


@dataclass(frozen=True)
class C:
    name: str
    zone: str
    msg: dns.message.Message
    kind: Kind
    answer: tuple[str, ...] = ()  # owners of the answer RRsets kept
    target: str | None = None
    referral: str | None = None
    glue: tuple[str, ...] = ()  # NS names whose glue was kept


CLASSIFY = [
    C(
        "referral-with-in-bailiwick-glue",
        "test.",
        reply(
            "www.example.test.",
            authority="example.test. 3600 IN NS ns1.example.test.\nexample.test. 3600 IN NS ns.other.net.",
            additional="ns1.example.test. 3600 IN A 127.53.2.1\nns.other.net. 3600 IN A 192.0.2.66",
        ),
        Kind.REFERRAL,
        referral="example.test.",
        glue=("ns1.example.test.",),  # ns.other.net is outside test.: not believed (RFC 5452 6)
    ),
    C(
        "upward-referral-is-lame",
        "example.test.",
        reply("www.example.test.", authority="test. 3600 IN NS ns1.nic.test."),
        Kind.LAME,
    ),
    C(
        "referral-to-another-branch-is-lame",
        "test.",
        reply("www.example.test.", authority="other.test. 3600 IN NS ns1.other.test."),
        Kind.LAME,
    ),
    C(
        "answer-scrubbed-to-bailiwick",
        "example.test.",
        reply(
            "alias.example.test.",
            aa=True,
            answer="alias.example.test. 3600 IN CNAME www.site.example.\nwww.site.example. 3600 IN A 6.6.6.6",
        ),
        Kind.ANSWER,
        answer=("alias.example.test.",),
        target="www.site.example.",
    ),
    C(
        "in-zone-chain",
        "example.test.",
        reply(
            "inzone.example.test.",
            aa=True,
            answer="inzone.example.test. 3600 IN CNAME www.example.test.\nwww.example.test. 3600 IN A 192.0.2.1",
        ),
        Kind.ANSWER,
        answer=("inzone.example.test.", "www.example.test."),
    ),
    C(
        "unrelated-answer-dropped",
        "example.test.",
        reply("www.example.test.", aa=True, answer="evil.example.test. 3600 IN A 6.6.6.6"),
        Kind.NODATA,
    ),
    C(
        "nxdomain",
        "example.test.",
        reply(
            "x.example.test.",
            rcode=3,
            aa=True,
            authority="example.test. 300 IN SOA ns1.example.test. h.example.test. 1 3600 900 604800 300",
        ),
        Kind.NXDOMAIN,
    ),
    C(
        "nodata",
        "example.test.",
        reply(
            "www.example.test.",
            "AAAA",
            aa=True,
            authority="example.test. 300 IN SOA ns1.example.test. h.example.test. 1 3600 900 604800 300",
        ),
        Kind.NODATA,
    ),
    C("empty-not-authoritative-is-lame", "example.test.", reply("www.example.test."), Kind.LAME),
    C("refused", "example.test.", reply("www.example.test.", rcode=5), Kind.ERROR),
]


@pytest.mark.parametrize("case", CLASSIFY, ids=lambda c: c.name)
def test_classify(case: C) -> None:
    q = case.msg.question[0]
    v = classify(case.msg, N(case.zone), q.name, q.rdtype)
    assert v.kind is case.kind
    assert tuple(r.name.to_text() for r in v.answer) == case.answer
    assert (v.target.to_text() if v.target else None) == case.target
    assert (v.referral.zone.to_text() if v.referral else None) == case.referral
    glue = tuple(n.to_text() for n, _ in v.referral.glue) if v.referral else ()
    assert glue == case.glue


@pytest.mark.parametrize(
    ("name", "have", "count", "want"),
    [
        ("www.example.test.", 1, 0, "test."),
        ("www.example.test.", 2, 1, "example.test."),
        ("www.example.test.", 3, 2, "www.example.test."),
        # RFC 9156 2.3: after MINIMISE_ONE_LAB single steps, bigger ones, so that 10 queries reach the name
        ("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.", 5, 4, "o.p.q.r.s.t."),
        ("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.", 18, 9, "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t."),
    ],
)
def test_minimisation_steps(name: str, have: int, count: int, want: str) -> None:
    assert _next_name(N(name), have, count).to_text() == want


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_infra_delegations_expire_with_their_ttl() -> None:
    clock = Clock()
    infra = Infra(clock)
    infra.add_delegation(Delegation(N("example.test."), (N("ns1.example.test."),), (), 60))
    assert infra.closest(N("a.b.example.test.")) is not None
    assert infra.closest(N("other.test.")) is None
    clock.now += 61
    assert infra.closest(N("a.b.example.test.")) is None


def test_infra_puts_failed_servers_last() -> None:
    clock = Clock()
    infra = Infra(clock)
    zone = N("example.test.")
    for _ in range(20):
        infra.failed("127.0.0.9", zone)
        assert infra.order(["127.0.0.9", "127.0.0.1", "127.0.0.2"], zone)[-1] == "127.0.0.9"
    clock.now += DOWN_FOR + 1
    firsts = {infra.order(["127.0.0.9", "127.0.0.1"], zone)[0] for _ in range(50)}
    assert firsts == {"127.0.0.9", "127.0.0.1"}  # back in the random band once its penalty ran out


def test_infra_prefers_fast_servers() -> None:
    infra = Infra(Clock())
    zone = N("example.test.")
    infra.answered("127.0.0.1", zone, 1.5)
    infra.answered("127.0.0.2", zone, 0.01)
    assert {infra.order(["127.0.0.1", "127.0.0.2"], zone)[0] for _ in range(20)} == {"127.0.0.2"}


@pytest.mark.parametrize(
    ("soa_ttl", "minimum", "keep"),
    [(3600, 300, 300), (120, 300, 120), (86400, 86400, 3600), (0, 300, 0)],
    ids=["minimum", "soa-ttl", "capped", "zero"],
)
def test_infra_nxdomain_cut_lasts_the_negative_ttl(soa_ttl: int, minimum: int, keep: int) -> None:
    """RFC 2308 5: the lesser of the SOA's TTL and MINIMUM, at most an hour; names below the cut are covered."""
    clock = Clock()
    infra = Infra(clock)
    soa = dns.rrset.from_text("example.test.", soa_ttl, "IN", "SOA", f"ns1 host 1 3600 900 604800 {minimum}")
    infra.add_nxdomain(N("gone.example.test."), soa)
    for name, covered in (("gone.example.test.", True), ("a.b.gone.example.test.", True), ("example.test.", False)):
        assert (infra.nxdomain_at_or_above(N(name)) is not None) is (covered and keep > 0), name
    clock.now += keep - 1
    assert (infra.nxdomain_at_or_above(N("x.gone.example.test.")) is not None) is (keep > 1)
    clock.now += 2
    assert infra.nxdomain_at_or_above(N("x.gone.example.test.")) is None


HINTS = Delegation(N("."), (N("a.root."),), ((N("a.root."), ("127.53.0.1",)),), 0)


@pytest.mark.parametrize(
    ("name", "msg", "want"),
    [
        (
            "ns-and-glue",
            reply(".", "NS", aa=True, answer=". 518400 IN NS a.root.\n. 518400 IN NS b.root.",
                  additional="a.root. 518400 IN A 127.53.0.1\nb.root. 3600 IN A 127.53.0.2"),
            ("a.root. b.root.", {"a.root.": ("127.53.0.1",), "b.root.": ("127.53.0.2",)}, 3600),
        ),
        (
            "no-glue-uses-the-hints-address",
            reply(".", "NS", aa=True, answer=". 518400 IN NS a.root.\n. 518400 IN NS b.root."),
            ("a.root. b.root.", {"a.root.": ("127.53.0.1",)}, 518400),
        ),
        ("no-address-at-all", reply(".", "NS", aa=True, answer=". 518400 IN NS c.root."), None),
        ("no-ns-set", reply(".", "NS", aa=True, authority=". 86400 IN SOA a.root. h.root. 1 1 1 1 1"), None),
        ("refused", reply(".", "NS", rcode=dns.rcode.REFUSED), None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_priming_answer(
    name: str, msg: dns.message.Message, want: tuple[str, dict[str, tuple[str, ...]], int] | None
) -> None:
    """RFC 8109 3.3: the NS set of the answer and the addresses of the additional section."""
    got = _primed(classify(msg, N("."), N("."), 2), HINTS)
    if want is None:
        assert got is None
        return
    assert got is not None
    ns, glue, ttl = want
    assert " ".join(n.to_text() for n in got.ns) == ns
    assert {n.to_text(): a for n, a in got.glue} == glue
    assert got.ttl == ttl


# ---------------------------------------------------------------- shared work in flight (dnsd.recurse.share)


class Work:
    """make() for Flights.run: counts its runs; each run waits for `go`, then returns its value or raises."""

    def __init__(self, value: str, go: asyncio.Event, fail: bool = False) -> None:
        self.value, self.go, self.fail, self.runs = value, go, fail, 0

    async def __call__(self) -> str:
        self.runs += 1
        await self.go.wait()
        if self.fail:
            raise RuntimeError("the owner's budget ran out")
        return self.value


@pytest.mark.parametrize(
    ("limit", "walks", "runs", "joined"),
    [(10, 5, 1, 4), (10, 1, 1, 0), (0, 5, 5, 0)],
    ids=["shared", "alone", "over-the-limit-unshared"],
)
def test_identical_work_runs_once(limit: int, walks: int, runs: int, joined: int) -> None:
    async def main() -> tuple[list[str], int, Flights]:
        flights, go, joins = Flights(limit), asyncio.Event(), []
        work = Work("answer", go)
        deadline = asyncio.get_running_loop().time() + 5
        waiting = [asyncio.create_task(flights.run("k", work, deadline, lambda: joins.append(1))) for _ in range(walks)]
        await asyncio.sleep(0)  # every walk has asked: the first started the flight, the others joined it
        go.set()
        got = await asyncio.gather(*waiting)
        assert len(joins) == flights.joined
        return got, work.runs, flights

    got, ran, flights = asyncio.run(main())
    assert got == ["answer"] * walks
    assert (ran, flights.joined) == (runs, joined)
    assert flights.inflight == {}


def test_a_waiter_that_gives_up_cancels_nobody_else() -> None:
    async def main() -> tuple[str, bool]:
        flights, go = Flights(10), asyncio.Event()
        now = asyncio.get_running_loop().time()
        owner = asyncio.create_task(flights.run("k", Work("answer", go), now + 5, lambda: None))
        hasty = asyncio.create_task(flights.run("k", Work("other", go), now + 0.05, lambda: None))
        with pytest.raises(TimeoutError):
            await hasty
        go.set()
        return await owner, owner.cancelled()

    assert asyncio.run(main()) == ("answer", False)


def test_a_failed_flight_is_done_again_by_its_waiter() -> None:
    async def main() -> tuple[str, int]:
        flights, go = Flights(10), asyncio.Event()
        deadline = asyncio.get_running_loop().time() + 5
        failing, mine = Work("x", go, fail=True), Work("mine", go)
        owner = asyncio.create_task(flights.run("k", failing, deadline, lambda: None))
        waiter = asyncio.create_task(flights.run("k", mine, deadline, lambda: None))
        await asyncio.sleep(0)
        go.set()
        with pytest.raises(RuntimeError):
            await owner
        return await waiter, flights.redone

    assert asyncio.run(main()) == ("mine", 1)


def test_two_flights_that_need_each_other_do_not_wait_forever() -> None:
    """Walk 1's flight A needs B, walk 2's flight B needs A (a delegation loop seen by two walks at once): B does
    A's part itself instead of waiting for A, which waits for B."""

    async def main() -> list[str]:
        flights, both = Flights(10), asyncio.Event()
        deadline = asyncio.get_running_loop().time() + 30

        def needs(mine: str, other: str) -> Callable[[], Coroutine[Any, Any, str]]:
            async def make() -> str:
                await both.wait()
                inner = await flights.run(other, lambda: _value(other), deadline, lambda: None)
                return f"{mine} after {inner}"

            return make

        w1 = asyncio.create_task(flights.run("A", needs("A", "B"), deadline, lambda: None))
        w2 = asyncio.create_task(flights.run("B", needs("B", "A"), deadline, lambda: None))
        await asyncio.sleep(0)
        both.set()
        async with asyncio.timeout(2):  # far below the deadline: a deadlock would wait until it
            return list(await asyncio.gather(w1, w2))

    assert asyncio.run(main()) == ["A after B after A", "B after A"]


async def _value(v: str) -> str:
    return v


# ---------------------------------------------------------------- the query a walk sends (dnsd.recurse.query)


@pytest.mark.parametrize(
    ("qname", "qtype", "do"),
    [("h1.bench.test.", 1, False), (".", 2, False), ("Www.Example.TEST.", 43, True), ("a.b.c.d.e.", 28, True)],
)
def test_iterative_query_is_what_dnspython_builds(qname: str, qtype: int, do: bool) -> None:
    """The hand-built wire form is dnspython's own, with RD clear (RFC 1034 5.3.1): same header, question (the
    name as spelt) and OPT (our buffer size, the DO bit); a new ID (the TCP retry) is the only change."""
    ours = IterativeQuery(N(qname), qtype, do)
    theirs = make_request(N(qname), qtype, do)
    theirs.flags &= ~dns.flags.RD
    for new_id in (ours.id, 0, 0xFFFF):
        ours.id = theirs.id = new_id
        assert ours.to_wire() == theirs.to_wire()
    parsed = dns.message.from_wire(ours.to_wire())
    assert (parsed.question[0].name.to_text(), parsed.question[0].rdtype) == (qname, qtype)
    assert (parsed.payload, bool(parsed.ednsflags & dns.flags.DO), parsed.flags & dns.flags.RD) == (1232, do, 0)

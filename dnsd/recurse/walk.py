"""The iterative walk: from the closest known delegation down the referrals to the servers of the name's zone.

One client query gets one Budget (queries sent, referrals, nested look-ups, a deadline) shared by everything it
causes: NS addresses resolved for a glueless delegation and CNAME targets in other zones spend from it too, so
a delegation loop or an endless chain ends in SERVFAIL after bounded work (RFC 1034 5.3.3, Unbound's limits).

QNAME minimisation (RFC 9156) as Unbound does it by default (relaxed): each server is asked for one label more
than the zone it serves, with QTYPE A (RFC 9156 2.1 leaves the type open; A fails least with broken servers); the
first MINIMISE_ONE_LAB steps add one label, later ones more, so that no name costs more than MAX_MINIMISE_COUNT
minimised queries (RFC 9156 2.3). A NOERROR (an empty non-terminal, RFC 8020, or a name with data) adds the next
label; a referral moves down. An NXDOMAIN or another error rcode (FORMERR, NOTIMP) for a minimised name, or no
reply from any server of the zone, may come from a broken server that does not know about empty non-terminals
(RFC 9156 3): the same servers are then asked the full name, whose reply is final.

The root's servers come from priming (RFC 8109): the first walk that starts at the root asks the hints' servers
for `. NS` and uses that NS set and its glue until its TTL runs out; the hints stay the fallback. A name whose
zone answered NXDOMAIN to the full name is remembered for the negative TTL: names below it are NXDOMAIN without
asking anyone (RFC 8020 2; unlike Unbound, which does it only for DNSSEC-secure NXDOMAINs, see README).

IPv6 servers are asked only when this host has an IPv6 route (`can_use_ipv6`); then the AAAA records of a glueless
NS name are looked up as well as its A records.

Identical work in flight is shared (dnsd.recurse.share): a walk that needs a question already on its way to the same
zone's servers (zone, name, type), or the address of an NS name another walk is looking up, waits for that result
instead of asking again; so 50 cold names under one zone cost the root and the TLD one query each, as in Unbound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from dnsd.recurse.classify import AAAA, DS, NS, Kind, Verdict, classify, rcode_text, type_text, within
from dnsd.recurse.hints import Hints
from dnsd.recurse.infra import MAX_TTL, Delegation, Infra, key
from dnsd.recurse.query import IterativeQuery
from dnsd.recurse.share import Flights
from dnsd.upstream.client import DNS_PORT, Server, UpstreamError, exchange

log = logging.getLogger(__name__)

A = 1
MAX_SENT = 50  # queries one client query may cause in all (Unbound: MAX_SENT_COUNT 32 per target)
MAX_REFERRALS = 30  # referrals one walk may follow
MAX_DEPTH = 4  # nested look-ups (the address of a glueless NS, whose NS is glueless...)
MAX_CHASE = 8  # CNAMEs to other zones one query follows (RFC 1034 3.6.2 asks for a bound)
MAX_GLUELESS = 3  # NS names without an address one delegation may look up
MAX_MINIMISE_COUNT = 10  # RFC 9156 2.3
MINIMISE_ONE_LAB = 4  # RFC 9156 2.3
PER_TRY = 1.0  # seconds one server has to answer (UDP, then as long again over TCP after a TC)
PRIME_TRIES = 3  # root servers of the hints one priming asks at most (RFC 8109 3)
PRIME_RETRY = 60.0  # seconds the hints are used after a failed priming before it is tried again
PRIME_MIN_TTL = 60  # the primed NS set is kept at least this long (a TTL of 0 would prime for every walk)
MAX_FLIGHTS = 2000  # shared questions and NS look-ups in flight at once; beyond it a walk asks on its own


def can_use_ipv6() -> bool:
    """Whether this host can reach IPv6 servers: a UDP socket connects to a global IPv6 address (a route lookup
    only, nothing is sent; 2001:db8::/32 is the documentation prefix, RFC 3849)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(("2001:db8::53", DNS_PORT))
    except OSError:
        return False
    return True


class WorkLimit(Exception):
    """The query has caused all the work it may: it gets SERVFAIL."""


@dataclass(slots=True)
class Stats:
    """Counters for metrics: queries sent and what came back."""

    sent: int = 0
    answers: int = 0
    referrals: int = 0
    nxdomain: int = 0
    nodata: int = 0
    lame: int = 0
    errors: int = 0  # REFUSED, SERVFAIL and other error rcodes
    timeouts: int = 0  # and network errors, malformed replies
    minimise_fallbacks: int = 0  # minimised names that got NXDOMAIN, FORMERR, NOTIMP or no reply: asked in full
    glueless: int = 0  # NS addresses looked up
    work_limits: int = 0
    nxdomain_cuts: int = 0  # walks answered NXDOMAIN from a remembered NXDOMAIN above the name (RFC 8020)
    primings: int = 0  # `. NS` priming rounds (RFC 8109)
    priming_failures: int = 0  # priming rounds that got no usable NS set: the hints were used
    shared: int = 0  # questions and NS look-ups a walk did not send itself: it waited for another walk's

    def count(self, kind: Kind) -> None:
        if kind is Kind.ANSWER:
            self.answers += 1
        elif kind is Kind.REFERRAL:
            self.referrals += 1
        elif kind is Kind.NXDOMAIN:
            self.nxdomain += 1
        elif kind is Kind.NODATA:
            self.nodata += 1
        elif kind is Kind.LAME:
            self.lame += 1
        else:
            self.errors += 1


@dataclass(slots=True)
class Budget:
    deadline: float  # loop time
    sent: int = 0
    referrals: int = 0
    active: set[tuple[dns.name.Name, int]] = field(default_factory=set)  # look-ups under way (loop check)
    # --trace: each step of the walk, in words; None (the usual case): no step is even formatted
    note: Note | None = None


@dataclass(slots=True)
class Outcome:
    """The result of a walk: an rcode and the sections for the client, or None for rcode when all failed."""

    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)


SERVFAIL = Outcome(dns.rcode.SERVFAIL)

Note = Callable[[str], None]


class Walker:
    def __init__(self, hints: Hints, infra: Infra, stats: Stats) -> None:
        self.hints = Delegation(dns.name.root, hints.ns, hints.addresses, 0)
        self.infra = infra
        self.stats = stats
        self.port = DNS_PORT
        self.per_try = PER_TRY
        self.max_sent = MAX_SENT
        self.minimise = True
        self.prime = True  # RFC 8109
        self.ipv6 = can_use_ipv6()  # else IPv6 addresses are skipped and no AAAA is looked up for NS names
        self.nxdomain_cut = True  # RFC 8020
        self.root: Delegation | None = None  # the primed root NS set (or the hints, after a failed priming)
        self.root_until = 0.0  # on the infra clock
        self.flights = Flights(MAX_FLIGHTS)  # identical questions and NS look-ups in flight, shared

    async def close(self) -> None:
        """Cancel the shared work still in flight (its waiters are gone or going)."""
        await self.flights.close()

    async def lookup(
        self, qname: dns.name.Name, qtype: int, budget: Budget, depth: int = 0, do: bool = False
    ) -> Outcome:
        """The answer for (qname, qtype): walks, then chases CNAMEs to other zones (the chain in the answer)."""
        chain: list[dns.rrset.RRset] = []
        name, seen = qname, {qname}
        for _ in range(MAX_CHASE + 1):
            verdict = await self._walk(name, qtype, budget, depth, do)
            if verdict is None:
                return SERVFAIL
            chain.extend(r for r in verdict.answer if r not in chain)
            target = verdict.target
            if target is None or not _must_chase(verdict, target, verdict.zone):
                return Outcome(verdict.rcode, chain, verdict.authority, verdict.additional)
            if target in seen:
                return SERVFAIL  # a CNAME loop across zones
            seen.add(target)
            if budget.note is not None:
                budget.note(f"recurse: chasing CNAME to {target}")
            name = target
        if budget.note is not None:
            budget.note(f"recurse: more than {MAX_CHASE} CNAMEs to other zones: SERVFAIL")
        return SERVFAIL

    async def _start(self, name: dns.name.Name, qtype: int, budget: Budget) -> Delegation:
        # DS lives in the parent (RFC 4035 3.1.4.1): start above the name itself.
        where = name.parent() if qtype == DS and name != dns.name.root else name
        closest = self.infra.closest(where)
        if closest is not None:
            return closest
        root = await self._root(budget)
        # While it waited for the priming, another walk may have learnt a closer delegation.
        return self.infra.closest(where) or root

    def _root_known(self) -> Delegation | None:
        if self.root is not None and self.infra.clock() < self.root_until:
            return self.root
        return None

    async def _root(self, budget: Budget) -> Delegation:
        """The root's servers: the primed NS set while its TTL lasts, else a new priming (RFC 8109 3)."""
        if not self.prime:
            return self.hints
        known = self._root_known()
        if known is not None:
            return known

        async def prime() -> Delegation:
            return self._root_known() or await self._prime(budget)

        try:
            # One priming at a time: the other walks wait for its result (bounded by their own deadlines).
            return await self.flights.run(_PRIMING, prime, budget.deadline, _nothing)
        except TimeoutError:
            raise WorkLimit("out of time (priming)") from None

    async def _prime(self, budget: Budget) -> Delegation:
        """Ask the hints' servers (PRIME_TRIES at most) for `. NS`: the first answer with an NS set of which a
        name has an address becomes the root's delegation (RFC 8109 3.3); all failed: the hints, for a while."""
        self.stats.primings += 1
        root = dns.name.root
        addrs = [a for _, aa in self.hints.glue for a in aa]
        for addr in self.infra.order(self._usable(addrs), root)[:PRIME_TRIES]:
            verdict = await self._send(addr, root, root, NS, budget, False, False)
            deleg = _primed(verdict, self.hints) if verdict is not None else None
            if deleg is not None and self._usable([a for _, aa in deleg.glue for a in aa]):
                if budget.note is not None:
                    budget.note(f"recurse: primed the root: {len(deleg.ns)} NS, {len(deleg.glue)} with addresses")
                self.root = deleg
                self.root_until = self.infra.clock() + min(max(deleg.ttl, PRIME_MIN_TTL), MAX_TTL)
                return deleg
        self.stats.priming_failures += 1
        if budget.note is not None:
            budget.note("recurse: priming the root failed: using the root hints")
        self.root = self.hints
        self.root_until = self.infra.clock() + PRIME_RETRY
        return self.hints

    def _known_nxdomain(self, name: dns.name.Name) -> _Step | None:
        """NXDOMAIN for a name at or below one its zone said does not exist (RFC 8020 2), with that zone's SOA
        (its TTL what is left of the negative TTL); None when none is known."""
        if not self.nxdomain_cut:
            return None
        cut = self.infra.nxdomain_at_or_above(name)
        if cut is None:
            return None
        left = max(0, min(cut.ttl, int(cut.until - self.infra.clock())))
        soa = dns.rrset.from_rdata_list(cut.soa.name, left, list(cut.soa))
        self.stats.nxdomain_cuts += 1
        return _Step(Verdict(Kind.NXDOMAIN, dns.rcode.NXDOMAIN, [], [soa]), cut.soa.name)

    async def _walk(self, name: dns.name.Name, qtype: int, budget: Budget, depth: int, do: bool) -> _Step | None:
        known = self._known_nxdomain(name)
        if known is not None:
            if budget.note is not None:
                budget.note(
                    f"recurse: {name} is at or below a name known not to exist (RFC 8020): NXDOMAIN, nothing asked"
                )
            return known
        deleg = await self._start(name, qtype, budget)
        minimise = self.minimise
        sname = deleg.zone  # the name last asked (minimised); the next one has more labels
        minimised = 0
        while True:
            if minimise and len(sname) < len(name) and minimised < MAX_MINIMISE_COUNT:
                sname = _next_name(name, max(len(sname), len(deleg.zone)), minimised)
                minimised += 1
            else:
                sname = name
            full = sname == name
            stype = qtype if full else A
            got = await self._ask(deleg, sname, stype, budget, depth, do and full, not full)
            if got is None and not full:
                # No server answered the minimised name: some drop what they do not understand (RFC 9156 3).
                self.stats.minimise_fallbacks += 1
                if budget.note is not None:
                    budget.note(f"recurse: no reply for minimised {sname}: asking the full name")
                minimise = False
                continue
            if got is None:
                return None
            verdict = got
            if verdict.kind is Kind.REFERRAL:
                assert verdict.referral is not None
                budget.referrals += 1
                if budget.referrals > MAX_REFERRALS:
                    raise WorkLimit(f"more than {MAX_REFERRALS} referrals")
                deleg = self._adopt(verdict.referral)
                continue
            if full:
                if verdict.kind is Kind.NXDOMAIN and self.nxdomain_cut:
                    # Only the reply to the full name: a broken server may say NXDOMAIN for an empty
                    # non-terminal asked minimised (RFC 9156 3), and that must not hide the names below it.
                    soa = next((r for r in verdict.authority if r.rdtype == dns.rdatatype.SOA), None)
                    if soa is not None:
                        self.infra.add_nxdomain(sname, soa)
                return _Step(verdict, deleg.zone)
            if verdict.kind is Kind.ANSWER or verdict.kind is Kind.NODATA:
                continue  # an empty non-terminal or a name with data, not a cut: one label more (RFC 9156 3)
            # NXDOMAIN or an error rcode for a minimised name (RFC 9156 3, Unbound's relaxed mode): ask the full name.
            self.stats.minimise_fallbacks += 1
            if budget.note is not None:
                budget.note(f"recurse: {rcode_text(verdict.rcode)} for minimised {sname}: asking the full name")
            minimise = False

    def _adopt(self, deleg: Delegation) -> Delegation:
        """A referral's delegation, remembered; addresses known from earlier look-ups join the glue."""
        known = dict(deleg.glue)
        for ns in deleg.ns:
            if ns not in known:
                addrs = self.infra.addresses(ns)
                if addrs:
                    known[ns] = addrs
        deleg = Delegation(deleg.zone, deleg.ns, tuple(known.items()), deleg.ttl)
        self.infra.add_delegation(deleg)
        return deleg

    async def _ask(
        self,
        deleg: Delegation,
        sname: dns.name.Name,
        stype: int,
        budget: Budget,
        depth: int,
        do: bool,
        minimised: bool,
    ) -> Verdict | None:
        """The zone's servers' reply to (sname, stype): shared with every walk that needs the same one meanwhile."""

        def joined() -> None:
            self.stats.shared += 1
            if budget.note is not None:
                budget.note(
                    f"recurse: {sname} {type_text(stype)} is already being asked of {deleg.zone}'s servers: waiting"
                )

        def ask() -> Coroutine[Any, Any, Verdict | None]:
            return self._ask_servers(deleg, sname, stype, budget, depth, do, minimised)

        try:
            return await self.flights.run(
                (key(deleg.zone), key(sname), stype, do, minimised), ask, budget.deadline, joined
            )
        except TimeoutError:
            raise WorkLimit("out of time (waiting for a shared query)") from None

    async def _ask_servers(
        self,
        deleg: Delegation,
        sname: dns.name.Name,
        stype: int,
        budget: Budget,
        depth: int,
        do: bool,
        minimised: bool,
    ) -> Verdict | None:
        """The first usable reply from the zone's servers: the ones with an address first, then the NS names
        without one, looked up (bounded); None when every server failed."""
        tried: set[str] = set()
        addrs = [a for _, aa in deleg.glue for a in aa]
        addrs += [a for ns in deleg.ns for a in self.infra.addresses(ns)]
        for addr in self.infra.order(self._usable(addrs), deleg.zone):
            tried.add(addr)
            verdict = await self._send(addr, deleg.zone, sname, stype, budget, do, minimised)
            if verdict is not None:
                return verdict
        looked = 0
        for ns in deleg.ns:
            if looked >= MAX_GLUELESS or self.infra.addresses(ns):
                continue  # enough looked up; or its addresses were tried above
            if within(ns, deleg.zone) or depth >= MAX_DEPTH or {(ns, A), (ns, AAAA)} & budget.active:
                continue  # in-zone without glue cannot be reached; too deep; already being looked up (a loop)
            looked += 1
            self.stats.glueless += 1
            if budget.note is not None:
                budget.note(f"recurse: looking up the address of {ns} (NS of {deleg.zone})")
            for addr in self.infra.order(self._usable(await self._host(ns, budget, depth + 1)), deleg.zone):
                if addr in tried:
                    continue
                tried.add(addr)
                verdict = await self._send(addr, deleg.zone, sname, stype, budget, do, minimised)
                if verdict is not None:
                    return verdict
        if budget.note is not None:
            budget.note(f"recurse: no server of {deleg.zone} answered {sname} {type_text(stype)}")
        return None

    def _usable(self, addrs: list[str]) -> list[str]:
        return addrs if self.ipv6 else [a for a in addrs if ":" not in a]

    async def _host(self, ns: dns.name.Name, budget: Budget, depth: int) -> list[str]:
        """The addresses of a name server, shared with every walk that needs them meanwhile."""

        def joined() -> None:
            self.stats.shared += 1
            if budget.note is not None:
                budget.note(f"recurse: the address of {ns} is already being looked up: waiting")

        def look() -> Coroutine[Any, Any, list[str]]:
            return self._lookup_host(ns, budget, depth)

        try:
            return await self.flights.run(("host", key(ns)), look, budget.deadline, joined)
        except TimeoutError:
            raise WorkLimit("out of time (waiting for a shared look-up)") from None

    async def _lookup_host(self, ns: dns.name.Name, budget: Budget, depth: int) -> list[str]:
        """The addresses of a name server (A, and AAAA when IPv6 can be used), looked up with this query's budget
        and remembered."""
        addrs: list[str] = []
        ttl: int | None = None
        for rdtype in (A, AAAA) if self.ipv6 else (A,):
            budget.active.add((ns, rdtype))
            try:
                out = await self.lookup(ns, rdtype, budget, depth)
            finally:
                budget.active.discard((ns, rdtype))
            found = [r for r in out.answer if r.rdtype == rdtype]
            addrs += [rd.address for r in found for rd in r]
            ttl = min([r.ttl for r in found] + ([ttl] if ttl is not None else []), default=ttl)
        self.infra.add_host(ns, addrs, ttl or 0)
        return addrs

    async def _send(
        self,
        addr: str,
        zone: dns.name.Name,
        sname: dns.name.Name,
        stype: int,
        budget: Budget,
        do: bool,
        minimised: bool,
    ) -> Verdict | None:
        """One query to one server: its classified reply, or None when it gave nothing usable."""
        loop = asyncio.get_running_loop()
        remaining = budget.deadline - loop.time()
        if budget.sent >= self.max_sent:
            raise WorkLimit(f"{budget.sent} queries sent")
        if remaining <= 0.05:
            raise WorkLimit("out of time")
        budget.sent += 1
        self.stats.sent += 1
        request = IterativeQuery(sname, stype, do)  # RD clear: an iterative query (RFC 1034 5.3.1)
        started = loop.time()
        try:
            reply = await exchange(Server(addr, self.port), request, min(self.per_try, remaining))
        except UpstreamError as exc:
            self.stats.timeouts += 1
            self.infra.failed(addr, zone)
            if budget.note is not None:
                budget.note(f"{_asked(addr, sname, stype, minimised)} -> {_short(exc)}")
            return None
        self.infra.answered(addr, zone, loop.time() - started)
        verdict = classify(reply, zone, sname, stype)
        self.stats.count(verdict.kind)
        if budget.note is not None:
            budget.note(f"{_asked(addr, sname, stype, minimised)} -> {_describe(verdict)}")
        if verdict.kind is Kind.LAME or (
            verdict.kind is Kind.ERROR and (not minimised or verdict.rcode in (dns.rcode.REFUSED, dns.rcode.SERVFAIL))
        ):
            # Lame, REFUSED, SERVFAIL: the next server. Another error rcode (FORMERR, NOTIMP...) for a minimised
            # name goes back to the walk, which asks the full name instead (RFC 9156 3).
            self.infra.failed(addr, zone)
            return None
        return verdict


_PRIMING = ("priming",)  # the key of the root priming among the shared flights


def _nothing() -> None:
    pass


def _primed(verdict: Verdict, hints: Delegation) -> Delegation | None:
    """The root delegation a priming answer gives: its NS set, with the addresses of the additional section (all
    within the root's bailiwick), else the hints' addresses for the same name; None when no name has one."""
    ns_set = next((r for r in verdict.answer if r.rdtype == NS and r.name == dns.name.root), None)
    if verdict.kind is not Kind.ANSWER or ns_set is None:
        return None
    ns = tuple(rd.target for rd in ns_set)
    ttl = ns_set.ttl
    glue: dict[dns.name.Name, list[str]] = {}
    for extra in verdict.additional:
        if extra.name in ns and extra.rdtype in (A, AAAA):
            glue.setdefault(extra.name, []).extend(rd.address for rd in extra)
            ttl = min(ttl, extra.ttl)
    from_hints = dict(hints.glue)
    for name in ns:
        if name not in glue and name in from_hints:
            glue[name] = list(from_hints[name])
    if not glue:
        return None
    return Delegation(dns.name.root, ns, tuple((n, tuple(a)) for n, a in glue.items()), ttl)


@dataclass(slots=True)
class _Step:
    """A final verdict and the zone whose server gave it."""

    verdict: Verdict
    zone: dns.name.Name

    @property
    def rcode(self) -> int:
        return self.verdict.rcode

    @property
    def answer(self) -> list[dns.rrset.RRset]:
        return self.verdict.answer

    @property
    def authority(self) -> list[dns.rrset.RRset]:
        return self.verdict.authority

    @property
    def additional(self) -> list[dns.rrset.RRset]:
        return self.verdict.additional

    @property
    def target(self) -> dns.name.Name | None:
        return self.verdict.target

    @property
    def kind(self) -> Kind:
        return self.verdict.kind


def _must_chase(step: _Step, target: dns.name.Name, zone: dns.name.Name) -> bool:
    """A CNAME chain that ends without data is chased when it leaves the zone, or when the server did not say
    the target is empty or absent (no SOA: e.g. the target is below a cut in the same zone)."""
    if step.kind is not Kind.ANSWER:
        return False
    if not within(target, zone):
        return True
    return step.rcode == dns.rcode.NOERROR and not any(r.rdtype == 6 for r in step.authority)


def _next_name(name: dns.name.Name, have: int, count: int) -> dns.name.Name:
    """The next minimised name: one label more for the first MINIMISE_ONE_LAB queries, then enough labels at a
    time to reach the full name within MAX_MINIMISE_COUNT queries (RFC 9156 2.3)."""
    step = 1
    if count >= MINIMISE_ONE_LAB:
        left = MAX_MINIMISE_COUNT - count
        step = max(1, (len(name) - have) // max(left, 1))
    keep = min(len(name), have + step)
    return dns.name.Name(name.labels[len(name) - keep :])


def _asked(addr: str, sname: dns.name.Name, stype: int, minimised: bool) -> str:
    return f"recurse: {addr} asked {sname} {type_text(stype)}{' (minimised)' if minimised else ''}"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(v: Verdict) -> str:
    if v.kind is Kind.REFERRAL and v.referral is not None:
        return f"referral to {v.referral.zone} ({len(v.referral.ns)} NS, {len(v.referral.glue)} glue)"
    if v.kind is Kind.ANSWER:
        chase = f", CNAME to {v.target}" if v.target is not None else ""
        return f"answer ({sum(len(r) for r in v.answer)} RRs{chase})"
    if v.kind is Kind.ERROR:
        return rcode_text(v.rcode)
    return v.kind.value.upper() if v.kind is not Kind.LAME else "lame (not authoritative)"

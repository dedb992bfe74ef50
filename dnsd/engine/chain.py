"""The chain of links, in its one fixed order (like CoreDNS's plugin.cfg): the authoritative links, then the
links that must wait (forward, recurse: later issues), then the terminal REFUSED.

Authoritative links are plain functions, not coroutines: their data is in memory and they never wait, so the hot
path pays no task or coroutine cost. A link that must wait sits in the async tail: the chain then returns an
awaitable, and the engine and the transports send its reply when it completes (RFC 7766 6.2.1.1: TCP replies
may go out of order).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import dns.exception
import dns.name

from dnsd.engine.context import QueryContext
from dnsd.proto.answer import ANY, CLASS_IN, CNAME, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, Answer, Labels
from dnsd.proto.wire import Query, rcode_text, type_text

if TYPE_CHECKING:
    from dnsd.cache.link import CacheLink

TERMINAL = "terminal"
MAX_CHASE = 8  # CNAME targets one query may chase from link to link (RFC 1034 5.3.3: bound the work)


class Link(Protocol):
    """An authoritative link: answers at once from memory."""

    name: str

    def resolve(self, q: Query) -> Answer | None:
        """An answer, or None to pass the query on to the next link."""


class AsyncLink(Protocol):
    """A link that must wait (an upstream, the network): a coroutine."""

    name: str

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None:
        """An answer, or None to pass the query on to the next link; ctx says who asked (e.g. for
        allow_recursion) and over what."""


def refused() -> Answer:
    """Nobody serves this name: REFUSED (RFC 5358; the error map in docs/architecture.md)."""
    return Answer(REFUSED, aa=False, cacheable=False, source=TERMINAL)


class Chain:
    def __init__(self, links: Sequence[Link], tail: Sequence[AsyncLink] = (), cache: CacheLink | None = None) -> None:
        self.links = list(links)
        self.tail = list(tail)
        # Between the authoritative links and the tail: it answers what the tail answered before, and every
        # tail answer passes through it (dnsd.cache.link).
        self.cache = cache
        # A tail is configured but not attached yet (the zone files are still loading): SERVFAIL, not REFUSED.
        self.waiting = False

    def resolve(self, q: Query, ctx: QueryContext) -> Answer | Awaitable[Answer]:
        """The answer of the first link that has one; an awaitable when the query reaches the async tail."""
        if q.qclass != CLASS_IN:
            ctx.link = TERMINAL
            return refused()
        return self._resolve(q, ctx, 0)

    def _resolve(self, q: Query, ctx: QueryContext, depth: int) -> Answer | Awaitable[Answer]:
        for link in self.links:
            ans = link.resolve(q)
            if ans is not None:
                ans.source = ctx.link = link.name
                if ctx.trace is not None:
                    ctx.note(f"{link.name}: {_summary(ans)}")
                return self._follow(q, ans, ctx, depth)
        if ctx.trace is not None:
            ctx.note(f"{q.name_text}: not in the zones of {', '.join(link.name for link in self.links)}")
        if self.tail:
            if self.cache is not None:
                ans = self.cache.lookup(q, ctx)
                if ans is not None:
                    ctx.link = ans.source
                    return self._follow(q, ans, ctx, depth)
            return self._resolve_tail(q, ctx, depth)
        ctx.link = TERMINAL
        if self.waiting:
            ctx.note("terminal: SERVFAIL (forwarding or recursion starts once the zone files are loaded)")
            return Answer(SERVFAIL, aa=False, ra=True, cacheable=False, transient=True, source=TERMINAL)
        ctx.note("terminal: REFUSED (no forwarding or recursion configured)")
        return refused()

    async def _resolve_tail(self, q: Query, ctx: QueryContext, depth: int) -> Answer:
        for link in self.tail:
            if self.cache is not None:
                ans = await self.cache.through(link, q, ctx)
            else:
                ans = await link.resolve(q, ctx)
                if ans is not None:
                    ans.source = link.name
            if ans is not None:
                ctx.link = ans.source
                if ctx.trace is not None:
                    ctx.note(f"{ans.source}: {_summary(ans)}")
                followed = self._follow(q, ans, ctx, depth)
                return followed if isinstance(followed, Answer) else await followed
        ctx.link = TERMINAL
        ctx.note("terminal: REFUSED")
        return refused()

    def _follow(self, q: Query, ans: Answer, ctx: QueryContext, depth: int) -> Answer | Awaitable[Answer]:
        """A link that answers with a CNAME to a name it does not serve (an ExternalName, a zone file's CNAME out of
        its zones) leaves the rest to the chain: the target is resolved from the first link again, and the
        answer is the CNAME plus the target's records, with the target's rcode (RFC 6604), as CoreDNS and
        NSD-behind-a-resolver answer. When the target cannot be resolved (no forwarding, the client may not
        recurse, upstreams failed) the CNAME alone is the answer, and the client's resolver chases it."""
        target = dangling_cname(q, ans)
        if target is None or depth >= MAX_CHASE:
            return ans
        first = ctx.link
        if ctx.trace is not None:
            ctx.note(f"chain: chasing the CNAME target {'.'.join(target)}.")
        wire = b"".join(bytes((len(label),)) + label.encode("latin-1") for label in target) + b"\x00"
        sub = replace(q, qname_wire=wire, labels=target, tsig=None)
        rest = self._resolve(sub, ctx, depth + 1)
        if isinstance(rest, Answer):
            return _merge(ans, rest, ctx, first)
        return self._merge_later(ans, rest, ctx, first)

    async def _merge_later(self, ans: Answer, rest: Awaitable[Answer], ctx: QueryContext, first: str) -> Answer:
        return _merge(ans, await rest, ctx, first)


def _merge(ans: Answer, rest: Answer, ctx: QueryContext, first: str) -> Answer:
    if rest.rcode not in (NOERROR, NXDOMAIN):
        ctx.link = first
        return ans
    ctx.link = f"{first}+{rest.source}"
    return Answer(
        rest.rcode,
        ans.answer + rest.answer,
        rest.authority,
        rest.additional,
        aa=ans.aa,
        ra=ans.ra or rest.ra,
        zone=ans.zone,
        tags=ans.tags | rest.tags,
        cacheable=ans.cacheable and rest.cacheable,
        source=ctx.link,
    )


def dangling_cname(q: Query, ans: Answer) -> Labels | None:
    """The target a NOERROR answer's CNAME chain ends at when no record of the answer is owned by it; None when
    the answer needs no chasing (not a CNAME chain, or the CNAME is what was asked for)."""
    if ans.rcode != NOERROR or q.qtype in (CNAME, ANY) or not ans.answer:
        return None
    name, seen = q.labels, {q.labels}
    targets = {rr.name: rr for rr in ans.answer if rr.rtype == CNAME}
    while name in targets:
        following = _target(targets[name].rdata)
        if following is None or following in seen:
            return None  # unreadable, or a loop (the link that built it answers it)
        name = following
        seen.add(name)
    if name == q.labels or any(rr.name == name for rr in ans.answer):
        return None
    return name


def _target(rdata: tuple[object, ...]) -> Labels | None:
    """A CNAME's target as lower-case labels: (labels,) from the cluster link, raw wire rdata from zone files."""
    value = rdata[0]
    if isinstance(value, tuple):
        return tuple(str(label) for label in value)
    if isinstance(value, bytes):
        try:
            name = dns.name.from_wire(value, 0)[0]
        except dns.exception.DNSException:
            return None
        return tuple(label.decode("latin-1").lower() for label in name.labels[:-1])
    return None


def _summary(ans: Answer) -> str:
    """One line of --trace: the rcode and the records' owners and types."""
    rrs = ", ".join(f"{'.'.join(rr.name)}. {type_text(rr.rtype)}" for rr in ans.answer[:4])
    more = f" and {len(ans.answer) - 4} more" if len(ans.answer) > 4 else ""
    return f"{rcode_text(ans.rcode)}" + (f" {rrs}{more}" if rrs else "")

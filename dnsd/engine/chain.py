"""The chain of links, in its one fixed order (like CoreDNS's plugin.cfg): the authoritative links, then the
links that must wait (forward, recurse: later issues), then the terminal REFUSED.

Authoritative links are plain functions, not coroutines: their data is in memory and they never wait, so the hot
path pays no task or coroutine cost. A link that must wait sits in the async tail: the chain then returns an
awaitable, and the engine and the transports send its reply when it completes (RFC 7766 6.2.1.1: TCP replies
may go out of order).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from dnsd.engine.context import QueryContext
from dnsd.proto.answer import CLASS_IN, REFUSED, Answer
from dnsd.proto.wire import Query

TERMINAL = "terminal"


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
    def __init__(self, links: Sequence[Link], tail: Sequence[AsyncLink] = ()) -> None:
        self.links = list(links)
        self.tail = list(tail)

    def resolve(self, q: Query, ctx: QueryContext) -> Answer | Awaitable[Answer]:
        """The answer of the first link that has one; an awaitable when the query reaches the async tail."""
        if q.qclass != CLASS_IN:
            ctx.link = TERMINAL
            return refused()
        for link in self.links:
            ans = link.resolve(q)
            if ans is not None:
                ans.source = ctx.link = link.name
                return ans
        if self.tail:
            return self._resolve_tail(q, ctx)
        ctx.link = TERMINAL
        return refused()

    async def _resolve_tail(self, q: Query, ctx: QueryContext) -> Answer:
        for link in self.tail:
            ans = await link.resolve(q, ctx)
            if ans is not None:
                ans.source = ctx.link = link.name
                return ans
        ctx.link = TERMINAL
        return refused()

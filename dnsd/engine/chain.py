"""The chain of links, in its one fixed order (like CoreDNS's plugin.cfg): cluster, then the terminal REFUSED.

Authoritative handlers are plain functions, not coroutines: their data is in memory and they never wait, so the
hot path pays no task or coroutine cost. Handlers that must wait (forward, recurse) arrive with later issues as
an async tail of this chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dnsd.proto.answer import CLASS_IN, REFUSED, Answer
from dnsd.proto.wire import Query


class Handler(Protocol):
    name: str

    def resolve(self, q: Query) -> Answer | None:
        """An answer, or None to pass the query on to the next handler."""


class TerminalHandler:
    """Nobody serves this name: REFUSED (RFC 5358, and the design's error map)."""

    name = "terminal"

    def resolve(self, q: Query) -> Answer | None:
        return Answer(REFUSED, aa=False, cacheable=False, source="terminal")


class Chain:
    def __init__(self, handlers: Sequence[Handler]) -> None:
        self.handlers = list(handlers)

    def resolve(self, q: Query) -> Answer:
        if q.qclass != CLASS_IN:
            return Answer(REFUSED, aa=False, cacheable=False, source="terminal")
        for handler in self.handlers:
            ans = handler.resolve(q)
            if ans is not None:
                ans.source = handler.name
                return ans
        return TerminalHandler().resolve(q) or Answer(REFUSED)

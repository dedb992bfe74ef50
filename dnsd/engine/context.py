"""The per-query context: who asked, over what, which link answered and how long it took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dnsd.proto.wire import Query

if TYPE_CHECKING:
    from dnsd.cache.store import Entry
    from dnsd.observe.counts import Key

UDP, TCP = "udp", "tcp"
MAX_TRACE_LINES = 200  # steps one traced query may record (bounded: a long iterative walk is cut)


@dataclass(slots=True)
class QueryContext:
    """One query on its way through the engine. Created only off the exact-query fast path (a hit needs none),
    filled in as the query travels, read by the query log and, later, by metrics."""

    client: tuple[str, int] | None
    transport: str  # UDP or TCP
    started: float  # time.perf_counter() when the engine took the query
    query: Query | None = None  # None until the message parsed
    link: str = ""  # which link answered: cluster, terminal, or what the engine itself decided (header, shed...)
    # A query dnsd asks itself (a cache prefetch): allowed to recurse whatever allow_recursion says.
    internal: bool = False
    # `dnsd query --trace`: the walk, one line per step, when the client asked for it; None (the usual case)
    # costs nothing.
    trace: list[str] | None = None
    # The metrics' labels of this query's reply, once worked out (Engine._key).
    count_key: Key | None = None
    # A pre-rendered table hit: the link that rendered it (the metrics count it under that link).
    table_link: str = ""
    # The cache entry a fresh hit came from: the engine keeps its reply as wire bytes for the exact query.
    cache_entry: Entry | None = None

    def note(self, text: str) -> None:
        """One step of the walk for --trace (each link consulted, what it returned, each server asked)."""
        if self.trace is not None and len(self.trace) < MAX_TRACE_LINES:
            self.trace.append(text)

    @property
    def tcp(self) -> bool:
        return self.transport == TCP

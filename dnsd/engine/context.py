"""The per-query context: who asked, over what, which link answered and how long it took."""

from __future__ import annotations

from dataclasses import dataclass

from dnsd.proto.wire import Query

UDP, TCP = "udp", "tcp"


@dataclass(slots=True)
class QueryContext:
    """One query on its way through the engine. Created only off the exact-query fast path (a hit needs none),
    filled in as the query travels, read by the query log and, later, by metrics."""

    client: tuple[str, int] | None
    transport: str  # UDP or TCP
    started: float  # time.perf_counter() when the engine took the query
    query: Query | None = None  # None until the message parsed
    link: str = ""  # which link answered: cluster, terminal, or what the engine itself decided (header, shed...)

    @property
    def tcp(self) -> bool:
        return self.transport == TCP

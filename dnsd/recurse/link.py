"""The recurse link: iterative resolution from the root hints, for `recursion: iterative`."""

from __future__ import annotations

from dnsd.config import Config
from dnsd.engine.context import QueryContext
from dnsd.errors import DnsdError
from dnsd.proto.answer import Answer
from dnsd.proto.wire import Query


class Recursor:
    """The async-tail link that resolves iteratively from the root."""

    name = "recurse"

    def __init__(self, cfg: Config) -> None:
        raise DnsdError("recursion: iterative is not built yet; use recursion: forward (forward.upstreams) or off")

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None:
        raise NotImplementedError

    def start(self) -> None:
        """Background work once the link joins the chain."""

    async def close(self) -> None:
        """Stop background work and close connections (app shutdown)."""


def make_recursor(cfg: Config) -> Recursor | None:
    """The recurse link the config asks for: only with `recursion: iterative`."""
    if cfg.recursion != "iterative":
        return None
    return Recursor(cfg)

"""The Source protocol: what the application needs from anything that feeds the endpoint store."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """Lists its objects into the store, marks it synced, then keeps it current until stopped.

    start() returns once the first full listing has been applied (or has failed and been reported) and the
    store is marked synced; changes after that are applied as they happen. resync() re-reads everything now
    (SIGHUP). stop() ends every task the source owns.
    """

    name: str

    async def start(self) -> None: ...

    async def resync(self) -> None: ...

    async def stop(self) -> None: ...

"""One incarnation of a watched directory: watchfiles' awatch, stepped one batch at a time and always closed."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any

from watchfiles import awatch

Changes = set[tuple[Any, str]]


class Watch:
    """`async with Watch(...) as w:` arms the inotify watches; `await w.next()` is the next batch of changes
    (empty after `rust_timeout` ms without one), None once the stop event is set. Leaving the block cancels the
    step in flight and closes the iterator."""

    def __init__(
        self, root: Path, stop: asyncio.Event, *, debounce: int, step: int, rust_timeout: int, recursive: bool
    ) -> None:
        self._changes = awatch(
            root,
            stop_event=stop,
            debounce=debounce,
            step=step,
            rust_timeout=rust_timeout,
            yield_on_timeout=True,
            recursive=recursive,
        )
        self._pending: asyncio.Future[Changes] | None = None

    async def __aenter__(self) -> Watch:
        self._pending = asyncio.ensure_future(self._changes.__anext__())
        try:
            # The iterator's first step sets up the inotify watches (synchronously, before its first wait);
            # only then may the caller catch up, so nothing written in between is missed.
            for _ in range(3):
                await asyncio.sleep(0)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def next(self) -> Changes | None:
        """The next batch; the step after it starts only when this is called again."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._changes.__anext__())
        try:
            changes = await self._pending
        except StopAsyncIteration:
            return None
        self._pending = None
        return changes

    async def _close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
        with contextlib.suppress(BaseException):
            await self._changes.aclose()

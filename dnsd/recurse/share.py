"""Identical upstream work in flight, shared: one owned task per key, which the other walks that need it wait for.

A walk that needs what another walk is already asking (the same question to the same zone's servers, the address
of the same NS name) waits for that task's result instead of sending its own queries. The task runs with the
budget of the walk that started it; every waiter waits through a shield, bounded by its own deadline, so a walk
that gives up cancels nobody else's answer. A waiter whose flight failed (its owner's budget ran out) does the
work itself, once, with its own budget. A walk never waits for a flight that waits, directly or through others,
for the walk's own flight (a delegation loop seen by two walks at once): it does that work itself instead, and
the walk's own loop bounds end it as they do without sharing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Flight(Generic[T]):
    """One piece of shared work: its task, and the flight that task waits for now (for the cycle check)."""

    task: asyncio.Task[T] | None = None
    waiting_on: Flight[Any] | None = None


# The flight whose task runs the current code (None in a client walk): each task has its own context copy.
_CURRENT: ContextVar[Flight[Any] | None] = ContextVar("dnsd_recurse_flight", default=None)


class Flights:
    """The shared work in flight, by key; at most `limit` at once (more runs unshared, in the walk itself)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight: dict[Hashable, Flight[Any]] = {}
        self.started = 0  # flights started
        self.joined = 0  # waits for a flight another walk started
        self.redone = 0  # joined flights that failed and were done again by the waiter

    async def run(
        self, key: Hashable, make: Callable[[], Coroutine[Any, Any, T]], deadline: float, joined: Callable[[], None]
    ) -> T:
        """make()'s result, from the flight already on its way for key when there is one (joined() is called),
        else from a new flight. Raises TimeoutError when the loop time passes deadline while waiting."""
        me = _CURRENT.get()
        flight: Flight[T] | None = self.inflight.get(key)
        if flight is not None and not _waits_for(flight, me, len(self.inflight)):
            self.joined += 1
            joined()
            try:
                return await self._wait(flight, me, deadline)
            except TimeoutError:
                raise  # our own deadline
            except Exception:
                # The owner's budget ran out (or its walk hit a bound): ours may still allow it.
                self.redone += 1
                return await make()
        if flight is not None or len(self.inflight) >= self.limit:
            return await make()  # a wait cycle, or too much shared work already: on our own
        flight = Flight()  # not Flight[T](): a call through typing's generic alias costs more than the object
        flight.task = asyncio.get_running_loop().create_task(self._body(flight, make), name="recurse shared query")
        self.inflight[key] = flight
        flight.task.add_done_callback(lambda t: self._done(key, flight, t))
        self.started += 1
        return await self._wait(flight, me, deadline)

    @staticmethod
    async def _body(flight: Flight[T], make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        _CURRENT.set(flight)  # this task's own context: the flights it waits for are recorded on it
        return await make()

    @staticmethod
    async def _wait(flight: Flight[T], me: Flight[Any] | None, deadline: float) -> T:
        assert flight.task is not None
        if me is not None:
            me.waiting_on = flight
        try:
            async with asyncio.timeout_at(deadline):
                # shield: a walk that gives up (its deadline, its client gone) must not cancel the others' answer
                return await asyncio.shield(flight.task)
        finally:
            if me is not None:
                me.waiting_on = None

    def _done(self, key: Hashable, flight: Flight[Any], task: asyncio.Task[Any]) -> None:
        if self.inflight.get(key) is flight:
            del self.inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have given up

    async def close(self) -> None:
        tasks = [f.task for f in self.inflight.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _waits_for(flight: Flight[Any], me: Flight[Any] | None, bound: int) -> bool:
    """Whether flight is me or waits, through a chain of flights, for me: joining it would wait forever."""
    if me is None:
        return False  # a client walk: no flight waits for it
    f: Flight[Any] | None = flight
    for _ in range(bound + 1):  # the chain has no cycle (none is ever made); bounded all the same
        if f is None:
            return False
        if f is me:
            return True
        f = f.waiting_on
    return True

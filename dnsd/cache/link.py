"""The cache link of the chain: between the authoritative links and the ones that ask upstream (forward,
recurse). Fresh hits are answered here; a miss goes on to the tail through `through()`, which shares one upstream
query among identical concurrent misses, keeps what the rules allow, and serves stale answers when the upstreams
fail (RFC 8767). Hot hits skip even this: the engine looks the exact query up in the wire replies first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from dnsd.cache.store import NO_KEY, STALE_RETRY, AnswerCache, CacheKey, Entry, WireReply, cache_key, wire_reply
from dnsd.engine.acl import ClientAcl
from dnsd.engine.context import UDP, QueryContext
from dnsd.observe.counts import Key
from dnsd.proto.answer import NOERROR, NXDOMAIN, RR, SERVFAIL, Answer, Labels
from dnsd.proto.render import Rendered, finish
from dnsd.proto.wire import Query, rcode_text

log = logging.getLogger(__name__)

PREFETCH_HITS = 2  # hits an entry needs before it is worth refreshing ahead of its expiry
PREFETCH_SHARE = 0.1  # refreshed in the last tenth of its TTL (Unbound's prefetch)
MAX_PREFETCHES = 100  # prefetches in flight at once; more popular entries simply expire


class TailLink(Protocol):
    name: str

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None: ...


class CacheLink:
    name = "cache"

    def __init__(self, cache: AnswerCache, acl: ClientAcl, prefetch: bool = False, serve_stale: int = 0) -> None:
        self.cache = cache
        self.acl = acl
        self.prefetch = prefetch
        self.serve_stale = serve_stale
        self.clock: Callable[[], float] = cache.clock
        self.wire = cache.wire  # the exact-query replies (one dict for the cache's life: cleared, never replaced)
        self._packed_memo = acl.packed_memo  # the ACL's verdicts by address octets, read without a call
        self.stats = cache.stats
        self._inflight: dict[CacheKey, asyncio.Task[Answer | None]] = {}
        self._prefetches: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ hits

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Inject the clock (the tests move a fake one instead of sleeping)."""
        self.cache.clock = clock
        self.clock = clock

    def exact(self, rest: bytes, client: tuple[str, int] | None) -> bytes | None:
        """The hot path: the reply (after the ID) for an exact query seen before, aged to now; None to take
        the full path."""
        wire = self.wire.get(rest)
        if wire is None or not self.acl.allowed(client):
            return None
        return self._serve(rest, wire)

    def exact_packed(self, rest: bytes, packed: bytes) -> bytes | None:
        """As exact(), for the UDP batch path: the sender as its address octets (dnsd.transport.udp_batch).
        The hottest cache path, so the common case (same second of age, a known client) is written out here."""
        wire = self.wire.get(rest)
        if wire is None:
            return None
        allowed = self._packed_memo.get(packed)
        if allowed is None:
            allowed = self.acl.allowed_packed(packed)
        if not allowed:
            return None
        now = self.clock()
        entry = wire.entry
        if now < wire.until and entry.live and not self.prefetch:
            self.stats.hits += 1
            entry.hits += 1
            wire.hits += 1
            return wire.current
        return self._serve(rest, wire)

    def _serve(self, rest: bytes, wire: WireReply) -> bytes | None:
        now = self.clock()
        entry = wire.entry
        if now < wire.until and entry.live:
            out: bytes | None = wire.current  # the same whole second of age: the bytes made last time
        else:
            out = wire.at(now)
            if out is None:
                self.cache.forget(rest)
                return None
        self.stats.hits += 1
        entry.hits += 1
        wire.hits += 1
        if self.prefetch:
            self._maybe_prefetch(entry, now)
        return out

    def lookup(self, q: Query, ctx: QueryContext) -> Answer | None:
        """A fresh cached answer; a stale one while a recent refresh failed; else None (the tail is asked)."""
        if not (ctx.internal or self.acl.allowed(ctx.client)):
            ctx.note("cache: the client is outside allow_recursion")
            return None
        entry = self.cache.get(cache_key(q))
        if entry is None:
            self.stats.misses += 1
            ctx.note("cache: miss")
            return None
        now = self.clock()
        if entry.fresh(now):
            self.stats.hits += 1
            ctx.cache_entry = entry
            if ctx.trace is not None:
                ctx.note(f"cache: hit, {_summary(entry.answer)}, TTL {entry.remaining(now)} of {entry.ttl} s left")
            self._hit(entry, now)
            return entry.aged(now)
        if self.serve_stale and now < entry.retry_at:
            self.stats.stale_served += 1
            if ctx.trace is not None:
                ctx.note(f"cache: stale ({int(now - entry.expires)} s past expiry), upstreams failed lately")
            return entry.stale()
        self.stats.misses += 1
        if ctx.trace is not None:
            ctx.note(f"cache: expired {int(now - entry.expires)} s ago")
        return None

    def reply(
        self, entry: Entry, rendered: Rendered, data: bytes, serial: int, remember: bool, key: Key | None = None
    ) -> bytes:
        """The reply for a fresh hit that took the full path: rendered from the entry at age 0 and aged by a
        patch, and kept for the exact query when `remember` (queries without EDNS options repeat exactly)."""
        wire = wire_reply(entry, finish(rendered, data, serial), key or NO_KEY, len(data))
        if remember:
            self.cache.remember(data[2:], wire)
        out = wire.at(self.clock())
        # A zero-TTL race (expired between lookup and now): age 0 rendering is still right for this one query.
        return data[:2] + (out if out is not None else wire.template)

    def _hit(self, entry: Entry, now: float) -> None:
        entry.hits += 1
        if self.prefetch:
            self._maybe_prefetch(entry, now)

    def _maybe_prefetch(self, entry: Entry, now: float) -> None:
        if (
            not entry.prefetching
            and entry.hits >= PREFETCH_HITS
            and entry.remaining(now) <= max(1, int(entry.ttl * PREFETCH_SHARE))
            and len(self._prefetches) < MAX_PREFETCHES
        ):
            entry.prefetching = True
            task = asyncio.get_running_loop().create_task(self._prefetch(entry), name="cache prefetch")
            self._prefetches.add(task)
            task.add_done_callback(self._prefetches.discard)

    async def _prefetch(self, entry: Entry) -> None:
        self.stats.prefetches += 1
        ctx = QueryContext(None, UDP, 0.0, internal=True)
        try:
            await self._shared(entry.link, entry.query, entry.key, ctx)
        except Exception:
            log.exception("cache: prefetch of %s failed", entry.query.name_text, extra={"qname": entry.query.name_text})
        finally:
            entry.prefetching = False

    # ------------------------------------------------------------ misses

    async def through(self, link: TailLink, q: Query, ctx: QueryContext) -> Answer | None:
        """Ask link for q, one upstream query for identical concurrent misses, and keep the answer."""
        if not (ctx.internal or self.acl.allowed(ctx.client)):
            return await link.resolve(q, ctx)  # the link refuses it; nothing is shared or kept
        return await self._shared(link, q, cache_key(q), ctx)

    async def _shared(self, link: TailLink, q: Query, key: CacheKey, ctx: QueryContext) -> Answer | None:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(link, q, key, ctx), name="cache fill")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._fetched(key, t))
        else:
            self.stats.coalesced += 1
            ctx.note("cache: joined an identical query already on its way upstream")
        # shield: a client that gives up (deadline) must not cancel the query the others wait on.
        return await asyncio.shield(task)

    def _fetched(self, key: CacheKey, task: asyncio.Task[Answer | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have given up (the engine's deadline)

    async def _fetch(self, link: TailLink, q: Query, key: CacheKey, ctx: QueryContext) -> Answer | None:
        ans = await link.resolve(q, ctx)
        if ans is None:
            return None
        ans = self._ours_removed(q, ans)
        ans.source = link.name
        if ans.rcode not in (NOERROR, NXDOMAIN) and self.serve_stale:
            old = self.cache.get(key)
            now = self.clock()
            if old is not None and not old.fresh(now) and now < old.expires + self.serve_stale:
                old.retry_at = now + STALE_RETRY
                self.stats.stale_served += 1
                ctx.note(f"cache: {link.name} failed; serving the stale answer")
                return old.stale()
        entry = self.cache.store(q, ans, link)
        if ctx.trace is not None:
            ctx.note(f"cache: kept for {entry.ttl} s" if entry is not None else "cache: not kept (RFC 2308 rules)")
        if entry is None:
            return ans
        # What was kept (TTLs capped at the entry's: RFC 2308 3 for the SOA of a negative answer), so that the
        # first answer and the cached ones agree.
        kept = entry.aged(entry.stored)
        kept.source = ans.source
        return kept

    def _ours_removed(self, q: Query, ans: Answer) -> Answer:
        """Records an upstream sent for names of our own zones are dropped from every section, kept or not: only
        the store and the zone files speak for those (a poisoning attempt, or a stale upstream view). The one
        exception: a name of ours that the cluster link let fall through (cluster.fallthrough: PTR for an address
        outside the cluster) keeps the records for that name and its parents (its PTR, its zone's SOA)."""
        ours = self.cache.is_ours
        asked = q.labels
        through = ours(asked)

        def keep(rr: RR) -> bool:
            if not ours(rr.name):
                return True
            return through and len(rr.name) <= len(asked) and asked[len(asked) - len(rr.name) :] == rr.name

        if through or any(ours(rr.name) for rr in (*ans.answer, *ans.authority, *ans.additional)):
            ans.answer = [rr for rr in ans.answer if keep(rr)]
            ans.authority = [rr for rr in ans.authority if keep(rr)]
            ans.additional = [rr for rr in ans.additional if keep(rr)]
        return ans

    # ------------------------------------------------------------ upkeep

    def drop_under(self, zone: Labels) -> None:
        self.cache.drop_under(zone)

    async def close(self) -> None:
        tasks = list(self._prefetches) + list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _summary(ans: Answer) -> str:
    return f"{rcode_text(ans.rcode)} with {len(ans.answer)} answer records" if ans.rcode != SERVFAIL else "SERVFAIL"

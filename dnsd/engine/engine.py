"""One query in, one reply out: the exact-query fast path, the header check, the chain, rendering, the async
tail, and the one place where exceptions become rcodes."""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from dnsd.engine.acl import ClientAcl
from dnsd.engine.chain import Chain
from dnsd.engine.context import TCP, UDP, QueryContext
from dnsd.engine.fastpath import MAX_TAILS, FastTable, table_index
from dnsd.errors import FormatError
from dnsd.observe.counts import Key, QueryCounts, Slot, key_for
from dnsd.proto.answer import AXFR, BADVERS, IXFR, NOTIMP, REFUSED, SERVFAIL, SOA, Answer, Labels, Tag, labels_of
from dnsd.proto.render import Rendered, behind, finish, finish_behind, render, simple_reply, with_option
from dnsd.proto.trace import trace_option, wants_trace
from dnsd.proto.tsig import badkey_reply
from dnsd.proto.wire import (
    EDNS_PAYLOAD,
    Query,
    Verdict,
    check_header,
    header_only,
    parse_query,
    rcode_text,
    type_text,
)
from dnsd.store.store import Store

log = logging.getLogger(__name__)
qlog = logging.getLogger("dnsd.query")

TCP_LIMIT = 65535
MAX_INFLIGHT = 1000  # queries waiting on the async tail at once; more are shed with SERVFAIL
ASYNC_DEADLINE = 5.0  # seconds a query may wait on the async tail before it gets SERVFAIL
LINKS = frozenset({"cluster", "zone", "cache", "forward", "recurse", "terminal"})  # the metrics' link label

# What a listener gets back: the reply now, nothing (drop), or a reply later (the async tail).
Reply = bytes | None
Later = Awaitable[bytes | None]


@dataclass(slots=True)
class Counters:
    queries: int = 0
    fast_hits: int = 0
    dropped: int = 0
    formerr: int = 0
    notimp: int = 0
    servfail_internal: int = 0
    shed: int = 0  # queries refused a place in the async tail (MAX_INFLIGHT reached)
    deadline: int = 0  # async-tail queries that ran past ASYNC_DEADLINE


class Engine:
    def __init__(
        self,
        chain: Chain,
        store: Store,
        table: FastTable | None = None,
        log_queries: bool = False,
        max_inflight: int = MAX_INFLIGHT,
        deadline: float = ASYNC_DEADLINE,
        trace_acl: ClientAcl | None = None,
        counts: QueryCounts | None = None,
        classify: Callable[[Labels], tuple[str, str]] | None = None,
    ) -> None:
        self.chain = chain
        self.counts = counts if counts is not None else QueryCounts()
        # (zone, namespace) of a name, for the metrics' labels: given by the App, which knows the zones.
        self.classify: Callable[[Labels], tuple[str, str]] = classify or self._classify
        self.cache = chain.cache  # the answer cache's exact-query replies are looked up before the full path
        if self.cache is not None:
            self.cache.cache.counts = self.counts  # its exact replies' hits go where the fast path's go
        self.store = store
        self.table = table if table is not None else FastTable(counts=self.counts)
        self.table.counts = self.counts
        self.counters = Counters()
        self.log_queries = log_queries
        self.max_inflight = max_inflight
        self.deadline = deadline
        self.inflight = 0
        # Who may ask for the walk (--trace): it names upstreams and cache state, so the recursion clients only.
        self.trace_acl = trace_acl if trace_acl is not None else ClientAcl(("127.0.0.0/8", "::1/128"))
        self._serial = store.serial
        store.subscribe(self._invalidate)

    def _invalidate(self, tags: set[Tag]) -> None:
        self.table.invalidate(tags)
        if self.store.serial != self._serial:
            self._serial = self.store.serial
            self.table.serial_changed()

    def invalidate(self, tags: set[Tag]) -> None:
        """Drop every pre-rendered answer carrying one of tags (a zone file reloaded: zones/source.py), and
        every cached upstream answer for a name inside a zone that changed: from now on the zone answers it."""
        self.table.invalidate(tags)
        if self.cache is not None:
            for tag in tags:
                if tag.kind == "zone":
                    self.cache.drop_under(labels_of(tag.subject))

    def exact_table(self, tcp: bool, v6: bool = False) -> dict[bytes, Slot]:
        """The exact-query table a listener may look queries up in itself (the fast path inlined: one slice, one
        dict lookup and `slot.hits += 1`, see fastpath.py), one per transport and address family. Empty while the
        query log is on, so that every query is logged."""
        if self.log_queries:
            return {}
        return self.table.exact[table_index(tcp, v6)]

    def cache_table(self) -> Callable[[bytes, bytes], bytes | None] | None:
        """The answer cache's exact-reply lookup for a listener that inlines the fast path (UDP batches): given
        the query and the sender's address octets, the reply after the ID, or None. None while the query log
        is on or without a cache."""
        if self.cache is None or self.log_queries:
            return None
        return self.cache.exact_packed

    def handle(self, data: bytes, tcp: bool = False, client: object = None) -> Reply | Later:
        """The reply for a datagram or TCP message: bytes now, None when nothing must be sent, or an awaitable
        when the query waits on the async tail."""
        v6 = isinstance(client, tuple) and ":" in client[0]
        slot = self.exact_table(tcp, v6).get(data[2:])
        if slot is not None:
            self.counters.queries += 1
            self.counters.fast_hits += 1
            slot.hits += 1
            return data[:2] + slot.rest
        return self.handle_miss(data, tcp, client)

    def handle_miss(self, data: bytes, tcp: bool = False, client: object = None) -> Reply | Later:
        """As handle, for a caller that has already looked the query up in exact_table() itself."""
        self.counters.queries += 1
        peer = client if isinstance(client, tuple) else None
        if self.cache is not None and not self.log_queries:
            rest = self.cache.exact(data[2:], peer)
            if rest is not None:
                return data[:2] + rest
        ctx = QueryContext(peer, TCP if tcp else UDP, time.perf_counter())
        try:
            out = self._slow(data, ctx)
        except Exception:
            out = self._internal_error(data, ctx)
        if isinstance(out, bytes) or out is None:
            if ctx.trace is not None and out is not None:
                out = self._traced(out, ctx)
            if out is not None:
                self._count(ctx, len(data), out)
            if self.log_queries:
                self._log(ctx, out)
            return out
        return out

    def _internal_error(self, data: bytes, ctx: QueryContext) -> Reply:
        """The one place where an unexpected exception becomes an rcode (SERVFAIL, and a traceback in the log)."""
        self.counters.servfail_internal += 1
        q = ctx.query
        what = f"{q.name_text} {type_text(q.qtype)}" if q is not None else "a query that did not parse"
        who = f"{ctx.client[0]}#{ctx.client[1]}" if ctx.client else "-"
        log.exception(
            "internal error answering %s from %s (link %s); replied SERVFAIL",
            what,
            who,
            ctx.link or "-",
            extra={"query": {"qname": q.name_text if q else None, "client": ctx.client[0] if ctx.client else None}},
        )
        ctx.link = "error"
        try:
            return simple_reply(ctx.query or parse_query(data), SERVFAIL)
        except Exception:
            return None

    def _slow(self, data: bytes, ctx: QueryContext) -> Reply | Later:
        verdict = check_header(data)
        if verdict is Verdict.DROP:
            self.counters.dropped += 1
            ctx.link = "header"
            return None
        if verdict is not Verdict.OK:
            if verdict is Verdict.FORMERR:
                self.counters.formerr += 1
            else:
                self.counters.notimp += 1
            ctx.link = "header"
            return header_only(data, verdict)
        try:
            q = parse_query(data)
        except FormatError as exc:
            self.counters.formerr += 1
            ctx.link = "parse"
            log.debug("FORMERR: %s", exc)
            return header_only(data, Verdict.FORMERR)
        ctx.query = q
        if q.edns is not None and q.edns.options and wants_trace(data) and self.trace_acl.allowed(ctx.client):
            ctx.trace = [f"query: {q.name_text} {type_text(q.qtype)} over {ctx.transport}"]
        if q.tsig is not None:
            ctx.link = "tsig"
            return badkey_reply(q)  # RFC 8945 5.2.1: no TSIG key is configured, so every key is unknown
        if q.edns is not None and q.edns.version > 0:
            ctx.link = "edns"
            return simple_reply(q, BADVERS)  # RFC 6891 6.1.3
        if q.qtype in (AXFR, IXFR):
            # Zone transfers: not over UDP (NOTIMP); over TCP not configured (REFUSED).
            ctx.link = "transfer"
            return simple_reply(q, REFUSED if ctx.tcp else NOTIMP)
        limit = TCP_LIMIT if ctx.tcp else (min(q.edns.payload, EDNS_PAYLOAD) if q.edns is not None else 512)
        key = q.key_question + _variant(q, limit)
        entry = self.table.get(key) if ctx.trace is None else None  # a traced query walks the chain
        if entry is None:
            resolved = self.chain.resolve(q, ctx)
            if not isinstance(resolved, Answer):
                return self._later(resolved, q, ctx, limit)
            ans = resolved
            if ctx.cache_entry is not None and ctx.link == "cache":
                return self._cached(q, data, limit, ctx)
            if not ans.cacheable or not (ans.answer or ans.authority or ans.additional or ans.aa):
                return self._render_uncached(q, ans, limit)
            tail = self._tail(q, ans, ctx.link) if ans.negative else None
            rendered = None
            if tail is not None:
                if not self.table.admit(key):
                    # A negative answer asked for the first time: served from its zone's tail and not kept, so
                    # that a stream of one-off names neither renders nor evicts the names asked all the time.
                    reply = finish_behind(tail, data, len(q.qname_wire), self.store.serial, limit)
                    if reply is not None:
                        return reply
                rendered = behind(tail, key[: len(key) - 3], limit)
            entry = self.table.put(key, rendered or render(q, ans, limit), ans.tags, ctx.link)
        else:
            ctx.link = "fast"
            ctx.table_link = entry.link
        reply = finish(entry.rendered, data, self.store.serial)
        if q.edns is None or not q.edns.options:
            # Queries with EDNS options (dig's fresh COOKIE each run) never repeat exactly: not worth a slot.
            v6 = ctx.client is not None and ":" in ctx.client[0]
            self.table.remember_exact(entry, ctx.tcp, data[2:], reply[2:], self._key(ctx, reply[3] & 0x0F), v6)
        return reply

    def _tail(self, q: Query, ans: Answer, link: str) -> Rendered | None:
        """The tail rendered once for the zone of a negative answer whose only record is its zone's SOA (RFC 2308
        3, fastpath.py); None when the answer has another shape."""
        zone = ans.zone
        if zone is None or ans.answer or ans.additional or len(ans.authority) != 1:
            return None
        soa = ans.authority[0]
        labels = q.labels
        if soa.rtype != SOA or soa.name != zone or labels[len(labels) - len(zone) :] != zone:
            return None
        if len(labels) > len(zone):
            # The renderer points a name in the SOA that ends in the question name (ns.dns.<zone> asked) at the
            # question; the tail, rendered for the zone, would not: those few names are rendered.
            for name in soa.rdata[:2]:
                if isinstance(name, tuple) and len(name) >= len(labels) and name[len(name) - len(labels) :] == labels:
                    return None
        edns = q.edns
        tails = self.table.tails
        key = (link, zone, ans.rcode, ans.aa, ans.ra, 0 if edns is None else 2 if edns.do else 1)
        tail = tails.get(key)
        if tail is None:
            if len(tails) >= MAX_TAILS:
                tails.clear()
            wire = b"".join(bytes((len(label),)) + label.encode("latin-1") for label in zone) + b"\x00"
            at = 12 + len(q.qname_wire)
            apex = replace(q, data=q.data[:12] + wire + q.data[at : at + 4], qname_wire=wire, labels=zone, tsig=None)
            tail = tails[key] = render(apex, ans, TCP_LIMIT, pointers=True)
        return tail

    def _cached(self, q: Query, data: bytes, limit: int, ctx: QueryContext) -> bytes:
        """A fresh cache hit on the full path: rendered once from the entry, kept for the exact query."""
        assert self.cache is not None and ctx.cache_entry is not None
        entry = ctx.cache_entry
        rendered = render(q, entry.answer, limit)
        remember = q.edns is None or not q.edns.options
        key = self._key(ctx, entry.answer.rcode & 0x0F)
        return self.cache.reply(entry, rendered, data, self.store.serial, remember, key)

    # ------------------------------------------------------------ the async tail

    def _later(self, pending: Awaitable[Answer], q: Query, ctx: QueryContext, limit: int) -> Reply | Later:
        """A query that waits on the async tail: bounded by max_inflight (shed with SERVFAIL beyond it, so
        load costs answers, not memory) and by the deadline."""
        if self.inflight >= self.max_inflight:
            if inspect.iscoroutine(pending):
                pending.close()
            self.counters.shed += 1
            ctx.link = "shed"
            return simple_reply(q, SERVFAIL)
        self.inflight += 1
        return self._wait(pending, q, ctx, limit)

    async def _wait(self, pending: Awaitable[Answer], q: Query, ctx: QueryContext, limit: int) -> Reply:
        reply: Reply
        try:
            try:
                async with asyncio.timeout(self.deadline):
                    ans = await pending
                reply = self._render_uncached(q, ans, limit)
            except TimeoutError:
                self.counters.deadline += 1
                ctx.link = "deadline"
                reply = simple_reply(q, SERVFAIL)
            except Exception:
                reply = self._internal_error(q.data, ctx)
        finally:
            self.inflight -= 1
        if ctx.trace is not None and reply is not None:
            reply = self._traced(reply, ctx)
        if reply is not None:
            self._count(ctx, len(q.data), reply)
        if self.log_queries:
            self._log(ctx, reply)
        return reply

    def _traced(self, reply: bytes, ctx: QueryContext) -> bytes:
        """`dnsd query --trace`: the walk, in the reply's OPT (dnsd.proto.trace)."""
        assert ctx.trace is not None
        ctx.note(f"reply: {rcode_text(reply[3] & 0x0F)} from {ctx.link}, {len(reply)} octets")
        edns = ctx.query.edns if ctx.query is not None else None
        limit = TCP_LIMIT if ctx.tcp else (min(edns.payload, EDNS_PAYLOAD) if edns is not None else 512)
        return with_option(reply, trace_option(ctx.trace), limit)

    def _render_uncached(self, q: Query, ans: Answer, limit: int) -> bytes:
        """An answer served once, not kept: header-only replies, answers that are not cacheable (before the
        store's sync, upstream data), and everything from the async tail."""
        if not (ans.answer or ans.authority or ans.additional or ans.aa):
            return simple_reply(q, ans.rcode, ra=ans.ra)
        return finish(render(q, ans, limit), q.data, self.store.serial)

    # ------------------------------------------------------------ counting (dnsd.observe)

    def _key(self, ctx: QueryContext, rcode: int) -> Key:
        """The labels a reply is counted under (dnsd.observe.counts.Key): worked out once per query (a remembered
        exact slot and the count of the reply itself share it)."""
        if ctx.count_key is not None:
            return ctx.count_key
        ctx.count_key = self._make_key(ctx, rcode)
        return ctx.count_key

    def _make_key(self, ctx: QueryContext, rcode: int) -> Key:
        q = ctx.query
        link = ctx.table_link or ctx.link.split("+", 1)[0]
        if link not in LINKS:
            link = "engine"  # FORMERR, NOTIMP, BADVERS, shed, deadline, internal errors: the engine's own
        v6 = ctx.client is not None and ":" in ctx.client[0]
        if q is None:
            return key_for(".", 0, rcode, link, ctx.transport, v6, "")
        zone, namespace = self.classify(q.labels)
        if namespace:
            namespace = self.counts.namespace(namespace)
        return key_for(zone, q.qtype, rcode, link, ctx.transport, v6, namespace)

    def _classify(self, labels: Labels) -> tuple[str, str]:
        """The zone and namespace labels of a name: asked of the chain's links that have zones (cluster, zone
        files); "." for every other name."""
        for link in self.chain.links:
            classify = getattr(link, "classify", None)
            if classify is not None:
                found = classify(labels)
                if found is not None:
                    return found  # type: ignore[no-any-return]
        return ".", ""

    def _count(self, ctx: QueryContext, qsize: int, reply: bytes) -> None:
        """A reply that did not come from an exact slot: counted with its time (dnsd.observe.counts)."""
        key = self._key(ctx, reply[3] & 0x0F)
        self.counts.add(key, 1, time.perf_counter() - ctx.started, qsize, len(reply))
        if key.rcode == "NXDOMAIN" and ctx.query is not None:
            self.counts.nxdomain_names.add(ctx.query.name_text.lower())

    # ------------------------------------------------------------ the query log

    def _log(self, ctx: QueryContext, reply: Reply) -> None:
        """log.queries: one line per query, with the link of the chain that answered (log.sample is a filter on
        the dnsd.query logger, dnsd.observe.logs). The fields also travel as `extra={"query": {...}}` for the JSON
        formatter."""
        micros = (time.perf_counter() - ctx.started) * 1e6
        who = f"{ctx.client[0]}#{ctx.client[1]}" if ctx.client else "-"
        q = ctx.query
        what = f"{q.name_text} {type_text(q.qtype)}" if q is not None else "<malformed>"
        fields: dict[str, object] = {
            "client": ctx.client[0] if ctx.client else None,
            "port": ctx.client[1] if ctx.client else None,
            "proto": ctx.transport,
            "qname": q.name_text if q is not None else None,
            "qtype": type_text(q.qtype) if q is not None else None,
            "rcode": rcode_text(reply[3] & 0x0F) if reply is not None else None,
            "link": ctx.link,
            "size": len(reply) if reply is not None else 0,
            "duration_us": round(micros),
        }
        if reply is None:
            qlog.info("%s %s %s dropped", who, ctx.transport, what, extra={"query": fields})
        else:
            qlog.info(
                "%s %s %s %s %s %dB %.0fus",
                who,
                ctx.transport,
                what,
                rcode_text(reply[3] & 0x0F),
                ctx.link,
                len(reply),
                micros,
                extra={"query": fields},
            )


def _variant(q: Query, limit: int) -> bytes:
    """The EDNS variant of a key: no EDNS, or EDNS with DO; plus the size limit the reply was cut to."""
    if q.edns is None:
        return struct.pack("!BH", 0, limit)
    return struct.pack("!BH", 2 if q.edns.do else 1, limit)


def is_later(reply: Reply | Later) -> bool:
    """True when a handle() result is a reply still to come (the async tail)."""
    return not (reply is None or isinstance(reply, bytes))

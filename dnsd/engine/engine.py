"""One query in, one reply out: the header check, the fast path, the chain, rendering, and the one place where
exceptions become rcodes."""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

from dnsd.engine.chain import Chain
from dnsd.engine.fastpath import FastTable
from dnsd.errors import FormatError
from dnsd.proto.answer import AXFR, BADVERS, IXFR, NOTIMP, REFUSED, SERVFAIL, Tag
from dnsd.proto.render import finish, render, simple_reply
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


@dataclass(slots=True)
class Counters:
    queries: int = 0
    fast_hits: int = 0
    dropped: int = 0
    formerr: int = 0
    notimp: int = 0
    servfail_internal: int = 0


class Engine:
    def __init__(self, chain: Chain, store: Store, table: FastTable | None = None, log_queries: bool = False) -> None:
        self.chain = chain
        self.store = store
        self.table = table if table is not None else FastTable()
        self.counters = Counters()
        self.log_queries = log_queries
        self.last_source = ""
        self._serial = store.serial
        store.subscribe(self._invalidate)

    def _invalidate(self, tags: set[Tag]) -> None:
        self.table.invalidate(tags)
        if self.store.serial != self._serial:
            self._serial = self.store.serial
            self.table.serial_changed()

    def handle(self, data: bytes, tcp: bool = False, client: object = None) -> bytes | None:
        """The reply for a datagram or TCP message, or None when nothing must be sent."""
        if self.log_queries:
            return self._handle_logged(data, tcp, client)
        return self._handle(data, tcp)

    def handle_miss(self, data: bytes, tcp: bool = False, client: object = None) -> bytes | None:
        """As handle, for a caller that has already looked the query up in the exact-query table itself (the
        UDP listeners inline that lookup): the lookup is not done twice."""
        if self.log_queries:
            return self._handle_logged(data, tcp, client)
        self.counters.queries += 1
        return self._answer(data, tcp)

    def _handle_logged(self, data: bytes, tcp: bool, client: object) -> bytes | None:
        """The query log (log.queries): one line per query, with the link of the chain that answered."""
        start = time.perf_counter()
        self.last_source = "fast"
        reply = self._handle(data, tcp)
        micros = (time.perf_counter() - start) * 1e6
        who = f"{client[0]}#{client[1]}" if isinstance(client, tuple) else "-"
        try:
            q = parse_query(data)
            what = f"{q.name_text} {type_text(q.qtype)}"
        except Exception:
            what = "<malformed>"
        if reply is None:
            qlog.info("%s %s %s dropped", who, "tcp" if tcp else "udp", what)
        else:
            rcode = reply[3] & 0x0F
            qlog.info(
                "%s %s %s %s %s %dB %.0fus",
                who,
                "tcp" if tcp else "udp",
                what,
                rcode_text(rcode),
                self.last_source,
                len(reply),
                micros,
            )
        return reply

    def _handle(self, data: bytes, tcp: bool) -> bytes | None:
        self.counters.queries += 1
        # Fast path: this exact query (after its ID) was answered before from the pre-rendered table.
        rest = (self.table.exact_tcp if tcp else self.table.exact_udp).get(data[2:])
        if rest is not None:
            self.counters.fast_hits += 1
            return data[:2] + rest
        return self._answer(data, tcp)

    def _answer(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            return self._slow(data, tcp)
        except Exception:
            # The one place where an unexpected exception becomes an rcode (design: error map).
            self.counters.servfail_internal += 1
            log.exception("internal error answering a query; replied SERVFAIL")
            try:
                return simple_reply(parse_query(data), SERVFAIL)
            except Exception:
                return None

    def _slow(self, data: bytes, tcp: bool) -> bytes | None:
        verdict = check_header(data)
        if verdict is Verdict.DROP:
            self.counters.dropped += 1
            return None
        if verdict is not Verdict.OK:
            if verdict is Verdict.FORMERR:
                self.counters.formerr += 1
            else:
                self.counters.notimp += 1
            return header_only(data, verdict)
        try:
            q = parse_query(data)
        except FormatError as exc:
            self.counters.formerr += 1
            log.debug("FORMERR: %s", exc)
            return header_only(data, Verdict.FORMERR)
        if q.edns is not None and q.edns.version > 0:
            return simple_reply(q, BADVERS)  # RFC 6891 6.1.3
        if q.qtype in (AXFR, IXFR):
            # Zone transfers: not over UDP (NOTIMP); over TCP not configured (REFUSED).
            return simple_reply(q, REFUSED if tcp else NOTIMP)
        limit = TCP_LIMIT if tcp else (min(q.edns.payload, EDNS_PAYLOAD) if q.edns is not None else 512)
        key = q.key_question + _variant(q, limit)
        entry = self.table.get(key)
        if entry is None:
            ans = self.chain.resolve(q)
            self.last_source = ans.source
            if ans.answer or ans.authority or ans.additional or ans.aa:
                rendered = render(q, ans, limit)
                if not ans.cacheable:
                    return finish(rendered, data, self.store.serial)
                entry = self.table.put(key, rendered, ans.tags)
            else:
                return simple_reply(q, ans.rcode)
        reply = finish(entry.rendered, data, self.store.serial)
        if q.edns is None or not q.edns.options:
            # Queries with EDNS options (dig's fresh COOKIE each run) never repeat exactly: not worth a slot.
            self.table.remember_exact(entry, tcp, data[2:], reply[2:])
        return reply


def _variant(q: Query, limit: int) -> bytes:
    """The EDNS variant of a key: no EDNS, or EDNS with DO; plus the size limit the reply was cut to."""
    if q.edns is None:
        return struct.pack("!BH", 0, limit)
    return struct.pack("!BH", 2 if q.edns.do else 1, limit)

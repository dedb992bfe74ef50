"""The recurse link: iterative resolution from the root hints, for `recursion: iterative`.

Only clients in allow_recursion are served (others get REFUSED and nothing is sent, RFC 5358); names in the
cluster domain are never looked up outside (None: the chain refuses them). Each query walks from the closest
delegation the infrastructure cache knows (dnsd.recurse.infra) with its own work budget (dnsd.recurse.walk),
within the engine's deadline; at most max_concurrent queries walk at once, the excess gets a transient SERVFAIL.
The answer carries the records of the answering zone only; a negative one keeps its SOA (RFC 2308 5). When every
server failed, or the work bound is hit, the client gets SERVFAIL, never NXDOMAIN. Final answers are not cached
here: the shared answer cache wraps this link.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from dnsd.config import Config
from dnsd.engine.acl import ClientAcl
from dnsd.engine.context import QueryContext
from dnsd.proto.answer import REFUSED, SERVFAIL, Answer, in_zone, labels_of
from dnsd.proto.wire import Query
from dnsd.recurse.classify import rcode_text
from dnsd.recurse.hints import Hints, load_hints
from dnsd.recurse.infra import Infra
from dnsd.recurse.walk import Budget, Outcome, Stats, Walker, WorkLimit
from dnsd.upstream.answer import to_answer, upstream_servfail

log = logging.getLogger(__name__)

MAX_CONCURRENT = 1000  # client queries walking at once (as the forwarder's cap)
TIME_LIMIT = 4.5  # seconds one query may walk: inside the engine's 5 s ASYNC_DEADLINE, so we answer first


def _name(wire: bytes) -> dns.name.Name:
    """The question name as dnspython's Name, from its wire form (already checked by the query parser: plain
    labels, no compression pointer); a third of dns.name.from_wire's cost on this per-query path."""
    labels: list[bytes] = []
    i = 0
    while True:
        n = wire[i]
        labels.append(wire[i + 1 : i + 1 + n])
        if n == 0:
            return dns.name.Name(labels)
        i += 1 + n


class Recursor:
    """The async-tail link that resolves iteratively from the root."""

    name = "recurse"

    def __init__(
        self,
        hints: Hints,
        *,
        cluster_domain: str = "cluster.local",
        allow: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster_domain = labels_of(cluster_domain)
        self.acl = ClientAcl(allow)
        self.stats = Stats()
        self.infra = Infra(clock)
        self.walker = Walker(hints, self.infra, self.stats)
        self.max_concurrent = MAX_CONCURRENT
        self.time_limit = TIME_LIMIT
        self.inflight = 0
        self.queries = 0  # client queries walked
        self.shed = 0  # answered SERVFAIL at once: max_concurrent were walking
        self.refused = 0  # from clients outside allow_recursion
        self.failed = 0  # answered SERVFAIL: every server failed, or the work bound was hit

    def allowed(self, ctx: QueryContext) -> bool:
        return ctx.internal or self.acl.allowed(ctx.client)

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None:
        if in_zone(q.labels, self.cluster_domain):
            return None  # our own domain is never asked outside (issue 6), as the forwarder
        if not self.allowed(ctx):
            self.refused += 1
            return Answer(REFUSED, aa=False, cacheable=False)  # and nothing is sent
        if self.inflight >= self.max_concurrent:
            self.shed += 1
            return upstream_servfail(transient=True)
        self.inflight += 1
        self.queries += 1
        try:
            return await self._resolve(q, ctx)
        finally:
            self.inflight -= 1

    async def _resolve(self, q: Query, ctx: QueryContext) -> Answer:
        qname = _name(q.qname_wire)  # the client's spelling (RFC 4343)
        do = q.edns is not None and q.edns.do
        tracing = ctx.trace is not None
        budget = Budget(asyncio.get_running_loop().time() + self.time_limit, note=ctx.note if tracing else None)
        try:
            out = await self.walker.lookup(qname, q.qtype, budget, do=do)
        except WorkLimit as exc:
            self.stats.work_limits += 1
            ctx.note(f"recurse: work bound hit ({exc}): SERVFAIL")
            log.debug("recurse: %s %s: work bound hit: %s", qname, q.qtype, exc)
            self.failed += 1
            return upstream_servfail()
        if tracing:
            ctx.note(f"recurse: {budget.sent} queries sent; {rcode_text(out.rcode)}")
        if out.rcode == SERVFAIL:
            self.failed += 1
            return upstream_servfail()
        return to_answer(_message(out))

    def start(self) -> None:
        """Nothing runs in the background: every walk belongs to the client query that caused it."""

    async def close(self) -> None:
        """The shared questions still in flight are cancelled; each query's sockets close with it."""
        await self.walker.close()


def _message(out: Outcome) -> dns.message.Message:
    msg = dns.message.Message()
    msg.set_rcode(dns.rcode.Rcode.make(out.rcode))
    msg.answer = list(out.answer)
    msg.authority = list(out.authority)
    msg.additional = list(out.additional)
    return msg


def make_recursor(cfg: Config) -> Recursor | None:
    """The recurse link the config asks for: only with `recursion: iterative`. A bad root_hints file fails here."""
    if cfg.recursion != "iterative":
        return None
    return Recursor(load_hints(cfg.root_hints), cluster_domain=cfg.cluster.domain, allow=cfg.allow_recursion)

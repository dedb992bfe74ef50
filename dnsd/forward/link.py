"""The forward link: sends names we are not authoritative for to upstream resolvers, as CoreDNS's `forward`.

Upstreams come from the config (`ip`, `ip:port`, `[v6]:port`, `tls://IP[:port]#name` for DNS over TLS, see
dnsd.upstream.tls) or a resolv.conf file; `forward.domains` adds
per-domain stubs, the most specific suffix winning. One query tries the upstreams of its group once each, in
the order the policy gives, with the ones marked down last; a timeout, network error, malformed reply, SERVFAIL
or REFUSED moves on to the next. MAX_FAILS transport failures in a row mark an upstream down, and a background
probe (`. NS`, as CoreDNS's health check) asks it every PROBE_INTERVAL until it answers. When every upstream
failed the client gets SERVFAIL, never NXDOMAIN, within timeout x upstreams (plus TCP retries).

Loops (CoreDNS's `loop` plugin): once the link joins the chain, start() asks every upstream a random name
`<hex>.dnsd-loop.` of type HINFO. An upstream that forwards it back to us (directly or through others) makes
that exact name arrive here: the upstream is disabled for good (an ERROR says so) and the looped probe gets
SERVFAIL, which ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import ssl
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass

from dnsd.config import Config, ForwardConfig, ListenAddress
from dnsd.engine.acl import ClientAcl
from dnsd.engine.context import QueryContext
from dnsd.errors import DnsdError
from dnsd.forward.resolvconf import read_resolv_conf
from dnsd.observe.counts import UPSTREAM_BUCKETS, Histogram
from dnsd.proto.answer import NOERROR, NXDOMAIN, REFUSED, Answer, Labels, in_zone, labels_of
from dnsd.proto.wire import Query
from dnsd.upstream.answer import to_answer, upstream_servfail
from dnsd.upstream.client import (
    MalformedReply,
    Server,
    UpstreamError,
    UpstreamTimeout,
    exchange,
    make_request,
    parse_server,
)
from dnsd.upstream.tls import TlsServer, TlsUpstream, make_context, parse_tls_server

log = logging.getLogger(__name__)

MAX_FAILS = 2  # transport failures in a row that mark an upstream down (CoreDNS forward's max_fails)
PROBE_INTERVAL = 0.5  # seconds between health probes of a down upstream (CoreDNS's health_check default)
MAX_CONCURRENT = 1000  # client queries waiting on upstreams at once (CoreDNS's max_concurrent in the k8s addon)
TSIG = 250
HINFO = 13
LOOP_ZONE = "dnsd-loop"  # the probe names' parent (not a real TLD: nobody else answers it)
_ROOT = dns.name.root


class Upstream:
    """One upstream server and its health (shared by every group that names it)."""

    def __init__(self, server: Server | TlsServer, tls: TlsUpstream | None = None) -> None:
        self.server = server
        self.tls = tls  # the kept-open DoT connection, for tls:// upstreams
        self.fails = 0
        self.down = False
        self.disabled = False  # it forwarded our loop probe back to us: never asked again
        # For the metrics (dnsd_upstream_*): plain counters, read at scrape time.
        self.requests = 0
        self.responses: dict[int, int] = {}  # by rcode
        self.failures: dict[str, int] = {}  # timeout, network, malformed
        self.duration = Histogram(UPSTREAM_BUCKETS)

    def failed(self, exc: Exception) -> None:
        reason = (
            "timeout"
            if isinstance(exc, UpstreamTimeout)
            else "malformed"
            if isinstance(exc, MalformedReply)
            else "network"
        )
        self.failures[reason] = self.failures.get(reason, 0) + 1

    async def exchange(self, request: dns.message.Message, per_try: float) -> dns.message.Message:
        if self.tls is not None:
            return await self.tls.query(request, per_try)
        assert isinstance(self.server, Server)
        return await exchange(self.server, request, per_try)


class Group:
    """The upstreams of one domain (the default group's domain is the root) and the policy that orders them."""

    def __init__(self, domain: Labels, upstreams: Sequence[Upstream], policy: str) -> None:
        self.domain = domain
        self.upstreams = list(upstreams)
        self.policy = policy
        self._next = 0

    def order(self) -> list[Upstream]:
        """The upstreams to try for one query: in policy order, the ones marked down last (still tried: a
        down upstream may be the only one left)."""
        ups = self.upstreams
        if self.policy == "random":
            ups = random.sample(ups, len(ups))
        elif self.policy == "round_robin" and ups:
            start = self._next % len(ups)
            self._next = start + 1
            ups = ups[start:] + ups[:start]
        ups = [u for u in ups if not u.disabled]
        return [u for u in ups if not u.down] + [u for u in ups if u.down]


def _parse_upstream(text: str) -> Server | TlsServer:
    """'ip', 'ip:port', '[v6]:port' or 'tls://IP[:port]#name'."""
    return parse_tls_server(text) if text.startswith("tls://") else parse_server(text)


class Forwarder:
    """The async-tail link that forwards."""

    name = "forward"

    def __init__(
        self,
        cfg: ForwardConfig,
        *,
        listen: Iterable[ListenAddress] = (),
        cluster_domain: str = "cluster.local",
        allow: Iterable[str] = (),
    ) -> None:
        self.timeout = cfg.timeout
        self.listen = list(listen)
        self.cluster_domain = labels_of(cluster_domain)
        self.acl = ClientAcl(allow)
        self.max_fails = MAX_FAILS
        self.probe_interval = PROBE_INTERVAL
        self.max_concurrent = MAX_CONCURRENT
        self.inflight = 0
        self.shed = 0  # queries answered SERVFAIL at once because max_concurrent were waiting
        self.refused = 0  # queries from clients outside allow_recursion
        self._upstreams: dict[Server | TlsServer, Upstream] = {}
        self._probes: dict[Server | TlsServer, asyncio.Task[None]] = {}
        self.tls_ca = cfg.tls_ca
        self._tls_context: ssl.SSLContext | None = None
        self._loop_probes: dict[Labels, Upstream] = {}  # probe name -> the upstream it was sent to
        self._loop_task: asyncio.Task[None] | None = None
        self.default = Group((), self._resolve_upstreams(cfg.upstreams), cfg.policy)
        stubs = [Group(labels_of(d), self._resolve_upstreams(ups), cfg.policy) for d, ups in cfg.domains]
        self.stubs = sorted(stubs, key=lambda g: len(g.domain), reverse=True)  # most specific first

    def _resolve_upstreams(self, specs: Iterable[str]) -> list[Upstream]:
        out: list[Upstream] = []
        for spec in specs:
            servers: list[Server | TlsServer]
            if spec.startswith(("/", ".")):
                servers = list(read_resolv_conf(Path(spec), self.listen))
            else:
                servers = [_parse_upstream(spec)]
            for server in servers:
                up = self._upstreams.get(server)
                if up is None:
                    up = self._upstreams[server] = self._make_upstream(server)
                if up not in out:
                    out.append(up)
        return out

    def _make_upstream(self, server: Server | TlsServer) -> Upstream:
        if isinstance(server, Server):
            return Upstream(server)
        if self._tls_context is None:
            # One context for every DoT upstream; a bad tls_ca file fails here, at start, not on the first query.
            try:
                self._tls_context = make_context(self.tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise DnsdError(f"forward.tls_ca: cannot load {str(self.tls_ca)!r}: {exc}") from exc
        return Upstream(server, TlsUpstream(server, self._tls_context))

    def upstream(self, text: str) -> Upstream:
        """The health record of an upstream ('ip:port' or 'tls://...'), for tests and, later, metrics."""
        return self._upstreams[_parse_upstream(text)]

    def all_upstreams(self) -> list[Upstream]:
        """Every upstream, default and stub, once each (metrics)."""
        return list(self._upstreams.values())

    @property
    def servers(self) -> list[Server | TlsServer]:
        return [u.server for u in self.default.upstreams]

    def group_for(self, name: Labels) -> Group:
        """The most specific stub whose domain holds the name, else the default upstreams."""
        for group in self.stubs:
            if in_zone(name, group.domain):
                return group
        return self.default

    def allowed(self, ctx: QueryContext) -> bool:
        return ctx.internal or self.acl.allowed(ctx.client)

    async def resolve(self, q: Query, ctx: QueryContext) -> Answer | None:
        if self._loop_probes and len(q.labels) == 2 and q.labels[1] == LOOP_ZONE:
            looped = self._loop_probes.pop(q.labels, None)
            if looped is not None:
                return self._loop_found(looped, q)
        if in_zone(q.labels, self.cluster_domain):
            # Never forwarded, even when cluster.fallthrough names the cluster domain: upstream data for our
            # own domain could shadow or invent services (issue 6; dnsd differs from CoreDNS on purpose).
            return None
        if not self.allowed(ctx):
            self.refused += 1
            return Answer(REFUSED, aa=False, cacheable=False)  # and no upstream query is made
        group = self.group_for(q.labels)
        if not group.upstreams:
            return upstream_servfail()
        if self.inflight >= self.max_concurrent:
            self.shed += 1
            return upstream_servfail(transient=True)
        self.inflight += 1
        try:
            return await self._forward(q, group, ctx)
        finally:
            self.inflight -= 1

    async def _forward(self, q: Query, group: Group, ctx: QueryContext) -> Answer:
        qname = dns.name.from_wire(q.qname_wire, 0)[0]  # the client's spelling (RFC 4343)
        do = q.edns is not None and q.edns.do
        for up in group.order():
            request = make_request(qname, q.qtype, do)
            if q.flags & 0x0010:
                request.flags |= dns.flags.CD  # RFC 4035 3.2.2: the client validates itself
            up.requests += 1
            sent = time.perf_counter()
            try:
                reply = await up.exchange(request, self.timeout)
            except UpstreamError as exc:
                up.failed(exc)
                self._failed(up, exc)
                ctx.note(f"forward: {up.server} failed: {exc}")
                continue
            self._answered(up)
            rcode = reply.rcode()
            up.duration.observe(time.perf_counter() - sent)
            up.responses[rcode] = up.responses.get(rcode, 0) + 1
            if ctx.trace is not None:
                ctx.note(f"forward: {up.server} answered {dns.rcode.to_text(rcode)}, {len(reply.answer)} RRsets")
            if rcode in (NOERROR, NXDOMAIN):
                return to_answer(reply)
            log.debug("forward: %s answered %s for %s; trying the next", up.server, rcode, qname)
        return upstream_servfail()

    # ------------------------------------------------------------ loops

    def start(self) -> None:
        """Send the loop probes in one owned task (App.start, once the link is in the chain)."""
        if self._loop_task is None and self._upstreams:
            self._loop_task = asyncio.get_running_loop().create_task(self._probe_loops(), name="forward loop probes")

    @property
    def loop_probes_done(self) -> bool:
        return self._loop_task is None or self._loop_task.done()

    async def _probe_loops(self) -> None:
        probes: list[tuple[dns.name.Name, Upstream]] = []
        for up in self._upstreams.values():
            label = secrets.token_hex(8)
            self._loop_probes[(label, LOOP_ZONE)] = up
            probes.append((dns.name.from_text(f"{label}.{LOOP_ZONE}."), up))
        try:
            # A looped probe reaches resolve() before its own reply comes back to us, so once every probe has its
            # reply (or timed out) none can still be on its way round.
            await asyncio.gather(*(self._loop_probe(name, up) for name, up in probes))
        finally:
            self._loop_probes.clear()

    async def _loop_probe(self, name: dns.name.Name, up: Upstream) -> None:
        try:
            await up.exchange(make_request(name, HINFO), self.timeout)
        except UpstreamError as exc:
            log.debug("forward: loop probe to %s: %s", up.server, exc)

    def _loop_found(self, up: Upstream, q: Query) -> Answer:
        up.disabled = True
        log.error(
            "forward: upstream %s sent our loop probe %s back to us: a forwarding loop; it is disabled "
            "(fix its configuration and restart dnsd)",
            up.server,
            q.name_text,
            extra={"upstream": str(up.server)},
        )
        return upstream_servfail()

    # ------------------------------------------------------------ health

    def _answered(self, up: Upstream) -> None:
        up.fails = 0
        if up.down:
            self._mark_up(up)

    def _failed(self, up: Upstream, exc: Exception) -> None:
        up.fails += 1
        log.debug("forward: %s failed: %s", up.server, exc)
        if up.fails >= self.max_fails and not up.down:
            up.down = True
            log.warning(
                "forward: upstream %s is down (%d failures in a row: %s); probing it",
                up.server,
                up.fails,
                exc,
                extra={"upstream": str(up.server)},
            )
            if up.server not in self._probes:
                task = asyncio.get_running_loop().create_task(self._probe(up), name=f"probe {up.server}")
                self._probes[up.server] = task
                task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        for server, t in list(self._probes.items()):
            if t is task:
                del self._probes[server]

    def _mark_up(self, up: Upstream) -> None:
        up.down = False
        up.fails = 0
        log.warning("forward: upstream %s answers again", up.server, extra={"upstream": str(up.server)})

    async def _probe(self, up: Upstream) -> None:
        """Ask a down upstream `. NS` every probe_interval until it answers (any rcode: it is alive)."""
        while up.down:
            await asyncio.sleep(self.probe_interval)
            try:
                await up.exchange(make_request(_ROOT, 2), self.timeout)
            except UpstreamError:
                continue
            if up.down:
                self._mark_up(up)

    async def close(self) -> None:
        """Stop the probes and close the DoT connections (app shutdown)."""
        tasks = list(self._probes.values()) + ([self._loop_task] if self._loop_task is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probes.clear()
        await asyncio.gather(*(u.tls.close() for u in self._upstreams.values() if u.tls is not None))


def make_forwarder(cfg: Config) -> Forwarder | None:
    """The forward link the config asks for: none with `recursion: off` (or iterative) or `forward: null`."""
    if cfg.recursion != "forward" or cfg.forward is None:
        return None
    return Forwarder(cfg.forward, listen=cfg.listen, cluster_domain=cfg.cluster.domain, allow=cfg.allow_recursion)

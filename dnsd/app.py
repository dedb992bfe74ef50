"""The application: builds the store, the chain and the listeners from a Config, and starts and stops them."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

from dnsd.cache.link import CacheLink
from dnsd.cache.store import AnswerCache
from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import Config, FilesSource
from dnsd.engine.acl import ClientAcl
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.errors import DnsdError
from dnsd.forward.link import make_forwarder
from dnsd.http.server import HttpServer
from dnsd.observe.metrics import Metrics
from dnsd.proto.answer import Labels
from dnsd.recurse.link import make_recursor
from dnsd.sources.base import Source
from dnsd.sources.files import FileSource
from dnsd.store.store import Store
from dnsd.transport.server import DnsServer
from dnsd.zones.link import ZoneHandler
from dnsd.zones.source import ZoneSource

log = logging.getLogger(__name__)


def server_ips(cfg: Config) -> list[str]:
    """Our own non-loopback addresses, for the apex NS answer (CoreDNS nsAddrs)."""
    ips: list[str] = []
    wildcard = False
    for addr in cfg.listen:
        ip = ipaddress.ip_address(addr.host)
        if ip.is_unspecified:
            wildcard = True
        elif not ip.is_loopback:
            ips.append(str(ip))
    if wildcard:
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None):
                ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
                if not ip.is_loopback and str(ip) not in ips:
                    ips.append(str(ip))
        except OSError:
            pass
    return ips


def check_buildable(cfg: Config) -> None:
    """What `run` refuses before it listens, and `dnsd check-config` reports: a source backend that is not
    built yet, or a files source whose path exists but is not a directory. A missing directory is fine: it
    is watched until it appears."""
    source = cfg.cluster.source
    if not isinstance(source, FilesSource):
        raise DnsdError(
            f"cluster.source: the {type(source).__name__.removesuffix('Source').lower()} backend "
            "is not built yet; use cluster.source.files"
        )
    if source.path.exists() and not source.path.is_dir():
        what = "is a file, not a directory" if source.path.is_file() else "is not a directory"
        raise DnsdError(f"cluster.source.files: {str(source.path)!r} {what} (of Kubernetes manifests)")


def make_source(cfg: Config, store: Store) -> Source:
    """The one source the config names (cluster.source), behind the Source protocol."""
    check_buildable(cfg)
    source = cfg.cluster.source
    assert isinstance(source, FilesSource)  # check_buildable refused the others
    return FileSource(source.path, store)


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store()
        self.records = ClusterRecords(cfg.cluster, self.store, server_ips(cfg))
        self.zone_link = ZoneHandler()
        # The async tail: names outside our zones (None: REFUSED). It joins the chain once the zone files are
        # loaded (start), so that no name of a zone file is ever forwarded while the zones are still being read.
        self.forwarder = make_forwarder(cfg)
        self.recursor = make_recursor(cfg)  # recursion: iterative (exclusive with forward)
        self.cache = self._make_cache(cfg)
        self.chain = Chain([ClusterHandler(self.records), self.zone_link], cache=self.cache)
        self.engine = Engine(
            self.chain, self.store, log_queries=cfg.log.queries, trace_acl=ClientAcl(cfg.allow_recursion)
        )
        self.zone_source = (
            ZoneSource(cfg.zones, self.zone_link, self.records.zones, self.engine.invalidate)
            if cfg.zones is not None
            else None
        )
        # DNSD_UDP_BATCH=0 turns recvmmsg/sendmmsg off (the tests run both UDP paths).
        batch_io = os.environ.get("DNSD_UDP_BATCH", "1") != "0"
        self.server = DnsServer(self.engine, cfg.listen, cfg.tcp, batch_io)
        self.source = make_source(cfg, self.store)
        self.dns_addresses: list[tuple[str, int]] = []
        self.metrics = Metrics(self)
        self.http = HttpServer(self, cfg.http) if cfg.http is not None else None
        self.started = False  # the first load of every source and zone directory is done
        self.draining = False  # SIGTERM: not ready any more, still answering (the lameduck period)

    def not_ready(self) -> list[str]:
        """Why /ready says 503: empty once every source has synced and every zone file is loaded, while not
        draining."""
        reasons: list[str] = []
        if not self.started:
            reasons.append("the sources and zone files are still being loaded")
        if self.draining:
            reasons.append("draining: dnsd is stopping")
        return reasons

    def _make_cache(self, cfg: Config) -> CacheLink | None:
        """The answer cache in front of the forward or recurse link; none without either, or with size 0."""
        if cfg.cache.size == 0 or (self.forwarder is None and self.recursor is None):
            return None
        store = AnswerCache(cfg.cache, self.is_ours)
        return CacheLink(store, ClientAcl(cfg.allow_recursion), cfg.cache.prefetch, cfg.cache.serve_stale)

    def is_ours(self, name: Labels) -> bool:
        """Whether a name is inside a zone we answer for: the cluster domain and its reverse zones, or a zone
        file. Upstream data for such names is never cached or served (dnsd.cache)."""
        return self.records.zone_of(name) is not None or self.zone_link.zone_of(name) is not None

    async def start(self) -> None:
        # Listen first: until the store has synced, absent names get SERVFAIL rather than NXDOMAIN; /ready says 503.
        await self.server.start()
        self.dns_addresses = list(self.server.addresses)
        try:
            if self.http is not None:
                await self.http.start()
            await self.source.start()
            if self.zone_source is not None:
                await self.zone_source.start()  # nothing from the zone files is served before their first load
            if self.forwarder is not None:
                self.chain.tail.append(self.forwarder)
                self.forwarder.start()  # the forwarding-loop probes (dnsd.forward.link)
            if self.recursor is not None:
                self.chain.tail.append(self.recursor)
                self.recursor.start()
            self.started = True
        except BaseException:
            # Failed or cancelled (SIGTERM during the first load): end what the source started, then listen no more.
            if self.zone_source is not None:
                await self.zone_source.stop()
            await self.source.stop()
            await self.server.close()
            if self.http is not None:
                await self.http.close()
            raise

    async def resync(self) -> None:
        """SIGHUP: re-read the sources now (live config reload arrives with a later issue)."""
        await self.source.resync()
        if self.zone_source is not None:
            await self.zone_source.resync()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.zone_source is not None:
            await self.zone_source.stop()
        await self.source.stop()
        await self.server.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.recursor is not None:
            await self.recursor.close()
        if self.cache is not None:
            await self.cache.close()

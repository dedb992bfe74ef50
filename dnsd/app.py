"""The application: builds the store, the chain and the listeners from a Config; starts, reloads, drains and stops
them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import ipaddress
import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import dns.rdata

from dnsd.cache.link import CacheLink
from dnsd.cache.store import AnswerCache
from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import (
    Config,
    ConfigErrors,
    FilesSource,
    Overrides,
    read_config,
)
from dnsd.config import check_buildable as check_buildable  # re-exported: it lived here before
from dnsd.engine.acl import ClientAcl
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.errors import ConfigError, DnsdError
from dnsd.forward.link import Forwarder, make_forwarder
from dnsd.http.server import HttpServer
from dnsd.observe.logs import LogSetup
from dnsd.observe.metrics import Metrics
from dnsd.proto.answer import Labels, zone_tag
from dnsd.recurse.link import Recursor, make_recursor
from dnsd.sources.base import Source
from dnsd.sources.files import FileSource
from dnsd.store.snapshot import Snapshots
from dnsd.store.store import Store
from dnsd.transport.server import DnsServer, Listener
from dnsd.zones.link import ZoneHandler
from dnsd.zones.source import ZoneSource

if TYPE_CHECKING:
    from dnsd.workers.spec import WorkerSpec

log = logging.getLogger(__name__)

# dnspython imports each record type's module the first time it meets the type, and a failed import (EMFILE under
# file-descriptor exhaustion, the hostile-client case) is remembered for the life of the process: from then on every
# AAAA in a zone file or an upstream reply would be unparsable generic rdata. Load them all now, while imports work.
dns.rdata.load_all_types(disable_dynamic_load=True)  # type: ignore[no-untyped-call]


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


def make_source(cfg: Config, store: Store) -> Source:
    """The one source the config names (cluster.source), behind the Source protocol. The API and etcd backends
    are imported only when named (their modules: dnsd.sources.kubernetes, dnsd.sources.etcd)."""
    check_buildable(cfg)
    source = cfg.cluster.source
    if isinstance(source, FilesSource):
        return FileSource(source.path, store)
    module = importlib.import_module(f"dnsd.sources.{type(source).__name__.removesuffix('Source').lower()}")
    made: Source = module.make(source, cfg.cluster, store)
    return made


def _digest(path: Path) -> bytes | None:
    """What the config file holds now, to tell a real change from an event that changed nothing."""
    try:
        with path.open("rb") as f:
            return hashlib.sha256(f.read(1 << 21)).digest()
    except OSError:
        return None


def changed_keys(old: Config, new: Config) -> list[str]:
    """The config keys whose value differs, as dotted paths (cluster.* and log.* by sub-key): what a reload
    logs and acts on."""
    keys: list[str] = []
    for name in Config.__dataclass_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name in ("cluster", "log"):
            keys += [f"{name}.{sub}" for sub in type(a).__dataclass_fields__ if getattr(a, sub) != getattr(b, sub)]
        else:
            keys.append(name)
    return keys


class App:
    def __init__(
        self,
        cfg: Config,
        config_path: Path | None = None,
        overrides: Overrides | None = None,
        worker: WorkerSpec | None = None,
    ) -> None:
        # One of `workers` processes (dnsd.workers): the supervisor owns the listen sockets and the HTTP port.
        self.worker = worker
        if worker is not None:
            cfg = replace(cfg, listen=worker.listen_addresses())
        self.cfg = cfg
        # Where a reload reads the config from (None: built-in defaults, nothing to reload), and the command-line
        # flags applied over it every time.
        self.config_path = config_path
        self.overrides = overrides if overrides is not None else Overrides()
        self.logs: LogSetup | None = None  # the process's log output (cli.py); a reload applies log.* to it
        self.store = Store()
        self.records = ClusterRecords(cfg.cluster, self.store, server_ips(cfg))
        self.cluster_link = ClusterHandler(self.records)
        self.zone_link = ZoneHandler()
        # The async tail: names outside our zones (None: REFUSED). It joins the chain once the zone files are
        # loaded (start), so that no name of a zone file is ever forwarded while the zones are still being read.
        self.forwarder = make_forwarder(cfg)
        self.recursor = make_recursor(cfg)  # recursion: iterative (exclusive with forward)
        self.cache = self._make_cache(cfg, self.forwarder, self.recursor)
        self.chain = Chain([self.cluster_link, self.zone_link], cache=self.cache)
        # Until the tail joins (start), names it would serve get SERVFAIL, not REFUSED: "not yet", not "never".
        self.chain.waiting = self.forwarder is not None or self.recursor is not None
        self.engine = Engine(
            self.chain, self.store, log_queries=cfg.log.queries, trace_acl=ClientAcl(cfg.allow_recursion)
        )
        self.zone_source = self._make_zone_source(cfg)
        # DNSD_UDP_BATCH=0 turns recvmmsg/sendmmsg off (the tests run both UDP paths).
        batch_io = os.environ.get("DNSD_UDP_BATCH", "1") != "0"
        shared = worker.shared() if worker is not None else None
        self.server = DnsServer(self.engine, cfg.listen, cfg.tcp, batch_io, shared)
        self.source = make_source(cfg, self.store)
        # The last-known-good snapshot (cluster.snapshot): loaded before the source starts, written after changes.
        self.snapshot = Snapshots(cfg.cluster.snapshot, cfg, self.store) if cfg.cluster.snapshot is not None else None
        self.dns_addresses: list[tuple[str, int]] = []
        self.metrics = Metrics(self)
        self.http = self._make_http(cfg)
        self.started = False  # the first load of every source and zone directory is done
        self.draining = False  # SIGTERM: not ready any more, still answering (the lameduck period)
        # Config reloads (SIGHUP, or a change to the config file), for the metrics and the status page.
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_reload_ok_time = time.time()  # the config in force was read then (at start, or the last reload)
        self.last_reload_error: list[str] = []  # every reason the last failed reload gave; empty after a good one
        self._reload_lock = asyncio.Lock()
        self._config_digest = _digest(config_path) if config_path is not None else None
        self._config_stop = asyncio.Event()
        self._config_task: asyncio.Task[None] | None = None
        self.config_armed = asyncio.Event()  # set once the config file's directory is watched (tests wait on it)

    def _make_http(self, cfg: Config) -> HttpServer | None:
        """The HTTP listener: on cfg.http; a worker's on its private unix socket (its supervisor serves cfg.http
        and reads the workers' through theirs)."""
        if cfg.http is None:
            return None
        if self.worker is not None:
            return HttpServer(self, cfg.http, unix=self.worker.http) if self.worker.http is not None else None
        return HttpServer(self, cfg.http)

    def not_ready(self) -> list[str]:
        """Why /ready says 503: empty once every source has synced and every zone file is loaded, while not
        draining."""
        reasons: list[str] = []
        if not self.started:
            reasons.append("the sources and zone files are still being loaded")
        if self.draining:
            reasons.append("draining: dnsd is stopping")
        return reasons

    def ready_notes(self) -> list[str]:
        """What /ready says with its 200: data that serves but is stale. A snapshot the source has not confirmed
        yet is such data: /ready stays 200 because a 503 takes the pod out of the kube-dns Service, and when every
        replica restarts during an API outage that leaves the cluster with no DNS at all, which is what the
        snapshot is there to prevent. The staleness shows in the body, in the data age and in the logs."""
        return self.snapshot.ready_notes() if self.snapshot is not None else []

    def data_age(self) -> float | None:
        """Seconds since the data serving now was confirmed current: the snapshot's age while it serves
        unconfirmed, else the source's own (None when the source does not tell)."""
        if self.snapshot is not None and (age := self.snapshot.data_age()) is not None:
            return age
        source_age = getattr(self.source, "data_age", None)
        return float(source_age()) if source_age is not None else None

    def _make_cache(self, cfg: Config, forwarder: Forwarder | None, recursor: Recursor | None) -> CacheLink | None:
        """The answer cache in front of the forward or recurse link; none without either, or with size 0."""
        if cfg.cache.size == 0 or (forwarder is None and recursor is None):
            return None
        store = AnswerCache(cfg.cache, self.is_ours)
        return CacheLink(store, ClientAcl(cfg.allow_recursion), cfg.cache.prefetch, cfg.cache.serve_stale)

    def _make_zone_source(self, cfg: Config) -> ZoneSource | None:
        if cfg.zones is None:
            return None
        return ZoneSource(cfg.zones, self.zone_link, self.records.zones, self.engine.invalidate)

    def is_ours(self, name: Labels) -> bool:
        """Whether a name is inside a zone we answer for: the cluster domain and its reverse zones, or a zone
        file. Upstream data for such names is never cached or served (dnsd.cache)."""
        return self.records.zone_of(name) is not None or self.zone_link.zone_of(name) is not None

    async def start(self) -> None:
        # Listen first: until the store has synced, absent names get SERVFAIL rather than NXDOMAIN; /ready says 503.
        # A restarted worker listens last instead: its siblings answer until its data is loaded.
        late = self.server.joins_late
        if not late:
            await self.server.start()
            self.dns_addresses = list(self.server.addresses)
        try:
            if self.http is not None:
                await self.http.start()
            if self.snapshot is not None and await self.snapshot.restore():
                # Serving the snapshot already: the source starts in the snapshot's task and confirms it later
                # (a source that cannot reach its API server may take minutes; a failure there is logged).
                self.snapshot.confirm_later(self.source)
            else:
                await self.source.start()
            if self.snapshot is not None:
                self.snapshot.start_writing()
            if self.zone_source is not None:
                await self.zone_source.start()  # nothing from the zone files is served before their first load
            self._start_tail()
            if late:
                await self.server.start()
                self.dns_addresses = list(self.server.addresses)
                log.info("listening again: joined the SO_REUSEPORT groups of %s", self._shown_addresses())
            if self.config_path is not None:
                self._config_task = asyncio.create_task(self._watch_config(), name="dnsd-config-watch")
            self.started = True
        except BaseException:
            # Failed or cancelled (SIGTERM during the first load): end what the source started, then listen no more.
            await self._stop_config_watch()
            if self.snapshot is not None:
                await self.snapshot.stop_confirming()
            if self.zone_source is not None:
                await self.zone_source.stop()
            await self.source.stop()
            await self.server.close()
            if self.http is not None:
                await self.http.close()
            raise

    def _shown_addresses(self) -> str:
        return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.server.addresses)

    def _start_tail(self) -> None:
        self.chain.tail = [link for link in (self.forwarder, self.recursor) if link is not None]
        self.chain.waiting = False
        if self.forwarder is not None:
            self.forwarder.start()  # the forwarding-loop probes (dnsd.forward.link)
        if self.recursor is not None:
            self.recursor.start()

    async def resync(self) -> None:
        """SIGHUP: reload the config (when dnsd was started from a file), then re-read the sources now."""
        if self.config_path is not None:
            await self.reload()
        await self.source.resync()
        if self.zone_source is not None:
            await self.zone_source.resync()

    # ------------------------------------------------------------ live reload

    async def reload(self) -> bool:
        """Read the config file again through the one validation path (read_config, as `dnsd check-config`)
        and apply what changed. A config that does not validate, or cannot be applied (an address that cannot be
        bound, a root hints file that cannot be read), is logged with every reason and counted, and the config
        in force keeps serving untouched. One reload at a time."""
        if self.config_path is None or not self.started or self.draining:
            return False
        async with self._reload_lock:
            path = self.config_path
            self._config_digest = _digest(path)
            try:
                new = await asyncio.to_thread(read_config, path, self.overrides)
            except ConfigError as exc:
                reasons = exc.reasons if isinstance(exc, ConfigErrors) else str(exc).splitlines()
                return self._reload_failed(reasons)
            try:
                keys = await self.apply(new)
            except (DnsdError, OSError) as exc:
                return self._reload_failed([f"{path}: cannot apply: {exc}"])
            self.reloads_ok += 1
            self.last_reload_ok_time = time.time()
            self.last_reload_error = []
            if keys:
                log.info("config reloaded from %s: %s changed", path, ", ".join(keys), extra={"file": str(path)})
            else:
                log.info("config reloaded from %s: nothing changed", path, extra={"file": str(path)})
            return True

    def _reload_failed(self, reasons: list[str]) -> bool:
        self.reloads_failed += 1
        self.last_reload_error = reasons
        path = str(self.config_path)
        for reason in reasons:
            log.error("config reload refused: %s", reason, extra={"file": path})
        log.error("config reload refused (%d problems): the config in force keeps serving", len(reasons))
        return False

    async def apply(self, new: Config) -> list[str]:
        """Put a validated config in force; returns the keys that changed. What may fail (binding new DNS and HTTP
        addresses, building the forward and recurse links) is done first and undone on failure; then everything
        is swapped in at once, between two queries; then what was replaced is closed (old listeners drained for
        at most drain.grace seconds). Keys and what a change to each does: see the README (Reload and drain)."""
        old = self.cfg
        if self.worker is not None:
            # The supervisor owns the listen sockets and the HTTP port (dnsd.workers): they stay as they are.
            pinned = new.listen != old.listen
            new = replace(new, listen=old.listen, http=old.http)
            if pinned:
                log.warning(
                    "config reload: listen changes only at the next start when workers > 1",
                    extra={"file": str(self.config_path)},
                )
        keys = changed_keys(old, new)
        if not keys:
            return keys
        changed = set(keys)
        cluster_keys = {k for k in changed if k.startswith("cluster.") and k != "cluster.source"}
        records_change = bool(cluster_keys) or server_ips(new) != server_ips(old)
        tail_change = bool(changed & {"forward", "recursion", "root_hints", "allow_recursion", "listen"}) or (
            "cluster.domain" in changed
        )
        # 1. What may fail, with no effect on what serves.
        forwarder, recursor = self.forwarder, self.recursor
        if tail_change:
            forwarder, recursor = make_forwarder(new), make_recursor(new)
        new_http: HttpServer | None = None
        gone: list[Listener] = []
        try:
            if "http" in changed and new.http is not None:
                new_http = HttpServer(self, new.http)
                await new_http.start()  # bound before the old one closes: a scrape never finds the port closed
            if "listen" in changed or "tcp" in changed:
                gone = await self.server.rebind(new.listen, new.tcp)
        except BaseException:
            if new_http is not None:
                await new_http.close()
            for link in (forwarder, recursor):
                if link is not None and link not in (self.forwarder, self.recursor):
                    await link.close()
            raise
        # 2. The swap: no await until everything serves the new config.
        old_http, old_cache = self.http, self.cache
        old_tail = [x for x in (self.forwarder, self.recursor) if x is not None and x not in (forwarder, recursor)]
        self.cfg = new
        self.dns_addresses = list(self.server.addresses)
        if "http" in changed:
            if new_http is not None and self.http is not None:
                ring = new_http.sampler.ring  # the status page keeps its history: the old samples, then the new
                merged = [*self.http.sampler.ring, *ring]
                ring.clear()
                ring.extend(merged)
            self.http = new_http
        if records_change:
            self.records = ClusterRecords(new.cluster, self.store, server_ips(new))
            self.cluster_link = ClusterHandler(self.records)
            self.chain.links[0] = self.cluster_link
            if self.zone_source is not None:
                self.zone_source.reserved = list(self.records.zones)
        if tail_change:
            self.forwarder, self.recursor = forwarder, recursor
        cache = self.cache
        if records_change or "cache" in changed or (cache is None) != (forwarder is None and recursor is None):
            # A changed cluster domain moves what is "ours" (never cached): start the cache afresh.
            cache = self._make_cache(new, self.forwarder, self.recursor)
        elif cache is not None and "allow_recursion" in changed:
            # The entries stay (an upstream change keeps them too); only who may read them changes.
            cache = CacheLink(cache.cache, ClientAcl(new.allow_recursion), new.cache.prefetch, new.cache.serve_stale)
        self.cache = self.chain.cache = self.engine.cache = cache
        if cache is not None:
            cache.cache.counts = self.engine.counts  # its exact replies' hits fold into the engine's totals
        self.engine.log_queries = new.log.queries
        self.engine.trace_acl = ClientAcl(new.allow_recursion)
        if records_change:
            self.engine.table.clear()  # every pre-rendered answer was rendered by the old records
        if tail_change:
            self._start_tail()
        if self.logs is not None and any(k.startswith("log.") for k in changed):
            self.logs.apply(new.log)
        # 3. What restarts, then what closes.
        if "cluster.source" in changed:
            await self._restart_source(new)
        if "zones" in changed:
            await self._restart_zones(new)
        elif records_change and self.zone_source is not None:
            await self.zone_source.resync()  # a zone file inside the new cluster domain is refused now
        if gone:
            await self.server.retire(gone, new.drain.grace)
        if "http" in changed and old_http is not None:
            await old_http.close()
        for link in old_tail:
            await link.close()
        if old_cache is not None and old_cache is not cache:
            await old_cache.close()
        if "workers" in changed:
            log.warning("config reload: workers changes only at the next start", extra={"file": str(self.config_path)})
        if "cluster.snapshot" in changed:
            log.warning(
                "config reload: cluster.snapshot changes only at the next start", extra={"file": str(self.config_path)}
            )
        return keys

    async def _restart_source(self, new: Config) -> None:
        """cluster.source changed: the old source stops, the new one reads its objects into the same store,
        then whatever only the old one had is deleted. Until then the old objects keep answering."""
        if self.snapshot is not None:
            await self.snapshot.stop_confirming()
        await self.source.stop()
        self.source = make_source(new, self.store)
        await self.source.start()
        # What the new source holds: the files source's merged objects, the others' keys() (None: it cannot tell,
        # and nothing is deleted).
        held = getattr(self.source, "keys", None)
        keep = self.source.merged if isinstance(self.source, FileSource) else (held() if held is not None else None)
        if keep is not None:
            stale = [key for key in self.store.objects if key not in keep]
            if stale:
                self.store.apply([], stale)
        if self.snapshot is not None:
            self.snapshot.source_replaced(new)

    async def _restart_zones(self, new: Config) -> None:
        """zones changed: a new source over the new directory replaces the zone set when its first load is done
        (zones/source.py withdraws the old ones then); zones: null withdraws them all."""
        if self.zone_source is not None:
            await self.zone_source.stop()
        self.zone_source = self._make_zone_source(new)
        if self.zone_source is not None:
            await self.zone_source.start()
        elif self.zone_link.zones:
            tags = {zone_tag(".".join(origin)) for origin in self.zone_link.zones}
            self.zone_link.zones = {}
            self.engine.invalidate(tags)

    async def _watch_config(self) -> None:
        """Reload when the config file changes. The directory is watched, not the file: an editor's rename into
        place and a Kubernetes ConfigMap update (a `..data` symlink swapped in the directory) replace the file
        rather than write it. An event that leaves the content unchanged is ignored."""
        from dnsd.sources.watch import Watch

        assert self.config_path is not None
        path = self.config_path
        while not self._config_stop.is_set():
            try:
                async with Watch(
                    path.parent, self._config_stop, debounce=200, step=50, rust_timeout=1000, recursive=False
                ) as w:
                    self.config_armed.set()
                    while (changes := await w.next()) is not None:
                        if changes and _digest(path) != self._config_digest:
                            log.info("config file %s changed: reloading", path, extra={"file": str(path)})
                            await self.reload()
            except Exception:
                log.exception("%s: watching the config file failed; retrying", path, extra={"file": str(path)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._config_stop.wait(), 1.0)

    async def _stop_config_watch(self) -> None:
        self._config_stop.set()
        task, self._config_task = self._config_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------ drain and stop

    async def drain(self, hurry: asyncio.Event) -> None:
        """SIGTERM: /ready says 503 at once while every listener keeps answering for drain.lameduck seconds (so
        that load balancers and kube-proxy stop sending here), or until `hurry` is set (a second SIGTERM); then
        stop accepting and give the queries in flight and open TCP connections drain.grace seconds."""
        self.draining = True
        cfg = self.cfg.drain
        log.info(
            "draining: /ready says 503; answering for %gs more, then closing the listeners (%gs for what is in "
            "flight); a second SIGTERM closes them now",
            cfg.lameduck,
            cfg.grace,
        )
        await self._stop_config_watch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), cfg.lameduck)
        log.info("lameduck over: closing the listeners")
        await self.server.drain(cfg.grace)
        log.info("listeners closed")

    async def stop(self) -> None:
        await self._stop_config_watch()
        if self.http is not None:
            await self.http.close()
        if self.zone_source is not None:
            await self.zone_source.stop()
        if self.snapshot is not None:
            await self.snapshot.stop_confirming()  # before the source stops: its start() may still be running
        await self.source.stop()
        if self.snapshot is not None:
            await self.snapshot.close()  # the last write, once the source can change nothing any more
        await self.server.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.recursor is not None:
            await self.recursor.close()
        if self.cache is not None:
            await self.cache.close()

"""The Prometheus side of dnsd's counters (docs/metrics.md lists the families): a private registry and one custom
collector that reads the plain integers the hot path keeps (engine, cache, links, store, sources) at scrape
time, so counting costs the hot path no prometheus_client call (issue 7: at most ~0.3 us a query)."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from dnsd import __version__
from dnsd.observe.counts import (
    DURATION_BUCKETS,
    LATENCY_BUCKETS,
    SIZE_BUCKETS,
    Counted,
    Histogram,
    Key,
    QueryCounts,
)
from dnsd.proto.wire import rcode_text

if TYPE_CHECKING:
    from dnsd.app import App


class Totals:
    """One scrape's view of every query counted: the folded counts plus the hits of the live exact slots and
    cached wire replies (read, not reset)."""

    def __init__(self, counts: QueryCounts, live: Iterable[tuple[bytes, Counted]]) -> None:
        self.requests: dict[Key, int] = dict(counts.requests)
        self.duration = {k: h.merged(()) for k, h in counts.duration.items()}
        self.request_size = {k: h.merged(()) for k, h in counts.request_size.items()}
        self.response_size = {k: h.merged(()) for k, h in counts.response_size.items()}
        for query, slot in live:
            if not slot.hits:
                continue
            key = slot.key
            self.requests[key] = self.requests.get(key, 0) + slot.hits
            _hist(self.duration, (key.zone, key.type), DURATION_BUCKETS).observe(0.0, slot.hits)
            _hist(self.request_size, (key.zone, key.proto), SIZE_BUCKETS).observe(slot.qsize, slot.hits)
            _hist(self.response_size, (key.zone, key.proto), SIZE_BUCKETS).observe(slot.rsize, slot.hits)
            counts.sketch(slot, query)  # the NXDOMAIN names: fed with what the slots served since last time


def _hist(table: dict[tuple[str, str], Histogram], key: tuple[str, str], bounds: tuple[float, ...]) -> Histogram:
    h = table.get(key)
    if h is None:
        h = table[key] = Histogram(bounds)
    return h


def _sum_by(requests: dict[Key, int], fields: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for key, n in requests.items():
        labels = tuple(getattr(key, f) for f in fields)
        out[labels] = out.get(labels, 0) + n
    return out


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.cumulative(), h.sum)


class DnsdCollector(Collector):
    """Everything dnsd exports, read from the running App at each scrape."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.started = time.time()

    def server(self) -> str:
        addrs = self.app.dns_addresses
        if not addrs:
            return "dns://"
        host, port = addrs[0]
        return f"dns://[{host}]:{port}" if ":" in host else f"dns://{host}:{port}"

    def collect(self) -> Iterator[Metric]:
        app = self.app
        info = GaugeMetricFamily("dnsd_build_info", "dnsd's version and Python", labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
        yield GaugeMetricFamily("dnsd_start_time_seconds", "Unix time dnsd started", value=self.started)
        yield GaugeMetricFamily("dnsd_ready", "1 while /ready says 200", value=0.0 if app.not_ready() else 1.0)
        totals = self.totals()
        yield from self._queries(totals)
        yield from self._cache(totals)
        yield from self._upstreams()
        yield from self._store()
        yield from self._config()

    # ------------------------------------------------------------ queries

    def live_slots(self) -> Iterator[tuple[bytes, Counted]]:
        engine = self.app.engine
        for table in engine.table.exact:
            yield from list(table.items())
        if engine.cache is not None:
            yield from list(engine.cache.cache.wire.items())

    def totals(self) -> Totals:
        return Totals(self.app.engine.counts, self.live_slots())

    def _queries(self, t: Totals) -> Iterator[Metric]:
        server = self.server()
        fam = CounterMetricFamily(
            "dnsd_dns_requests", "DNS queries answered", labels=["server", "zone", "proto", "family", "type"]
        )
        for (zone, proto, family, qtype), n in sorted(_sum_by(t.requests, ("zone", "proto", "family", "type")).items()):
            fam.add_metric([server, zone, proto, family, qtype], n)
        yield fam
        fam = CounterMetricFamily(
            "dnsd_dns_responses", "DNS replies by rcode and answering link", labels=["server", "zone", "rcode", "link"]
        )
        for (zone, rcode, link), n in sorted(_sum_by(t.requests, ("zone", "rcode", "link")).items()):
            fam.add_metric([server, zone, rcode, link], n)
        yield fam
        dur = _histogram("dnsd_dns_request_duration_seconds", "Time to answer a query", ["server", "zone", "type"])
        for (zone, qtype), h in sorted(t.duration.items()):
            _add_histogram(dur, [server, zone, qtype], h)
        yield dur
        for name, doc, table in (
            ("dnsd_dns_request_size_bytes", "Query sizes", t.request_size),
            ("dnsd_dns_response_size_bytes", "Reply sizes", t.response_size),
        ):
            fam_h = _histogram(name, doc, ["server", "zone", "proto"])
            for (zone, proto), h in sorted(table.items()):
                _add_histogram(fam_h, [server, zone, proto], h)
            yield fam_h
        c = self.app.engine.counters
        dropped = CounterMetricFamily("dnsd_dns_dropped", "Queries not answered", labels=["server", "reason"])
        dropped.add_metric([server, "header"], c.dropped)
        yield dropped
        shed = CounterMetricFamily(
            "dnsd_dns_shed", "Queries answered SERVFAIL without trying", labels=["server", "reason"]
        )
        shed.add_metric([server, "inflight"], c.shed)
        shed.add_metric([server, "deadline"], c.deadline)
        yield shed
        by_ns = _sum_by(t.requests, ("namespace", "rcode"))
        req = CounterMetricFamily(
            "dnsd_namespace_requests", "Cluster-domain queries by namespace", labels=["namespace"]
        )
        nx = CounterMetricFamily("dnsd_namespace_nxdomain", "Their NXDOMAIN replies", labels=["namespace"])
        per_ns: dict[str, list[int]] = {}
        for (ns, rcode), n in by_ns.items():
            if not ns:
                continue
            pair = per_ns.setdefault(ns, [0, 0])
            pair[0] += n
            if rcode == "NXDOMAIN":
                pair[1] += n
        for ns, (n, n_nx) in sorted(per_ns.items()):
            req.add_metric([ns], n)
            nx.add_metric([ns], n_nx)
        yield req
        yield nx

    # ------------------------------------------------------------ cache

    def _cache(self, t: Totals) -> Iterator[Metric]:
        link = self.app.engine.cache
        entries = GaugeMetricFamily("dnsd_cache_entries", "Cached answers", labels=["type"])
        hits = CounterMetricFamily("dnsd_cache_hits", "Answers from the cache", labels=["type"])
        names = ("misses", "evictions", "prefetch", "coalesced")
        docs = (
            "Cache lookups that went on upstream",
            "Entries evicted for room",
            "Entries refreshed before expiry",
            "Queries that waited on an identical one in flight",
        )
        values = [0, 0, 0, 0]
        stale = 0
        success = denial = hit_success = hit_denial = 0
        if link is not None:
            st = link.stats
            values = [st.misses, st.evictions, st.prefetches, st.coalesced]
            stale = st.stale_served
            for entry in list(link.cache.entries.values()):
                if entry.answer.rcode == 0 and entry.answer.answer:
                    success += 1
                else:
                    denial += 1
            for key, n in t.requests.items():
                if key.link == "cache":
                    if key.rcode == "NOERROR":
                        hit_success += n
                    else:
                        hit_denial += n
        entries.add_metric(["success"], success)
        entries.add_metric(["denial"], denial)
        hits.add_metric(["success"], hit_success)
        hits.add_metric(["denial"], hit_denial)
        yield entries
        yield hits
        for name, doc, value in zip(names, docs, values, strict=True):
            yield CounterMetricFamily(f"dnsd_cache_{name}", doc, value=value)
        yield CounterMetricFamily("dnsd_cache_served_stale", "Expired answers served (RFC 8767)", value=stale)

    # ------------------------------------------------------------ upstreams

    def _upstreams(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("dnsd_upstream_requests", "Queries sent upstream", labels=["to", "link"])
        responses = CounterMetricFamily("dnsd_upstream_responses", "Upstream replies", labels=["to", "rcode"])
        failures = CounterMetricFamily("dnsd_upstream_failures", "Upstream tries that failed", labels=["to", "reason"])
        duration = _histogram("dnsd_upstream_request_duration_seconds", "Upstream round trips", ["to"])
        healthy = GaugeMetricFamily("dnsd_upstream_healthy", "1 up, 0 marked down or disabled", labels=["to"])
        shed = CounterMetricFamily("dnsd_upstream_shed", "Queries refused for max_concurrent", labels=["link"])
        fwd = self.app.forwarder
        if fwd is not None:
            for up in fwd.all_upstreams():
                to = str(up.server)
                requests.add_metric([to, "forward"], up.requests)
                for rcode, n in sorted(up.responses.items()):
                    responses.add_metric([to, rcode_text(rcode)], n)
                for reason in ("timeout", "network", "malformed"):
                    failures.add_metric([to, reason], up.failures.get(reason, 0))
                _add_histogram(duration, [to], up.duration)
                healthy.add_metric([to], 0.0 if up.down or up.disabled else 1.0)
            shed.add_metric(["forward"], fwd.shed)
        rec: Any = getattr(self.app, "recursor", None)
        recurse = CounterMetricFamily("dnsd_recurse_queries", "Iterative resolution: queries sent", labels=["outcome"])
        if rec is not None:
            shed.add_metric(["recurse"], rec.shed)
            stats = rec.stats
            for outcome in ("answers", "referrals", "nxdomain", "nodata", "lame", "errors", "timeouts"):
                recurse.add_metric([outcome], getattr(stats, outcome, 0))
        yield from (requests, responses, failures, duration, healthy, shed, recurse)

    # ------------------------------------------------------------ store, sources, config

    def _store(self) -> Iterator[Metric]:
        app = self.app
        kinds: dict[str, int] = {}
        for kind, _ns, _name in list(app.store.objects):
            kinds[kind] = kinds.get(kind, 0) + 1
        objects = GaugeMetricFamily("dnsd_store_objects", "Kubernetes objects held", labels=["kind"])
        for kind in ("Service", "EndpointSlice", "Endpoints", "Pod", "Namespace"):
            objects.add_metric([kind], kinds.pop(kind, 0))
        for kind, n in sorted(kinds.items()):
            objects.add_metric([kind], n)
        yield objects
        yield GaugeMetricFamily("dnsd_store_generation", "The store's change counter", value=app.store.generation)
        age = GaugeMetricFamily(
            "dnsd_data_age_seconds", "Seconds since the source last confirmed its data is current", labels=["source"]
        )
        latency = _histogram(
            "dnsd_programming_latency_seconds", "From a change in the source to the changed answer served", ["source"]
        )
        source: Any = app.source
        name = type(source).__name__.removesuffix("Source").lower()
        data_age = app.data_age()  # the snapshot's age while it serves unconfirmed, else the source's own
        if data_age is not None:
            age.add_metric([name], data_age)
        prog = getattr(source, "programming", None)
        _add_histogram(latency, [name], prog if isinstance(prog, Histogram) else Histogram(LATENCY_BUCKETS))
        yield age
        yield latency
        yield GaugeMetricFamily("dnsd_zone_files", "Zone files loaded", value=len(app.zone_link.zones))

    def _config(self) -> Iterator[Metric]:
        app: Any = self.app
        reloads = CounterMetricFamily("dnsd_config_reloads", "Config reloads", labels=["result"])
        reloads.add_metric(["success"], getattr(app, "reloads_ok", 0))
        reloads.add_metric(["failure"], getattr(app, "reloads_failed", 0))
        yield reloads
        last = getattr(app, "last_reload_ok_time", None) or self.started
        yield GaugeMetricFamily(
            "dnsd_config_last_reload_success_timestamp_seconds", "Unix time of the last good reload", value=last
        )
        failed = bool(getattr(app, "last_reload_error", None))
        yield GaugeMetricFamily(
            "dnsd_config_last_reload_successful",
            "1 when the last reload (or the start) succeeded",
            value=0.0 if failed else 1.0,
        )


class Metrics:
    """The registry /metrics serves (private: nothing else registers in it), and what the status page reads."""

    def __init__(self, app: App) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = DnsdCollector(app)
        self.registry.register(self.collector)

    def top_nxdomain(self, k: int) -> list[tuple[str, int]]:
        """The names most often answered NXDOMAIN (a bounded Space-Saving sketch: counts may be overestimates)."""
        self.collector.totals()  # feeds the sketch with what the exact slots served since the last read
        return self.collector.app.engine.counts.nxdomain_names.top(k)

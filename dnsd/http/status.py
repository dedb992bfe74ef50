"""The status page's data (`GET /status.json`): read from the App and from the metric registry by family name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from dnsd import __version__

if TYPE_CHECKING:
    from dnsd.app import App

log = logging.getLogger(__name__)

SAMPLE_EVERY = 5.0  # seconds between two samples of the query counters
SAMPLES = 120  # ten minutes of them: the ring is bounded, whatever the uptime
MIN_SPAN = 1.0  # a rate over less than a second is noise: none until the samples span this much
RATE_WINDOW = 300.0  # "the last minutes": the query rate and rcode mix cover at most this many seconds
TOP_NXDOMAIN = 20
LINKS = ("cluster", "zone", "cache", "forward", "recurse")  # the chain's order (dnsd.engine.chain)

# The families read (docs/metrics.md); any of them may be missing (an older collector): its values show as null.
REQUESTS = "dnsd_dns_requests_total"
RESPONSES = "dnsd_dns_responses_total"

Labels = dict[str, str]


class Families:
    """One collection of a registry, indexed by sample name (`dnsd_dns_requests_total`,
    `dnsd_dns_request_duration_seconds_count`, `dnsd_store_objects`): the names docs/metrics.md lists."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples: dict[str, list[tuple[Labels, float]]] = {}
        self.names: set[str] = set()  # the families exported, with or without samples (no upstreams: none)
        for family in registry.collect():
            self.names |= {family.name, f"{family.name}_total"}
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((dict(s.labels), _num(s.value)))

    def has(self, name: str) -> bool:
        return name in self.names or name in self.samples

    def total(self, name: str, **match: str) -> float | None:
        """The sum of a family's samples whose labels match; None when the family is not exported."""
        if name not in self.samples:
            return None
        return sum(v for labels, v in self.samples[name] if _matches(labels, match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float] | None:
        """A family summed per value of one label (the others summed away); None when not exported."""
        if name not in self.samples:
            return None
        out: dict[str, float] = {}
        for labels, v in self.samples[name]:
            if _matches(labels, match):
                key = labels.get(label, "")
                out[key] = out.get(key, 0) + v
        return out

    def value(self, name: str, **match: str) -> float | None:
        """The first matching sample of a gauge; None when there is none."""
        for labels, v in self.samples.get(name, ()):
            if _matches(labels, match):
                return v
        return None


def _num(v: float) -> float:
    """Counts as JSON integers (10, not 10.0); the rest as they are."""
    return int(v) if float(v).is_integer() else float(v)


def _matches(labels: Labels, match: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


@dataclass(frozen=True, slots=True)
class Sample:
    """The query counters at one moment: the ring's element."""

    t: float  # Unix time
    queries: float
    rcodes: dict[str, float]

    def json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "queries": self.queries, "rcodes": self.rcodes}


def query_counters(app: App, fam: Families) -> tuple[float, dict[str, float]]:
    """(total queries, responses by rcode): from the registry; the total from the engine's own counter while the
    collector does not export dnsd_dns_requests_total."""
    total = fam.total(REQUESTS)
    if total is None:
        counters = getattr(getattr(app, "engine", None), "counters", None)
        total = float(getattr(counters, "queries", 0))
    return total, fam.by(RESPONSES, "rcode") or {}


class Sampler:
    """A bounded ring of query-counter samples, one every `every` seconds, taken by a task it owns."""

    def __init__(self, app: App, every: float = SAMPLE_EVERY, size: int = SAMPLES) -> None:
        self.app = app
        self.every = every
        self.ring: deque[Sample] = deque(maxlen=size)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dnsd-status-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self, fam: Families | None = None) -> Sample:
        """Take one sample now (the task's step; tests call it for a deterministic ring)."""
        if fam is None:
            fam = Families(self.app.metrics.registry)
        total, rcodes = query_counters(self.app, fam)
        s = Sample(time.time(), total, rcodes)
        self.ring.append(s)
        return s

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a broken collector must not end the sampling for good; /metrics shows the error
                log.exception("status page: sampling the query counters failed")
            await asyncio.sleep(self.every)


def rate(ring: Iterable[Sample], now: Sample, window: float = RATE_WINDOW) -> dict[str, Any]:
    """Queries a second and responses by rcode between the oldest sample within `window` and `now`."""
    start = next((s for s in ring if now.t - s.t <= window), None)
    if start is None or now.t - start.t < MIN_SPAN:
        return {"window_s": 0.0, "qps": None, "rcodes": {}}
    span = now.t - start.t
    # max(0, ...): a counter that went back (a collector replaced by a reload) reads as no traffic, not negative.
    rcodes = {k: max(0.0, v - start.rcodes.get(k, 0.0)) for k, v in now.rcodes.items()}
    return {
        "window_s": round(span, 3),
        "qps": max(0.0, now.queries - start.queries) / span,
        "rcodes": {k: v for k, v in rcodes.items() if v},
    }


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(app: App, http: tuple[str, int] | None) -> dict[str, Any]:
    dns = [_hostport(h, p) for h, p in getattr(app, "dns_addresses", ())]
    return {"dns": dns, "http": _hostport(*http) if http is not None else None}


def _store(app: App, fam: Families) -> dict[str, Any]:
    return {
        "objects": fam.by("dnsd_store_objects", "kind"),
        "generation": fam.value("dnsd_store_generation"),
        "data_age_s": fam.by("dnsd_data_age_seconds", "source"),
        "zone_files": fam.value("dnsd_zone_files"),
        "synced": bool(getattr(getattr(app, "store", None), "synced", False)),
    }


def _upstreams(app: App, fam: Families) -> list[dict[str, Any]]:
    fwd = getattr(app, "forwarder", None)
    if fwd is None:
        return []
    groups = [getattr(fwd, "default", None), *getattr(fwd, "stubs", ())]
    out: list[dict[str, Any]] = []
    for group in groups:
        if group is None:
            continue
        domain = ".".join(getattr(group, "domain", ())) + "." if getattr(group, "domain", ()) else "."
        for up in getattr(group, "upstreams", ()):
            to = str(up.server)
            down, disabled = bool(getattr(up, "down", False)), bool(getattr(up, "disabled", False))
            out.append(
                {
                    "to": to,
                    "domain": domain,
                    "healthy": not down and not disabled,
                    "down": down,
                    "disabled": disabled,
                    "requests": fam.total("dnsd_upstream_requests_total", to=to),
                    "failures": fam.total("dnsd_upstream_failures_total", to=to),
                    "duration_count": fam.total("dnsd_upstream_request_duration_seconds_count", to=to),
                    "duration_sum": fam.total("dnsd_upstream_request_duration_seconds_sum", to=to),
                }
            )
    return out


def _links(app: App, fam: Families) -> list[dict[str, Any]]:
    present = {
        "cluster": True,
        "zone": getattr(app, "zone_source", None) is not None,
        "cache": getattr(app, "cache", None) is not None,
        "forward": getattr(app, "forwarder", None) is not None,
        "recurse": getattr(app, "recursor", None) is not None,
    }
    out: list[dict[str, Any]] = []
    for name in LINKS:
        if not present[name]:
            continue
        link: dict[str, Any] = {
            "name": name,
            "answers": fam.total(RESPONSES, link=name),
            "rcodes": fam.by(RESPONSES, "rcode", link=name),
        }
        if name == "cache":
            link["counters"] = {
                "entries": fam.by("dnsd_cache_entries", "type"),
                "hits": fam.total("dnsd_cache_hits_total"),
                "misses": fam.total("dnsd_cache_misses_total"),
                "evictions": fam.total("dnsd_cache_evictions_total"),
                "prefetches": fam.total("dnsd_cache_prefetch_total"),
                "served_stale": fam.total("dnsd_cache_served_stale_total"),
                "coalesced": fam.total("dnsd_cache_coalesced_total"),
            }
        elif name == "forward":
            link["counters"] = {"shed": fam.total("dnsd_upstream_shed_total", link="forward")}
            link["upstreams"] = _upstreams(app, fam)
        elif name == "recurse":
            link["counters"] = fam.by("dnsd_recurse_queries_total", "outcome")
        out.append(link)
    return out


def _top_nxdomain(app: App) -> list[dict[str, Any]]:
    """app.metrics.top_nxdomain(n): (name, count) pairs, when the collector keeps the heavy-hitter sketch."""
    top = getattr(getattr(app, "metrics", None), "top_nxdomain", None)
    if top is None:
        return []
    return [{"name": str(name), "count": int(count)} for name, count in list(top(TOP_NXDOMAIN))[:TOP_NXDOMAIN]]


def status(app: App, sampler: Sampler, http: tuple[str, int] | None) -> dict[str, Any]:
    """The whole document `GET /status.json` returns (its shape: dnsd/http/README.md)."""
    fam = Families(app.metrics.registry)
    now = time.time()
    started = fam.value("dnsd_start_time_seconds")
    total, rcodes = query_counters(app, fam)
    current = Sample(now, total, rcodes)
    reasons = app.not_ready()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "now": round(now, 3),
        "started": started,
        "uptime_s": round(now - started, 3) if started is not None else None,
        "ready": not reasons,
        "not_ready": reasons,
        "draining": bool(getattr(app, "draining", False)),
        "listen": _listen(app, http),
        "store": _store(app, fam),
        "queries": {
            "total": total,
            "rcodes": rcodes,
            "by_link": fam.by(RESPONSES, "link"),
            "rate": rate(sampler.ring, current),
            "sample_every_s": sampler.every,
            "history": [s.json() for s in sampler.ring],
        },
        "namespaces": {
            "requests": fam.by("dnsd_namespace_requests_total", "namespace"),
            "nxdomain": fam.by("dnsd_namespace_nxdomain_total", "namespace"),
        },
        "links": _links(app, fam),
        "top_nxdomain": _top_nxdomain(app),
        "missing": sorted(n for n in WANTED if not fam.has(n)),
    }


# The families the page shows: listed in "missing" when the collector does not export them (yet).
WANTED = (
    "dnsd_start_time_seconds",
    REQUESTS,
    RESPONSES,
    "dnsd_store_objects",
    "dnsd_store_generation",
    "dnsd_data_age_seconds",
    "dnsd_cache_entries",
    "dnsd_cache_hits_total",
    "dnsd_upstream_requests_total",
    "dnsd_upstream_healthy",
    "dnsd_namespace_requests_total",
)

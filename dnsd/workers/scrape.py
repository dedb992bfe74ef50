"""The supervisor's /metrics: every worker's families added up into one scrape target. Counters and histograms are
summed (a dead worker's last counts are carried, so the sums never go backwards across a restart); a gauge is
folded by its rule (ready: the least, data age: the greatest, cache entries: the sum) or, where no fold means
anything (objects held, the store generation, zone files), kept per worker under a `worker` label."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]  # a sample's name and its labels, sorted

# Gauges with one meaning across the workers: folded into one series. The rest get a `worker` label.
GAUGE_FOLDS: dict[str, Callable[[Iterable[float]], float]] = {
    "dnsd_ready": min,  # 1 only when every worker is ready
    "dnsd_build_info": max,
    "dnsd_start_time_seconds": min,
    "dnsd_data_age_seconds": max,  # the stalest worker's
    "dnsd_cache_entries": sum,  # each worker caches on its own
    "dnsd_upstream_healthy": min,  # 1 only when every worker finds it up
    "dnsd_config_last_reload_successful": min,
    "dnsd_config_last_reload_success_timestamp_seconds": min,
}
SUMMED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


@dataclass
class _Slot:
    """What the supervisor knows of one worker slot's counts."""

    pid: int = 0  # the incarnation last scraped
    last: dict[str, dict[SampleKey, float]] = field(default_factory=dict)  # its summed families at that scrape
    carried: dict[str, dict[SampleKey, float]] = field(default_factory=dict)  # what dead incarnations counted


class MetricsSum:
    """Parses each worker's exposition text and adds them up; keeps, per slot, what it needs to carry counts
    across a worker's restart."""

    def __init__(self) -> None:
        self.slots: dict[int, _Slot] = {}
        self.meta: dict[str, tuple[str, str]] = {}  # family name -> (help, type), in first-seen order

    def fold(self, scraped: dict[int, tuple[int, str | None]], extra: Iterable[Metric] = ()) -> list[Metric]:
        """scraped: worker index -> (pid, exposition text, or None when it could not be read). Returns the
        families of one scrape: the supervisor's own (`extra`) first, then the workers' together."""
        summed: dict[str, dict[SampleKey, float]] = {}
        gauges: dict[str, dict[SampleKey, list[float]]] = {}
        for index, (pid, text) in sorted(scraped.items()):
            slot = self.slots.setdefault(index, _Slot())
            if text is not None and pid != slot.pid:
                _add_into(slot.carried, slot.last)  # a new incarnation: the old one's counts stay in the sums
                slot.pid, slot.last = pid, {}
            if text is not None:
                slot.last = self._parse(text, index, gauges)
            for counts in (slot.carried, slot.last):
                _add_into(summed, counts)
        out = list(extra)
        for name, (doc, kind) in self.meta.items():
            metric = Metric(name, doc, kind)
            if kind in SUMMED:
                samples = summed.get(name, {})
                metric.samples = [Sample(n, dict(lb), v) for (n, lb), v in sorted(samples.items(), key=_order)]
            else:
                fold = GAUGE_FOLDS.get(name, sum)
                rows = gauges.get(name, {})
                metric.samples = [Sample(n, dict(lb), fold(vs)) for (n, lb), vs in sorted(rows.items(), key=_order)]
            if metric.samples or kind in SUMMED:
                out.append(metric)
        return out

    def _parse(
        self, text: str, index: int, gauges: dict[str, dict[SampleKey, list[float]]]
    ) -> dict[str, dict[SampleKey, float]]:
        counts: dict[str, dict[SampleKey, float]] = {}
        for family in text_string_to_metric_families(text):
            self.meta.setdefault(family.name, (family.documentation, family.type))
            if family.type in SUMMED:
                table = counts.setdefault(family.name, {})
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    table[key] = table.get(key, 0.0) + s.value
                continue
            rows = gauges.setdefault(family.name, {})
            for s in family.samples:
                labels = dict(s.labels)
                if family.name not in GAUGE_FOLDS:
                    labels["worker"] = str(index)
                rows.setdefault((s.name, tuple(sorted(labels.items()))), []).append(s.value)
        return counts


def _add_into(into: dict[str, dict[SampleKey, float]], more: dict[str, dict[SampleKey, float]]) -> None:
    for name, samples in more.items():
        table = into.setdefault(name, {})
        for key, value in samples.items():
            table[key] = table.get(key, 0.0) + value


def _order(item: tuple[SampleKey, object]) -> tuple[Labels, int, float]:
    """Histogram samples grouped by series, buckets in `le` order, then _count and _sum (OpenMetrics wants it)."""
    (name, labels), _ = item
    rest = tuple(kv for kv in labels if kv[0] not in ("le", "quantile"))
    bound = next((float(v) for k, v in labels if k in ("le", "quantile")), 0.0)
    suffix = 0 if name.endswith("_bucket") else 1 if name.endswith("_count") else 2 if name.endswith("_sum") else 0
    return rest, suffix, bound


class Families(Collector):
    """A registry's collector over families computed elsewhere (one scrape's)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families

"""The supervisor's /metrics (dnsd.workers.scrape): the workers' families folded into one scrape: counters and
histograms summed, a restarted worker's counts carried, gauges folded by their rule or kept per worker."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dnsd.workers.scrape import Families, MetricsSum


def text(requests: float, ready: float = 1, objects: float = 3, age: float = 0, le1: float = 0) -> str:
    """One worker's exposition, as its collector writes it."""
    return f"""# HELP dnsd_dns_requests_total DNS queries answered
# TYPE dnsd_dns_requests_total counter
dnsd_dns_requests_total{{proto="udp",zone="cluster.local."}} {requests}
# HELP dnsd_dns_request_duration_seconds Time to answer a query
# TYPE dnsd_dns_request_duration_seconds histogram
dnsd_dns_request_duration_seconds_bucket{{le="0.001"}} {le1}
dnsd_dns_request_duration_seconds_bucket{{le="+Inf"}} {requests}
dnsd_dns_request_duration_seconds_count {requests}
dnsd_dns_request_duration_seconds_sum 0.5
# HELP dnsd_ready 1 while /ready says 200
# TYPE dnsd_ready gauge
dnsd_ready {ready}
# HELP dnsd_data_age_seconds age
# TYPE dnsd_data_age_seconds gauge
dnsd_data_age_seconds{{source="files"}} {age}
# HELP dnsd_store_objects Kubernetes objects held
# TYPE dnsd_store_objects gauge
dnsd_store_objects{{kind="Service"}} {objects}
"""


def render(scrapes: list[dict[int, tuple[int, str | None]]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fold the scrapes in turn (one MetricsSum, as the supervisor keeps) and return the last one's samples."""
    folding = MetricsSum()
    families = []
    for scraped in scrapes:
        families = folding.fold(scraped)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(families))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


REQ = ("dnsd_dns_requests_total", (("proto", "udp"), ("zone", "cluster.local.")))
COUNT = ("dnsd_dns_request_duration_seconds_count", ())
BUCKET = ("dnsd_dns_request_duration_seconds_bucket", (("le", "0.001"),))
READY = ("dnsd_ready", ())
AGE = ("dnsd_data_age_seconds", (("source", "files"),))


def objects(worker: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("dnsd_store_objects", (("kind", "Service"), ("worker", worker)))


@dataclass(frozen=True)
class Case:
    name: str
    scrapes: list[dict[int, tuple[int, str | None]]]
    want: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    absent: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


CASES = [
    Case(
        "counters-and-histograms-sum",
        [{0: (10, text(5, le1=2)), 1: (11, text(7, le1=1))}],
        {REQ: 12, COUNT: 12, BUCKET: 3},
    ),
    Case(
        "gauges-fold-by-rule",
        [{0: (10, text(1, ready=1, age=0)), 1: (11, text(1, ready=0, age=4))}],
        {READY: 0, AGE: 4},
    ),
    Case(
        "gauges-without-a-rule-per-worker",
        [{0: (10, text(1, objects=3)), 1: (11, text(1, objects=4))}],
        {objects("0"): 3, objects("1"): 4},
    ),
    Case(
        "restarted-worker-counts-are-carried",
        [{0: (10, text(5)), 1: (11, text(7))}, {0: (12, text(2)), 1: (11, text(8))}],
        {REQ: 5 + 2 + 8, COUNT: 15},
    ),
    Case(
        "a-worker-not-answering-keeps-its-last-counts-not-its-gauges",
        [{0: (10, text(5, objects=3)), 1: (11, text(7, objects=3))}, {0: (10, None), 1: (11, text(9, objects=3))}],
        {REQ: 5 + 9, objects("1"): 3},
        absent=(objects("0"),),
    ),
    Case(
        "carried-once-only",
        [{0: (10, text(5))}, {0: (12, text(1))}, {0: (12, text(3))}],
        {REQ: 5 + 3},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fold(case: Case) -> None:
    got = render(case.scrapes)
    for key, value in case.want.items():
        assert got.get(key) == value, (key, got)
    for key in case.absent:
        assert key not in got

"""Log output (issue 7 section 3): `log.format: text | json`, the level, `log.sample` of query lines, and the
context keys (upstream, file, object) errors carry."""

from __future__ import annotations

import io
import itertools
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support import REPO, query, start_dnsd_process, wait_until

from dnsd.config import LogConfig, parse_config
from dnsd.errors import ConfigError
from dnsd.observe.logs import QUERY_LOGGER, JsonFormatter, LogSetup, Sampler, TextFormatter

QUERY = {
    "client": "127.0.0.1#5353",
    "proto": "udp",
    "qname": "web.default.svc.cluster.local.",
    "qtype": "A",
    "rcode": "NOERROR",
    "link": "cluster",
    "duration_us": 41,
    "size": 78,
}


def record(msg: str, level: int = logging.INFO, name: str = "dnsd.x", **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@dataclass(frozen=True)
class JsonCase:
    id: str
    rec: logging.LogRecord
    want: dict[str, Any]  # keys the object must hold with these values


JSON_CASES = [
    JsonCase("plain", record("loaded 6 objects"), {"level": "info", "logger": "dnsd.x", "msg": "loaded 6 objects"}),
    JsonCase(
        "query line",
        record("127.0.0.1#5353 udp web A NOERROR", name=QUERY_LOGGER, query=QUERY),
        {"logger": QUERY_LOGGER, "query": QUERY},
    ),
    JsonCase(
        "error with context",
        record("upstream failed", logging.WARNING, upstream="127.0.0.1:53", file="/etc/resolv.conf"),
        {"level": "warning", "upstream": "127.0.0.1:53", "file": "/etc/resolv.conf"},
    ),
    JsonCase(
        "not a JSON type",
        record("obj", object=("Service", "default", "web")),
        {"object": ["Service", "default", "web"]},
    ),
]


@pytest.mark.parametrize("case", JSON_CASES, ids=[c.id for c in JSON_CASES])
def test_json_formatter_writes_one_object_per_line(case: JsonCase) -> None:
    line = JsonFormatter().format(case.rec)
    assert "\n" not in line
    doc = json.loads(line)
    for key, value in case.want.items():
        assert doc[key] == value, doc
    assert doc["time"].endswith("Z") and doc["time"][10] == "T", doc["time"]  # RFC 3339, UTC


def test_json_formatter_keeps_the_traceback_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("dnsd", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["error"]


@pytest.mark.parametrize(
    ("msg", "extra", "want_suffix"),
    [
        ("zone file broken", {"file": "/z/a.zone"}, " (file=/z/a.zone)"),
        ("/z/a.zone: zone file broken", {"file": "/z/a.zone"}, ""),  # already named: not repeated
        ("no context", {}, ""),
    ],
)
def test_text_formatter_appends_context_not_already_named(msg: str, extra: dict[str, str], want_suffix: str) -> None:
    line = TextFormatter().format(record(msg, **extra))
    assert line.endswith(msg + want_suffix), line


@pytest.mark.parametrize(("rate", "n", "kept"), [(1.0, 1000, 1000), (0.5, 1000, 500), (0.1, 1000, 100), (0.0, 1000, 0)])
def test_sampler_keeps_the_fraction_evenly(rate: float, n: int, kept: int) -> None:
    sampler = Sampler(rate)
    got = [sampler.filter(record("q", name=QUERY_LOGGER)) for _ in range(n)]
    assert sum(got) == kept
    if 0 < rate < 1:  # evenly spread: never two kept lines closer than 1/rate - 1 apart
        idx = [i for i, keep in enumerate(got) if keep]
        assert min(b - a for a, b in itertools.pairwise(idx)) >= round(1 / rate) - 1


@pytest.fixture
def setup() -> Iterator[tuple[LogSetup, io.StringIO]]:
    stream = io.StringIO()
    logs = LogSetup(stream)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield logs, stream
    logs.close()
    root.setLevel(level)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)


def test_log_setup_switches_format_level_and_sample_live(setup: tuple[LogSetup, io.StringIO]) -> None:
    logs, stream = setup
    qlog, other = logging.getLogger(QUERY_LOGGER), logging.getLogger("dnsd.test")
    logs.apply(LogConfig(level="info", format="text"))
    other.info("first")
    other.debug("hidden")
    logs.apply(LogConfig(level="debug", format="json", sample=0.25))  # a reload
    other.debug("second")
    for _ in range(8):
        qlog.info("q", extra={"query": QUERY})
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("INFO dnsd.test: first"), lines
    assert not any("hidden" in line for line in lines)
    docs = [json.loads(line) for line in lines[1:]]  # every line after the switch is JSON
    assert docs[0]["msg"] == "second" and docs[0]["level"] == "debug"
    assert [d["query"] for d in docs[1:]] == [QUERY, QUERY]  # 8 query lines at 0.25


@pytest.mark.parametrize(
    ("log", "error"),
    [
        ({"format": "xml"}, "log.format: must be one of text | json"),
        ({"sample": 1.5}, "log.sample: must be between 0 and 1"),
        ({"sample": "half"}, "log.sample: must be a number"),
        ({"level": "loud"}, "log.level: must be one of"),
    ],
)
def test_log_keys_are_validated(log: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("|", r"\|")):
        parse_config({"log": log})
    assert parse_config({"log": {"format": "json", "sample": 0}}).log == LogConfig(format="json", sample=0.0)


def test_process_writes_json_lines_and_samples_queries(tmp_path: Any) -> None:
    """A real dnsd with log.format json and log.queries on, sampling one query line in four: every line on
    stderr is a JSON object, and 40 queries give 10 query lines."""
    cfg = tmp_path / "dnsd.yaml"
    cfg.write_text(
        "listen: ['127.0.0.1:0']\nhttp: null\nforward: null\nrecursion: 'off'\nzones: null\n"
        "drain: {lameduck: 0}\nlog: {format: json, queries: true, sample: 0.25}\n"
        f"cluster:\n  source:\n    files: {REPO / 'tests' / 'data' / 'store' / 'e2e'}\n"
    )
    p = start_dnsd_process(["--config", str(cfg)])
    try:
        for _ in range(40):
            query(p, "web.default.svc.cluster.local.", "A")
        wait_until(lambda: sum(QUERY_LOGGER in line for line in p.lines) >= 10, 5)
    finally:
        assert p.stop() == 0
    docs = [json.loads(line) for line in p.lines if line.startswith("{")]
    assert sum(d["logger"] == QUERY_LOGGER for d in docs) == 10
    others = [line for line in p.lines if not line.startswith("{")]
    assert all(line.startswith("dnsd listening on") for line in others), others  # stdout's one banner line

"""The monitoring files operators import (issue 7): deploy/prometheus-rules.yaml and deploy/grafana-dashboard.json.

Three checks, all offline: promtool (Debian's `prometheus` package) parses every PromQL expression in both files
(the dashboard's as recording rules in a temporary rules file, Grafana's variables substituted first); every
metric and label name they use is in docs/metrics.md (the contract); and every family of that contract is
exported by a running dnsd (forwarding to a loopback NSD, after a few queries) with the documented type and
labels. Metric and label names come out of PromQL through a small tokenizer, tested here by a table.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, query, rcode_text, run_dnsd, wait_until

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus-rules.yaml"
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
DOCS = REPO / "docs" / "metrics.md"

# Labels Prometheus attaches to every scraped series itself (the target's), not dnsd.
TARGET_LABELS = frozenset({"instance", "job"})

# Families in docs/metrics.md that dnsd/observe/metrics.py does not export yet: their export test is a strict xfail,
# so it turns red (XPASS) the moment one lands and must come off this list. Empty: every family has landed.
NOT_LANDED: frozenset[str] = frozenset()


# ---------------------------------------------------------------- PromQL: names out of an expression

# Grafana's built-in and template variables, by what they stand for in PromQL: a duration, or a label regex.
GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute_grafana(expr: str) -> str:
    """`$__rate_interval` -> 5m, `$instance` / `${instance}` / `[[instance]]` -> `.*` (what 'All' sends)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA_DURATIONS.get(name, ".*")

    return GRAFANA_VAR.sub(one, expr)


TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<num>\d[\d.]*(?:[eE][+-]?\d+)?[A-Za-z0-9]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},@])
    """,
    re.VERBOSE,
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | frozenset({"bool", "and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN"})
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


@dataclass
class Uses:
    """What one expression names: selectors (metric or None, the labels its matchers name) and grouping labels."""

    selectors: list[tuple[str | None, frozenset[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    equals: set[tuple[str | None, str, str]] = field(default_factory=set)  # (metric, label, value) of `label="v"`

    @property
    def metrics(self) -> set[str]:
        return {m for m, _ in self.selectors if m is not None}

    @property
    def labels(self) -> set[str]:
        return self.grouping.union(*(ls for _, ls in self.selectors))


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def promql_uses(expr: str) -> Uses:
    """The metric names (identifiers standing as vector selectors, bare or before `{`) and the label names (in
    `{...}` matchers, in by/without/on/ignoring/group_* lists) of one PromQL expression."""
    toks = tokens(expr)
    uses = Uses()
    # The open brackets: "(" of a grouping list, "(" of anything else, "{" of a selector (with its metric).
    stack: list[tuple[str, str | None, set[str]]] = []
    for i, (kind, text) in enumerate(toks):
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        prev = toks[i - 1][1] if i > 0 else ""
        inner = stack[-1][0] if stack else "expr"
        if kind == "op" and text == "(":
            stack.append(("labels" if prev in GROUPING else "expr", None, set()))
        elif kind == "op" and text == "{":
            metric = prev if i > 0 and toks[i - 1][0] == "ident" and prev not in KEYWORDS else None
            stack.append(("selector", metric, set()))
        elif kind == "op" and text in ")}":
            ctx, metric, matched = stack.pop()
            if ctx == "selector":
                uses.selectors.append((metric, frozenset(matched)))
        elif kind != "ident":
            continue
        elif inner == "labels":
            uses.grouping.add(text)
        elif inner == "selector":
            if nxt in MATCH_OPS:
                stack[-1][2].add(text)
            if nxt == "=" and i + 2 < len(toks) and toks[i + 2][0] == "str":
                uses.equals.add((stack[-1][1], text, toks[i + 2][1][1:-1]))
        elif text in KEYWORDS or nxt == "(" or nxt in ("by", "without"):
            continue  # a keyword, a function, an aggregation (`sum by (x) (...)` too)
        elif nxt != "{":
            uses.selectors.append((text, frozenset()))  # a bare vector selector
    assert not stack, f"unbalanced brackets in {expr!r}"
    return uses


@dataclass(frozen=True)
class TokCase:
    expr: str
    metrics: set[str]
    labels: set[str]


TOKENIZER_CASES = [
    TokCase("dnsd_ready == 0", {"dnsd_ready"}, set()),
    TokCase("up", {"up"}, set()),
    TokCase('dnsd_upstream_healthy{to="1.2.3.4:53"} == 0', {"dnsd_upstream_healthy"}, {"to"}),
    TokCase(
        'sum by (proto, type) (rate(dnsd_dns_requests_total{instance=~".*"}[5m]))',
        {"dnsd_dns_requests_total"},
        {"proto", "type", "instance"},
    ),
    TokCase(
        "sum(rate(a_total[5m])) without (zone) / on (instance) group_left (x) b",
        {"a_total", "b"},
        {"zone", "instance", "x"},
    ),
    TokCase(
        "histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[1m]))) > 1e3",
        {"x_seconds_bucket"},
        {"le"},
    ),
    TokCase('{__name__="m", job!~"a|b"}', set(), {"__name__", "job"}),
    TokCase('count(m{rcode="by"}) by (rcode) offset 1h30m', {"m"}, {"rcode"}),
    TokCase("time() - dnsd_start_time_seconds", {"dnsd_start_time_seconds"}, set()),
    TokCase("a > bool 0 and on () b unless c or d", {"a", "b", "c", "d"}, set()),
    TokCase("instance:dnsd_x:rate5m > 0.05  # comment with name_in_it", {"instance:dnsd_x:rate5m"}, set()),
    TokCase("topk(10, sum by(namespace)(rate(n_total[5m])))", {"n_total"}, {"namespace"}),
]


def test_tokenizer_reads_equality_matchers() -> None:
    uses = promql_uses('a{rcode="SERVFAIL", x=~"y"} / on (i) b{result="failure"} + {z="1"}')
    assert uses.equals == {("a", "rcode", "SERVFAIL"), ("b", "result", "failure"), (None, "z", "1")}


@pytest.mark.parametrize("case", TOKENIZER_CASES, ids=[c.expr[:40] for c in TOKENIZER_CASES])
def test_tokenizer(case: TokCase) -> None:
    uses = promql_uses(case.expr)
    assert (uses.metrics, uses.labels) == (case.metrics, case.labels)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ('rate(x{instance=~"$instance"}[$__rate_interval])', 'rate(x{instance=~".*"}[5m])'),
        ('x{instance=~"${instance:regex}"}[$__range]', 'x{instance=~".*"}[1h]'),
        ('x{pod=~"[[pod]]"}', 'x{pod=~".*"}'),
    ],
)
def test_grafana_substitution(raw: str, want: str) -> None:
    assert substitute_grafana(raw) == want


# ---------------------------------------------------------------- the expressions in the two files


@dataclass(frozen=True)
class Expr:
    where: str  # "rules: alert X", "dashboard: panel / A"
    expr: str  # PromQL, Grafana variables substituted
    record: str | None = None  # the series a recording rule writes


def rules_file() -> dict[str, Any]:
    data = yaml.safe_load(RULES.read_text())
    assert isinstance(data, dict)
    return data


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def rule_exprs() -> list[Expr]:
    out = []
    for group in rules_file()["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            out.append(Expr(f"rules: {name}", rule["expr"], rule.get("record")))
    return out


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        yield p
        yield from panels(p)  # a collapsed row keeps its panels inside


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<q>.+),\s*)?(?P<label>\w+)\)$")


def dashboard_exprs() -> list[Expr]:
    d = dashboard()
    out = []
    for p in panels(d):
        for t in p.get("targets", []):
            out.append(Expr(f"dashboard: {p['title']} / {t['refId']}", substitute_grafana(t["expr"])))
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = LABEL_VALUES.match(q)
        # label_values(SELECTOR, LABEL) is Grafana's, not PromQL: check it as `count by (LABEL) (SELECTOR)`.
        assert m and m["q"], f"variable {var['name']}: expected label_values(selector, label), got {q!r}"
        out.append(
            Expr(f"dashboard: variable {var['name']}", f"count by ({m['label']}) ({substitute_grafana(m['q'])})")
        )
    return out


def all_exprs() -> list[Expr]:
    return rule_exprs() + dashboard_exprs()


# ---------------------------------------------------------------- promtool


def promtool() -> str:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(exe).exists(), "promtool not found: apt-get install prometheus (make test-tools does)"
    return exe


def check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def as_recording_rules(exprs: list[Expr]) -> str:
    rules = [{"record": f"dashboard:expr_{i}", "expr": e.expr} for i, e in enumerate(exprs)]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)


def test_promtool_checks_the_rules_file() -> None:
    res = check_rules(RULES)
    n = len(rule_exprs())
    assert res.returncode == 0 and f"SUCCESS: {n} rules found" in res.stdout, res.stdout + res.stderr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    f = tmp_path / "dashboard-rules.yaml"
    f.write_text(as_recording_rules(exprs))
    res = check_rules(f)
    assert res.returncode == 0 and f"SUCCESS: {len(exprs)} rules found" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(x_total[5m])",  # unbalanced
        "rate(x_total[$__rate_interval])",  # a Grafana variable left in
        "histogram_quantile(0.99, sum by (le) rate(x_bucket[5m]))",  # missing parentheses
        "x_total{a=b}",  # unquoted label value
    ],
)
def test_promtool_rejects_a_broken_expression(tmp_path: Path, expr: str) -> None:
    """The parse check can fail: promtool refuses what Prometheus would."""
    f = tmp_path / "bad.yaml"
    f.write_text(as_recording_rules([Expr("bad", expr)]))
    assert check_rules(f).returncode != 0


# ---------------------------------------------------------------- the contract: docs/metrics.md


@dataclass(frozen=True)
class Family:
    name: str
    type: str  # counter, gauge, histogram
    labels: frozenset[str]

    def series(self) -> dict[str, frozenset[str]]:
        """The series names a scrape shows for the family, with their label names (text format 0.0.4)."""
        if self.type == "histogram":
            return {
                f"{self.name}_bucket": self.labels | {"le"},
                f"{self.name}_sum": self.labels,
                f"{self.name}_count": self.labels,
            }
        return {self.name: self.labels}


ROW = re.compile(r"^\|\s*`(?P<name>dnsd_\w+)`\s*\|\s*(?P<type>\w+)\s*\|(?P<labels>[^|]*)\|")


def documented() -> dict[str, Family]:
    out = {}
    for line in DOCS.read_text().splitlines():
        m = ROW.match(line)
        if m:
            # "`type` (`success`, `denial`)": the parenthesised names are the label's values, not labels
            labels = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", m["labels"]))
            out[m["name"]] = Family(m["name"], m["type"], frozenset(labels))
    return out


def test_docs_table_is_read() -> None:
    docs = documented()
    assert len(docs) >= 30
    assert docs["dnsd_cache_entries"] == Family("dnsd_cache_entries", "gauge", frozenset({"type"}))
    assert docs["dnsd_dns_requests_total"].labels == {"server", "zone", "proto", "family", "type"}
    assert {f.type for f in docs.values()} == {"counter", "gauge", "histogram"}


def documented_values() -> dict[tuple[str, str], frozenset[str]]:
    """(series, label) -> the values a label can take: every rcode's name (dnspython's spelling, which dnsd uses),
    and the values docs/metrics.md lists in parentheses after a label (`result` (`success`, `failure`))."""
    rcodes = frozenset(dns.rcode.to_text(r) for r in dns.rcode.Rcode)
    out: dict[tuple[str, str], frozenset[str]] = {}
    for line in DOCS.read_text().splitlines():
        m = ROW.match(line)
        if not m:
            continue
        fam = documented()[m["name"]]
        for series, labels in fam.series().items():
            if "rcode" in labels:
                out[(series, "rcode")] = rcodes
            for label, values in re.findall(r"`(\w+)`\s*\(([^)]*)\)", m["labels"]):
                out[(series, label)] = frozenset(re.findall(r"`(\w+)`", values))
    return out


def vocabulary() -> dict[str, frozenset[str]]:
    """Every series name the files may use, with its labels: dnsd's documented series and the recorded ones."""
    vocab: dict[str, frozenset[str]] = {}
    for fam in documented().values():
        vocab.update(fam.series())
    for e in rule_exprs():
        if e.record is not None:
            used = promql_uses(e.expr)
            # a recorded series keeps (at most) the labels of what it was computed from
            vocab[e.record] = frozenset(TARGET_LABELS.union(*(vocab.get(m, frozenset()) for m in used.metrics)))
    return vocab


def name_problems(e: Expr, vocab: dict[str, frozenset[str]]) -> list[str]:
    uses = promql_uses(e.expr)
    problems = []
    for metric, matched in uses.selectors:
        if metric is None:
            problems.append("a selector without a metric name")
        elif metric not in vocab:
            problems.append(f"{metric}: not in docs/metrics.md (nor recorded by the rules file)")
        elif extra := matched - vocab[metric] - TARGET_LABELS:
            problems.append(f"{metric}: no label {sorted(extra)}")
    known = TARGET_LABELS.union(*(vocab.get(m, frozenset()) for m in uses.metrics))
    if unknown := uses.grouping - known:
        problems.append(f"grouping by {sorted(unknown)}: none of {sorted(uses.metrics)} has it")
    if not uses.metrics:
        problems.append("names no metric")
    values = documented_values()
    for metric, label, value in uses.equals:
        allowed = values.get((metric or "", label))
        if allowed is not None and value not in allowed:
            problems.append(f'{metric}{{{label}="{value}"}}: {label} is one of {sorted(allowed)}')
    return problems


EXPRS = all_exprs()


@pytest.mark.parametrize("e", EXPRS, ids=[e.where for e in EXPRS])
def test_expression_names_documented_metrics_and_labels(e: Expr) -> None:
    assert name_problems(e, vocabulary()) == [], e.expr


@pytest.mark.parametrize(
    "expr",
    [
        "rate(dnsd_dns_queries_total[5m])",  # not a dnsd metric
        'dnsd_upstream_healthy{upstream="x"}',  # the label is `to`
        "sum by (rcode) (rate(dnsd_dns_requests_total[5m]))",  # requests have no rcode
        "rate(dnsd_dns_request_duration_seconds[5m])",  # a histogram is read through _bucket/_sum/_count
        'dnsd_cache_entries{le="1"}',  # `le` only on buckets
        'dnsd_dns_responses_total{rcode="NXDomain"}',  # dnsd spells rcodes as dnspython does: NXDOMAIN
        'dnsd_config_reloads_total{result="failed"}',  # the documented values are success, failure
    ],
)
def test_name_check_catches_a_wrong_name(expr: str) -> None:
    assert name_problems(Expr("bad", expr), vocabulary()) != []


# ---------------------------------------------------------------- the structure operators rely on

ALERTS = {
    "DnsdNotReady": "dnsd_ready",
    "DnsdServfailRatioHigh": "dnsd_dns_responses_total",
    "DnsdUpstreamDown": "dnsd_upstream_healthy",
    "DnsdDataStale": "dnsd_data_age_seconds",
    "DnsdProgrammingSlow": "dnsd_programming_latency_seconds_bucket",
    "DnsdConfigReloadFailing": "dnsd_config_last_reload_successful",
}


def depends_on(expr: str, records: dict[str, str]) -> set[str]:
    """The dnsd series an expression reads, through the recording rules it uses."""
    out: set[str] = set()
    for m in promql_uses(expr).metrics:
        out |= depends_on(records[m], records) if m in records else {m}
    return out


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_is_there_with_severity_and_annotations(alert: str) -> None:
    rules = {r["alert"]: r for g in rules_file()["groups"] for r in g["rules"] if "alert" in r}
    records = {e.record: e.expr for e in rule_exprs() if e.record}
    rule = rules[alert]
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert ALERTS[alert] in depends_on(rule["expr"], records)


def test_dashboard_variables_and_datasources() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    titles = set()
    for p in panels(d):
        if p["type"] == "row":
            continue
        titles.add(p["title"])
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], f"{p['title']}: not filtered by $instance"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    needed = {
        "Requests/s by proto and type",
        "Responses/s by rcode",
        "Responses/s by link",
        "SERVFAIL and NXDOMAIN ratio",
        "Request duration p50 / p99",
        "Cache hit ratio",
        "Cache entries",
        "Upstream health",
        "Upstream requests and failures/s",
        "Upstream duration p99",
        "Store objects by kind",
        "Data age",
        "Programming latency p99",
        "Config reloads",
        "Requests/s by namespace",
        "NXDOMAIN/s by namespace",
    }
    assert needed <= titles, needed - titles


# ---------------------------------------------------------------- what a running dnsd exports


@dataclass(frozen=True)
class Scraped:
    types: dict[str, str]  # family name as documented (counters with _total) -> type
    series: dict[str, set[str]]  # series name -> label names seen on its samples


def family_name(name: str, mtype: str) -> str:
    # prometheus_client's parser strips a counter's _total from the family name; the docs keep it
    return f"{name}_total" if mtype == "counter" else name


def parse_exposition(text: str) -> Scraped:
    types: dict[str, str] = {}
    series: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        types[family_name(fam.name, fam.type)] = fam.type
        for s in fam.samples:
            series.setdefault(s.name, set()).update(s.labels)
    return Scraped(types, series)


def scrape(h: DnsdHandle) -> str:
    host, port = h.app.http.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def requests_counted(text: str) -> int | None:
    """The sum of dnsd_dns_requests_total, None while dnsd does not export it."""
    for fam in text_string_to_metric_families(text):
        if fam.name == "dnsd_dns_requests":
            return int(sum(s.value for s in fam.samples if s.name == "dnsd_dns_requests_total"))
    return None


@pytest.fixture(scope="module")
def exported(nsd: str) -> Iterator[Scraped]:
    """A dnsd forwarding to NSD on loopback, after queries that touch every link: cluster names (one namespace
    NXDOMAIN), forwarded answers and NXDOMAIN, a cache hit, TCP, a message too short to answer."""
    cfg = base_config(FIXTURE_CLUSTER)
    cfg.update(
        {
            "http": "127.0.0.1:0",
            "recursion": "forward",
            "forward": {"upstreams": [nsd]},
            "allow_recursion": ["127.0.0.1/32"],
        }
    )
    h = run_dnsd(cfg)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01\x00", h.addr)  # dropped (header): read before the queries below on this socket
        asked = [
            ("kubernetes.default.svc.cluster.local.", "A", False, "NOERROR"),
            ("absent.default.svc.cluster.local.", "A", False, "NXDOMAIN"),
            ("www.example.test.", "A", False, "NOERROR"),
            ("www.example.test.", "A", False, "NOERROR"),  # from the cache
            ("absent.example.test.", "A", False, "NXDOMAIN"),
            ("www.example.test.", "AAAA", True, "NOERROR"),
        ]
        got = [(n, t, tcp, rcode_text(query(h, n, t, tcp=tcp))) for n, t, tcp, _ in asked]
        assert got == asked
        # A query may be counted just after its reply is sent: wait until all are (once the family exists).
        wait_until(lambda: (requests_counted(scrape(h)) or len(asked)) >= len(asked))
        yield parse_exposition(scrape(h))
    finally:
        h.stop()


def test_exposition_parser_reads_types_and_labels() -> None:
    text = (
        '# TYPE dnsd_a_total counter\ndnsd_a_total{to="x"} 1\n'
        '# TYPE dnsd_h_seconds histogram\ndnsd_h_seconds_bucket{le="+Inf",source="s"} 1\n'
        'dnsd_h_seconds_sum{source="s"} 1\ndnsd_h_seconds_count{source="s"} 1\n'
    )
    got = parse_exposition(text)
    assert got.types == {"dnsd_a_total": "counter", "dnsd_h_seconds": "histogram"}
    assert got.series == {
        "dnsd_a_total": {"to"},
        "dnsd_h_seconds_bucket": {"le", "source"},
        "dnsd_h_seconds_sum": {"source"},
        "dnsd_h_seconds_count": {"source"},
    }


def family_params() -> list[Any]:
    out = []
    for name, fam in sorted(documented().items()):
        marks = [pytest.mark.xfail(strict=True, reason="not exported yet (dnsd/observe/metrics.py)")]
        out.append(pytest.param(fam, id=name, marks=marks if name in NOT_LANDED else []))
    return out


@pytest.mark.parametrize("fam", family_params())
def test_documented_family_is_exported(exported: Scraped, fam: Family) -> None:
    assert exported.types.get(fam.name) == fam.type, f"{fam.name}: exported as {exported.types.get(fam.name)}"
    for name, labels in fam.series().items():
        # A labelled family shows no sample before its first event: its labels are checked once it has one.
        if name in exported.series:
            assert exported.series[name] == labels, name


def test_exported_families_are_documented(exported: Scraped) -> None:
    assert set(exported.types) - set(documented()) == set()

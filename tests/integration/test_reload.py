"""Live config reload (issue 7 section 2): SIGHUP or a change to the config file reads it again through the one
validation path `dnsd check-config` uses, binds new listen addresses before old ones close, keeps the HTTP
listener up, keeps the cache and the store unless the changed keys need otherwise, and refuses a broken config
with every reason while the old one keeps serving."""

from __future__ import annotations

import asyncio
import copy
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import (
    REPO,
    DnsdHandle,
    DnsdProcess,
    query,
    rcode_text,
    rr_lines,
    start_dnsd_process,
    wait_until,
    zone_lines,
)
from support.nsd import free_port
from test_drain import SteadyClient, assert_none_lost_before_close, http_get, write_config

from dnsd.cli import check_config

E2E = REPO / "tests" / "data" / "store" / "e2e"
BAD = sorted((REPO / "tests" / "data" / "configs" / "bad").glob("*.yaml"))
WEB = "web.default.svc.cluster.local."


def base(manifests: Path = E2E) -> dict[str, Any]:
    """A server with a cache: forwarding to a loopback port where nothing listens (never asked in these tests)."""
    return {
        "listen": ["127.0.0.1:0"],
        "http": None,
        "zones": None,
        "forward": {"upstreams": ["127.0.0.1:9"]},
        "recursion": "forward",
        "cluster": {"source": {"files": str(manifests)}},
        "drain": {"lameduck": 0, "grace": 1},
    }


def merged(cfg: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def reload(h: DnsdHandle) -> bool:
    return bool(asyncio.run_coroutine_threadsafe(h.app.reload(), h.loop).result(30))


@dataclass(frozen=True)
class Case:
    id: str
    edit: Callable[[Path], dict[str, Any]]  # keys to change, given a scratch directory
    ok: bool = True
    keeps_records: bool = True  # the cluster records (and the pre-rendered answers) survive
    keeps_cache: bool = True  # the same answer cache, with its entries
    keeps_forwarder: bool = True
    answer: tuple[str, str] | None = None  # (name, expected answer as zone-file text) after the reload
    reasons: int = 0  # a refused config: how many reasons it logs


def other_manifests(tmp: Path) -> dict[str, Any]:
    d = tmp / "other"
    d.mkdir()
    (d / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
    (d / "api.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\n"
        "spec: {clusterIP: 10.96.7.7, ports: [{name: http, port: 80, protocol: TCP}]}\n"
    )
    return {"cluster": {"source": {"files": str(d)}}}


def zone_dir(tmp: Path) -> dict[str, Any]:
    d = tmp / "zones"
    d.mkdir()
    (d / "example.internal.zone").write_text(
        "$ORIGIN example.internal.\n$TTL 60\n"
        "@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\nns IN A 192.0.2.1\nwww IN A 192.0.2.80\n"
    )
    return {"zones": str(d)}


CASES = [
    Case("nothing-changed", lambda t: {}),
    Case(
        "cluster-ttl",
        lambda t: {"cluster": {"ttl": 30}},
        keeps_records=False,
        keeps_cache=False,
        answer=(WEB, f"{WEB} 30 IN A 10.96.0.20"),
    ),
    Case(
        "cluster-domain",
        lambda t: {"cluster": {"domain": "example.corp"}},
        keeps_records=False,
        keeps_cache=False,
        keeps_forwarder=False,  # it refuses to forward names of the cluster domain
        answer=("web.default.svc.example.corp.", "web.default.svc.example.corp. 5 IN A 10.96.0.20"),
    ),
    Case("upstream-list", lambda t: {"forward": {"upstreams": ["127.0.0.1:10"]}}, keeps_forwarder=False),
    Case("log-queries", lambda t: {"log": {"queries": True, "sample": 0.5}}),
    Case("cache-size", lambda t: {"cache": {"size": 500}}, keeps_cache=False),
    Case(
        "cluster-source",
        other_manifests,
        answer=("api.default.svc.cluster.local.", "api.default.svc.cluster.local. 5 IN A 10.96.7.7"),
    ),
    Case("zones-dir", zone_dir, answer=("www.example.internal.", "www.example.internal. 60 IN A 192.0.2.80")),
    Case("bad-two-keys", lambda t: {"cluster": {"ttl": -1}, "workers": 0}, ok=False, reasons=2),
    Case("bad-source-is-a-file", lambda t: {"cluster": {"source": {"files": __file__}}}, ok=False, reasons=1),
    Case("bad-listen-in-use", lambda t: {"listen": ["127.0.0.1:0", "127.0.0.1:{taken}"]}, ok=False, reasons=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reload_keeps_what_the_change_allows(
    case: Case, tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle]
) -> None:
    start = base()
    h = dnsd_factory(config=start)
    app = h.app
    path = tmp_path / "dnsd.yaml"
    app.config_path = path
    before = h.call(lambda: (app.records, app.cache.cache, app.forwarder, app.cfg, app.last_reload_ok_time))
    assert rr_lines(query(h, WEB, "A").answer) == zone_lines(f"{WEB} 5 IN A 10.96.0.20")
    table_before = h.call(lambda: len(app.engine.table))
    assert table_before > 0  # the answer was pre-rendered

    edit = case.edit(tmp_path)
    if case.id == "bad-listen-in-use":
        edit = {"listen": ["127.0.0.1:0", f"127.0.0.1:{h.port}"]}  # our own port: taken (by us, for UDP)
    path.write_text(yaml.safe_dump(merged(start, edit)))
    assert reload(h) is case.ok

    records, cache, forwarder, cfg, ok_time = before
    assert (app.reloads_ok, app.reloads_failed) == ((1, 0) if case.ok else (0, 1))
    if not case.ok:
        assert app.cfg is cfg and app.records is records and app.cache.cache is cache
        assert app.last_reload_ok_time == ok_time
        assert len(app.last_reload_error) == case.reasons, app.last_reload_error
        assert all(str(path) in r for r in app.last_reload_error), app.last_reload_error
    else:
        assert app.last_reload_ok_time > ok_time and app.last_reload_error == []
        assert (app.records is records) == case.keeps_records
        assert (app.cache.cache is cache) == case.keeps_cache
        assert (app.forwarder is forwarder) == case.keeps_forwarder
        if not case.keeps_records:
            assert h.call(lambda: len(app.engine.table)) == 0, "answers rendered by the old records were kept"
    # the old (or new) config serves on the same port either way
    name, expected = case.answer if case.ok and case.answer else (WEB, f"{WEB} 5 IN A 10.96.0.20")
    wait_until(lambda: rr_lines(query(h, name, "A").answer) == zone_lines(expected), 5)
    if case.id == "cluster-source":
        assert rcode_text(query(h, WEB, "A")) == "NXDOMAIN", "an object only the old source had is still served"
    if case.id == "log-queries":
        assert app.engine.log_queries is True


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_reload_and_check_config_give_the_same_reasons(
    path: Path, dnsd_factory: Callable[..., DnsdHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    """One validation path: a refused reload logs exactly the lines `dnsd check-config` prints."""
    assert check_config([str(path)]) == 1
    printed = [line.removeprefix("dnsd: ") for line in capsys.readouterr().err.splitlines()]
    h = dnsd_factory(config=base())
    h.app.config_path = path
    assert reload(h) is False
    assert h.app.last_reload_error == printed
    assert rr_lines(query(h, WEB, "A").answer) == zone_lines(f"{WEB} 5 IN A 10.96.0.20")


# ---------------------------------------------------------------- a real process, a steady client


@pytest.fixture
def procs() -> Iterator[list[DnsdProcess]]:
    started: list[DnsdProcess] = []
    yield started
    for p in started:
        p.stop(timeout=15)


@dataclass
class HttpPoller:
    """GETs /health on every port in `ports` in turn from a thread (bounded in count and time); a round where
    none answered is a moment the HTTP side was down."""

    ports: list[int]
    rounds: list[list[int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HttpPoller:
        def run() -> None:
            deadline = time.monotonic() + 40
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.rounds) < 20000:
                self.rounds.append([http_get(port, "/health")[0] for port in list(self.ports)])
                time.sleep(0.005)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def down(self) -> int:
        return sum(1 for r in self.rounds if 200 not in r)


def test_reload_through_listen_and_http_changes_loses_no_query(tmp_path: Path, procs: list[DnsdProcess]) -> None:
    p1, p2, p3, h1, h2 = (free_port() for _ in range(5))
    cfg = tmp_path / "dnsd.yaml"
    drain = {"lameduck": 0, "grace": 1}
    write_config(cfg, [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"], h1, drain=drain)
    p = start_dnsd_process(["--config", str(cfg)])
    procs.append(p)
    a1, a2, a3 = ("127.0.0.1", p1), ("127.0.0.1", p2), ("127.0.0.1", p3)
    wait_until(lambda: http_get(h1, "/ready")[0] == 200, 10)
    client = SteadyClient(seconds=40)
    client.add(a1)
    client.add(a2)
    client.start()
    poller = HttpPoller([h1]).start()
    text = lambda: "".join(p.lines)  # noqa: E731
    try:
        wait_until(lambda: client.answered(a2) >= 20, 10)
        # 1. a file change: p2 goes, p3 comes; p1 stays
        write_config(cfg, [f"127.0.0.1:{p1}", f"127.0.0.1:{p3}"], h1, drain=drain)
        wait_until(lambda: f"stopped listening on 127.0.0.1:{p2}" in text(), 10)
        assert f"listening on udp+tcp 127.0.0.1:{p3}" in text(), text()
        client.add(a3)
        wait_until(lambda: client.first_lost(a2) is not None and client.answered(a3) >= 20, 10)
        # 2. SIGHUP with the HTTP address changed: the new one is bound before the old one closes
        poller.ports.append(h2)
        write_config(cfg, [f"127.0.0.1:{p1}", f"127.0.0.1:{p3}"], h2, drain=drain)
        wait_until(lambda: http_get(h2, "/health")[0] == 200, 10)
        wait_until(lambda: http_get(h1, "/health")[0] == 0, 10)
        # 3. a broken config, by file change and then by SIGHUP: refused with every reason, nothing stops
        bad = {"listen": ["nonsense"], "cluster": {"ttl": -1, "source": {"files": str(E2E)}}}
        cfg.write_text(yaml.safe_dump(bad))
        wait_until(lambda: text().count("config reload refused (2 problems)") == 1, 10)
        p.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: text().count("config reload refused (2 problems)") == 2, 10)
        before = client.answered(a1)
        wait_until(lambda: client.answered(a1) >= before + 20, 10)
        assert http_get(h2, "/health")[0] == 200
    finally:
        client.stop()
        poller.stop()
    for target in (a1, a3):
        _, lost = assert_none_lost_before_close(client, target)
        assert lost == 0, f"{target}: {lost} queries lost on an address that stayed"
    answered2, lost2 = assert_none_lost_before_close(client, a2)
    assert answered2 >= 20 and lost2 >= 1
    assert poller.down() == 0, f"/health was unreachable in {poller.down()} of {len(poller.rounds)} rounds"
    out = text()
    for reason in ("listen[0]: host must be an IP address", "cluster.ttl: must be between 0 and 3600"):
        assert out.count(reason) == 2, out
    assert "Traceback" not in out, out
    print(
        f"answered {client.answered(a1)} on the kept address, {answered2} on the removed one before it closed, "
        f"{client.answered(a3)} on the added one; /health polled {len(poller.rounds)} times, never down"
    )

"""Signals sent to a running dnsd process (issue 5 section 3).

SIGHUP (what logrotate and operators send to reload) reloads the config and rescans the sources now (config reload
itself: test_reload.py); SIGUSR1 and SIGUSR2 are logged and ignored (their default action would kill the process);
SIGTERM and SIGINT still stop it with exit 0 (the drain: test_drain.py). Every test but the Resyncer table runs
the real process (`python -m dnsd`) and queries it over UDP and TCP.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import DnsdProcess, query, rcode_text, rr_lines, start_dnsd_process, wait_until, zone_lines

from dnsd.cli import Resyncer

E2E_REL = "tests/data/store/e2e"
WEB_A = "web.default.svc.cluster.local. 5 IN A 10.96.0.20"


@pytest.fixture
def started() -> Iterator[list[DnsdProcess]]:
    procs: list[DnsdProcess] = []
    yield procs
    for p in procs:
        p.stop()


def start(started: list[DnsdProcess], *args: str) -> DnsdProcess:
    p = start_dnsd_process(["--listen", "127.0.0.1:0", "--http", "off", "--log-level", "info", *args])
    started.append(p)
    return p


def output(p: DnsdProcess) -> str:
    return "".join(p.lines)


def assert_answers(p: DnsdProcess, zone: str = WEB_A) -> None:
    for tcp in (False, True):
        msg = query(p, "web.default.svc.cluster.local.", "A", tcp=tcp)
        assert rcode_text(msg) == "NOERROR", msg
        assert rr_lines(msg.answer) == zone_lines(zone), f"tcp={tcp}: {msg}"


def assert_stops_cleanly(p: DnsdProcess) -> None:
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0, output(p)
    assert "Traceback" not in output(p), output(p)


# ---------------------------------------------------------------- each signal keeps the process serving


@dataclass(frozen=True)
class SignalCase:
    sig: signal.Signals
    logged: str  # the line the process logs for it


SIGNAL_CASES = [
    SignalCase(signal.SIGHUP, "SIGHUP: rescanned the sources"),
    SignalCase(signal.SIGUSR1, "SIGUSR1 received: ignored"),
    SignalCase(signal.SIGUSR2, "SIGUSR2 received: ignored"),
]


@pytest.mark.parametrize("case", SIGNAL_CASES, ids=[c.sig.name for c in SIGNAL_CASES])
def test_signal_is_logged_and_the_process_keeps_answering(case: SignalCase, started: list[DnsdProcess]) -> None:
    p = start(started, "--manifests", E2E_REL)
    assert_answers(p)
    p.proc.send_signal(case.sig)
    wait_until(lambda: case.logged in output(p), timeout=10)
    assert p.proc.poll() is None, output(p)
    assert_answers(p)
    # and a second one, once the first was handled
    p.proc.send_signal(case.sig)
    wait_until(lambda: output(p).count(case.logged) >= 2, timeout=10)
    assert_answers(p)
    assert_stops_cleanly(p)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_burst_of_signals_is_survived(sig: signal.Signals, started: list[DnsdProcess]) -> None:
    """Fifty signals back to back: the process keeps answering, and SIGHUPs coalesce (never more rescans than
    signals, and at least one)."""
    p = start(started, "--manifests", E2E_REL)
    for _ in range(50):
        os.kill(p.proc.pid, sig)
    assert_answers(p)
    marker = "SIGHUP: rescanned the sources" if sig == signal.SIGHUP else f"{sig.name} received: ignored"
    wait_until(lambda: marker in output(p), timeout=10)
    assert p.proc.poll() is None, output(p)
    started_line = "SIGHUP: reloading the config and rescanning the sources" if sig == signal.SIGHUP else marker
    assert 1 <= output(p).count(started_line) <= 50
    assert_answers(p)
    assert_stops_cleanly(p)


# ---------------------------------------------------------------- SIGHUP rescans


NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: default
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: {ip}
  ports:
  - name: http
    port: 80
    protocol: TCP
"""


def test_sighup_rescans_a_change_the_watcher_cannot_see(tmp_path: Path, started: list[DnsdProcess]) -> None:
    """The manifest is a symlink to a file outside the watched directory: rewriting the target raises no event
    in that directory, so only a rescan (SIGHUP, or the periodic one 10 s after start) sees it."""
    manifests, outside = tmp_path / "manifests", tmp_path / "outside"
    manifests.mkdir()
    outside.mkdir()
    (manifests / "ns.yaml").write_text(NAMESPACE)
    target = outside / "web.yaml"
    target.write_text(SERVICE.format(ip="10.96.0.20"))
    (manifests / "web.yaml").symlink_to(target)
    p = start(started, "--manifests", str(manifests))
    assert_answers(p)

    target.write_text(SERVICE.format(ip="10.96.0.77"))
    new = "web.default.svc.cluster.local. 5 IN A 10.96.0.77"
    # the premise: the watcher does not pick this change up by itself (its debounce is 0.2 s)
    with pytest.raises(AssertionError, match="condition not met"):
        wait_until(lambda: rr_lines(query(p, "web.default.svc.cluster.local.", "A").answer) == zone_lines(new), 0.6)

    p.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: rr_lines(query(p, "web.default.svc.cluster.local.", "A").answer) == zone_lines(new), 5)
    assert_answers(p, new)
    assert "SIGHUP: rescanned the sources" in output(p), output(p)
    assert_stops_cleanly(p)


# ---------------------------------------------------------------- coalescing (in process)


@dataclass(frozen=True)
class CoalesceCase:
    id: str
    during_first: int  # SIGHUPs while the first rescan runs
    want_runs: int


COALESCE_CASES = [
    CoalesceCase("one", 0, 1),
    CoalesceCase("one-during", 1, 2),
    CoalesceCase("many-during", 25, 2),
]


@pytest.mark.parametrize("case", COALESCE_CASES, ids=[c.id for c in COALESCE_CASES])
def test_sighups_during_a_rescan_coalesce_into_one_more(case: CoalesceCase) -> None:
    async def scenario() -> tuple[int, int]:
        gate = asyncio.Event()
        running = asyncio.Event()
        concurrent = 0
        most = 0

        async def resync() -> None:
            nonlocal concurrent, most
            concurrent += 1
            most = max(most, concurrent)
            running.set()
            await gate.wait()
            concurrent -= 1

        r = Resyncer(resync)
        r.request()  # before the sources started: ignored
        await asyncio.sleep(0)
        assert r.runs == 0
        r.ready = True
        r.request()
        await asyncio.wait_for(running.wait(), 5)
        for _ in range(case.during_first):
            r.request()
        gate.set()
        await asyncio.wait_for(r.wait_idle(), 5)
        await r.close()
        return r.runs, most

    runs, most = asyncio.run(scenario())
    assert runs == case.want_runs
    assert most == 1, "two rescans ran at once"

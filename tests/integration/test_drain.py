"""Stopping without dropping (issue 7 section 4): SIGTERM or SIGINT turns /ready to 503 at once, dnsd answers on for
drain.lameduck seconds, then stops accepting, lets open TCP connections finish within drain.grace, and exits 0; a
second signal cuts the lameduck short. A real dnsd process, and a client sending queries steadily: no query is lost
before the listener closes (every query is answered up to the first one that is not, and none after it is)."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import pytest
import yaml
from support import REPO, DnsdProcess, make_query, read_tcp_message, start_dnsd_process, tcp_frame, wait_until
from support.nsd import free_port

E2E = REPO / "tests" / "data" / "store" / "e2e"
NAME = "web.default.svc.cluster.local."


# ---------------------------------------------------------------- a client that queries steadily


@dataclass
class Sent:
    at: float  # time.monotonic() when sent
    ok: bool  # a NOERROR reply with our ID came back


@dataclass
class SteadyClient:
    """Sends one UDP query at a time to each target in turn, from a thread, until stop() or its bounds (at most
    `limit` queries and `seconds` seconds). A target that stopped answering is still sent to (its queries are
    counted as lost)."""

    limit: int = 6000
    seconds: float = 30.0
    timeout: float = 0.5
    results: dict[tuple[str, int], list[Sent]] = field(default_factory=dict)
    _socks: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, target: tuple[str, int]) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(self.timeout)
        s.connect(target)  # a closed port answers with ICMP: recv fails at once instead of timing out
        with self._lock:
            self._socks[target] = s
            self.results[target] = []

    def start(self) -> SteadyClient:
        self._thread = threading.Thread(target=self._run, name="steady-client", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        sent = 0
        qid = 0
        while not self._stop.is_set() and sent < self.limit and time.monotonic() < deadline:
            with self._lock:
                targets = list(self._socks.items())
            for target, s in targets:
                qid = (qid + 1) & 0xFFFF
                q = make_query(NAME, "A")
                q.id = qid
                at = time.monotonic()
                ok = False
                try:
                    s.send(q.to_wire())
                    while True:  # a late reply to an earlier query is skipped
                        reply = dns.message.from_wire(s.recv(4096))
                        if reply.id == qid:
                            ok = reply.rcode() == 0 and bool(reply.answer)
                            break
                except OSError:
                    ok = False
                self.results[target].append(Sent(at, ok))
                sent += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for s in self._socks.values():
            s.close()

    def answered(self, target: tuple[str, int]) -> int:
        return sum(r.ok for r in list(self.results[target]))

    def first_lost(self, target: tuple[str, int]) -> Sent | None:
        return next((r for r in list(self.results[target]) if not r.ok), None)


def assert_none_lost_before_close(client: SteadyClient, target: tuple[str, int]) -> tuple[int, int]:
    """Every query to target is answered up to the first that is not, and none after it is: the listener was
    open, then closed, and nothing in between was dropped. Returns (answered, lost)."""
    results = list(client.results[target])
    oks = [r.ok for r in results]
    cut = oks.index(False) if False in oks else len(oks)
    assert all(oks[:cut]), "a query was lost while the listener was open"
    assert not any(oks[cut:]), f"answered again after a lost one: {oks[cut:].count(True)} of {len(oks) - cut}"
    return cut, len(oks) - cut


# ---------------------------------------------------------------- the process


def http_get(port: int, path: str) -> tuple[int, str]:
    """A real HTTP GET to dnsd's HTTP listener: (status, body); (0, error) when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def write_config(path: Path, listen: list[str], http_port: int, **extra: Any) -> None:
    cfg: dict[str, Any] = {
        "listen": listen,
        "http": f"127.0.0.1:{http_port}",
        "zones": None,
        "forward": None,
        "recursion": "off",
        "cluster": {"source": {"files": str(E2E)}},
    }
    cfg.update(extra)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.rename(path)  # as an editor or a ConfigMap update: the file is replaced whole


@pytest.fixture
def procs() -> Iterator[list[DnsdProcess]]:
    started: list[DnsdProcess] = []
    yield started
    for p in started:
        p.stop(timeout=15)


def output(p: DnsdProcess) -> str:
    return "".join(p.lines)


def tcp_ask(conn: socket.socket, qid: int) -> bool:
    q = make_query(NAME, "A")
    q.id = qid
    conn.sendall(tcp_frame(q.to_wire()))
    data = read_tcp_message(conn)
    return data is not None and dns.message.from_wire(data).id == qid


LAMEDUCK = 1.5
GRACE = 6.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_sequence_loses_no_query_before_the_listener_closes(
    sig: signal.Signals, tmp_path: Path, procs: list[DnsdProcess]
) -> None:
    port, http_port = free_port(), free_port()
    cfg = tmp_path / "dnsd.yaml"
    write_config(cfg, [f"127.0.0.1:{port}"], http_port, drain={"lameduck": LAMEDUCK, "grace": GRACE})
    p = start_dnsd_process(["--config", str(cfg)])
    procs.append(p)
    target = (p.host, p.port)
    wait_until(lambda: http_get(http_port, "/ready")[0] == 200, 10)
    client = SteadyClient()
    client.add(target)
    client.start()
    try:
        wait_until(lambda: client.answered(target) >= 20, 10)
        conn = socket.create_connection(target, timeout=2)  # open before the signal: served through the grace
        assert tcp_ask(conn, 1)

        signalled = time.monotonic()
        p.proc.send_signal(sig)
        # /ready turns 503 at once, naming why; /health stays 200 while dnsd serves
        _, body = wait_until(lambda: (r := http_get(http_port, "/ready"))[0] == 503 and r, 1.0, interval=0.01)
        assert "draining" in body, body
        assert http_get(http_port, "/health")[0] == 200
        answered_at_signal = client.answered(target)

        lost = wait_until(lambda: client.first_lost(target), LAMEDUCK + 5)
        assert lost.at - signalled >= LAMEDUCK - 0.1, f"stopped answering {lost.at - signalled:.2f} s after {sig.name}"
        assert client.answered(target) > answered_at_signal + 10, "hardly answered during the lameduck period"

        # the listener is closed: a new connection is refused, the one open before is still served (grace)
        with pytest.raises(OSError):
            socket.create_connection(target, timeout=2).close()
        assert tcp_ask(conn, 2), "the open TCP connection was not served during the grace period"
        conn.close()
        closed = time.monotonic()
        # nothing is left in flight: dnsd exits without waiting out the grace period, with 0
        assert p.proc.wait(GRACE + 5) == 0, output(p)
        assert time.monotonic() - closed < GRACE / 2, "waited out the grace period with nothing in flight"
    finally:
        client.stop()
    answered, lost_count = assert_none_lost_before_close(client, target)
    assert answered > 20 and lost_count >= 1
    text = output(p)
    assert "Traceback" not in text, text
    assert "lameduck over: closing the listeners" in text, text
    print(f"{sig.name}: {answered} answered before the close, {lost_count} sent after it")


def test_second_sigterm_cuts_the_lameduck_short(tmp_path: Path, procs: list[DnsdProcess]) -> None:
    port, http_port = free_port(), free_port()
    cfg = tmp_path / "dnsd.yaml"
    write_config(cfg, [f"127.0.0.1:{port}"], http_port, drain={"lameduck": 60, "grace": 5})
    p = start_dnsd_process(["--config", str(cfg)])
    procs.append(p)
    target = (p.host, p.port)
    client = SteadyClient(seconds=20)
    client.add(target)
    client.start()
    try:
        wait_until(lambda: client.answered(target) >= 5, 10)
        p.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: http_get(http_port, "/ready")[0] == 503, 2)
        before = client.answered(target)
        wait_until(lambda: client.answered(target) >= before + 5, 5)  # still answering in the lameduck
        assert client.first_lost(target) is None
        second = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0, output(p)
        assert time.monotonic() - second < 5, "the second SIGTERM did not skip the 60 s lameduck"
    finally:
        client.stop()
    assert_none_lost_before_close(client, target)
    assert "received again: closing the listeners now" in output(p), output(p)


def test_drain_waits_for_an_inflight_tcp_connection_at_most_the_grace_period(
    tmp_path: Path, procs: list[DnsdProcess]
) -> None:
    """A client that keeps its connection open past the grace period does not keep dnsd from exiting."""
    port = free_port()
    cfg = tmp_path / "dnsd.yaml"
    write_config(cfg, [f"127.0.0.1:{port}"], free_port(), drain={"lameduck": 0, "grace": 1.0})
    p = start_dnsd_process(["--config", str(cfg)])
    procs.append(p)
    with socket.create_connection((p.host, p.port), timeout=2) as conn:
        assert tcp_ask(conn, 7)
        sent = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0, output(p)
        took = time.monotonic() - sent
        assert 0.9 <= took < 4, f"exited {took:.2f} s after SIGTERM with a connection open (grace 1 s)"
        conn.settimeout(2)
        assert conn.recv(2) == b"", "the connection was not closed at the end of the grace period"


def test_drain_keys_are_validated() -> None:
    from dnsd.config import parse_config
    from dnsd.errors import ConfigError

    assert parse_config({}).drain.lameduck == 5.0 and parse_config({}).drain.grace == 5.0
    assert parse_config({"drain": {"lameduck": 0, "grace": 0.5}}).drain.lameduck == 0.0
    for bad, where in [
        ({"lameduck": -1}, "drain.lameduck"),
        ({"grace": float("inf")}, "drain.grace"),
        ({"lameduck": 301}, "drain.lameduck"),
    ]:
        with pytest.raises(ConfigError, match=where):
            parse_config({"drain": bad})

"""`workers: N` (issue 9, every core): a supervisor and N worker processes on SO_REUSEPORT sockets. Real processes
(`python -m dnsd --workers 2`) over real sockets: both workers answer (each counts its own, the sums add up), a
worker killed with SIGKILL is restarted and the queries go on being answered, SIGTERM drains every worker and the
supervisor exits 0, SIGHUP reloads every worker, /metrics sums them, a changed `workers` waits for the next start,
a worker that keeps dying stops dnsd, and the workers stop when the supervisor is gone."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import (
    REPO,
    DnsdProcess,
    make_query,
    query,
    rcode_text,
    rr_lines,
    start_dnsd_process,
    wait_until,
    zone_lines,
)

from dnsd.workers.supervisor import RESTART_LIMIT

E2E = REPO / "tests" / "data" / "store" / "e2e"
NAME = "web.default.svc.cluster.local."
WEB_A = "web.default.svc.cluster.local. 5 IN A 10.96.0.20"
HTTP_RE = re.compile(r"HTTP on 127\.0\.0\.1:(\d+) \(/health /ready /metrics for all workers")


@pytest.fixture
def started() -> Iterator[list[DnsdProcess]]:
    procs: list[DnsdProcess] = []
    yield procs
    for p in procs:
        kids = worker_pids(p.proc.pid)
        p.stop()
        for pid in kids:  # a worker left behind by a test that killed the supervisor
            wait_until(lambda pid=pid: not alive(pid), timeout=15)


def write_config(path: Path, **keys: object) -> Path:
    cfg: dict[str, object] = {
        "listen": ["127.0.0.1:0"],
        "http": "127.0.0.1:0",
        "workers": 2,
        "zones": None,
        "forward": None,
        "recursion": "off",
        "cluster": {"source": {"files": str(E2E)}},
        "drain": {"lameduck": 0, "grace": 2},
    }
    cfg.update(keys)
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(started: list[DnsdProcess], config: Path, *args: str) -> DnsdProcess:
    p = start_dnsd_process(["--config", str(config), "--log-level", "info", *args], timeout=60)
    started.append(p)
    return p


def output(p: DnsdProcess) -> str:
    return "".join(p.lines)


# ---------------------------------------------------------------- the processes and their HTTP


def worker_pids(parent: int) -> list[int]:
    """The worker processes of a supervisor: its children started with `--worker`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"--worker" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_spec(pid: int) -> dict[str, object]:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    spec: dict[str, object] = json.loads(args[args.index(b"--worker") + 1])
    return spec


def unix_get(path: str, url: str) -> str:
    """GET url from a worker's private HTTP socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(f"GET {url} HTTP/1.0\r\nHost: worker\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head
    return body.decode()


def http_port(p: DnsdProcess) -> int:
    m = HTTP_RE.search(output(p))
    assert m, output(p)
    return int(m.group(1))


def get(p: DnsdProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port(p)}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def requests_total(text: str) -> float:
    """dnsd_dns_requests summed over every label set."""
    for family in text_string_to_metric_families(text):
        if family.name == "dnsd_dns_requests":
            return sum(s.value for s in family.samples)
    return 0.0


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def worker_requests(p: DnsdProcess) -> dict[int, float]:
    """Each serving worker's own count of the queries it answered, read from its private socket."""
    out = {}
    for pid in worker_pids(p.proc.pid):
        spec = worker_spec(pid)
        assert isinstance(spec["http"], str)
        out[pid] = requests_total(unix_get(spec["http"], "/metrics"))
    return out


# ---------------------------------------------------------------- queries from many source ports


def spray(p: DnsdProcess, ports: int, per_port: int = 1, timeout: float = 2.0) -> int:
    """Send per_port queries from each of `ports` sockets (each its own source port, so the kernel's SO_REUSEPORT
    hash spreads them over the workers); returns how many got the right answer."""
    ok = 0
    want = zone_lines(WEB_A)
    for _ in range(ports):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((p.host, p.port))
            for _ in range(per_port):
                q = make_query(NAME)
                s.send(q.to_wire())
                try:
                    reply = s.recv(4096)
                except OSError:
                    continue
                msg = dns.message.from_wire(reply)
                if msg.id == q.id and rcode_text(msg) == "NOERROR" and rr_lines(msg.answer) == want:
                    ok += 1
    return ok


# ---------------------------------------------------------------- tests


def test_both_workers_answer_and_each_counts_its_own(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml"))
    pids = worker_pids(p.proc.pid)
    assert len(pids) == 2, output(p)
    assert "(2 workers)" in output(p)
    sent = 64 * 3
    assert spray(p, 64, 3) == sent
    # TCP too: each connection goes to one worker of the group.
    for _ in range(8):
        msg = query(p, NAME, tcp=True)
        assert rr_lines(msg.answer) == zone_lines(WEB_A)
    sent += 8
    counts = worker_requests(p)
    assert all(n > 0 for n in counts.values()), counts  # the kernel gave each worker a share
    assert sum(counts.values()) == sent, counts
    _status, text = get(p, "/metrics")
    assert requests_total(text) == sent  # the supervisor's /metrics is the sum
    assert sample(text, "dnsd_workers") == 2
    assert sample(text, "dnsd_worker_up", worker="0") == sample(text, "dnsd_worker_up", worker="1") == 1
    assert sample(text, "dnsd_ready") == 1
    assert sample(text, "dnsd_store_objects", kind="Service", worker="1") == 3  # per worker: a sum means nothing
    assert get(p, "/ready") == (200, "OK\n")
    assert get(p, "/health")[0] == 200


def test_a_killed_worker_is_restarted_and_queries_go_on(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml"))
    assert spray(p, 32) == 32
    before = requests_total(get(p, "/metrics")[1])
    assert before == 32
    victim = worker_pids(p.proc.pid)[0]
    index = worker_spec(victim)["index"]
    os.kill(victim, signal.SIGKILL)
    # The survivor takes the dead worker's share at once, and the restarted one joins: every query from every
    # source port is answered within the deadline (a client retries, as a resolver does).
    for _ in range(3):
        wait_until(lambda: spray(p, 16, timeout=0.5) == 16, timeout=20, interval=0.05)
    wait_until(lambda: f"worker {index} (pid {victim}) exited with signal SIGKILL: restarting" in output(p), 10)
    wait_until(lambda: len(worker_pids(p.proc.pid)) == 2 and victim not in worker_pids(p.proc.pid), 20)
    wait_until(lambda: output(p).count(f"worker {index} (pid") >= 2 and "is serving" in output(p), 20)
    wait_until(lambda: sample(get(p, "/metrics")[1], "dnsd_worker_up", worker=str(index)) == 1, 20)
    text = get(p, "/metrics")[1]
    assert sample(text, "dnsd_worker_restarts_total", worker=str(index)) == 1
    # What the dead worker had counted (at the last scrape) stays in the sum: the counter never goes back.
    assert requests_total(text) >= before + 3 * 16
    assert get(p, "/ready")[0] == 200
    assert p.proc.poll() is None


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml", drain={"lameduck": 30, "grace": 2}))
    pids = worker_pids(p.proc.pid)
    assert spray(p, 16) == 16
    p.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: output(p).count("draining: /ready says 503") == 2, timeout=10)
    assert get(p, "/ready")[0] == 503
    assert spray(p, 16) == 16  # the lameduck period: every worker still answers
    p.proc.send_signal(signal.SIGTERM)  # the second one ends the lameduck in every worker
    assert p.proc.wait(30) == 0, output(p)
    assert all(not alive(pid) for pid in pids)
    assert output(p).count("(worker=") > 0 and output(p).count("stopped (worker=") == 2, output(p)
    assert "every worker has exited" in output(p)
    assert "Traceback" not in output(p), output(p)


def test_sighup_reloads_every_worker(started: list[DnsdProcess], tmp_path: Path) -> None:
    config = write_config(tmp_path / "dnsd.yaml")
    p = start(started, config)
    p.proc.send_signal(signal.SIGHUP)
    for i in (0, 1):
        wait_until(lambda i=i: f"SIGHUP: rescanned the sources (worker={i})" in output(p), timeout=15)
    # A changed `workers` is logged as waiting for the next start, by each worker, as with one process.
    write_config(config, workers=3)
    p.proc.send_signal(signal.SIGHUP)
    for i in (0, 1):
        wait_until(lambda i=i: f"workers changes only at the next start (worker={i}, file=" in output(p), timeout=15)
    assert len(worker_pids(p.proc.pid)) == 2
    assert spray(p, 16) == 16


def test_a_worker_that_keeps_dying_stops_dnsd(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml"))
    killed: list[int] = []

    def slot0() -> int:
        for pid in worker_pids(p.proc.pid):
            try:
                if worker_spec(pid)["index"] == 0 and pid not in killed:
                    return pid
            except (OSError, ValueError):
                continue  # exited meanwhile
        return 0

    for n in range(RESTART_LIMIT + 1):
        victim = wait_until(slot0, timeout=30)
        os.kill(victim, signal.SIGKILL)  # serving or still loading: a death counts the same
        killed.append(victim)
        if n < RESTART_LIMIT:
            wait_until(lambda v=victim: f"(pid {v}) exited with signal SIGKILL: restarting" in output(p), 10)
    assert p.proc.wait(30) == 1, output(p)
    assert f"its {RESTART_LIMIT} restarts within 60s are used up: stopping dnsd" in output(p)
    assert "Traceback" not in output(p), output(p)


def test_the_workers_stop_when_the_supervisor_is_gone(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml"))
    pids = worker_pids(p.proc.pid)
    assert len(pids) == 2
    p.proc.kill()
    p.proc.wait(5)
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), timeout=15)
    assert output(p).count("the supervisor is gone: stopping") == 2, output(p)


def test_one_worker_is_one_process(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml", workers=1))
    assert worker_pids(p.proc.pid) == []
    assert "workers)" not in output(p)
    assert rr_lines(query(p, NAME).answer) == zone_lines(WEB_A)


def test_workers_flag_and_a_port_in_use(started: list[DnsdProcess], tmp_path: Path) -> None:
    p = start(started, write_config(tmp_path / "dnsd.yaml", workers=1), "--workers", "3")
    assert len(worker_pids(p.proc.pid)) == 3
    assert spray(p, 8) == 8
    # The port the first one holds: the supervisor binds before any worker starts, and fails as one process does.
    busy = tmp_path / "busy.yaml"
    write_config(busy, listen=[f"127.0.0.1:{p.port}"])
    out = subprocess.run(
        [sys.executable, "-m", "dnsd", "--config", str(busy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1, out
    assert "dnsd: cannot listen" in out.stderr, out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "dnsd", "--config", str(busy), "--workers", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "dnsd: --workers: must be between 1 and 64: 0" in bad.stderr, bad

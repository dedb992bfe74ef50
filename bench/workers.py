"""`workers: N` measured: dnsperf against dnsd with 1 and with N workers over the same manifests; per worker the
queries it answered (its own /metrics, read on its private socket), its CPU time (/proc) and its RSS; then the
write-to-answer time of a new Service as seen from many source ports (so from every worker).

    python bench/workers.py --manifests DIR --queries FILE [--workers 1 2] [--seconds 10] [--pin 0-1]
        [--dnsperf-pin CPUS] [--rounds 3] [--propagation 10] [--rate QPS]

dnsd is pinned to --pin (default: not pinned), dnsperf to --dnsperf-pin (default: not pinned). On a 2-core
machine dnsperf competes with the workers for the same cores: compare CPU per query, not QPS alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
NAME = "bench-new.default.svc.cluster.local."


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(parent: int) -> list[int]:
    """The worker processes of a supervisor (started with --worker)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"--worker" in cmd:
                out.append(int(entry))
    return sorted(out)


def worker_http(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return str(json.loads(args[args.index(b"--worker") + 1])["http"])


def unix_metrics(path: str) -> float:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: w\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = data.partition(b"\r\n\r\n")[2].decode()
    for fam in text_string_to_metric_families(body):
        if fam.name == "dnsd_dns_requests":
            return sum(x.value for x in fam.samples)
    return 0.0


def tcp_metrics(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    for fam in text_string_to_metric_families(body):
        if fam.name == "dnsd_dns_requests":
            return sum(x.value for x in fam.samples)
    return 0.0


def start(manifests: Path, workers: int, pin: str | None, tmp: Path) -> tuple[subprocess.Popen[str], int, int]:
    cfg = {
        "listen": ["127.0.0.1:0"],
        "http": "127.0.0.1:0",
        "workers": workers,
        "zones": None,
        "forward": None,
        "recursion": "off",
        "cluster": {"source": {"files": str(manifests)}},
        "log": {"level": "info"},
        "drain": {"lameduck": 0, "grace": 1},
    }
    path = tmp / f"dnsd-{workers}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = [sys.executable, "-m", "dnsd", "--config", str(path)]
    if pin:
        argv = ["taskset", "-c", pin, *argv]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    http = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"HTTP on 127\.0\.0\.1:(\d+)", line):
            http = int(m.group(1))
        if m := re.search(r"listening on udp\+tcp 127\.0\.0\.1:(\d+)", line):
            # Keep reading its output so the pipe never fills.
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
            return proc, int(m.group(1)), http
    proc.kill()
    raise RuntimeError("dnsd did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def dnsperf(port: int, queries: Path, seconds: int, pin: str | None, rate: int = 0) -> tuple[float, int]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    # 32 clients: 32 source ports, so that the SO_REUSEPORT hash spreads them over the workers.
    argv += ["-c", "32", "-T", "2", "-q", "500", "-t", "5"]
    if rate:
        argv += ["-Q", str(rate)]  # a fixed offered load: CPU per query compared at the same rate
    if pin:
        argv = ["taskset", "-c", pin, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return qps, done


def measure(args: argparse.Namespace, workers: int, tmp: Path) -> dict[str, object]:
    proc, port, http = start(args.manifests, workers, args.pin, tmp)
    try:
        pids = children(proc.pid) or [proc.pid]
        counts = (lambda: [unix_metrics(worker_http(p)) for p in pids]) if workers > 1 else lambda: [tcp_metrics(http)]
        dnsperf(port, args.queries, 3, args.dnsperf_pin)  # warm: the first pass renders every answer
        rounds = []
        for _ in range(args.rounds):
            q0, c0 = counts(), [cpu_seconds(p) for p in pids]
            sup0 = cpu_seconds(proc.pid)
            qps, _done = dnsperf(port, args.queries, args.seconds, args.dnsperf_pin, args.rate)
            q1, c1 = counts(), [cpu_seconds(p) for p in pids]
            sup1 = cpu_seconds(proc.pid)
            per = [
                {"queries": b - a, "cpu_s": round(d - c, 2), "us_per_q": round((d - c) / max(1, b - a) * 1e6, 2)}
                for a, b, c, d in zip(q0, q1, c0, c1, strict=True)
            ]
            rounds.append({"qps": qps, "workers": per, "supervisor_cpu_s": round(sup1 - sup0, 2) if workers > 1 else 0})
        rss = {"workers_mb": [round(rss_mb(p), 1) for p in pids], "supervisor_mb": round(rss_mb(proc.pid), 1)}
        prop = propagation(args, port, args.propagation, pids)
        return {"workers": workers, "rounds": rounds, "rss": rss, "propagation_ms": prop}
    finally:
        stop(proc)


def propagation(args: argparse.Namespace, port: int, trials: int, pids: list[int]) -> dict[str, object]:
    """A new Service written to the manifests: ms until each of 16 source ports (so, with the SO_REUSEPORT hash,
    every worker) answers it; the median over trials of the first and of the last to answer; and the CPU each
    worker spent per change (its watch, parse and apply; the polling queries are a few hundred per change)."""
    path = args.manifests / "zz-bench-new.yaml"
    socks = []
    for _ in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.settimeout(0.2)
        socks.append(s)
    firsts, lasts = [], []
    cpu0 = [cpu_seconds(p) for p in pids]
    try:
        for i in range(trials):
            ip = f"10.250.{i // 200}.{i % 200 + 1}"
            t0 = time.monotonic()
            path.write_text(
                f"apiVersion: v1\nkind: Service\nmetadata: {{name: bench-new, namespace: default}}\n"
                f"spec:\n  clusterIP: {ip}\n"
            )
            seen: dict[int, float] = {}
            while len(seen) < len(socks) and time.monotonic() - t0 < 20:
                for j, s in enumerate(socks):
                    if j in seen:
                        continue
                    q = dns.message.make_query(NAME, "A")
                    s.send(q.to_wire())
                    try:
                        reply = dns.message.from_wire(s.recv(4096))
                    except (OSError, dns.exception.DNSException):
                        continue
                    if reply.answer and reply.answer[0][0].address == ip:
                        seen[j] = time.monotonic() - t0
            firsts.append(min(seen.values()) * 1000)
            lasts.append(max(seen.values()) * 1000)
            time.sleep(0.3)
        cpu = [round((cpu_seconds(p) - c) / trials * 1000, 1) for p, c in zip(pids, cpu0, strict=True)]
    finally:
        path.unlink(missing_ok=True)
        for s in socks:
            s.close()
    return {
        "first_median": round(statistics.median(firsts), 1),
        "last_median": round(statistics.median(lasts), 1),
        "cpu_ms_per_change": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifests", type=Path, required=True, help="a copy you may write to (a file is added)")
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pin", default=None, help="taskset CPU list for dnsd")
    ap.add_argument("--dnsperf-pin", default=None, help="taskset CPU list for dnsperf")
    ap.add_argument("--propagation", type=int, default=10, help="trials of the write-to-answer time")
    ap.add_argument("--rate", type=int, default=0, help="dnsperf -Q: queries per second (0: as fast as it can)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            print(json.dumps(measure(args, n, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

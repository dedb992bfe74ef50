"""Store churn under load: dnsperf saturates dnsd while a manifest is rewritten as fast as each change is seen.

Prints the write-to-answer latency under load, dnsperf's QPS and loss, and dnsd's RSS and open files before and
after. Run `bash bench/run.sh` once first (it generates bench/out/cluster and bench/out/queries.txt).

    python bench/churn.py [SECONDS]      # default 30; server on core 0, dnsperf on core 1
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
NAME = "churn.shop.svc.cluster.local."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(pid: int) -> str:
    rss = next(
        line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
    )
    return f"RSS {int(rss) // 1024} MB, {len(os.listdir(f'/proc/{pid}/fd'))} open files"


def churn(port: int, manifest: Path, seconds: float, result: dict[str, object]) -> None:
    """Rewrite the manifest, wait (at most 15 s) until dnsd answers the new IP, repeat until the deadline."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    unseen = 0
    i = 0
    while time.monotonic() < deadline:
        ip = f"10.99.{i // 250 % 250}.{i % 250 + 1}"
        manifest.write_text(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: churn, namespace: shop}}\nspec:\n  clusterIP: {ip}\n"
        )
        start = time.monotonic()
        seen = False
        while not seen and time.monotonic() - start < 15:
            try:
                reply = dns.query.udp(dns.message.make_query(NAME, "A"), "127.0.0.1", port=port, timeout=0.3)
                seen = bool(reply.answer) and reply.answer[0][0].address == ip
            except Exception:
                pass
        latencies.append(time.monotonic() - start)
        unseen += not seen
        i += 1
    result.update(latencies=sorted(latencies), unseen=unseen)


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    if not (OUT / "cluster").is_dir() or not (OUT / "queries.txt").is_file():
        print("run `bash bench/run.sh` first: it generates bench/out/cluster and bench/out/queries.txt")
        return 1
    work = OUT / "churn-cluster"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(OUT / "cluster", work)
    port = free_port()
    python = os.environ.get("PYTHON", sys.executable)
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            python,
            "-m",
            "dnsd",
            "--listen",
            f"127.0.0.1:{port}",
            "--manifests",
            str(work),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "listening" not in line:
            print("dnsd did not start:", line, server.stdout.read())
            return 1
        print(f"dnsd on 127.0.0.1:{port}; before: {status(server.pid)}")
        result: dict[str, object] = {}
        writer = threading.Thread(target=churn, args=(port, work / "churn.yaml", seconds, result))
        writer.start()
        perf = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(port),
                "-d",
                str(OUT / "queries.txt"),
                "-l",
                str(int(seconds)),
                "-c",
                "4",
                "-T",
                "4",
                "-q",
                "500",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        writer.join(seconds + 30)
        for out_line in perf.stdout.splitlines():
            if "Queries lost" in out_line or "Queries per second" in out_line:
                print(out_line.strip())
        lat = result.get("latencies", [])
        assert isinstance(lat, list) and lat
        print(
            f"{len(lat)} manifest rewrites under load: write -> answer median {lat[len(lat) // 2] * 1000:.0f} ms, "
            f"p95 {lat[int(len(lat) * 0.95)] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
            f"not seen within 15 s: {result.get('unseen')}"
        )
        print(f"after: {status(server.pid)}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

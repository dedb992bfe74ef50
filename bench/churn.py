"""Store churn under load: dnsperf saturates dnsd while a manifest is rewritten as fast as each change is seen.

Prints the write-to-answer latency under load, dnsperf's QPS and loss, and dnsd's RSS and open files before and
after. Run `bash bench/run.sh` once first (it generates bench/out/cluster and bench/out/queries.txt).

    python bench/churn.py [SECONDS]      # default 30; server on core 0, dnsperf on core 1

The `answer` mode times adding services: CHANGES new manifests, each holding one new Service, are written into a
copy of CLUSTER (closed in place, or written to a hidden temporary file and renamed into place); the clock starts
once the file is closed (or renamed) and stops at the first NOERROR answer for the new name, polled over UDP.
With --load, dnsperf (`-Q QPS`) sends the QUERIES mix meanwhile.

    python bench/churn.py answer --cluster DIR [--changes 50] [--how close|rename|both] [--load --queries FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import dns.exception
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


def start_dnsd(cluster: Path, port: int, http: int) -> subprocess.Popen[str]:
    """dnsd on core 0, serving cluster; returns once it listens (the first load is complete by then)."""
    python = os.environ.get("PYTHON", sys.executable)
    server = subprocess.Popen(
        ["taskset", "-c", "0", python, "-m", "dnsd", "--listen", f"127.0.0.1:{port}", "--manifests", str(cluster),
         "--http", f"127.0.0.1:{http}", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    if "listening" not in line:
        server.kill()
        raise SystemExit(f"dnsd did not start: {line}{server.stdout.read()}")
    return server


def add_service(cluster: Path, i: int, how: str) -> str:
    """Write a manifest holding one new Service; return its name once the file is closed (or renamed)."""
    name = f"wta-{i:04d}"
    text = (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
        f"spec:\n  clusterIP: 10.98.{i // 250}.{i % 250 + 1}\n  ports: [{{name: http, port: 80}}]\n"
    )
    path = cluster / f"{name}.yaml"
    if how == "rename":
        tmp = cluster / f".{name}.yaml.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)
    return f"{name}.default.svc.cluster.local."


def first_answer(port: int, qname: str, limit: float) -> float:
    """Seconds until qname is answered NOERROR with an address (polled over UDP), or inf after limit."""
    start = time.perf_counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        while time.perf_counter() - start < limit:
            try:
                query = dns.message.make_query(qname, "A")
                reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2, sock=sock)
            except (TimeoutError, dns.exception.DNSException, OSError):
                continue
            if reply.rcode() == 0 and reply.answer:
                return time.perf_counter() - start
    finally:
        sock.close()
    return float("inf")


def answer_mode(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dnsd-churn-") as tmp:
        cluster = Path(tmp) / "cluster"
        shutil.copytree(args.cluster, cluster)
        port, http = free_port(), free_port()
        server = start_dnsd(cluster, port, http)
        perf: subprocess.Popen[str] | None = None
        try:
            if args.load:
                perf = subprocess.Popen(
                    ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(args.queries),
                     "-l", str(args.load_seconds), "-Q", str(args.qps)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                time.sleep(1.0)  # dnsperf at its rate before the first change
            lat: dict[str, list[float]] = {"close": [], "rename": []}
            for i in range(args.changes):
                how = args.how if args.how != "both" else ("close", "rename")[i % 2]
                qname = add_service(cluster, i, how)
                lat[how].append(first_answer(port, qname, 15.0))
                time.sleep(0.02)  # let the server go idle between changes
            load = f"dnsperf -Q {args.qps}" if args.load else "none"
            print(f"dnsd on 127.0.0.1:{port}, {args.cluster}, load: {load}")
            for label, values in [("all", lat["close"] + lat["rename"]), *lat.items()]:
                if not values:
                    continue
                ms = sorted(v * 1000 for v in values)
                print(
                    f"write -> answer [{label}, n={len(ms)}]: median {statistics.median(ms):.1f} ms, "
                    f"p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms"
                )
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
            prog = {
                line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("dnsd_programming_latency_seconds_") and ("_sum" in line or "_count" in line)
            }
            count = prog.get("dnsd_programming_latency_seconds_count", 0.0)
            if count:
                mean = prog["dnsd_programming_latency_seconds_sum"] / count * 1000
                print(f"dnsd_programming_latency_seconds: {count:.0f} changes, mean {mean:.1f} ms")
            if perf is not None:
                out, _ = perf.communicate(timeout=args.load_seconds + 60)
                for out_line in out.splitlines():
                    if "Queries lost" in out_line or "Queries per second" in out_line:
                        print(out_line.strip())
        finally:
            if perf is not None and perf.poll() is None:
                perf.terminate()
                perf.wait(10)
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "answer":
        parser = argparse.ArgumentParser(prog="churn.py answer")
        parser.add_argument("--cluster", type=Path, default=OUT / "cluster")
        parser.add_argument("--changes", type=int, default=50)
        parser.add_argument("--how", choices=("close", "rename", "both"), default="both")
        parser.add_argument("--load", action="store_true")
        parser.add_argument("--queries", type=Path, default=OUT / "queries.txt")
        parser.add_argument("--qps", type=int, default=20000)
        parser.add_argument("--load-seconds", type=int, default=20)
        return answer_mode(parser.parse_args(sys.argv[2:]))
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
            "--http",
            "off",
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

"""The kubernetes source at scale, against the FAKE API server (tests/support/fakeapi.py) and a real dnsd process.

    python bench/kube_scale.py scale [--services 10000 --pods 150000 --endpoints 15]
        list-to-ready time and dnsd's RSS; query latency during a storm of 10,000 watch events in about a second
        and during a rolling restart of a 5,000-endpoint service
    python bench/kube_scale.py clients [--services 10000]
        list 10,000 Services (500 a page) with the thin aiohttp client and with kubernetes_asyncio: time and peak
        memory of each, each in a child process of its own

The fake runs in this process (its own thread), dnsd in a child process (its own GIL): the list time includes the
fake's own work per page. The scale run prints its figures and writes bench/out/kube/results.json.
Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT.parent))
from support import (  # noqa: E402
    DnsdProcess,
    fakeapi,
    query,
    rcode_text,
    start_dnsd_process,
    stop_process,
)

OUT = ROOT / "out" / "kube"
DEADLINE_S = 900.0
NAMESPACES = 100


# ---------------------------------------------------------------- objects


def ip_of(i: int, base: int) -> str:
    return f"{base}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def namespace(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"ns{i}"}}


def service(i: int, port: int = 80) -> dict[str, Any]:
    ip = ip_of(i + 1, 10)
    return {
        "metadata": {"namespace": f"ns{i % NAMESPACES}", "name": f"svc{i}", "labels": {"app": f"svc{i}"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": f"svc{i}"}},
    }  # fmt: skip


def pod(i: int, svc: int) -> dict[str, Any]:
    ip = ip_of(i + 1, 11)
    return {
        "metadata": {"namespace": f"ns{svc % NAMESPACES}", "name": f"svc{svc}-{i}", "labels": {"app": f"svc{svc}"}},
        "spec": {"nodeName": f"node{i % 500}", "containers": [{"name": "app", "image": "registry.local/app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip_of(i % 500 + 1, 192)},
    }


def endpoint_slice(ns: str, svc: str, name: str, ips: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
             "targetRef": {"kind": "Pod", "namespace": ns, "name": pod_name}, "nodeName": "node1"}
            for ip, pod_name in ips
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }  # fmt: skip


def fill(fake: fakeapi.FakeApiServer, services: int, pods: int, per_service: int) -> None:
    """Put the objects straight into the fake's store (no request is in flight yet)."""
    store, res = fake.store, fakeapi.RESOURCES
    for i in range(NAMESPACES):
        store.put(res["namespaces"], namespace(i))
    for i in range(services):
        store.put(res["services"], service(i))
    p = 0
    for s in range(services):
        ips = []
        for _ in range(per_service):
            if p < pods:
                obj = pod(p, s)
                store.put(res["pods"], obj)
                ips.append((obj["status"]["podIP"], obj["metadata"]["name"]))
            else:
                ips.append((ip_of(p + 1, 11), ""))
            p += 1
        store.put(res["endpointslices"], endpoint_slice(f"ns{s % NAMESPACES}", f"svc{s}", f"svc{s}-abcde", ips))


# ---------------------------------------------------------------- measuring


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Prober:
    """Asks one name over UDP back to back from a child process of its own (so this process's GIL, busy with the
    fake, does not delay the client); each reply's (Unix time, latency ms, ok) is kept for windows to summarise."""

    def __init__(self, h: DnsdProcess, name: str, seconds: float) -> None:
        self.cmd = [sys.executable, __file__, "probe-child", h.host, str(h.port), name, str(seconds)]
        self.samples: list[tuple[float, float, bool]] = []

    def __enter__(self) -> Prober:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True, env=_child_env())
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready": the child has imported and asks from now on
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=120)
        self.samples = [tuple(row) for row in json.loads(out)]  # type: ignore[misc]

    def summary(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        rows = [r for r in self.samples if start <= r[0] <= end]
        lat = sorted(r[1] for r in rows) or [0.0]
        return {
            "queries": len(rows),
            "failed": sum(1 for r in rows if not r[2]),
            "p50_ms": round(statistics.median(lat), 3),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
            "max_ms": round(lat[-1], 3),
        }


def _child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT.parent))


def probe_child(args: argparse.Namespace) -> None:
    h = (args.host, args.port)
    rows: list[tuple[float, float, bool]] = []
    print("ready", flush=True)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            ok = rcode_text(query(h, args.name, timeout=2.0)) == "NOERROR"
        except Exception:
            ok = False
        rows.append((time.time(), (time.perf_counter() - t0) * 1000, ok))
        time.sleep(0.001)
    print(json.dumps(rows))


def wait_answer(h: DnsdProcess, name: str, want: str | None, deadline: float) -> float:
    """Poll name until its A answer holds want (an IP) or is NOERROR (want None); return when, or raise."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            msg = query(h, name, timeout=1.0)
            if rcode_text(msg) == "NOERROR" and (want is None or any(want in str(r) for r in msg.answer)):
                return time.monotonic()
        except Exception:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{name} did not get {want or 'NOERROR'} within {deadline} s")


def scale(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": {
        "services": args.services, "endpointslices": args.services, "pods": args.pods,
        "endpoints_per_slice": args.endpoints}}  # fmt: skip
    with fakeapi.FakeApiServer(token="bench", bookmark_interval=30.0) as fake:
        t0 = time.monotonic()
        fill(fake, args.services, args.pods, args.endpoints)
        results["fake_fill_s"] = round(time.monotonic() - t0, 1)
        print(f"fake filled in {results['fake_fill_s']} s", flush=True)
        kubeconfig = fake.write_kubeconfig(OUT / "kubeconfig")
        cfg = OUT / "dnsd.yaml"
        cfg.write_text(json.dumps({
            "listen": ["127.0.0.1:0"], "http": None, "zones": None, "forward": None, "recursion": "off",
            "log": {"level": "info"},
            "cluster": {"pods": "verified" if args.pods else "disabled",
                        "source": {"kubernetes": {"kubeconfig": str(kubeconfig)}}}}))  # fmt: skip
        started = time.monotonic()
        h = start_dnsd_process(["--config", str(cfg)], timeout=60)
        try:
            last = args.services - 1
            name = f"svc{last}.ns{last % NAMESPACES}.svc.cluster.local."
            ready = wait_answer(h, name, None, DEADLINE_S)
            results["list_to_ready_s"] = round(ready - started, 2)
            rss, hwm = rss_mb(h.proc.pid)
            results["rss_mib"], results["peak_rss_mib"] = round(rss, 1), round(hwm, 1)
            print(f"ready in {results['list_to_ready_s']} s, RSS {rss:.0f} MiB (peak {hwm:.0f})", flush=True)
            probe = "svc0.ns0.svc.cluster.local."
            with Prober(h, probe, 2.0) as idle:
                pass
            results["idle_query"] = idle.summary()
            # Storm 1: 10,000 Service changes as fast as the fake takes them (about a second).
            n = min(10_000, args.services)
            with Prober(h, probe, 15.0) as p:
                w0 = time.time()
                t0 = time.monotonic()
                for i in range(1, n + 1):
                    fake.upsert(service(i, port=81), kind="Service")
                sent = time.monotonic() - t0
                lname = f"svc{n}.ns{n % NAMESPACES}.svc.cluster.local."
                # the last change visible: its SRV port; A does not change, so ask SRV
                end = time.monotonic() + 120
                while time.monotonic() < end:
                    msg = query(h, f"_http._tcp.{lname}", "SRV", timeout=1.0)
                    if any(" 81 " in str(r) for r in msg.answer):
                        break
                    time.sleep(0.005)
                applied = time.monotonic() - t0
            window = p.summary(w0, w0 + applied)
            results["storm_10k_events"] = {"sent_s": round(sent, 2), "all_applied_s": round(applied, 2),
                                           "query": window}  # fmt: skip
            print(f"storm: {n} events sent in {sent:.2f} s, applied by {applied:.2f} s; {window}", flush=True)
            # Storm 2: a rolling restart of a 5,000-endpoint service (5 slices of 1,000): 50 steps, each replacing
            # 100 pods of one slice.
            big_ns, big = "ns0", "big"
            headless = {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "http", "port": 80}]}
            fake.upsert({"metadata": {"namespace": big_ns, "name": big}, "spec": headless}, kind="Service")
            slices = [[(ip_of(s * 1000 + j + 1, 12), f"big-{s}-{j}") for j in range(1000)] for s in range(5)]
            for s in range(5):
                fake.upsert(endpoint_slice(big_ns, big, f"big-{s}", slices[s]), kind="EndpointSlice")
            wait_answer(h, f"big.{big_ns}.svc.cluster.local.", None, 60)
            gen = 1
            with Prober(h, probe, 10.0) as p:
                w0 = time.time()
                t0 = time.monotonic()
                for step in range(50):
                    s = step % 5
                    k = (step // 5) * 100
                    for j in range(k, k + 100):
                        slices[s][j] = (ip_of(100_000 * gen + s * 1000 + j + 1, 13), f"big-{s}-{j}-r")
                    gen += 1 if s == 4 else 0
                    fake.upsert(endpoint_slice(big_ns, big, f"big-{s}", slices[s]), kind="EndpointSlice")
                sent = time.monotonic() - t0
                want = slices[4][999][0]
                ptr = ".".join(reversed(want.split("."))) + ".in-addr.arpa."
                end = time.monotonic() + 120
                while time.monotonic() < end:
                    if rcode_text(query(h, ptr, "PTR", timeout=1.0)) == "NOERROR":
                        break
                    time.sleep(0.005)
                applied = time.monotonic() - t0
            window = p.summary(w0, w0 + applied)
            results["rolling_restart_5000"] = {
                "steps": 50, "sent_s": round(sent, 2), "all_applied_s": round(applied, 2), "query": window
            }  # fmt: skip
            print(f"rolling restart: 50 slice updates in {sent:.2f} s, applied by {applied:.2f} s; {window}")
            rss, hwm = rss_mb(h.proc.pid)
            results["rss_after_storms_mib"], results["peak_rss_mib"] = round(rss, 1), round(hwm, 1)
        finally:
            stop_process(h.proc)
            (OUT / "dnsd.log").write_text("".join(h.lines))
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


# ---------------------------------------------------------------- clients


async def list_thin(url: str, token: str) -> int:
    import aiohttp

    from dnsd.sources.kubernetes import SERVICES, convert_page

    n, cont = 0, ""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        while True:
            params = {"limit": "500", **({"continue": cont} if cont else {})}
            async with session.get(url + SERVICES.path, params=params) as resp:
                body = await resp.read()
            page = convert_page(body, SERVICES)
            n += len(page.objects)
            if not page.cont:
                return n
            cont = page.cont


async def list_library(url: str, token: str, to_store: bool) -> int:
    from kubernetes_asyncio import client

    from dnsd.store.model import convert

    conf = client.Configuration(host=url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"})
    n, cont = 0, None
    async with client.ApiClient(conf) as api:
        v1 = client.CoreV1Api(api)
        while True:
            page = await v1.list_service_for_all_namespaces(limit=500, _continue=cont)
            for item in page.items:
                if to_store:  # what the store needs: back to a dict, then our conversion
                    doc = api.sanitize_for_serialization(item)
                    doc.update(kind="Service", apiVersion="v1")
                    convert(doc)
                n += 1
            cont = page.metadata._continue
            if not cont:
                return n


def client_child(args: argparse.Namespace) -> None:
    import gc

    if args.client != "thin":
        import kubernetes_asyncio.client  # noqa: F401  (imported before the baseline, as the thin client's are)
    import aiohttp  # noqa: F401

    import dnsd.sources.kubernetes  # noqa: F401

    gc.collect()
    if args.trace:  # a second run: the peak of Python allocations (tracemalloc slows the run, so not timed)
        tracemalloc.start()
    t0 = time.perf_counter()
    if args.client == "thin":
        n = asyncio.run(list_thin(args.url, args.token))
    else:
        n = asyncio.run(list_library(args.url, args.token, args.client == "library+convert"))
    took = time.perf_counter() - t0
    row: dict[str, Any] = {"client": args.client, "objects": n}
    if args.trace:
        row["peak_python_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    else:
        row["seconds"] = round(took, 2)
    print(json.dumps(row))


def clients(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with fakeapi.FakeApiServer(token="bench") as fake:
        for i in range(args.services):
            fake.store.put(fakeapi.RESOURCES["services"], service(i))
        for which, trace in [
            (w, t) for w in ("thin", "library", "library+convert") for t in ("", "--trace")
        ] * args.repeat:
            cmd = [sys.executable, __file__, "client-child", "--client", which, "--url", fake.url, "--token", "bench"]
            out = subprocess.run(
                cmd + ([trace] if trace else []),
                capture_output=True, text=True, timeout=600, env=_child_env(),
            )  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--services", type=int, default=10_000)
    s.add_argument("--pods", type=int, default=150_000)
    s.add_argument("--endpoints", type=int, default=15, help="endpoints per service slice")
    c = sub.add_parser("clients")
    c.add_argument("--services", type=int, default=10_000)
    c.add_argument("--repeat", type=int, default=1)
    k = sub.add_parser("client-child")
    k.add_argument("--client", required=True)
    k.add_argument("--url", required=True)
    k.add_argument("--token", required=True)
    k.add_argument("--trace", action="store_true")
    pc = sub.add_parser("probe-child")
    pc.add_argument("host")
    pc.add_argument("port", type=int)
    pc.add_argument("name")
    pc.add_argument("seconds", type=float)
    args = ap.parse_args()
    if args.cmd == "scale":
        scale(args)
    elif args.cmd == "clients":
        clients(args)
    elif args.cmd == "probe-child":
        probe_child(args)
    else:
        client_child(args)


if __name__ == "__main__":
    main()

"""Run dnsperf against NSD and dnsd serving the same 1,000-service cluster; print and save the figures.

Called by bench/run.sh after bench/gen.py has written OUT (see bench/README.md). Steps, per server:
start it pinned to core 0 (taskset), wait until `dig` gets a NOERROR answer, run dnsperf pinned to
core 1, record the server's CPU time over the run, stop the server by PID (SIGTERM). Before dnsd's
run, a sample of the query file is sent to both servers with dnspython and the answers compared
(rcode, answer section, authority types), so the two really serve the same names.

Everything is bounded: start-up waits, dnsperf's own -l, and the stop wait.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from support import stop_process  # noqa: E402  (tests/support: NSD's config and process helpers, shared)
from support.nsd import free_port, write_nsd_conf  # noqa: E402

SERVER_CORE = "0"
CLIENT_CORE = "1"
DOMAIN = "cluster.local"


@dataclass
class PerfResult:
    server: str
    port: int = 0
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    lost_pct: float = 0.0
    avg_latency_ms: float = 0.0
    min_latency_ms: float = 0.0
    max_latency_ms: float = 0.0
    stddev_latency_ms: float = 0.0
    run_time_s: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    response_size: int = 0
    server_cpu_s: float = 0.0
    cpu_us_per_query: float = 0.0
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    steal_pct: float = 0.0
    other_cpu_pct: float = 0.0
    error: str = ""


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def pin(core: str, argv: list[str], can_pin: bool) -> list[str]:
    return ["taskset", "-c", core, *argv] if can_pin else argv


def dig_status(port: int, name: str, qtype: str = "A") -> str:
    """The rcode dig reports for one query ('' if no answer)."""
    try:
        out = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), name, qtype, "+norec", "+time=1", "+tries=1"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except subprocess.TimeoutExpired:
        return ""
    m = re.search(r"status: (\w+)", out)
    return m.group(1) if m else ""


def wait_answering(proc: subprocess.Popen[bytes], port: int, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering")
        last = dig_status(port, name)
        if last == "NOERROR":
            return
        time.sleep(0.2)
    raise RuntimeError(f"no NOERROR answer for {name} within {timeout:.0f} s (last status {last or 'none'})")


def _stat_ticks(pid: int) -> tuple[int, int]:
    """(ppid, utime+stime ticks) of one process, (0, 0) if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return (0, 0)
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by root and its live descendants (NSD forks its server processes)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            ppid, t = _stat_ticks(int(d.name))
            children.setdefault(ppid, []).append(int(d.name))
            ticks[int(d.name)] = t
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- dnsperf


def cpu_ticks() -> tuple[int, int, int]:
    """(user+nice+system, steal, total) jiffies of all CPUs from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return (0, 0, 0)
    vals = [int(x) for x in first[1:9]] + [0] * 8
    return vals[0] + vals[1] + vals[2], vals[7], sum(vals[:8])


def parse_dnsperf(server: str, text: str) -> PerfResult:
    r = PerfResult(server)

    def num(pattern: str) -> str | None:
        m = re.search(pattern, text)
        return m.group(1) if m else None

    r.sent = int(num(r"Queries sent:\s+(\d+)") or 0)
    r.completed = int(num(r"Queries completed:\s+(\d+)") or 0)
    r.lost = int(num(r"Queries lost:\s+(\d+)") or 0)
    r.lost_pct = float(num(r"Queries lost:\s+\d+ \(([\d.]+)%\)") or 0.0)
    r.qps = float(num(r"Queries per second:\s+([\d.]+)") or 0.0)
    r.run_time_s = float(num(r"Run time \(s\):\s+([\d.]+)") or 0.0)
    m = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", text)
    if m:
        r.avg_latency_ms, r.min_latency_ms, r.max_latency_ms = (float(x) * 1000 for x in m.groups())
    r.stddev_latency_ms = float(num(r"Latency StdDev \(s\):\s+([\d.]+)") or 0.0) * 1000
    codes = num(r"Response codes:\s+(.*)")
    if codes:
        r.rcodes = {k: int(v) for k, v in re.findall(r"(\w+) (\d+) \(", codes)}
    r.response_size = int(num(r"Average packet size:\s+request \d+, response (\d+)") or 0)
    if not r.sent:
        r.error = "could not parse dnsperf output"
    return r


def run_dnsperf(server: str, port: int, args: argparse.Namespace, out: Path, can_pin: bool, pid: int) -> PerfResult:
    cmd = pin(
        CLIENT_CORE,
        [
            "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(out / "queries.txt"),
            "-l", str(args.seconds), "-c", str(args.clients), "-T", str(args.threads),
            "-q", str(args.outstanding), "-t", "5", "-b", "4096",
        ],
        can_pin,
    )  # fmt: skip
    log(f"{server}: {' '.join(cmd)}")
    cpu0 = tree_cpu_seconds(pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st0 = cpu_ticks()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=args.seconds + 60)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st1 = cpu_ticks()
    cpu1 = tree_cpu_seconds(pid)
    text = proc.stdout + proc.stderr
    (out / f"dnsperf-{server}.txt").write_text(f"$ {' '.join(cmd)}\n{text}")
    print(text, flush=True)
    r = parse_dnsperf(server, text)
    r.port = port
    r.server_cpu_s = cpu1 - cpu0
    # CPU shares over the window dnsperf ran (its -l plus start-up and the wait for late answers)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    r.server_cpu_pct = r.server_cpu_s / wall * 100
    r.client_cpu_pct = client / wall * 100
    if st1[2] > st0[2]:
        r.steal_pct = (st1[1] - st0[1]) / (st1[2] - st0[2]) * 100
        # CPU that neither the server nor dnsperf used: other processes on the machine (approximate:
        # interrupt and softirq time, where the kernel does part of the UDP work, is not counted anywhere)
        other = (st1[0] - st0[0]) / os.sysconf("SC_CLK_TCK") - r.server_cpu_s - client
        r.other_cpu_pct = max(0.0, other / wall * 100)
    if r.completed:
        r.cpu_us_per_query = r.server_cpu_s / r.completed * 1e6
    if proc.returncode != 0 and not r.error:
        r.error = f"dnsperf exited {proc.returncode}"
    return r


# ---------------------------------------------------------------- servers


def first_a_query(out: Path) -> str:
    for line in (out / "queries.txt").read_text().splitlines():
        name, qtype = line.split()
        if qtype == "A" and not name.startswith("_"):
            return name
    raise RuntimeError("no A query in queries.txt")


def start_nsd(out: Path, port: int, can_pin: bool) -> subprocess.Popen[bytes]:
    d = out / "nsd"
    # CoreDNS (and dnsd) put no NS records in the authority section of positive answers; NSD does unless
    # minimal-responses is on. With it on, NSD also leaves out the SRV targets' A records (dnsd sends them),
    # so NSD does slightly less work per SRV query: the comparison favours NSD. verbosity 0: no logging on the
    # measured path.
    conf = write_nsd_conf(
        d,
        port,
        {DOMAIN: d / f"{DOMAIN}.zone"},
        verbosity=0,
        minimal=True,
        note="generated by bench/bench.py: NSD serving the benchmark zone on loopback, one server process",
    )
    subprocess.run(["nsd-checkconf", str(conf)], check=True)
    subprocess.run(["nsd-checkzone", DOMAIN, str(d / f"{DOMAIN}.zone")], check=True, capture_output=True)
    cmd = pin(SERVER_CORE, ["nsd", "-d", "-c", str(conf)], can_pin)
    log(f"nsd: {' '.join(cmd)}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_dnsd(out: Path, port: int, python: str, can_pin: bool) -> subprocess.Popen[bytes]:
    cmd = pin(
        SERVER_CORE,
        [python, "-m", "dnsd", "--listen", f"127.0.0.1:{port}", "--manifests", str(out / "cluster"),
         "--log-level", "warning"],
        can_pin,
    )  # fmt: skip
    log(f"dnsd: {' '.join(cmd)}")
    logf = (out / "dnsd.log").open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=env)


# ---------------------------------------------------------------- same answers?


def compare_answers(out: Path, nsd_port: int, dnsd_port: int, sample: int) -> tuple[int, list[str]]:
    """Send a sample of the query file to both servers (UDP, no EDNS, like dnsperf); list differences."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    def canon(section: list[Any]) -> list[str]:
        return sorted(f"{rr.name} {rr.ttl} {dns.rdatatype.to_text(rr.rdtype)} {rd}" for rr in section for rd in rr)

    lines = sorted(set((out / "queries.txt").read_text().split("\n")) - {""})
    picked = random.Random(7).sample(lines, min(sample, len(lines)))
    diffs: list[str] = []
    for line in picked:
        name, qtype = line.split()
        got: dict[str, Any] = {}
        for server, port in (("nsd", nsd_port), ("dnsd", dnsd_port)):
            q = dns.message.make_query(name, qtype, use_edns=False)
            try:
                got[server] = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
            except (dns.exception.DNSException, OSError, ValueError) as exc:  # a difference, not a crash
                got[server] = exc
        a, b = got["nsd"], got["dnsd"]
        if isinstance(a, Exception) or isinstance(b, Exception):
            diffs.append(f"{line}: nsd={a!r} dnsd={b!r}")
            continue
        why = []
        if a.rcode() != b.rcode():
            why.append(f"rcode nsd={dns.rcode.to_text(a.rcode())} dnsd={dns.rcode.to_text(b.rcode())}")
        if bool(a.flags & dns.flags.AA) != bool(b.flags & dns.flags.AA):
            why.append("AA differs")
        if canon(a.answer) != canon(b.answer):
            why.append(f"answer nsd={canon(a.answer)} dnsd={canon(b.answer)}")
        auth_a = sorted(dns.rdatatype.to_text(r.rdtype) for r in a.authority)
        auth_b = sorted(dns.rdatatype.to_text(r.rdtype) for r in b.authority)
        if auth_a != auth_b:
            why.append(f"authority types nsd={auth_a} dnsd={auth_b}")
        if why:
            diffs.append(f"{line}: " + "; ".join(why))
    return len(picked), diffs


# ---------------------------------------------------------------- report


def tool_version(cmd: list[str]) -> str:
    """The version a tool prints ('Version 1.2.3' or 'version 1.2.3'), '?' when it prints none."""
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(r"(?:Version|version) ([\d.]+)", p.stdout + p.stderr)
    return m.group(1) if m else "?"


def python_version(python: str) -> str:
    """The version of the interpreter that runs dnsd."""
    cmd = [python, "-c", "import platform; print(platform.python_version())"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30).stdout.strip()


def load_notes(label: str, r: Any, limits: str) -> list[str]:
    """Notes for a run whose figures the machine's load may have bent: other processes busy (r.other_cpu_pct), or
    the server short of its own core (r.server_cpu_pct: limits says what else may have held it back)."""
    notes = []
    if r.other_cpu_pct > 10:
        notes.append(
            f"{label}: other processes used ~{r.other_cpu_pct:.0f}% of a core during the run;"
            " the machine was busy and the figures are less reliable"
        )
    if r.server_cpu_pct < 90:
        notes.append(
            f"{label}: the server used only {r.server_cpu_pct:.0f}% of its core: something else ({limits}) limited"
            " this run"
        )
    return notes


def add_dnsperf_args(ap: argparse.ArgumentParser) -> None:
    """dnsperf's knobs and the interpreter that runs dnsd, shared with bench/resolver.py (BENCH_* in the env)."""
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "20")))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("BENCH_CLIENTS", "4")))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "4")))
    ap.add_argument("--outstanding", type=int, default=int(os.environ.get("BENCH_OUTSTANDING", "500")))
    ap.add_argument("--python", default=os.environ.get("PYTHON", sys.executable), help="interpreter that runs dnsd")


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": f"{os.cpu_count()} x {model or platform.processor() or '?'}",
        "kernel": platform.release(),
        "dnsperf": tool_version(["dnsperf", "-h"]),
        "nsd": tool_version(["nsd", "-v"]),
    }


def report(results: list[PerfResult], args: argparse.Namespace, meta: dict[str, Any], out: Path) -> str:
    rows = [
        (
            "server",
            "QPS",
            "lost",
            "lost %",
            "avg ms",
            "max ms",
            "sd ms",
            "CPU us/q",
            "srv CPU%",
            "perf CPU%",
            "steal%",
            "other CPU%",
            "NOERROR",
            "NXDOMAIN",
            "resp B",
        )
    ]
    for r in results:
        rows.append(
            (
                r.server, f"{r.qps:,.0f}", f"{r.lost}", f"{r.lost_pct:.2f}", f"{r.avg_latency_ms:.3f}",
                f"{r.max_latency_ms:.1f}", f"{r.stddev_latency_ms:.3f}", f"{r.cpu_us_per_query:.1f}",
                f"{r.server_cpu_pct:.0f}", f"{r.client_cpu_pct:.0f}", f"{r.steal_pct:.1f}", f"{r.other_cpu_pct:.0f}",
                f"{r.rcodes.get('NOERROR', 0)}", f"{r.rcodes.get('NXDOMAIN', 0)}", f"{r.response_size}",
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )
    lines = [
        f"dnsd benchmark, {meta['date']}",
        (
            f"machine: {meta['cpu']}; kernel {meta['kernel']}; dnsperf {meta['dnsperf']}; NSD {meta['nsd']};"
            f" python {meta.get('python', '?')}"
        ),
        (
            f"cluster: {meta['gen'].get('services')} services ({meta['gen'].get('headless')} headless), "
            f"{meta['gen'].get('zone_records')} records; queries: {meta['gen'].get('queries')} lines "
            f"{meta['gen'].get('query_mix')}"
        ),
        (
            f"dnsperf: -l {args.seconds} -c {args.clients} -T {args.threads} -q {args.outstanding}, UDP, no EDNS, "
            f"unbounded rate; server on core {SERVER_CORE}, dnsperf on core {CLIENT_CORE}"
            + ("" if meta.get("pinned") else " (NOT PINNED: taskset or a second core missing)")
        ),
        "",
        table,
        "",
    ]
    by = {r.server: r for r in results}
    for r in results:
        if r.error:
            lines.append(f"{r.server}: ERROR {r.error}")
    if "nsd" in by and "dnsd" in by and by["nsd"].qps > 0 and not by["dnsd"].error:
        ratio = by["dnsd"].qps / by["nsd"].qps
        meta["ratio"] = ratio
        met = ratio >= 0.60 and by["dnsd"].lost_pct < 0.1
        meta["target_met"] = met
        lines.append(f"ratio dnsd/NSD: {ratio:.2f} ({ratio * 100:.0f}% of NSD's QPS)")
        lines.append(f"target (issue 2): dnsd >= 60% of NSD's QPS with < 0.1% loss: {'MET' if met else 'NOT MET'}")
    if meta.get("compare"):
        c = meta["compare"]
        lines.append(f"same answers: {c['checked'] - len(c['diffs'])}/{c['checked']} sampled queries identical "
                     f"(rcode, AA, answer, authority types)")  # fmt: skip
        for d in c["diffs"][:10]:
            lines.append(f"  DIFF {d}")
        if len(c["diffs"]) > 10:
            lines.append(f"  ... {len(c['diffs']) - 10} more in {out / 'compare.txt'}")
    for r in results:
        if not r.error:
            meta["notes"] += load_notes(r.server, r, "dnsperf, the kernel, other load")
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    text = "\n".join(lines) + "\n"
    (out / "results.txt").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2, default=str) + "\n"
    )
    return text


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    add_dnsperf_args(ap)
    ap.add_argument("--servers", default=os.environ.get("BENCH_SERVERS", "nsd,dnsd"), help="comma list: nsd,dnsd")
    ap.add_argument("--compare-sample", type=int, default=300)
    ap.add_argument("--start-timeout", type=float, default=60.0)
    args = ap.parse_args()

    out: Path = args.out.resolve()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    gen = json.loads((out / "expected.json").read_text())
    meta: dict[str, Any] = {**machine(), "gen": gen, "notes": [], "command": " ".join(sys.argv)}
    meta["python"] = python_version(args.python)
    can_pin = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
    meta["pinned"] = can_pin
    if not can_pin:
        meta["notes"].append("server and dnsperf were not pinned to separate cores")
    probe = first_a_query(out)
    results: list[PerfResult] = []
    nsd_proc: subprocess.Popen[bytes] | None = None
    nsd_port = 0
    try:
        if "nsd" in servers:
            nsd_port = free_port()
            nsd_proc = start_nsd(out, nsd_port, can_pin)
            try:
                wait_answering(nsd_proc, nsd_port, probe, 30)
                log(f"nsd answers on 127.0.0.1:{nsd_port} (pid {nsd_proc.pid})")
                results.append(run_dnsperf("nsd", nsd_port, args, out, can_pin, nsd_proc.pid))
            except RuntimeError as exc:
                log(f"nsd: {exc}")
                results.append(PerfResult("nsd", nsd_port, error=str(exc)))
        if "dnsd" in servers:
            dnsd_port = free_port()
            dnsd_proc = start_dnsd(out, dnsd_port, args.python, can_pin)
            try:
                t0 = time.monotonic()
                wait_answering(dnsd_proc, dnsd_port, probe, args.start_timeout)
                log(f"dnsd answers on 127.0.0.1:{dnsd_port} (pid {dnsd_proc.pid}) after {time.monotonic() - t0:.1f} s")
                if nsd_proc is not None and nsd_proc.poll() is None:
                    checked, diffs = compare_answers(out, nsd_port, dnsd_port, args.compare_sample)
                    meta["compare"] = {"checked": checked, "diffs": diffs}
                    (out / "compare.txt").write_text("\n".join(diffs) + ("\n" if diffs else ""))
                    log(f"compared {checked} sampled queries with NSD: {len(diffs)} differ")
                    stop_process(nsd_proc)  # NSD stays idle on core 0 until here; stop it before dnsd's run
                results.append(run_dnsperf("dnsd", dnsd_port, args, out, can_pin, dnsd_proc.pid))
            except RuntimeError as exc:
                log(f"dnsd: {exc}; last lines of {out / 'dnsd.log'}:")
                print("".join((out / "dnsd.log").read_text(errors="replace").splitlines(True)[-20:]), flush=True)
                results.append(PerfResult("dnsd", dnsd_port, error=str(exc)))
            finally:
                code = stop_process(dnsd_proc)
                if code != 0:
                    meta["notes"].append(f"dnsd exited with code {code} on SIGTERM (expected 0)")
    finally:
        if nsd_proc is not None:
            stop_process(nsd_proc)
    print()
    print(report(results, args, meta, out), end="", flush=True)
    log(f"written {out / 'results.txt'} and {out / 'results.json'}")
    strict = os.environ.get("BENCH_STRICT") == "1"
    if any(r.error for r in results):
        return 1
    if strict and not meta.get("target_met", False):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

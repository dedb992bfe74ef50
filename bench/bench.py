"""Run dnsperf against NSD (and Knot) and dnsd serving the same generated cluster; print and save the figures.

Called by bench/run.sh after bench/gen.py has written OUT (see bench/README.md). Steps, per server:
start it pinned to core 0 (taskset) and time it until it answers NOERROR for a known name (the ready time:
NSD's and Knot's include loading the zone, dnsd's everything from the process start), note its memory, run
dnsperf pinned to core 1 over the query mix twice (a short pass warms, the second is measured), then over
OUT/unique.txt once (names never repeated: the miss path), note its memory again, stop it by PID
(SIGTERM). Before dnsd's runs, a sample of the query file is sent to NSD and dnsd with dnspython and the
answers compared (rcode, answer section, authority types), so the two really serve the same names.

Everything is bounded: start-up waits (--start-timeout), dnsperf's own -l, and the stop wait.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
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
    # per server, not per dnsperf run: set on the mix's result
    ready_s: float = 0.0  # from the process start to the first NOERROR for a known name
    rss_ready_mb: float = 0.0  # RSS and PSS of the server's process tree once ready, and after the runs
    pss_ready_mb: float = 0.0
    rss_after_mb: float = 0.0
    pss_after_mb: float = 0.0
    unique: dict[str, Any] | None = None  # the never-repeated stream's PerfResult (asdict), if it ran


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def pin(core: str, argv: list[str], can_pin: bool) -> list[str]:
    return ["taskset", "-c", core, *argv] if can_pin else argv


def rcode_of(port: int, name: str, timeout: float = 0.25) -> str:
    """The rcode of one UDP query (RD=0, no EDNS) to 127.0.0.1:port, '' when no answer comes within timeout."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(name, "A", use_edns=False)
    q.flags &= ~dns.flags.RD
    try:
        return dns.rcode.to_text(dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout).rcode())
    except (dns.exception.DNSException, OSError):
        return ""


def wait_ready(proc: subprocess.Popen[bytes], port: int, name: str, t0: float, timeout: float) -> float:
    """Seconds from t0 (taken just before the server was started) to its first NOERROR answer for name: before its
    data is loaded a server answers nothing, or SERVFAIL (dnsd before its first sync), so neither counts."""
    deadline = t0 + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering")
        last = rcode_of(port, name)
        if last == "NOERROR":
            return time.monotonic() - t0
        time.sleep(0.02)
    raise RuntimeError(f"no NOERROR answer for {name} within {timeout:.0f} s (last status {last or 'none'})")


def tree_pids(root: int) -> list[int]:
    """root and its live descendants (NSD forks its server and xfrd processes; dnsd its workers)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            children.setdefault(_stat_ticks(int(d.name))[0], []).append(int(d.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory_mb(root: int) -> tuple[float, float]:
    """(RSS, PSS) of root's process tree in MiB. RSS sums each process's resident pages, so pages that forked
    processes share (NSD's zone in its main and server process) count once per process; PSS divides every shared
    page among its sharers: the memory the tree really holds."""
    rss = pss = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Rss:", "Pss:")):
                    kb = int(line.split()[1])
                    if line.startswith("Rss:"):
                        rss += kb
                    else:
                        pss += kb
        except (OSError, ValueError):
            continue
    return rss / 1024, pss / 1024


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


def run_dnsperf(
    server: str,
    port: int,
    args: argparse.Namespace,
    out: Path,
    can_pin: bool,
    pid: int,
    *,
    queries: Path | None = None,
    seconds: int | None = None,
    once: bool = False,
    tag: str = "",
) -> PerfResult:
    """dnsperf against 127.0.0.1:port for `seconds` (args.seconds) over `queries` (out/queries.txt, repeated as
    often as the time allows; once: each line at most once, dnsperf -n 1, so the run ends early when the file
    does); its output goes to out/dnsperf-<server><tag>.txt."""
    data = queries if queries is not None else out / "queries.txt"
    cmd = pin(
        CLIENT_CORE,
        [
            "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data),
            "-l", str(seconds or args.seconds), "-c", str(args.clients), "-T", str(args.threads),
            "-q", str(args.outstanding), "-t", "5", "-b", "4096", *(["-n", "1"] if once else []),
        ],
        can_pin,
    )  # fmt: skip
    log(f"{server}: {' '.join(cmd)}")
    cpu0 = tree_cpu_seconds(pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st0 = cpu_ticks()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=(seconds or args.seconds) + 60)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st1 = cpu_ticks()
    cpu1 = tree_cpu_seconds(pid)
    text = proc.stdout + proc.stderr
    (out / f"dnsperf-{server}{tag}.txt").write_text(f"$ {' '.join(cmd)}\n{text}")
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
    log(
        f"{server}{tag}: {r.qps:,.0f} QPS over {r.run_time_s:.1f} s, {r.completed:,} answered, {r.lost} lost,"
        f" {r.cpu_us_per_query:.1f} us CPU/query{'; ' + r.error if r.error else ''} (dnsperf-{server}{tag}.txt)"
    )
    return r


# ---------------------------------------------------------------- servers


def first_a_query(out: Path) -> str:
    for line in (out / "queries.txt").read_text().splitlines():
        name, qtype = line.split()
        if qtype == "A" and not name.startswith("_"):
            return name
    raise RuntimeError("no A query in queries.txt")


def nsd_command(out: Path, port: int, can_pin: bool) -> list[str]:
    d = out / "nsd"
    # CoreDNS (and dnsd) put no NS records in the authority section of positive answers; NSD does unless
    # minimal-responses is on. With it on, NSD also leaves out the SRV targets' A records (dnsd sends them),
    # so NSD does slightly less work per SRV query: the comparison favours NSD. verbosity 0: no logging on the
    # measured path. database "": NSD reads the zone file at every start (so its ready time includes the load).
    conf = write_nsd_conf(
        d,
        port,
        {DOMAIN: d / f"{DOMAIN}.zone"},
        verbosity=0,
        minimal=True,
        note="generated by bench/bench.py: NSD serving the benchmark zone on loopback, one server process",
    )
    subprocess.run(["nsd-checkconf", str(conf)], check=True, timeout=30)
    return pin(SERVER_CORE, ["nsd", "-d", "-c", str(conf)], can_pin)


KNOT_CONF = """\
# generated by bench/bench.py: Knot serving the benchmark zone on loopback, one UDP worker (as NSD's one server)
server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
log:
  - target: "{d}/knot.log"
    any: warning
template:
  - id: default
    storage: "{zones}"
    semantic-checks: off
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
zone:
  - domain: {domain}
    file: "{zones}/{domain}.zone"
"""


def knot_command(out: Path, port: int, can_pin: bool) -> list[str]:
    """Knot (knotd, Debian package knot) on the NSD zone file: no journal, no zone file written back; a fresh
    database directory, so every start loads the zone file."""
    d = out / "knot"
    shutil.rmtree(d, ignore_errors=True)
    (d / "db").mkdir(parents=True)
    conf = d / "knot.conf"
    conf.write_text(KNOT_CONF.format(d=d, port=port, zones=out / "nsd", domain=DOMAIN))
    subprocess.run(["knotc", "-c", str(conf), "conf-check"], check=True, timeout=30, capture_output=True)
    return pin(SERVER_CORE, ["knotd", "-c", str(conf)], can_pin)


def dnsd_command(out: Path, port: int, python: str, can_pin: bool, workers: int | None) -> list[str]:
    argv = [python, "-m", "dnsd", "--listen", f"127.0.0.1:{port}", "--manifests", str(out / "cluster")]
    argv += ["--http", "off", "--log-level", "warning"]  # no HTTP port: it could be taken (8080 by default)
    if workers is None:  # BENCH_WORKERS: only when set, so a dnsd without the option still runs
        return pin(SERVER_CORE, argv, can_pin)
    argv += ["--workers", str(workers)]
    # N workers get N cores (at most all of them): on a 2-core machine the second is dnsperf's too, so they compete
    cores = f"0-{min(workers, os.cpu_count() or 1) - 1}"
    return pin(cores, argv, can_pin)


def launch(server: str, cmd: list[str], logfile: Path) -> subprocess.Popen[bytes]:
    log(f"{server}: {' '.join(cmd)}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if server == "dnsd" and "DNSD_CACHE_DIR" not in os.environ:
        # A cold start: dnsd's parse cache (~/.cache/dnsd) would otherwise hold these files from an earlier run and
        # make "ready" a restart's figure. BENCH: set DNSD_CACHE_DIR to measure a warm start on purpose.
        cache = tempfile.mkdtemp(prefix="dnsd-bench-cache-")
        atexit.register(shutil.rmtree, cache, True)
        env["DNSD_CACHE_DIR"] = cache
        log(f"{server}: parse cache {cache} (empty: a cold start)")
    with logfile.open("wb") as logf:
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


def add_dnsperf_args(ap: argparse.ArgumentParser, seconds: int | None = 20) -> None:
    """dnsperf's knobs and the interpreter that runs dnsd, shared with bench/resolver.py (BENCH_* in the env).
    seconds: the default of --seconds when BENCH_SECONDS is not set (None: the caller picks one later)."""
    env_seconds = os.environ.get("BENCH_SECONDS")
    ap.add_argument("--seconds", type=int, default=int(env_seconds) if env_seconds else seconds)
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


def table(rows: list[tuple[str, ...]]) -> str:
    """Columns aligned: the first left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )


# issue 9's targets for 100,000 services: (what, dnsd's figure, the target, met)
RSS_TARGET_MB = 256.0
READY_TARGET_S = 5.0


def targets(by: dict[str, PerfResult]) -> list[tuple[str, str, str, bool]]:
    """dnsd against issue 9's targets (NSD's figures from the same run for the ratios)."""
    d, n = by.get("dnsd"), by.get("nsd")
    if d is None or d.error:
        return []
    out = []
    if n is not None and not n.error and n.qps:
        ratio = d.qps / n.qps
        out.append(("query mix, dnsd/NSD QPS", f"{ratio:.2f}", ">= 0.80", ratio >= 0.80))
        if d.unique and n.unique and n.unique["qps"]:
            ratio = d.unique["qps"] / n.unique["qps"]
            out.append(("never-repeated names, dnsd/NSD QPS", f"{ratio:.2f}", ">= 0.50", ratio >= 0.50))
    mem = max(d.pss_ready_mb, d.pss_after_mb)
    out.append(
        ("memory (PSS of dnsd's processes)", f"{mem:.0f} MB", f"<= {RSS_TARGET_MB:.0f} MB", mem <= RSS_TARGET_MB)
    )
    out.append(("ready after start", f"{d.ready_s:.1f} s", f"<= {READY_TARGET_S:.0f} s", d.ready_s <= READY_TARGET_S))
    return out


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
    size_rows = [
        ("server", "ready s", "RSS MB ready/after", "PSS MB ready/after", "mix QPS", "CPU us/q",
         "never-repeated QPS", "lost", "CPU us/q", "names asked")
    ]  # fmt: skip
    for r in results:
        if r.error and not r.ready_s:
            continue
        u = r.unique or {}
        size_rows.append(
            (
                r.server, f"{r.ready_s:.2f}", f"{r.rss_ready_mb:.0f}/{r.rss_after_mb:.0f}",
                f"{r.pss_ready_mb:.0f}/{r.pss_after_mb:.0f}", f"{r.qps:,.0f}", f"{r.cpu_us_per_query:.1f}",
                f"{u.get('qps', 0):,.0f}" if u else "-", f"{u.get('lost', 0)}" if u else "-",
                f"{u.get('cpu_us_per_query', 0):.1f}" if u else "-", f"{u.get('sent', 0):,}" if u else "-",
            )
        )  # fmt: skip
    gen = meta["gen"]
    lines = [
        f"dnsd benchmark, {meta['date']}: cluster scenario, {gen.get('services'):,} services",
        (
            f"machine: {meta['cpu']}; kernel {meta['kernel']}; dnsperf {meta['dnsperf']}; NSD {meta['nsd']};"
            f" Knot {meta.get('knot', '-')}; python {meta.get('python', '?')}; dnsd at {meta.get('dnsd_source', '?')}"
            + (f" with --workers {args.workers}" if args.workers is not None else "")
        ),
        (
            f"cluster: {gen.get('services')} services ({gen.get('headless')} headless), "
            f"{gen.get('zone_records')} records; queries: {gen.get('queries')} lines "
            f"{gen.get('query_mix')}; never-repeated: {gen.get('unique_queries', 0):,} lines"
        ),
        (
            f"dnsperf: -c {args.clients} -T {args.threads} -q {args.outstanding}, UDP, no EDNS, unbounded rate;"
            f" query mix: -l {args.warm} to warm, then -l {args.seconds} measured;"
            f" never-repeated: -l {unique_seconds(args)} -n 1;"
            f" server on core {SERVER_CORE}, dnsperf on core {CLIENT_CORE}"
            + (f" (dnsd's {args.workers} workers on cores 0-{args.workers - 1})" if (args.workers or 1) > 1 else "")
            + ("" if meta.get("pinned") else " (NOT PINNED: taskset or a second core missing)")
        ),
        "",
        "query mix, measured pass:",
        table(rows),
        "",
        "per server: ready = process start to the first NOERROR for a known name (zone loading included);"
        " memory of the process tree once ready and after the runs:",
        table(size_rows),
        "",
    ]
    by = {r.server: r for r in results}
    for r in results:
        if r.error:
            lines.append(f"{r.server}: ERROR {r.error}")
        u = r.unique or {}
        if u and u.get("sent", 0) >= gen.get("unique_queries", 0) > 0:
            lines.append(f"{r.server}: asked every never-repeated name once within {u.get('run_time_s', 0):.1f} s")
    if "nsd" in by and "dnsd" in by and by["nsd"].qps > 0 and not by["dnsd"].error:
        ratio = by["dnsd"].qps / by["nsd"].qps
        meta["ratio"] = ratio
        met = ratio >= 0.60 and by["dnsd"].lost_pct < 0.1
        lines.append(f"ratio dnsd/NSD: {ratio:.2f} ({ratio * 100:.0f}% of NSD's QPS)")
        if gen.get("services", 0) <= 1000:
            meta["target_met"] = met
            lines.append(f"target (issue 2): dnsd >= 60% of NSD's QPS with < 0.1% loss: {'MET' if met else 'NOT MET'}")
    checks = targets(by)
    unique_ratio = next((f for w, f, _, _ in checks if w.startswith("never-repeated")), "")
    if unique_ratio:
        lines.append(f"ratio dnsd/NSD, never-repeated names: {unique_ratio}")
    if checks and gen.get("services", 0) >= 100000:  # issue 9 sets them for 100,000 services
        meta["targets"] = [{"what": w, "dnsd": f, "target": t, "met": m} for w, f, t, m in checks]
        meta["target_met"] = all(m for _, _, _, m in checks)
        lines.append("issue 9 targets (100,000 services):")
        lines += [f"  {w}: {f} (target {t}): {'MET' if m else 'NOT MET'}" for w, f, t, m in checks]
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


def start_server(
    server: str, cmd: list[str], port: int, probe: str, timeout: float, logfile: Path
) -> tuple[subprocess.Popen[bytes], PerfResult]:
    """Start a server, time it to its first NOERROR for probe, note its memory; on failure r.error says why."""
    r = PerfResult(server, port)
    t0 = time.monotonic()
    proc = launch(server, cmd, logfile)
    try:
        r.ready_s = wait_ready(proc, port, probe, t0, timeout)
    except RuntimeError as exc:
        r.error = str(exc)
        tail = "".join(logfile.read_text(errors="replace").splitlines(True)[-20:]) if logfile.exists() else ""
        log(f"{server}: {exc}; last lines of {logfile}:\n{tail}")
        return proc, r
    r.rss_ready_mb, r.pss_ready_mb = memory_mb(proc.pid)
    log(
        f"{server}: answers on 127.0.0.1:{port} (pid {proc.pid}) {r.ready_s:.2f} s after its start;"
        f" RSS {r.rss_ready_mb:.0f} MB, PSS {r.pss_ready_mb:.0f} MB"
    )
    return proc, r


def unique_seconds(args: argparse.Namespace) -> int:
    """The never-repeated run: at most 10 s (3,000,000 names last a server at 300,000 QPS that long), so that a run of
    every scenario fits 10 minutes."""
    return min(args.seconds, 10)


def measure(
    r: PerfResult, proc: subprocess.Popen[bytes], args: argparse.Namespace, out: Path, can_pin: bool
) -> PerfResult:
    """The runs against one ready server: the mix to warm it, the mix measured, the never-repeated names once.
    Returns the measured mix's figures with r's ready time and memory, the memory after and the unique stream's."""
    if args.warm > 0:
        run_dnsperf(r.server, r.port, args, out, can_pin, proc.pid, seconds=args.warm, tag="-warm")
    mix = run_dnsperf(r.server, r.port, args, out, can_pin, proc.pid)
    unique = out / "unique.txt"
    if unique.exists():
        seconds = unique_seconds(args)
        u = run_dnsperf(r.server, r.port, args, out, can_pin, proc.pid, queries=unique, once=True, seconds=seconds,
                        tag="-unique")  # fmt: skip
        mix.unique = asdict(u)
    mix.ready_s, mix.rss_ready_mb, mix.pss_ready_mb = r.ready_s, r.rss_ready_mb, r.pss_ready_mb
    mix.rss_after_mb, mix.pss_after_mb = memory_mb(proc.pid)
    if proc.poll() is not None:
        mix.error = mix.error or f"{r.server} exited with code {proc.returncode} during the runs"
    return mix


def stop(proc: subprocess.Popen[bytes], meta: dict[str, Any]) -> int:
    """Stop a server by PID (SIGTERM, then SIGKILL); its PID and its children's go into results.json, so that a
    caller can check that none is left."""
    meta.setdefault("pids", [])
    meta["pids"] = sorted(set(meta["pids"]) | set(tree_pids(proc.pid) if proc.poll() is None else [proc.pid]))
    return stop_process(proc)


def source_state() -> str:
    """The commit dnsd ran from, and how many paths under dnsd/ differ from it (work in progress is measured too)."""
    git = ["git", "-C", str(REPO)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "dnsd"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + (f" + {len(dirty)} uncommitted paths under dnsd/" if dirty else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    add_dnsperf_args(ap, seconds=None)
    ap.add_argument("--warm", type=int, default=int(os.environ.get("BENCH_WARM_SECONDS", "3")),
                    help="seconds of the query mix before the measured pass (0: none)")  # fmt: skip
    ap.add_argument("--servers", default=os.environ.get("BENCH_SERVERS", ""),
                    help="nsd, knot, dnsd (default nsd,dnsd; with knot above 1,000 services)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=int(os.environ["BENCH_WORKERS"]) if os.environ.get(
        "BENCH_WORKERS") else None, help="dnsd --workers N (only passed when set)")  # fmt: skip
    ap.add_argument("--compare-sample", type=int, default=300)
    ap.add_argument("--start-timeout", type=float, default=float(os.environ.get("BENCH_START_TIMEOUT", "300")),
                    help="the longest a server may take from its start to its first answer (s)")  # fmt: skip
    args = ap.parse_args()

    out: Path = args.out.resolve()
    gen = json.loads((out / "expected.json").read_text())
    big = gen.get("services", 0) > 1000
    if args.seconds is None:  # BENCH_SECONDS unset: 20 s at 1,000 services (as always), 10 s above (fits 10 min)
        args.seconds = 10 if big else 20
    servers = [s.strip() for s in (args.servers or ("nsd,knot,dnsd" if big else "nsd,dnsd")).split(",") if s.strip()]
    meta: dict[str, Any] = {**machine(), "gen": gen, "notes": [], "command": " ".join(sys.argv)}
    meta["python"] = python_version(args.python)
    meta["dnsd_source"] = source_state()
    if "knot" in servers:
        if shutil.which("knotd") and shutil.which("knotc"):
            meta["knot"] = tool_version(["knotd", "--version"])
        else:
            servers.remove("knot")
            meta["notes"].append("knot: knotd not installed (Debian package knot): no Knot column")
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
            cmd = nsd_command(out, nsd_port, can_pin)
            nsd_proc, r = start_server("nsd", cmd, nsd_port, probe, args.start_timeout, out / "nsd" / "nsd.out")
            results.append(r if r.error else measure(r, nsd_proc, args, out, can_pin))
        if "knot" in servers:
            port = free_port()
            cmd = knot_command(out, port, can_pin)
            knot_proc, r = start_server("knot", cmd, port, probe, args.start_timeout, out / "knot" / "knot.out")
            try:
                results.append(r if r.error else measure(r, knot_proc, args, out, can_pin))
            finally:
                stop(knot_proc, meta)
        if "dnsd" in servers:
            port = free_port()
            cmd = dnsd_command(out, port, args.python, can_pin, args.workers)
            dnsd_proc, r = start_server("dnsd", cmd, port, probe, args.start_timeout, out / "dnsd.log")
            try:
                if not r.error and nsd_proc is not None and nsd_proc.poll() is None:
                    checked, diffs = compare_answers(out, nsd_port, port, args.compare_sample)
                    meta["compare"] = {"checked": checked, "diffs": diffs}
                    (out / "compare.txt").write_text("\n".join(diffs) + ("\n" if diffs else ""))
                    log(f"compared {checked} sampled queries with NSD: {len(diffs)} differ")
                if nsd_proc is not None:
                    stop(nsd_proc, meta)  # NSD stays idle on core 0 until here; stop it before dnsd's runs
                results.append(r if r.error else measure(r, dnsd_proc, args, out, can_pin))
            finally:
                code = stop(dnsd_proc, meta)
                if code != 0:
                    meta["notes"].append(f"dnsd exited with code {code} on SIGTERM (expected 0)")
    finally:
        if nsd_proc is not None:
            stop(nsd_proc, meta)
    print()
    print(report(results, args, meta, out), end="", flush=True)
    log(f"written {out / 'results.txt'} and {out / 'results.json'}")
    strict = os.environ.get("BENCH_STRICT") == "1"
    if any(r.error for r in results):
        return 1
    if strict and not meta.get("target_met", True):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resolver scenarios for `make bench`: cache hits behind a forwarder, and cold iterative resolution, dnsd and Unbound.

    python bench/resolver.py --scenario cache|iterative|all [--seconds 20] [--names 1000] [--out bench/out/resolver]

cache: NSD on loopback serves a zone of NAMES A records (TTL 3600). dnsd (`recursion: forward`, the default cache)
and Unbound (a forward-zone, one thread, iterator module only) each forward that zone to the same NSD. Each server is
warmed with one pass over the names, then dnsperf runs for SECONDS against it with the same names; reported: QPS,
lost, the server's CPU per query (/proc, as bench/bench.py measures it), and the queries NSD received during the timed
run (NSD's own counter: RQ in the BIND8-style XSTATS line NSD logs on SIGUSR1, read before and after).

iterative: the loopback root/TLD/leaf NSD hierarchy of tests/support/hierarchy.py on port 53 (needs root). dnsd
(`recursion: iterative`) and Unbound (`root-hints:`), each a fresh process with an empty cache, resolve the leaf
zone's NAMES names once with this script's own client (asyncio + dnspython, at most CONCURRENCY queries in flight);
reported: the total time, the answers, the server's CPU per name and the queries each NSD received (its RQ counter).

Servers run pinned to core 0, dnsperf, NSD and this script's client to core 1 (taskset), as in bench/bench.py.
Every process this script starts is stopped by its PID (SIGTERM, then SIGKILL); every wait has a deadline; all
traffic stays on 127.0.0.0/8. Output: printed, and OUT/results.json, OUT/results.txt, OUT/<scenario>/ (configs,
logs, dnsperf output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO / "tests"))
from support import stop_process  # noqa: E402  (tests/support: the NSD and Unbound configs the tests use too)
from support.nsd import free_port, write_nsd_conf  # noqa: E402
from support.unbound import unbound_conf  # noqa: E402

from bench import (  # noqa: E402  (bench/bench.py: the cluster scenario's helpers, reused as they are)
    CLIENT_CORE,
    SERVER_CORE,
    add_dnsperf_args,
    load_notes,
    machine,
    pin,
    python_version,
    run_dnsperf,
    source_state,
    tool_version,
    tree_cpu_seconds,
)

CACHE_ZONE = "bench.example"  # not one of Unbound's built-in local zones (test., invalid., onion. ... are)
ITERATIVE_ZONE = "bench.test"  # tests/support/hierarchy.py delegates extra leaves from test.
IN_NETNS = "DNSD_BENCH_IN_NETNS"  # set in the re-run inside a network namespace of its own
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
STATS_TIMEOUT = 10.0


@dataclass
class Row:
    """One server's figures in one scenario."""

    scenario: str
    server: str
    names: int = 0
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    lost_pct: float = 0.0
    seconds: float = 0.0  # cache: dnsperf's run time; iterative: the time to resolve every name once
    answered: int = 0  # iterative: names that got NOERROR with an A record
    rcodes: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    server_cpu_pct: float = 0.0  # cache: the share of its core the server used over the timed run
    other_cpu_pct: float = 0.0  # cache: CPU used by other processes on the machine meanwhile (bench/bench.py's)
    cpu_us_per_query: float = 0.0  # cache: per completed query; iterative: per name
    upstream_queries: int | None = None  # the queries the NSD server(s) received during the measured pass
    upstream_detail: dict[str, int] = field(default_factory=dict)
    warm: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def log(msg: str) -> None:
    print(f"bench/resolver: {msg}", flush=True)


# ---------------------------------------------------------------- processes


class Started:
    """Every process this run starts, stopped by PID; the PIDs (and their children) go into results.json."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def popen(self, argv: list[str], logfile: Path | None = None) -> subprocess.Popen[bytes]:
        out: Any = logfile.open("ab") if logfile is not None else subprocess.DEVNULL
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if logfile is not None:
                out.close()
        self.procs.append(proc)
        self.pids.append(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        self.pids.extend(descendants(proc.pid))  # NSD forks its server and xfrd processes
        return stop_process(proc, STOP_TIMEOUT)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def descendants(root: int) -> list[int]:
    """The live descendants of root (from /proc), so a caller can check that they are gone too."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """CPU time of root and its live descendants, every thread, in nanoseconds from /proc/PID/task/TID/schedstat
    (the first field: time on a CPU). /proc/PID/stat counts clock ticks (10 ms): too coarse for a pass that
    costs Unbound a few tens of milliseconds. Falls back to the ticks when schedstat is missing."""
    total = 0
    for pid in [root, *descendants(root)]:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9 if total else tree_cpu_seconds(root)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def replies(addr: tuple[str, int]) -> bool:
    """Any reply to an RD=0 query for localhost.: the server is up. RD=0 (RFC 1034 section 4.3.1) so that no
    resolver starts resolving (or priming) before the measured pass."""
    q = dns.message.make_query("localhost.", "A")
    q.flags &= ~dns.flags.RD
    try:
        dns.query.udp(q, addr[0], port=addr[1], timeout=0.3)
    except (dns.exception.DNSException, OSError):
        return False
    return True


def start_failed(exc: RuntimeError, logfile: Path) -> RuntimeError:
    """A one-line reason (the log's last line: dnsd's error, e.g. a mode "not built yet"); the tail is printed."""
    tail = log_tail(logfile)
    print(f"--- last lines of {logfile}:\n{tail}---", flush=True)
    last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
    return RuntimeError(f"{exc}: {last}" if last else str(exc))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- NSD and its query counter


XSTATS_RQ = re.compile(r"XSTATS .*\bRQ=(\d+)")


def nsd_received(pid: int, logfile: Path, timeout: float = STATS_TIMEOUT) -> int:
    """The queries NSD has received since it started (UDP and TCP), from its own counters: SIGUSR1 makes NSD log
    BIND8-style statistics (nsd(8)), one XSTATS line per server process, cumulative; RQ is "received queries"."""
    before = len(XSTATS_RQ.findall(logfile.read_text(errors="replace"))) if logfile.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = XSTATS_RQ.findall(logfile.read_text(errors="replace")) if logfile.exists() else []
        if len(counts) > before:
            return int(counts[-1])
        time.sleep(0.05)
    raise RuntimeError(f"NSD (pid {pid}) logged no statistics within {timeout:.0f} s of SIGUSR1 ({logfile})")


def cache_zone_text(zone: str, names: int) -> str:
    lines = [
        f"$ORIGIN {zone}.",
        "$TTL 3600",
        "@ IN SOA ns hostmaster 1 3600 600 86400 3600",
        "@ IN NS ns",
        "ns IN A 127.0.0.1",
    ]
    lines += [f"h{i:05d} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(names)]
    return "\n".join(lines) + "\n"


def start_nsd(
    d: Path, zone: str, zone_text: str, started: Started, can_pin: bool
) -> tuple[subprocess.Popen[bytes], int]:
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / f"{zone}.zone").write_text(zone_text)
    # verbosity 1: NSD logs its statistics (XSTATS, read by nsd_received) on SIGUSR1
    note = "generated by bench/resolver.py: NSD on loopback, one server process, BIND8-style stats on SIGUSR1"
    conf = write_nsd_conf(d, port, {zone: d / f"{zone}.zone"}, verbosity=1, note=note)
    subprocess.run(["nsd-checkconf", str(conf)], check=True, timeout=30)
    # NSD is the upstream, not the server measured: it shares the client's core, so the server has core 0 alone
    cmd = pin(CLIENT_CORE, ["nsd", "-d", "-c", str(conf)], can_pin)
    log(f"nsd: {' '.join(cmd)}")
    proc = started.popen(cmd)

    def serving() -> bool:
        try:
            return bool(
                dns.query.udp(dns.message.make_query(f"{zone}.", "SOA"), "127.0.0.1", port=port, timeout=0.3).answer
            )
        except (dns.exception.DNSException, OSError):
            return False

    wait_for(serving, START_TIMEOUT, "nsd answering SOA", proc)
    return proc, port


# ---------------------------------------------------------------- the servers measured


def dnsd_config(port: int, d: Path, **resolver: Any) -> Path:
    """A dnsd config with nothing but the resolver part: an empty manifest directory, no zone files, no HTTP."""
    (d / "manifests").mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "listen": [f"127.0.0.1:{port}"],
        "http": None,
        "zones": None,
        "cluster": {"source": {"files": str(d / "manifests")}},
        "log": {"level": "warning"},
        **resolver,
    }
    path = d / "dnsd.yaml"
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
    return path


def start_dnsd(
    d: Path, python: str, started: Started, can_pin: bool, **resolver: Any
) -> tuple[subprocess.Popen[bytes], int]:
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = dnsd_config(port, d, **resolver)
    logfile = d / "dnsd.log"
    logfile.unlink(missing_ok=True)
    cmd = pin(SERVER_CORE, [python, "-m", "dnsd", "--config", str(conf)], can_pin)
    return launch("dnsd", cmd, port, started, logfile, logfile)


def start_unbound(
    d: Path, server: list[str], started: Started, can_pin: bool, tail: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """Unbound (support.unbound's config, one thread) with these `server:` lines and clauses after them (tail)."""
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = d / "unbound.conf"
    logfile = d / "unbound.log"
    server = [
        "do-tcp: yes",
        # dnsd asks for a 4 MiB UDP receive buffer (dnsd/transport/server.py); the same for Unbound, or it drops bursts
        "so-rcvbuf: 4m",
        # the upstreams (NSD) are on 127.0.0.0/8, which Unbound refuses to query unless told otherwise
        "do-not-query-localhost: no",
        *server,
    ]
    note = "generated by bench/resolver.py: Unbound on loopback, one thread, no chroot, no remote control, no validator"
    conf.write_text(unbound_conf(d, port, server=server, tail=tail, logfile=str(logfile), note=note))
    logfile.unlink(missing_ok=True)
    subprocess.run(["unbound-checkconf", str(conf)], check=True, timeout=30, capture_output=True)
    cmd = pin(SERVER_CORE, ["unbound", "-d", "-c", str(conf)], can_pin)
    return launch("unbound", cmd, port, started, d / "unbound.out", logfile)


def launch(
    what: str, cmd: list[str], port: int, started: Started, out: Path, logfile: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server measured (its output to out), once it replies on 127.0.0.1:port; if it does not, it is
    stopped and the error says why (the last line of logfile, else of out)."""
    log(f"{what}: {' '.join(cmd)}")
    proc = started.popen(cmd, out)
    try:
        wait_for(lambda: replies(("127.0.0.1", port)), START_TIMEOUT, f"{what} answering", proc)
    except RuntimeError as exc:
        started.stop(proc)
        raise start_failed(exc, logfile if logfile.exists() else out) from None
    return proc, port


# ---------------------------------------------------------------- a client that asks each name once


@dataclass
class Pass:
    seconds: float
    rcodes: dict[str, int]
    answered: int  # NOERROR with an A record in the answer
    retries: int


async def _resolve_all(
    addr: tuple[str, int], names: list[str], concurrency: int, per_try: float, tries: int, deadline: float
) -> Pass:
    sem = asyncio.Semaphore(concurrency)
    rcodes: dict[str, int] = {}
    answered = 0
    retries = 0

    async def one(name: str) -> None:
        nonlocal answered, retries
        async with sem:
            outcome = "TIMEOUT"
            for attempt in range(tries):
                retries += attempt > 0
                q = dns.message.make_query(name, "A")  # RD=1, no EDNS: what dnsperf sends
                try:
                    r = await dns.asyncquery.udp(q, addr[0], port=addr[1], timeout=per_try)
                except dns.exception.Timeout:
                    continue
                except (dns.exception.DNSException, OSError) as exc:
                    outcome = type(exc).__name__
                    break
                outcome = dns.rcode.to_text(r.rcode())
                answered += outcome == "NOERROR" and any(rr.rdtype == dns.rdatatype.A for rr in r.answer)
                break
            rcodes[outcome] = rcodes.get(outcome, 0) + 1

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(n)) for n in names]
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*tasks)
    except TimeoutError:
        rcodes["UNASKED"] = len(names) - sum(rcodes.values())
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Pass(time.monotonic() - t0, rcodes, answered, retries)


def resolve_all(
    addr: tuple[str, int],
    names: list[str],
    concurrency: int,
    timeout: float = 5.0,
    tries: int = 2,
    deadline: float = 300.0,
) -> Pass:
    """Ask for every name's A record once (a retry after a timeout), at most `concurrency` in flight."""
    return asyncio.run(_resolve_all(addr, names, concurrency, timeout, tries, deadline))


# ---------------------------------------------------------------- scenario 1: cache hits


def scenario_cache(args: argparse.Namespace, out: Path, started: Started, can_pin: bool) -> list[Row]:
    d = out / "cache"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"h{i:05d}.{CACHE_ZONE}." for i in range(args.names)]
    (d / "queries.txt").write_text("".join(f"{n} A\n" for n in names))
    nsd, nsd_port = start_nsd(d / "nsd", CACHE_ZONE, cache_zone_text(CACHE_ZONE, args.names), started, can_pin)
    nsd_log = d / "nsd" / "nsd.log"
    log(f"nsd serves {CACHE_ZONE} ({args.names} names, TTL 3600) on 127.0.0.1:{nsd_port} (pid {nsd.pid})")

    def measure(row: Row, proc: subprocess.Popen[bytes], port: int) -> None:
        with client_core(can_pin):
            warm = resolve_all(("127.0.0.1", port), names, args.concurrency)
        row.warm = asdict(warm)
        log(f"{row.server}: warm-up pass over {len(names)} names in {warm.seconds:.2f} s: {warm.rcodes}")
        rq0 = nsd_received(nsd.pid, nsd_log)
        r = run_dnsperf(f"cache-{row.server}", port, args, d, can_pin, proc.pid)
        rq1 = nsd_received(nsd.pid, nsd_log)
        row.qps, row.sent, row.completed, row.lost = r.qps, r.sent, r.completed, r.lost
        row.lost_pct, row.seconds, row.rcodes = r.lost_pct, r.run_time_s, r.rcodes
        row.server_cpu_s, row.cpu_us_per_query = r.server_cpu_s, r.cpu_us_per_query
        row.server_cpu_pct, row.other_cpu_pct = r.server_cpu_pct, r.other_cpu_pct
        row.upstream_queries = rq1 - rq0
        row.upstream_detail = {f"nsd 127.0.0.1:{nsd_port}": rq1 - rq0}
        row.error = r.error

    try:
        servers = resolvers(
            d,
            args,
            started,
            can_pin,
            dnsd={"recursion": "forward", "forward": {"upstreams": [f"127.0.0.1:{nsd_port}"]}},
            unbound=[],
            unbound_tail=f'forward-zone:\n  name: "{CACHE_ZONE}."\n  forward-addr: 127.0.0.1@{nsd_port}\n',
        )
        return measure_each("cache", servers, args, started, measure)
    finally:
        started.stop(nsd)


Launch = Callable[[], tuple[subprocess.Popen[bytes], int]]


def resolvers(
    d: Path,
    args: argparse.Namespace,
    started: Started,
    can_pin: bool,
    *,
    dnsd: dict[str, Any],
    unbound: list[str],
    unbound_tail: str = "",
) -> list[tuple[str, Launch]]:
    """The servers measured, each with how to start it (in d/dnsd, d/unbound): dnsd with the resolver config dnsd,
    Unbound with these `server:` lines and clauses after them (unbound_tail)."""
    return [
        ("dnsd", lambda: start_dnsd(d / "dnsd", args.python, started, can_pin, **dnsd)),
        ("unbound", lambda: start_unbound(d / "unbound", unbound, started, can_pin, unbound_tail)),
    ]


def measure_each(
    scenario: str,
    servers: list[tuple[str, Launch]],
    args: argparse.Namespace,
    started: Started,
    measure: Callable[[Row, subprocess.Popen[bytes], int], None],
) -> list[Row]:
    """One row per server of args.servers: start it, measure(row, proc, port), stop it by PID (SIGTERM: exit 0
    expected); whatever fails goes into the row's error and the next server runs."""
    rows: list[Row] = []
    for server, start in servers:
        if server not in args.servers:
            continue
        row = Row(scenario, server, names=args.names)
        rows.append(row)
        try:
            proc, port = start()
        except (RuntimeError, subprocess.SubprocessError) as exc:
            row.error = f"did not start: {exc}"
            log(f"{server}: {row.error}")
            continue
        try:
            measure(row, proc, port)
            if proc.poll() is not None:
                row.error = row.error or f"{server} exited with code {proc.returncode} during the run"
        except RuntimeError as exc:
            row.error = str(exc)
        finally:
            code = started.stop(proc)
            if code != 0 and not row.error:
                row.error = f"{server} exited with code {code} on SIGTERM (expected 0)"
        log(f"{server}: {summary_cells(row)}; queries per upstream server: {row.upstream_detail}")
    return rows


@contextlib.contextmanager
def client_core(can_pin: bool) -> Iterator[None]:
    """Run this thread (the client) on the client core for the block, as dnsperf is."""
    if not can_pin:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------- report


def summary_cells(r: Row) -> str:
    return "  ".join(summary_row(r)[2:])


def summary_row(r: Row) -> tuple[str, ...]:
    if r.error and not r.completed and not r.answered:
        return (r.scenario, r.server, "-", "-", "-", "-", f"ERROR: {r.error.splitlines()[0]}")
    if r.scenario == "iterative":
        speed = f"{r.seconds:.2f} s for {r.names} names"
        lost = f"{r.names - r.answered} unanswered"
        cpu = f"{r.cpu_us_per_query:,.0f} us/name"
        per = (r.upstream_queries or 0) / r.names if r.names else 0.0
        up = "-" if r.upstream_queries is None else f"{r.upstream_queries} ({per:.2f}/name)"
    else:
        speed = f"{r.qps:,.0f} QPS"
        lost = f"{r.lost} lost"
        cpu = f"{r.cpu_us_per_query:.1f} us/q"
        per = (r.upstream_queries or 0) / r.completed * 100 if r.completed else 0.0
        up = "-" if r.upstream_queries is None else f"{r.upstream_queries} ({per:.1f}%)"
    return (r.scenario, r.server, speed, lost, cpu, up, r.error.splitlines()[0] if r.error else "")


def table(rows: list[tuple[str, ...]]) -> str:
    head = ("scenario", "server", "QPS or time", "lost", "CPU/query", "queries upstream", "")
    allrows = [head, *rows]
    widths = [max(len(row[i]) for row in allrows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if 1 < i < 6 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in allrows
    )


def report(rows: list[Row], meta: dict[str, Any], out: Path) -> str:
    lines = [
        f"dnsd resolver benchmark, {meta['date']}",
        f"machine: {meta['cpu']}; kernel {meta['kernel']}; dnsperf {meta['dnsperf']}; NSD {meta['nsd']}; "
        f"Unbound {meta.get('unbound', '?')}; python {meta.get('python', '?')}; dnsd at {meta.get('dnsd_source')}",
        f"servers on core {SERVER_CORE}; dnsperf, NSD and the client on core {CLIENT_CORE}"
        + ("" if meta.get("pinned") else " (NOT PINNED: taskset or a second core missing)"),
        "",
        table([summary_row(r) for r in rows]),
        "",
        "cache: QPS, lost and CPU per query from dnsperf and /proc over the timed run after one warm-up pass; queries"
        " upstream = queries NSD received during the timed run (NSD's RQ counter, SIGUSR1), % of completed queries.",
        "iterative: one pass over the names from a cold start; CPU per name; queries upstream = the sum of every NSD"
        " server's RQ counter over the pass, per name.",
    ]
    for r in rows:
        if r.scenario == "cache" and not r.error:
            meta["notes"] += load_notes(f"cache {r.server}", r, "dnsperf, the upstream, other load")
    lines += [f"note: {n}" for n in meta.get("notes", [])]
    text = "\n".join(lines) + "\n"
    (out / "results.txt").write_text(text)
    return text


# ---------------------------------------------------------------- main


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "resolver")
    ap.add_argument("--scenario", default=os.environ.get("SCENARIO", "all"), help="cache, iterative or all")
    add_dnsperf_args(ap)
    ap.add_argument("--names", type=int, default=int(os.environ.get("BENCH_NAMES", "1000")))
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "50")))
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("BENCH_DEADLINE", "120")),
                    help="iterative: the most one server's pass over the names may take (s)")  # fmt: skip
    ap.add_argument("--servers", default=os.environ.get("BENCH_RESOLVERS", "dnsd,unbound"), help="dnsd,unbound")
    ap.add_argument("--netns", choices=("auto", "no"), default=os.environ.get("BENCH_NETNS", "auto"),
                    help="auto: as root, run in a new network namespace (only its loopback exists)")  # fmt: skip
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, interrupted)  # SIGTERM unwinds like Ctrl-C: the finally blocks stop every process
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenarios = ["cache", "iterative"] if args.scenario == "all" else [args.scenario]
    if any(s not in ("cache", "iterative") for s in scenarios):
        ap.error(f"--scenario: cache, iterative or all, not {args.scenario!r}")

    netns_tools = shutil.which("unshare") and shutil.which("ip")
    if args.netns == "auto" and os.geteuid() == 0 and not os.environ.get(IN_NETNS) and netns_tools:
        # NETWORK RULE: loopback only. In a namespace of its own the whole run, resolvers included, can reach
        # nothing else, whatever a resolver does with its hints
        log("running in a new network namespace (unshare --net): only its loopback exists")
        argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        argv += [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
        child = subprocess.Popen(argv, env=dict(os.environ, **{IN_NETNS: "1"}))
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the child stops what it started, within its own bounds
            stop_process(child, 60.0)  # SIGTERM, then SIGKILL after 60 s
            raise

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {**machine(), "notes": [], "command": " ".join(sys.argv)}
    meta["unbound"] = tool_version(["unbound", "-V"])
    meta["dnsd_source"] = source_state()
    meta["python"] = python_version(args.python)
    can_pin = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
    meta["pinned"] = can_pin
    meta["netns"] = bool(os.environ.get(IN_NETNS))
    started = Started()
    rows: list[Row] = []
    try:
        if "cache" in scenarios:
            rows += scenario_cache(args, out, started, can_pin)
        if "iterative" in scenarios and os.geteuid() != 0:
            skip = "iterative: SKIPPED: not root (its NSD servers listen on port 53 of 127.x addresses)"
            log(skip)
            meta["notes"].append(skip)
        elif "iterative" in scenarios:
            rows += scenario_iterative(args, out, started, can_pin, meta)
    finally:
        started.stop_all()
    print()
    text = report(rows, meta, out)
    print(text, end="", flush=True)
    result = {"meta": meta, "rows": [asdict(r) for r in rows], "pids": sorted(set(started.pids))}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"written {out / 'results.txt'} and {out / 'results.json'}")
    return 1 if not rows or any(r.error for r in rows) else 0


# ---------------------------------------------------------------- scenario 2: cold iterative resolution


def scenario_iterative(
    args: argparse.Namespace, out: Path, started: Started, can_pin: bool, meta: dict[str, Any]
) -> list[Row]:
    from support.hierarchy import Hierarchy, leaf_zone

    d = out / "iterative"
    d.mkdir(parents=True, exist_ok=True)
    zone = ITERATIVE_ZONE
    names = [f"h{i}.{zone}." for i in range(args.names)]
    log(f"iterative: starting the loopback hierarchy (root, TLDs, {zone} with {args.names} names) on port 53")
    # NSD inherits this thread's CPU affinity: the hierarchy runs on the client core, the resolver alone on core 0
    h = Hierarchy(d / "hierarchy", leaves={zone: leaf_zone(zone, args.names)}, log_queries=False)
    try:
        with client_core(can_pin):
            h.__enter__()
    except (AssertionError, OSError, RuntimeError, subprocess.SubprocessError) as exc:  # it stopped what it started
        why = f"the NSD hierarchy did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        log(f"iterative: {why}")
        return [Row("iterative", server, names=args.names, error=why) for server in args.servers]
    try:
        # each NSD of the hierarchy, labelled "IP (zones)"; Hierarchy keeps them in _nsds (Nsd: proc, addr, log)
        nsds = {f"{n.addr[0]} ({' '.join(h.servers[n.addr[0]])})": n for n in h._nsds}

        def measure(row: Row, proc: subprocess.Popen[bytes], port: int) -> None:
            rq0 = {k: nsd_received(n.proc.pid, n.log) for k, n in nsds.items()}
            cpu0 = cpu_seconds(proc.pid)
            with client_core(can_pin):
                p = resolve_all(("127.0.0.1", port), names, args.concurrency, deadline=args.deadline)
            cpu1 = cpu_seconds(proc.pid)
            rq1 = {k: nsd_received(n.proc.pid, n.log) for k, n in nsds.items()}
            row.seconds, row.answered, row.rcodes = p.seconds, p.answered, p.rcodes
            row.server_cpu_s = cpu1 - cpu0
            row.cpu_us_per_query = row.server_cpu_s / len(names) * 1e6
            row.upstream_detail = {k: rq1[k] - rq0[k] for k in nsds}
            row.upstream_queries = sum(row.upstream_detail.values())
            row.warm = {"retries": p.retries}
            if p.answered < len(names):
                row.error = f"{len(names) - p.answered} of {len(names)} names not answered: {p.rcodes}"

        servers = resolvers(
            d,
            args,
            started,
            can_pin,
            dnsd={"recursion": "iterative", "root_hints": str(h.root_hints), "forward": None},
            unbound=[
                f'root-hints: "{h.root_hints}"',
                # test. is one of Unbound's built-in local zones (RFC 6761): resolve it like any other zone
                'local-zone: "test." nodefault',
                "qname-minimisation: yes",
            ],
        )
        rows = measure_each("iterative", servers, args, started, measure)
    finally:
        for nsd in h._nsds:  # stopped by the hierarchy; listed so that a caller can check they are gone
            started.pids.extend([nsd.proc.pid, *descendants(nsd.proc.pid)])
        h.__exit__(None, None, None)
    return rows


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # the finally blocks have stopped every process this run started
        log(f"interrupted ({exc or 'Ctrl-C'}); every process it started is stopped")
        sys.exit(130)

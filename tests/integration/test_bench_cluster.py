"""bench/bench.py smoke test: a small cluster for a second per run, every figure for every server, the one summary
table, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, wait_until

BENCH = REPO / "bench"
SERVICES = 60
UNIQUE = 20000


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # BENCH_* from the caller's environment would change what is run; the test sets what it needs on the command line
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_") and k not in ("SCENARIO", "SERVICES")}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.timeout(150)
def test_cluster_scenario_reports_every_figure_and_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    gen = [sys.executable, str(BENCH / "gen.py"), "--out", str(out), "--services", str(SERVICES)]
    gen += ["--queries", "2000", "--unique", str(UNIQUE)]
    assert run(gen, 60).returncode == 0
    servers = ["nsd", "dnsd"] + (["knot"] if shutil.which("knotd") else [])
    cmd = [sys.executable, str(BENCH / "bench.py"), "--out", str(out), "--seconds", "1", "--warm", "1"]
    cmd += ["--servers", ",".join(servers), "--start-timeout", "60"]
    proc = run(cmd, 120)
    output = proc.stdout + proc.stderr
    assert (out / "results.json").exists(), output[-4000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["server"]: r for r in results["results"]}
    assert sorted(rows) == sorted(servers), output[-4000:]
    for server, r in rows.items():
        assert not r["error"], f"{server}: {r['error']}\n{output[-4000:]}"
        assert r["ready_s"] > 0 and r["pss_ready_mb"] > 0 and r["rss_after_mb"] > 0, r
        assert r["completed"] > 0 and r["cpu_us_per_query"] > 0, r
        assert set(r["rcodes"]) == {"NOERROR", "NXDOMAIN"}, r["rcodes"]
        u = r["unique"]
        # never-repeated: each name asked at most once (dnsperf -n 1), every answer NXDOMAIN
        assert 0 < u["sent"] <= UNIQUE and u["completed"] > 0, u
        assert set(u["rcodes"]) == {"NXDOMAIN"}, u["rcodes"]
    assert proc.returncode == 0, output[-4000:]
    compare = results["meta"]["compare"]
    assert compare["checked"] == 300 and compare["diffs"] == [], compare
    # the summary table: one row per server, with its ready time and the never-repeated stream
    summary = run([sys.executable, str(BENCH / "summary.py"), "--cluster", str(out / "results.json")], 30)
    assert summary.returncode == 0, summary.stderr
    lines = [ln for ln in summary.stdout.splitlines() if ln.startswith(f"cluster {SERVICES} ")]
    assert len(lines) == len(servers), summary.stdout
    for server in servers:
        line = next(ln for ln in lines if ln.split()[2] == server)
        assert f"{rows[server]['ready_s']:.2f} s" in line and "us/q)" in line, line
    # every process the bench started (servers and their children) is gone once it returns
    pids = results["meta"]["pids"]
    assert len(pids) >= len(servers), pids
    wait_until(lambda: not [p for p in pids if alive(p)], timeout=10, interval=0.05)

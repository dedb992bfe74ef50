"""bench/resolver.py smoke test: each scenario for about a second, numbers for both servers, nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import REPO, wait_until

RESOLVER = REPO / "bench" / "resolver.py"
NAMES = 40

# scenario, extra arguments, the rows each server must report: (server, the field that must be positive)
CASES = [
    pytest.param("cache", ["--seconds", "1"], [("dnsd", "completed"), ("unbound", "completed")], id="cache"),
    pytest.param("iterative", ["--deadline", "30"], [("dnsd", "answered"), ("unbound", "answered")], id="iterative"),
]

NOT_BUILT = "not built yet"


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def run_bench(tmp_path: Path, scenario: str, extra: list[str]) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "out"
    cmd = [sys.executable, str(RESOLVER), "--scenario", scenario, "--names", str(NAMES), "--out", str(out), *extra]
    # BENCH_* from the caller's environment would change what is run; the test sets what it needs on the command line
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_") and k != "SCENARIO"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=100, env=env)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return proc, results


@pytest.mark.timeout(110)
@pytest.mark.parametrize(("scenario", "extra", "expected"), CASES)
def test_scenario_reports_both_servers_and_stops_everything(
    tmp_path: Path, scenario: str, extra: list[str], expected: list[tuple[str, str]]
) -> None:
    if scenario == "iterative" and os.geteuid() != 0:
        proc, results = run_bench(tmp_path, scenario, extra)
        assert "SKIPPED: not root" in proc.stdout, proc.stdout + proc.stderr
        assert proc.returncode == 1
        return
    proc, results = run_bench(tmp_path, scenario, extra)
    output = proc.stdout + proc.stderr
    assert results is not None, f"no results.json\n{output[-4000:]}"
    rows = {r["server"]: r for r in results["rows"] if r["scenario"] == scenario}
    table = (tmp_path / "out" / "results.txt").read_text()
    for server, measure in expected:
        assert server in rows, f"no {scenario} row for {server}\n{table}"
        row = rows[server]
        if server == "dnsd" and NOT_BUILT in row["error"]:
            # dnsd refuses a mode it does not have yet: the harness must say so in its table and carry on
            assert NOT_BUILT in table
            continue
        assert not row["error"], f"{server}: {row['error']}\n{table}"
        assert row[measure] > 0, f"{server}: {measure} = {row[measure]}\n{table}"
        assert row["cpu_us_per_query"] > 0, table
        assert isinstance(row["upstream_queries"], int), table
        assert row["upstream_queries"] >= 0, table
        line = next((ln for ln in table.splitlines() if ln.startswith(scenario) and f" {server} " in ln), "")
        assert line, f"no table line for {scenario} {server}\n{table}"
        if scenario == "cache":
            assert row["warm"]["answered"] == NAMES, row["warm"]
        else:
            assert row["answered"] == NAMES, row
            assert row["upstream_queries"] > 0, "a cold resolver must ask the hierarchy"
    # every process the harness started (servers, NSD and NSD's children) is gone once it returns
    pids = results["pids"]
    assert len(pids) >= 3, pids
    wait_until(lambda: not [p for p in pids if alive(p)], timeout=10, interval=0.05)

"""The one table at the end of `make bench`: every scenario's rows, from the results.json files the run wrote.

    python bench/summary.py --cluster bench/out/results.json --cluster bench/out/s100000/results.json \
        --resolver bench/out/resolver/results.json [--out bench/out/summary.txt]

Cluster rows (bench/bench.py, one results.json per size) give QPS of the query mix, CPU per query, the ready time,
memory and the never-repeated stream; resolver rows (bench/resolver.py) give QPS or the time of a pass and the
queries sent upstream. Under the table: each size's ratios dnsd/NSD and issue 9's targets, as bench.py judged them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import table  # noqa: E402  (bench/bench.py: the same column layout)

HEAD = ("scenario", "server", "QPS or time", "lost", "CPU/query", "ready", "MB ready/after", "never-repeated QPS")


def size_label(services: int) -> str:
    return f"cluster {services // 1000}k" if services >= 1000 and services % 1000 == 0 else f"cluster {services}"


def cluster_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per server of one bench/bench.py results.json (memory: PSS of the process tree); a server that failed
    gets dashes (verdicts() says why under the table)."""
    label = size_label(int(doc["meta"]["gen"].get("services", 0)))
    rows: list[tuple[str, ...]] = []
    for r in doc.get("results", []):
        if r.get("error") and not r.get("completed"):
            rows.append((label, r["server"], "-", "-", "-", "-", "-", "ERROR (below)"))
            continue
        u = r.get("unique") or {}
        never = f"{u['qps']:,.0f} ({u['cpu_us_per_query']:.1f} us/q)" if u else "-"
        rows.append(
            (
                label,
                r["server"],
                f"{r['qps']:,.0f} QPS",
                f"{r['lost']} lost",
                f"{r['cpu_us_per_query']:.1f} us/q",
                f"{r.get('ready_s', 0):.2f} s",
                f"{r.get('pss_ready_mb', 0):.0f}/{r.get('pss_after_mb', 0):.0f}",
                never,
            )
        )
    return rows


def resolver_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """bench/resolver.py's rows: QPS or the pass time, lost, CPU; the queries upstream in the last column."""
    from resolver import Row, summary_row

    rows: list[tuple[str, ...]] = []
    for raw in doc.get("rows", []):
        r = Row(**raw)
        scenario, server, speed, lost, cpu, up, err = summary_row(r)
        rows.append((scenario, server, speed, lost, cpu, "-", "-", err or (f"upstream {up}" if up != "-" else "")))
    return rows


def verdicts(doc: dict[str, Any]) -> list[str]:
    meta = doc["meta"]
    label = size_label(int(meta["gen"].get("services", 0)))
    by = {r["server"]: r for r in doc.get("results", []) if not r.get("error")}
    lines = [f"{label}: {r['server']}: ERROR {r['error']}" for r in doc.get("results", []) if r.get("error")]
    if "nsd" in by and "dnsd" in by and by["nsd"]["qps"]:
        parts = [f"mix {by['dnsd']['qps'] / by['nsd']['qps']:.2f}"]
        un, ud = by["nsd"].get("unique"), by["dnsd"].get("unique")
        if un and ud and un["qps"]:
            parts.append(f"never-repeated {ud['qps'] / un['qps']:.2f}")
        lines.append(f"{label}: dnsd/NSD QPS: {', '.join(parts)}")
    for t in meta.get("targets", []):
        lines.append(f"{label}:   {t['what']}: {t['dnsd']} (target {t['target']}): {'MET' if t['met'] else 'NOT MET'}")
    if "compare" in meta:
        c = meta["compare"]
        lines.append(f"{label}:   same answers as NSD: {c['checked'] - len(c['diffs'])}/{c['checked']} sampled queries")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", type=Path, action="append", default=[], help="a bench/bench.py results.json")
    ap.add_argument("--resolver", type=Path, help="bench/resolver.py's results.json")
    ap.add_argument("--out", type=Path, help="also write the summary here")
    args = ap.parse_args()
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    legend = []
    if args.cluster:
        legend.append(
            "cluster: QPS and CPU of the measured pass of the query mix (after a warm-up pass); ready = start to first"
            " NOERROR; MB = PSS of the server's processes; never-repeated = NXDOMAIN names asked once each."
        )
    if args.resolver is not None:
        legend.append("cache, iterative: bench/resolver.py (its table above; queries upstream in the last column).")
    for path in args.cluster:
        if not path.exists():
            notes.append(f"{path}: missing (the scenario did not finish)")
            continue
        doc = json.loads(path.read_text())
        rows += cluster_rows(doc)
        notes += verdicts(doc)
    if args.resolver is not None and args.resolver.exists():
        rows += resolver_rows(json.loads(args.resolver.read_text()))
    text = "\n".join(
        [
            "",
            "=== dnsd benchmark: every scenario of this run ===",
            table([HEAD, *rows]) if rows else "(no results)",
            "",
            *legend,
            *notes,
        ]
    )
    print(text, flush=True)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The files source at scale, against a real dnsd process.

    python bench/files.py many [--files 20000]        one-file change latency among N files; idle CPU
    python bench/files.py big --dir DIR --last NAME   load of a big manifest directory: time, longest stall, peak RSS

`many` writes N one-Service files in directories of 1,000 under bench/out/many, times atomic rewrites of single
files until the changed answer is served, then measures dnsd's CPU over an idle period (/proc/PID/stat). `big`
starts dnsd on DIR (e.g. `python bench/gen.py --services 50000 --namespaces 1` output), probes a name over UDP every
5 ms from the start until NAME resolves, and reports the load time, the longest probe (the longest the loop was
held up) and the peak RSS (VmHWM); `--touch FILE` then rewrites FILE and measures stalls while it is re-read.
Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
from support import DnsdProcess, query, rcode_text, start_dnsd_process  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DEADLINE_S = 600.0  # no wait in this script lasts longer


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def svc(i: int, ip: str) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: default\n"
        f"spec:\n  clusterIP: {ip}\n  ports:\n  - name: http\n    port: 80\n"
    )


def ip_of(i: int, gen: int = 0) -> str:
    return f"10.{96 + gen}.{i // 250}.{i % 250 + 1}"


def answer(p: DnsdProcess, name: str) -> str | None:
    """The first address of the answer, the rcode when there is none, None when nothing came back."""
    try:
        m = query(p, name, timeout=1.0)
    except Exception:
        return None
    for rrset in m.answer:
        for rd in rrset:
            return str(rd.to_text())
    return rcode_text(m)


def wait_for(p: DnsdProcess, name: str, want: str, pause: float) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while answer(p, name) != want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never answered {want}")
        time.sleep(pause)


def many(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "00-ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
    for i in range(args.files):
        d = root / f"d{i // 1000:03d}"
        d.mkdir(exist_ok=True)
        (d / f"s{i:05d}.yaml").write_text(svc(i, ip_of(i)))
    t0 = time.monotonic()
    flags = ["--listen", "127.0.0.1:0", "--http", "off", "--manifests", str(root), "--log-level", "warning"]
    p = start_dnsd_process(flags, timeout=120)
    try:
        last = args.files - 1
        wait_for(p, f"s{last}.default.svc.cluster.local.", ip_of(last), 0.05)
        print(f"files={args.files}: loaded and answering after {time.monotonic() - t0:.1f} s")
        time.sleep(3)  # let the first periodic rescan pass, so it is not counted below
        lat = []
        for k in range(1, args.changes + 1):
            i = (k * 7919) % args.files
            path = root / f"d{i // 1000:03d}" / f"s{i:05d}.yaml"
            want = ip_of(i, k)
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_text(svc(i, want))
            t = time.monotonic()
            os.rename(tmp, path)
            wait_for(p, f"s{i}.default.svc.cluster.local.", want, 0.002)
            lat.append(time.monotonic() - t)
            time.sleep(0.5)
        ms = [round(x * 1000) for x in lat]
        print(f"write -> changed answer: median {statistics.median(ms)} ms, max {max(ms)} ms ({ms})")
        time.sleep(2)
        c0 = cpu_s(p.proc.pid)
        time.sleep(args.idle)
        print(f"idle {args.idle:.0f} s: {cpu_s(p.proc.pid) - c0:.2f} s of CPU")
    finally:
        print("exit status", p.stop())


def big(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    flags = ["--listen", "127.0.0.1:0", "--http", "off", "--manifests", args.dir, "--log-level", "warning"]
    p = start_dnsd_process(flags, timeout=120)
    print(f"listening after {time.monotonic() - t0:.2f} s")
    pid = p.proc.pid
    peak = 0
    done = threading.Event()

    def watch_rss() -> None:
        nonlocal peak
        while not done.is_set():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM"):
                    peak = max(peak, int(line.split()[1]))
            time.sleep(0.2)

    def probe() -> float:
        t = time.monotonic()
        try:
            query(p, "dns-version.cluster.local.", "TXT", timeout=30)
        except Exception as exc:
            print("probe failed:", exc)
        return time.monotonic() - t

    threading.Thread(target=watch_rss, daemon=True).start()
    try:
        worst = 0.0
        deadline = time.monotonic() + DEADLINE_S
        n = 0
        while time.monotonic() < deadline:
            worst = max(worst, probe())
            n += 1
            if n % 10 == 0 and answer(p, args.last) not in (None, "SERVFAIL", "NXDOMAIN"):
                break
            time.sleep(0.005)
        load = time.monotonic() - t0
        done.set()
        time.sleep(0.3)
        print(f"load {load:.1f} s, longest probe {worst * 1000:.0f} ms, peak RSS {peak / 1024:.0f} MiB")
        if args.touch:
            f = Path(args.touch)
            f.write_text(f.read_text() + "\n")  # the same objects: a full re-read and an empty difference
            worst = 0.0
            end = time.monotonic() + args.touch_s
            while time.monotonic() < end:
                worst = max(worst, probe())
                time.sleep(0.005)
            print(f"while the rewritten file is re-read: longest probe {worst * 1000:.0f} ms over {args.touch_s} s")
    finally:
        done.set()
        print("exit status", p.stop())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("many")
    m.add_argument("--files", type=int, default=20000)
    m.add_argument("--dir", default=str(ROOT / "out" / "many"))
    m.add_argument("--changes", type=int, default=5)
    m.add_argument("--idle", type=float, default=30)
    b = sub.add_parser("big")
    b.add_argument("--dir", required=True)
    b.add_argument("--last", required=True, help="a name that resolves once the whole directory is loaded")
    b.add_argument("--touch", default="")
    b.add_argument("--touch-s", type=float, default=10)
    args = ap.parse_args()
    if args.cmd == "many":
        many(args)
    else:
        big(args)


if __name__ == "__main__":
    main()

"""What the endpoint store and the files source hold, and what a small batch costs, without a server.

    python bench/store_mem.py DIR [--by-type] [--batches N] [--trace]

Loads the manifest directory DIR (e.g. `python bench/gen.py --services 100000` output's cluster/) into a Store
through the files source, then prints the RSS, the retained bytes of each table (a deep walk in which an object
is counted once, by the first table that reaches it, model objects first), optionally the model's bytes by type,
tracemalloc's total (--trace: slower), and the CPU and wall time of N one-object batches (prepare + commit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dnsd.sources.files import FileSource
from dnsd.store.model import Service, ServicePort
from dnsd.store.store import Store, release_freed_memory


def rss_mb() -> str:
    got = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, value = line.split(":")
            got[key] = int(value.split()[0]) // 1024
    return f"RSS {got['VmRSS']} MB (peak {got['VmHWM']} MB)"


def deep(roots: list[Any], seen: set[int]) -> int:
    total = 0
    stack = list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type) or o is None or isinstance(o, bool):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if not isinstance(o, (str, bytes, int, float, Path)):
            stack.extend(gc.get_referents(o))
    return total


def by_type(roots: list[Any]) -> None:
    seen: set[int] = set()
    size: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    stack = list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type) or o is None or isinstance(o, bool):
            continue
        seen.add(id(o))
        name = type(o).__name__ + (f"[{min(len(o), 3)}]" if isinstance(o, tuple) else "")
        size[name] += sys.getsizeof(o)
        count[name] += 1
        if not isinstance(o, (str, int)):
            stack.extend(gc.get_referents(o))
    for name, n in size.most_common(12):
        print(f"  {n / 1e6:8.1f} MB {count[name]:9d}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--by-type", action="store_true")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--trace", action="store_true")
    args = ap.parse_args()
    if args.trace:
        tracemalloc.start(1)
    print(f"imported: {rss_mb()}")
    store = Store()
    source = FileSource(args.dir, store)
    cpu, wall = time.process_time(), time.monotonic()
    asyncio.run(source.sync())
    store.mark_synced()
    gc.collect()
    release_freed_memory()
    print(f"loaded {len(store.objects)} objects: CPU {time.process_time() - cpu:.1f} s (this process; parse children")
    print(f"  not counted), wall {time.monotonic() - wall:.1f} s; {rss_mb()}")
    if args.trace:
        print(f"tracemalloc: {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB allocated and held")
    seen: set[int] = set()
    tables: list[tuple[str, Any]] = [("model objects", list(store.objects.values()))]
    tables += [(f"store.{name}", getattr(store._t, name)) for name in store._t.__slots__]
    tables += [(f"files.{name}", getattr(source, name)) for name in ("files", "_defs", "_by_file", "_ones", "bad")]
    total = 0
    for label, obj in tables:
        n = deep(obj if label == "model objects" else [obj], seen)
        total += n
        print(f"  {n / 1e6:8.1f} MB  {label}")
    print(f"  {total / 1e6:8.1f} MB  in all (each object once)")
    if args.by_type:
        by_type(list(store.objects.values()))
    if args.batches:
        walls: list[float] = []
        cpus: list[float] = []
        for i in range(args.batches):
            port = ServicePort("http", 80 + i, "tcp")
            svc = Service(
                "default", f"zz-bench-{i % 50}", "ClusterIP", (f"10.200.{i % 50}.1",), False, (port,), "", False
            )
            w, c = time.perf_counter(), time.process_time()
            store.commit(store.prepare([svc], []))
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        print(
            f"one-object batches x{args.batches}: wall median {statistics.median(walls) * 1e3:.3f} ms, "
            f"max {max(walls) * 1e3:.1f} ms; CPU median {statistics.median(cpus) * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()

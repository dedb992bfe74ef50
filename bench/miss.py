"""CPU per query of the engine's miss path, in-process: never-repeated NXDOMAIN names, first asks of existing
names, and a dnsperf query file replayed three times.

    python bench/miss.py --manifests out/cluster --queries out/queries.txt [--names 20000]

Each figure is process CPU time (time.process_time) over the loop divided by its queries: no sockets, so it is
the engine alone (the fast path, parse, chain, render or tail, counting). Run it for two trees (PYTHONPATH) in the
same minute to compare them; the machine's other load moves both.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message

from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import ClusterConfig
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.sources.manifests import parse_file
from dnsd.store.model import Namespace, Service
from dnsd.store.store import Store


def wire(name: str, rdtype: str, rnd: random.Random) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=False)
    q.id = rnd.getrandbits(16)
    return q.to_wire()


def per_query(engine: Engine, queries: Sequence[bytes]) -> float:
    """Microseconds of process CPU per query."""
    handle = engine.handle
    start = time.process_time()
    for data in queries:
        handle(data, False, None)
    return (time.process_time() - start) / len(queries) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", type=Path, required=True, help="a bench/gen.py cluster directory")
    p.add_argument("--queries", type=Path, required=True, help="a dnsperf query file (name type per line)")
    p.add_argument("--names", type=int, default=20_000, help="never-repeated and existing names asked")
    args = p.parse_args()
    objects = [obj for path in sorted(args.manifests.glob("*.yaml")) for obj, _ in parse_file(path).objects or ()]
    store = Store()
    store.apply([o for o in objects if isinstance(o, Namespace)], [])
    store.apply([o for o in objects if not isinstance(o, Namespace)], [])
    store.mark_synced()
    gc.collect()
    gc.freeze()  # as the files source does after a load
    engine = Engine(Chain([ClusterHandler(ClusterRecords(ClusterConfig(), store))]), store)
    rnd = random.Random(7)
    services = [o for o in objects if isinstance(o, Service)]
    rnd.shuffle(services)
    n = min(args.names, len(services))
    never = [wire(f"{rnd.getrandbits(64):016x}.default.svc.cluster.local.", "A", rnd) for _ in range(n)]
    first = [wire(f"{s.name}.{s.namespace}.svc.cluster.local.", "A", rnd) for s in services[:n]]
    mix = [wire(name + ".", rdtype, rnd) for name, rdtype in (line.split() for line in args.queries.open())]
    print(f"{len(services)} services; us of CPU per query:")
    print(f"  never-repeated NXDOMAIN names   {per_query(engine, never):7.1f}")
    print(f"  first asks of existing names    {per_query(engine, first):7.1f}")
    engine.table.clear()
    passes = [per_query(engine, mix) for _ in range(3)]
    print(f"  {args.queries.name}, passes 1-3    " + " ".join(f"{us:7.1f}" for us in passes))
    t = engine.table
    print(f"  table: {len(t)} entries, {t.entry_bytes} + {t.exact_bytes} octets counted")


if __name__ == "__main__":
    main()

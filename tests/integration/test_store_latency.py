"""How long a manifest change takes to reach the answers (issue 2 section 4: "measure the delay from a completed
write to the changed answer and report it").

Twenty changes of a Service's ClusterIP, alternating an in-place write and an atomic rename. For each, the clock
starts when the write is complete (the file is closed, or os.replace returned) and stops at the first UDP answer
carrying the new address. The figures are printed (run with -s to see them); the test asserts only that every
change is seen within 5 s, never a tight timing.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from support import DnsdHandle, query, wait_until

CHANGES = 20
LIMIT_S = 5.0
WEB = "web.default.svc.cluster.local."


def manifests(ip: str) -> str:
    return yaml.safe_dump_all(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            },
        ],
        sort_keys=False,
    )


def a_records(h: DnsdHandle) -> list[str]:
    msg = query(h, WEB, "A", timeout=1.0)
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def write_in_place(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def write_renamed(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def test_change_to_answer_latency(dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    path = root / "web.yaml"
    path.write_text(manifests("10.96.0.1"))
    h = dnsd_factory(root)
    wait_until(lambda: a_records(h) == ["10.96.0.1"], LIMIT_S)

    delays_ms: dict[str, list[float]] = {"in-place": [], "rename": []}
    for i in range(CHANGES):
        ip = f"10.96.{1 + i // 200}.{10 + i % 200}"
        how = "in-place" if i % 2 == 0 else "rename"
        writer = write_in_place if how == "in-place" else write_renamed
        writer(path, manifests(ip))
        t0 = time.perf_counter()
        want = [ip]
        wait_until(lambda: a_records(h) == want, LIMIT_S, interval=0.0005)  # noqa: B023 (called before the loop moves on)
        delays_ms[how].append((time.perf_counter() - t0) * 1000)

    every = delays_ms["in-place"] + delays_ms["rename"]
    assert len(every) == CHANGES
    print()
    for label, values in [("all", every), *delays_ms.items()]:
        print(
            f"store change -> answer latency [{label}, n={len(values)}]: "
            f"min {min(values):.1f} ms, median {statistics.median(values):.1f} ms, "
            f"p95 {percentile(values, 0.95):.1f} ms, max {max(values):.1f} ms"
        )
    assert max(every) < LIMIT_S * 1000

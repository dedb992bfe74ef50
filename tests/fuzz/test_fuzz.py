"""The engine's robustness property (engine_target.check) over fixed edge cases and a short fuzzing pass.

The regression table holds inputs of the shapes that broke DNS servers before (and any input `make fuzz` ever
reports: paste its hex here with what it broke). The fuzzing pass is hypothesis over structured queries and their
mutations (shrunk to a minimal failing input), about 10 s, so that CI runs some fuzzing on every change.
"""

from __future__ import annotations

import os
import random
import struct
import time

import pytest
from engine_target import QuerySpec, Target, check, mutate, random_spec, wire_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_SECONDS = float(os.environ.get("FUZZ_PYTEST_SECONDS", "5"))


HDR = struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0)
HDR_AR = struct.pack("!6H", 1, 0x0100, 1, 0, 0, 1)  # one additional record
SVC = "svc1.testns.svc.cluster.local"
Q_A = wire_name(SVC) + struct.pack("!HH", 1, 1)

REGRESSIONS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("header only, qd 1", HDR),
    ("qd 0", struct.pack("!6H", 1, 0x0100, 0, 0, 0, 0)),
    ("qd 2, one question", struct.pack("!6H", 1, 0x0100, 2, 0, 0, 0) + Q_A),
    ("pointer as the question name", HDR + b"\xc0\x0c\x00\x01\x00\x01"),
    ("OPT owner a pointer into the question", HDR_AR + Q_A + b"\xc0\x1d" + bytes(10)),
    ("label 64", HDR + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),
    ("name of 256 octets", HDR + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01"),
    ("question cut in its type", HDR + Q_A[:-3]),
    (
        "OPT with rdlen past the end",
        HDR_AR + Q_A + b"\x00\x00\x29\x04\xd0" + bytes(4) + b"\xff\xff",
    ),
    (
        "OPT option cut",
        QuerySpec(7, 0x0100, SVC, 1, 1, True, options=((10, b"\x01" * 7),)).wire(),
    ),
    (
        "ECS prefix longer than its address",
        QuerySpec(7, 0x0100, "x.cluster.local", 1, 1, True, options=((8, b"\x00\x01\x20\x00\x0a"),)).wire(),
    ),
    ("EDNS version 1", QuerySpec(7, 0x0100, SVC, 1, 1, True, version=1).wire()),
    ("payload 0", QuerySpec(7, 0x0100, "big.default.svc.cluster.local", 1, 1, True, payload=0).wire()),
    ("IXFR with a SOA in authority", QuerySpec(7, 0x0100, "cluster.local", 251, 1, authority_soa=True).wire()),
    ("A with a SOA in authority", QuerySpec(7, 0x0100, "cluster.local", 1, 1, authority_soa=True).wire()),
    ("TSIG signed", QuerySpec(7, 0x0100, SVC, 1, 1, tsig=True).wire()),
    ("TSIG after OPT", QuerySpec(7, 0x0100, SVC, 1, 1, True, tsig=True).wire()),
    ("AXFR", QuerySpec(7, 0x0000, "cluster.local", 252, 1).wire()),
    ("ANY class ANY", QuerySpec(7, 0x0100, SVC, 255, 255).wire()),
    ("non-ASCII digits in a reverse name", QuerySpec(7, 0x0100, "\xb2.0.0.10.in-addr.arpa", 12, 1).wire()),
    ("non-ASCII in a pod name", QuerySpec(7, 0x0100, "1-2-3-\xb2.testns.pod.cluster.local", 1, 1).wire()),
    ("opcode NOTIFY", struct.pack("!6H", 1, 0x2100, 1, 0, 0, 0) + Q_A),
    ("response bit", struct.pack("!6H", 1, 0x8100, 1, 0, 0, 0) + Q_A),
    ("trailing garbage", HDR + Q_A + b"\xff" * 40),
    ("4097 octets", HDR + Q_A + bytes(4097 - 12 - len(Q_A))),
]


@pytest.mark.parametrize("data", [d for _, d in REGRESSIONS], ids=[n for n, _ in REGRESSIONS])
def test_regression(target: Target, data: bytes) -> None:
    check(target, data)


@pytest.mark.fuzz
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False), rounds=st.sampled_from([0, 1, 1, 2, 3, 5]))
def test_fuzz_structured(target: Target, rng: random.Random, rounds: int) -> None:
    """hypothesis draws the query and its mutations (and shrinks a failure to a small input)."""
    check(target, mutate(random_spec(rng).wire(), rng, rounds))


@pytest.mark.fuzz
def test_fuzz_timed(target: Target) -> None:
    """FUZZ_PYTEST_SECONDS (default 5) of the same inputs without hypothesis' overhead; the seed is printed."""
    seed = int(os.environ.get("FUZZ_SEED", str(random.randrange(1 << 31))))
    print(f"fuzz seed {seed} (FUZZ_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    deadline = time.monotonic() + FUZZ_SECONDS
    n = 0
    while time.monotonic() < deadline:
        for _ in range(64):
            data = mutate(random_spec(rng).wire(), rng, rng.choice([0, 0, 1, 2, 3, 5]))
            try:
                check(target, data)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n  input: {data.hex()}  (seed {seed})") from exc
            n += 1
    print(f"{n} inputs")

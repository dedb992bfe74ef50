"""`make fuzz`: fuzz the header check, the parser and the engine for FUZZ_SECONDS (default 60).

With atheris (coverage-guided libFuzzer for Python; `make fuzz` installs it when PyPI has a wheel for this Python)
the dnsd modules are instrumented and libFuzzer mutates a corpus of valid queries (engine_target.seeds), half of
the time through the structured mutations of engine_target.mutate (a custom mutator), half of the time through its
own byte-level ones. Without atheris the same property runs over the structured inputs (engine_target.inputs)
for the same time. Either way a failing input is written to FUZZ_OUT (default tests/fuzz/out/) and printed in hex:
add it to the regression table in test_fuzz.py.

    python tests/fuzz/fuzz_engine.py [--seconds N] [--seed N] [--no-atheris]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_target import PropertyFailed, Target, build_target, check, inputs, mutate, seeds

OUT = Path(os.environ.get("FUZZ_OUT", Path(__file__).resolve().parent / "out"))


def save(data: bytes, why: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    print(f"FAILED: {why}\n  input ({len(data)} octets): {data.hex()}\n  saved to {path}", file=sys.stderr)
    return path


def run_plain(target: Target, seconds: float, seed: int) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    n = failures = 0
    for data in inputs(rng):
        try:
            check(target, data)
        except PropertyFailed as exc:
            failures += 1
            save(data, str(exc))
        n += 1
        if n % 256 == 0 and time.monotonic() > deadline:
            break
    print(f"structured fuzzing: {n} inputs in {seconds:.0f} s (seed {seed}), {failures} failures")
    return 1 if failures else 0


def run_atheris(target_seconds: float, seed: int) -> int:
    import atheris

    with atheris.instrument_imports(include=["dnsd"]):
        import dnsd.engine.engine
        import dnsd.proto.render
        import dnsd.proto.wire  # noqa: F401
    target = build_target()
    corpus = OUT / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (corpus / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)

    def one_input(data: bytes) -> None:
        try:
            check(target, data)
        except PropertyFailed as exc:
            save(data, str(exc))
            raise

    def custom_mutator(data: bytes, max_size: int, mseed: int) -> bytes:
        rng = random.Random(mseed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return mutate(data, rng, rng.randint(1, 3))[:max_size]

    argv = [
        sys.argv[0],
        f"-max_total_time={int(target_seconds)}",
        f"-seed={seed}",
        "-max_len=4200",
        f"-artifact_prefix={OUT}/",
        str(corpus),
    ]
    atheris.Setup(argv, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()  # exits the process: 0 when the time is up, non-zero on a failure
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", "60")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", str(random.randrange(1 << 31)))))
    p.add_argument("--no-atheris", action="store_true", help="structured fuzzing only")
    args = p.parse_args()
    if not args.no_atheris:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: structured fuzzing without coverage guidance", file=sys.stderr)
        else:
            return run_atheris(args.seconds, args.seed)
    target = build_target()
    try:
        return run_plain(target, args.seconds, args.seed)
    finally:
        target.close()


if __name__ == "__main__":
    sys.exit(main())

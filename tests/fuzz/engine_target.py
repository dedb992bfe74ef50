"""The fuzz target: one message through the header check, the parser and the engine, and the property it must keep.

Engine.handle (over UDP and TCP, twice each, so the second answer comes from the exact-query table) must never
raise, must return None or a reply whose ID is the query's, the reply must parse with dnspython whenever the query
does, the exact-table answer must equal the first one, and nothing may be logged at ERROR (the engine logs an
internal error, with its traceback, where an exception became SERVFAIL). The engine is the production one (App)
over the fixture cluster (tests/data/cluster) and the protocol records (tests/data/protocol).

Inputs are structured: valid queries built from parts (names, types, classes, flags, EDNS options, TSIG and
authority records), then mutated (bit flips, octets set, cut, inserted, header counts changed, sections repeated,
garbage appended), so most inputs get past the header check and into the parser and the engine.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import struct
import tempfile
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO / "tests" / "data"

NAMES = [
    "",
    "cluster.local",
    "svc.cluster.local",
    "svc1.testns.svc.cluster.local",
    "SVC1.TestNS.svc.Cluster.Local",
    "_http._tcp.svc1.testns.svc.cluster.local",
    "nope.testns.svc.cluster.local",
    "web.default.svc.cluster.local",
    "big.default.svc.cluster.local",
    "testns.svc.cluster.local",
    "1-2-3-4.testns.pod.cluster.local",
    "10.0.0.1.in-addr.arpa",
    "1.0.0.10.in-addr.arpa",
    "in-addr.arpa",
    "ip6.arpa",
    "example.com",
    "kubernetes.default.svc.cluster.local",
    "dns-version.cluster.local",
    "x" * 63 + ".cluster.local",
]
# Weighted towards what reaches the records (IN, the types dnsd answers), with the odd ones still drawn.
TYPES = (
    [1] * 6 + [28] * 3 + [33] * 3 + [12] * 3 + [16, 6, 6, 2, 5, 15, 35, 41, 64, 65, 250, 251, 252, 255, 0, 0xFFFF, 666]
)
CLASSES = [1] * 12 + [3, 4, 254, 255, 0]
FLAGS = [0x0100] * 8 + [0x0000, 0x0110, 0x0120, 0x0900, 0x2100, 0x0140, 0x0180, 0x8100]
OPTION_CODES = [3, 8, 9, 10, 11, 12, 15, 0xFFFF]


def wire_name(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        if label:
            raw = label.encode("latin-1")[:63]
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


@dataclass(frozen=True)
class QuerySpec:
    """A query built from parts; the header counts follow the sections unless a mutation changes them."""

    qid: int
    flags: int
    name: str
    qtype: int
    qclass: int
    edns: bool = False
    payload: int = 1232
    do: bool = False
    version: int = 0
    options: tuple[tuple[int, bytes], ...] = ()
    authority_soa: bool = False  # an IXFR-style SOA in the authority section
    tsig: bool = False  # a TSIG record last in the additional section

    def wire(self) -> bytes:
        question = wire_name(self.name) + struct.pack("!HH", self.qtype, self.qclass)
        authority = b""
        if self.authority_soa:
            rdata = b"\x00\x00" + struct.pack("!IIIII", 1, 2, 3, 4, 5)
            authority = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 0, len(rdata)) + rdata
        additional = b""
        ar = 0
        if self.edns:
            opts = b"".join(struct.pack("!HH", c, len(v)) + v for c, v in self.options)
            ttl = (self.version << 16) | (0x8000 if self.do else 0)
            additional += b"\x00" + struct.pack("!HHIH", 41, self.payload, ttl, len(opts)) + opts
            ar += 1
        if self.tsig:
            alg = wire_name("hmac-sha256")
            rdata = alg + struct.pack("!HIHH", 0, 0, 300, 32) + bytes(32) + struct.pack("!HHH", self.qid, 0, 0)
            additional += wire_name("key") + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
            ar += 1
        header = struct.pack("!6H", self.qid, self.flags, 1, 0, 1 if self.authority_soa else 0, ar)
        return header + question + authority + additional


def random_spec(rng: random.Random) -> QuerySpec:
    name = rng.choice(NAMES)
    if rng.random() < 0.2:
        name = f"{rng.choice(['a', 'xn--zz', '_srv', '*', '0', 'é'])}.{name}"
    options = tuple(
        (rng.choice(OPTION_CODES), rng.randbytes(rng.choice([0, 2, 4, 8, 16, 20, 41])))
        for _ in range(rng.randint(0, 2))
    )
    return QuerySpec(
        qid=rng.randrange(0x10000),
        flags=rng.choice(FLAGS),
        name=name,
        qtype=rng.choice(TYPES),
        qclass=rng.choice(CLASSES),
        edns=rng.random() < 0.5,
        payload=rng.choice([0, 511, 512, 1232, 4096, 65535]),
        do=rng.random() < 0.3,
        version=rng.choice([0, 0, 0, 1]),
        options=options if rng.random() < 0.15 else (),
        authority_soa=rng.random() < 0.05,
        tsig=rng.random() < 0.05,
    )


def mutate(data: bytes, rng: random.Random, rounds: int) -> bytes:
    """Structured and blind mutations of a message; rounds 0 leaves it valid."""
    buf = bytearray(data)
    for _ in range(rounds):
        op = rng.randrange(9)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # set an octet to an edge value
            buf[rng.randrange(len(buf))] = rng.choice([0, 1, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF])
        elif op == 2 and buf:  # cut
            del buf[rng.randrange(len(buf)) :]
        elif op == 3:  # insert octets
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(buf) >= 12:  # change a header count
            at = rng.choice([4, 6, 8, 10])
            struct.pack_into("!H", buf, at, rng.choice([0, 1, 2, 3, 0xFFFF]))
        elif op == 5 and len(buf) > 12:  # repeat the tail (a section twice)
            i = rng.randrange(12, len(buf))
            buf += buf[i:]
        elif op == 6:  # garbage after the message
            buf += rng.randbytes(rng.randint(1, 64))
        elif op == 7 and len(buf) > 13:  # a compression pointer somewhere in the body
            i = rng.randrange(12, len(buf) - 1)
            buf[i : i + 2] = struct.pack("!H", 0xC000 | rng.randrange(len(buf)))
        elif op == 8 and len(buf) >= 4:  # flag bits (RD, TC, AA, QR or an opcode bit) and the second flag octet
            buf[2] ^= rng.choice([0x01, 0x02, 0x04, 0x08, 0x80])
            buf[3] = rng.randrange(256)
    return bytes(buf)


def seeds() -> Iterator[bytes]:
    """A corpus of valid queries, one per shape (for atheris' corpus, and the first inputs of a run)."""
    rng = random.Random(53)
    for _ in range(200):
        yield random_spec(rng).wire()


# ---------------------------------------------------------------- the engine and the property


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Target:
    app: Any
    loop: asyncio.AbstractEventLoop
    errors: _ErrorLog = field(default_factory=_ErrorLog)
    tmp: Path | None = None

    def close(self) -> None:
        logging.getLogger().removeHandler(self.errors)
        self.loop.run_until_complete(self.app.source.stop())
        self.loop.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def build_target() -> Target:
    """The production App's engine over the fixture cluster plus the protocol records, synced once, no sockets."""
    from dnsd.app import App
    from dnsd.config import parse_config

    tmp = Path(tempfile.mkdtemp(prefix="dnsd-fuzz-"))
    shutil.copytree(DATA / "cluster", tmp / "cluster")
    for f in ("big.yaml", "chains.yaml", "mid.yaml"):  # base.yaml defines namespace default again
        shutil.copy(DATA / "protocol" / f, tmp / f"protocol-{f}")
    cfg = parse_config(
        {
            "listen": ["127.0.0.1:0"],
            "http": None,
            "zones": None,
            "forward": None,  # never forward a fuzz input to the machine's own resolvers
            "recursion": "off",
            "cluster": {"source": {"files": str(tmp)}},
        }
    )
    app = App(cfg)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.source.sync())
    app.store.mark_synced()
    target = Target(app, loop, tmp=tmp)
    logging.getLogger().addHandler(target.errors)
    return target


class PropertyFailed(AssertionError):
    pass


def _resolve(target: Target, out: object) -> bytes | None:
    if out is None or isinstance(out, bytes):
        return out
    assert isinstance(out, Awaitable)

    async def wait() -> bytes | None:
        got = await out
        assert got is None or isinstance(got, bytes)
        return got

    return target.loop.run_until_complete(wait())


def check(target: Target, data: bytes) -> None:
    """The property, for one input; PropertyFailed (an AssertionError) says which part broke."""
    try:
        dns.message.from_wire(data)
        query_parses = True
    except (dns.exception.DNSException, ValueError, UnicodeError, IndexError, struct.error):
        query_parses = False
    engine = target.app.engine
    for tcp in (False, True):
        replies: list[bytes | None] = []
        for _ in range(2):  # the second may be an exact-query hit: the same reply
            try:
                out = engine.handle(data, tcp, ("127.0.0.1", 5353))
                reply = _resolve(target, out)
            except Exception as exc:
                raise PropertyFailed(f"handle raised {exc!r} (tcp={tcp})") from exc
            replies.append(reply)
            if reply is None:
                continue
            if reply[:2] != data[:2]:
                raise PropertyFailed(f"reply ID {reply[:2].hex()} is not the query's {data[:2].hex()} (tcp={tcp})")
            if query_parses:
                try:
                    dns.message.from_wire(reply)
                except Exception as exc:
                    raise PropertyFailed(f"dnspython cannot parse the reply: {exc!r} (tcp={tcp})") from exc
        if replies[0] != replies[1]:
            raise PropertyFailed(f"the same query got two different replies (tcp={tcp})")
    if target.errors.records:
        first = target.errors.records[0]
        target.errors.records.clear()
        raise PropertyFailed(f"logged at ERROR: {first.getMessage()}")


def inputs(rng: random.Random) -> Iterator[bytes]:
    """An endless stream of inputs: valid queries, and mutations of them (most inputs carry a few mutations)."""
    while True:
        data = random_spec(rng).wire()
        yield mutate(data, rng, rng.choice([0, 0, 0, 1, 1, 2, 3, 5]))

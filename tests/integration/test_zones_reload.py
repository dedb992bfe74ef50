"""Zone files as a watched directory: changes, broken files, deletions, new files, conflicts, the fast path.

Each case starts a server over a zone directory, applies one change to the files and waits (with a deadline,
never a fixed sleep) until the served answers say the change was applied; the expected replies are zone-file
text. The same exact query bytes are asked twice before and after a change, so the second of each pair comes
from the pre-rendered fast path: a reload must drop exactly the changed zone's entries.
"""

# ruff: noqa: E501  (zone-file lines are kept whole, one record a line)

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import pytest
import yaml
from support import (
    FIXTURE_CLUSTER,
    REPO,
    DnsdHandle,
    base_config,
    make_query,
    query,
    raw_udp,
    rcode_text,
    rr_lines,
    wait_until,
    zone_lines,
)

SOA = "@ IN SOA ns1 hostmaster {serial} 7200 3600 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n"


def zone_text(origin: str | None, body: str, serial: int = 1) -> str:
    head = f"$ORIGIN {origin}\n" if origin else ""
    return head + "$TTL 300\n" + SOA.format(serial=serial) + body


def config(zones: Path) -> dict[str, object]:
    cfg = base_config(FIXTURE_CLUSTER)
    cfg["zones"] = str(zones)
    return cfg


def answer_of(h: DnsdHandle, name: str, qtype: str = "A") -> tuple[str, set[str]]:
    msg = query(h, name, qtype)
    return rcode_text(msg), rr_lines(msg.answer)


def ok(*lines: str) -> tuple[str, set[str]]:
    return "NOERROR", zone_lines("\n".join(lines))


REFUSED: tuple[str, set[str]] = ("REFUSED", set())


@dataclass(frozen=True)
class Check:
    name: str
    qtype: str
    want: tuple[str, set[str]]


@dataclass(frozen=True)
class Event:
    id: str
    files: dict[str, str]  # the directory before
    change: Callable[[Path], None]  # what the test does to it
    before: list[Check]
    after: list[Check]
    logged: list[str] = field(
        default_factory=list
    )  # regexes of log lines that must appear exactly once (ZONES = the directory)


def write(name: str, text: str) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        tmp = d / f".{name}.tmp"  # hidden files are never read: an atomic replace, as editors and ConfigMaps do
        tmp.write_text(text)
        tmp.replace(d / name)

    return run


def delete(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


A_OLD = "www 300 IN A 192.0.2.10\n"
A_NEW = "www 300 IN A 192.0.2.20\n"

EVENTS = [
    Event(
        "changed",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("a.test.zone", zone_text("a.test.", A_NEW, serial=2)),
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.20"))],
        [r"zone a\.test\. loaded from .*a\.test\.zone"],
    ),
    Event(
        "broken-keeps-old",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("a.test.zone", zone_text("a.test.", A_OLD + "bad 300 IN A 999.1.2.3\n" + A_NEW)),
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [r"ZONES/a\.test\.zone:7: .*; its previous version keeps serving"],
    ),
    Event(
        "deleted-withdraws",
        {"a.test.zone": zone_text("a.test.", A_OLD), "b.test.zone": zone_text("b.test.", A_OLD)},
        delete("a.test.zone"),
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [Check("www.a.test.", "A", REFUSED), Check("www.b.test.", "A", ok("www.b.test. 300 IN A 192.0.2.10"))],
        [r"zone a\.test\. withdrawn"],
    ),
    Event(
        "new-file",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("c.test", zone_text(None, A_NEW)),  # no $ORIGIN: the file name is the origin
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10")), Check("www.c.test.", "A", REFUSED)],
        [
            Check("www.c.test.", "A", ok("www.c.test. 300 IN A 192.0.2.20")),
            Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10")),
        ],
        [r"zone c\.test\. loaded from .*/c\.test$"],
    ),
    Event(
        "child-zone-appears",
        # The parent's answers below the new child were pre-rendered: they must go too.
        {"a.test.zone": zone_text("a.test.", "*.sub 300 IN A 192.0.2.99\n")},
        write("sub.a.test.zone", zone_text("sub.a.test.", A_NEW)),
        [Check("www.sub.a.test.", "A", ok("www.sub.a.test. 300 IN A 192.0.2.99"))],
        [Check("www.sub.a.test.", "A", ok("www.sub.a.test. 300 IN A 192.0.2.20"))],
    ),
    Event(
        "child-zone-goes",
        {
            "a.test.zone": zone_text("a.test.", "*.sub 300 IN A 192.0.2.99\n"),
            "sub.a.test.zone": zone_text("sub.a.test.", A_NEW),
        },
        delete("sub.a.test.zone"),
        [Check("www.sub.a.test.", "A", ok("www.sub.a.test. 300 IN A 192.0.2.20"))],
        [Check("www.sub.a.test.", "A", ok("www.sub.a.test. 300 IN A 192.0.2.99"))],
    ),
    Event(
        "cname-target-zone-changes",
        # An answer chased into another zone depends on both: a change of the target's zone drops it too.
        {
            "a.test.zone": zone_text("a.test.", "alias 300 IN CNAME www.b.test.\n"),
            "b.test.zone": zone_text("b.test.", A_OLD),
        },
        write("b.test.zone", zone_text("b.test.", A_NEW, serial=2)),
        [Check("alias.a.test.", "A", ok("alias.a.test. 300 IN CNAME www.b.test.", "www.b.test. 300 IN A 192.0.2.10"))],
        [Check("alias.a.test.", "A", ok("alias.a.test. 300 IN CNAME www.b.test.", "www.b.test. 300 IN A 192.0.2.20"))],
    ),
    Event(
        "cname-target-zone-appears",
        {"a.test.zone": zone_text("a.test.", "alias 300 IN CNAME www.b.test.\n")},
        write("b.test.zone", zone_text("b.test.", A_OLD)),
        [Check("alias.a.test.", "A", ok("alias.a.test. 300 IN CNAME www.b.test."))],
        [Check("alias.a.test.", "A", ok("alias.a.test. 300 IN CNAME www.b.test.", "www.b.test. 300 IN A 192.0.2.10"))],
    ),
    Event(
        "broken-new-file-not-served",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("d.test.zone", "$ORIGIN d.test.\n$TTL 300\nwww IN A 192.0.2.1\n"),  # no SOA
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10")), Check("www.d.test.", "A", REFUSED)],
        [Check("www.d.test.", "A", REFUSED), Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [r"ZONES/d\.test\.zone: no SOA record at the zone apex; not served"],
    ),
    Event(
        "cluster-domain-refused",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("cluster.local.zone", zone_text("cluster.local.", "dns-version 300 IN TXT hijacked\n")),
        [Check("dns-version.cluster.local.", "TXT", ok('dns-version.cluster.local. 28800 IN TXT "1.1.0"'))],
        [Check("dns-version.cluster.local.", "TXT", ok('dns-version.cluster.local. 28800 IN TXT "1.1.0"'))],
        [
            r"ZONES/cluster\.local\.zone: zone cluster\.local\. is inside cluster\.local\., the cluster's zone; not served"
        ],
    ),
    Event(
        "duplicate-origin",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("z-copy.zone", zone_text("a.test.", A_NEW)),
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [r"ZONES/z-copy\.zone: zone a\.test\. is already served from ZONES/a\.test\.zone; not served"],
    ),
    Event(
        "ignored-files",
        {"a.test.zone": zone_text("a.test.", A_OLD)},
        write("notes.md", "not a zone"),
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
        [Check("www.a.test.", "A", ok("www.a.test. 300 IN A 192.0.2.10"))],
    ),
]


def exact_pair(h: DnsdHandle, name: str) -> tuple[bytes, bytes, int]:
    """The same query bytes twice; the replies, and how many of the two the fast path served. Asked once before:
    a negative answer is kept from its second ask (engine/fastpath.py)."""
    data = make_query(name, "A").to_wire()
    assert raw_udp(h, data) is not None
    hits0 = h.call(lambda: h.app.engine.counters.fast_hits)
    first = raw_udp(h, data)
    second = raw_udp(h, data)
    assert first is not None and second is not None
    return first, second, h.call(lambda: h.app.engine.counters.fast_hits) - hits0


def a_records(reply: bytes) -> set[str]:
    return rr_lines(dns.message.from_wire(reply).answer)


@pytest.mark.parametrize("ev", EVENTS, ids=[e.id for e in EVENTS])
def test_zone_directory_event(
    ev: Event, tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle], logs: pytest.LogCaptureFixture
) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    for name, text in ev.files.items():
        (zones / name).write_text(text)
    h = dnsd_factory(config=config(zones))
    # start() returned: the first load is done, so the zones answer at once (no waiting here).
    for c in ev.before:
        assert answer_of(h, c.name, c.qtype) == c.want, f"before: {c.name} {c.qtype}"
    fast_name = ev.before[0].name  # a positive answer: pre-rendered (REFUSED never is)
    before_reply, again, hits = exact_pair(h, fast_name)
    assert before_reply[2:] == again[2:] and hits >= 1, "the repeated query was not served from the fast path"
    logs.clear()
    ev.change(zones)
    for c in ev.after:
        wait_until(lambda c=c: answer_of(h, c.name, c.qtype) == c.want, timeout=10)
    if ev.logged:
        pats = [re.compile(p.replace("ZONES", re.escape(str(zones)))) for p in ev.logged]
        wait_until(lambda: all(any(p.search(r.getMessage()) for r in logs.records) for p in pats), timeout=10)
    # The fast path serves what the zones now hold, for the exact bytes asked before the change too.
    first, second, _ = exact_pair(h, fast_name)
    want = next((c.want for c in ev.after if c.name == fast_name and c.qtype == "A"), None)
    if want is not None and want[0] == "NOERROR":
        assert a_records(first) == a_records(second) == want[1]
    # Every report is logged once, and once only, however often the directory is rescanned meanwhile.
    asyncio.run_coroutine_threadsafe(h.app.zone_source.sync(), h.loop).result(10)
    for p in ev.logged:
        pat = re.compile(p.replace("ZONES", re.escape(str(zones))))
        assert sum(1 for r in logs.records if pat.search(r.getMessage())) == 1, p
    for r in logs.records:
        assert r.levelno < logging.ERROR or ev.logged, f"unexpected error: {r.getMessage()}"


def test_missing_directory_then_created(
    tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle], logs: pytest.LogCaptureFixture
) -> None:
    """A zone directory that does not exist yet: nothing served, a warning, then served once it appears."""
    zones = tmp_path / "zones"
    h = dnsd_factory(config=config(zones))
    assert answer_of(h, "www.a.test.") == REFUSED
    assert any("zone directory missing" in r.getMessage() for r in logs.records)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.test.zone").write_text(zone_text("a.test.", A_OLD))
    staging.rename(zones)
    wait_until(lambda: answer_of(h, "www.a.test.") == ok("www.a.test. 300 IN A 192.0.2.10"), timeout=10)


def test_negative_answers_tagged_and_aa(tmp_path: Path, dnsd_factory: Callable[..., DnsdHandle]) -> None:
    """NXDOMAIN from a zone is pre-rendered too, and dropped when the name appears."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "a.test.zone").write_text(zone_text("a.test.", ""))
    h = dnsd_factory(config=config(zones))
    msg = query(h, "www.a.test.")
    assert rcode_text(msg) == "NXDOMAIN" and msg.flags & dns.flags.AA
    assert rr_lines(msg.authority) == zone_lines(
        "a.test. 60 IN SOA ns1.a.test. hostmaster.a.test. 1 7200 3600 1209600 60"
    )
    exact_pair(h, "www.a.test.")
    write("a.test.zone", zone_text("a.test.", A_NEW, serial=2))(zones)
    wait_until(lambda: answer_of(h, "www.a.test.") == ok("www.a.test. 300 IN A 192.0.2.20"), timeout=10)
    first, second, hits = exact_pair(h, "www.a.test.")
    assert a_records(first) == a_records(second) == zone_lines("www.a.test. 300 IN A 192.0.2.20")
    assert hits >= 1


SHIPPED = [
    ("www.example.internal.", "A", "NOERROR", "www.example.internal. 3600 IN A 192.0.2.10"),
    (
        "api.example.internal.",
        "AAAA",
        "NOERROR",
        "api.example.internal. 3600 IN CNAME www.example.internal.\nwww.example.internal. 3600 IN AAAA 2001:db8::10",
    ),
    ("anything.apps.example.internal.", "TXT", "NOERROR", 'anything.apps.example.internal. 3600 IN TXT "wildcard"'),
    ("nope.example.internal.", "A", "NXDOMAIN", ""),
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "answer"), SHIPPED, ids=[f"{c[0]}/{c[1]}" for c in SHIPPED])
def test_shipped_config_serves_the_example_zone(
    name: str, qtype: str, rcode: str, answer: str, dnsd_factory: Callable[..., DnsdHandle]
) -> None:
    """config/dnsd.yaml serves zones/ (relative to the repository, where `make run` starts), which ships
    example.internal.zone: the README's example queries."""
    shipped = yaml.safe_load((REPO / "config" / "dnsd.yaml").read_text())
    assert shipped["zones"] == "zones"
    h = dnsd_factory(config=config(REPO / shipped["zones"]))
    msg = query(h, name, qtype)
    assert (rcode_text(msg), rr_lines(msg.answer)) == (rcode, zone_lines(answer) if answer else set())
    assert msg.flags & dns.flags.AA

"""Zone files: the same files served by NSD and by dnsd, one table of queries, the replies compared.

NSD (Debian package `nsd`) is started by the module on 127.0.0.1 on a free port, in the foreground (-d), with a
minimal nsd.conf in a temporary directory, twice: with `minimal-responses: yes` (no NS RRset in the authority
section of positive answers, as dnsd and CoreDNS answer) and with `minimal-responses: no`. Every case compares
rcode, AA and the three sections (as sets of zone-file lines) with the first; where dnsd deliberately differs the
case says so and lists dnsd's extra records, which the second NSD must also send (so they are NSD's records too).

The zones: tests/data/zones/example.test.zone (every lookup rule) and the shipped zones/example.internal.zone.
"""

# ruff: noqa: E501  (zone-file lines are kept whole, one record a line)

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rrset
import pytest
from support import REPO, DnsdHandle, base_config, query, rcode_text, rr_lines, run_dnsd, zone_lines
from support.nsd import Nsd, start_nsd

ZONE_FILES = (REPO / "tests" / "data" / "zones" / "example.test.zone", REPO / "zones" / "example.internal.zone")
ORIGINS = ("example.test", "example.internal")


def start_both(work: Path, zones: Path, minimal: bool) -> Nsd:
    return start_nsd(work, {o: zones / f"{o}.zone" for o in ORIGINS}, minimal)


@pytest.fixture(scope="module")
def zones_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("zones")
    for f in ZONE_FILES:
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def nsd_minimal(tmp_path_factory: pytest.TempPathFactory, zones_dir: Path) -> Iterator[Nsd]:
    nsd = start_both(tmp_path_factory.mktemp("nsd") / "minimal", zones_dir, minimal=True)
    yield nsd
    nsd.stop()


@pytest.fixture(scope="module")
def nsd_full(tmp_path_factory: pytest.TempPathFactory, zones_dir: Path) -> Iterator[Nsd]:
    nsd = start_both(tmp_path_factory.mktemp("nsd") / "full", zones_dir, minimal=False)
    yield nsd
    nsd.stop()


@pytest.fixture(scope="module")
def dnsd(zones_dir: Path) -> Iterator[DnsdHandle]:
    cfg = base_config(REPO / "tests" / "data" / "cluster")
    cfg["zones"] = str(zones_dir)
    handle = run_dnsd(cfg)
    yield handle
    handle.stop()


@dataclass(frozen=True)
class Case:
    name: str
    qtype: str
    rule: str
    # dnsd's records beyond NSD's with minimal-responses (the second NSD sends them too): the deliberate difference.
    extra_additional: str = ""
    tcp: bool = False


TEST = "example.test."
EX = "example.internal."

CASES = [
    Case(TEST, "SOA", "apex SOA"),
    Case(TEST, "NS", "apex NS: the in-zone name server's address in additional, none for the out-of-zone one"),
    Case(EX, "NS", "apex NS with two glue addresses (A and AAAA)"),
    Case(
        TEST,
        "MX",
        "MX: the in-zone exchange's addresses in additional (RFC 1035 3.3.9)",
        extra_additional="""
        mx1.example.test. 600 IN A 198.51.100.25
        mx1.example.test. 600 IN AAAA 2001:db8:1::25
        """,
    ),
    Case(
        "_sip._udp." + TEST,
        "SRV",
        "SRV: the in-zone target's address in additional (RFC 2782)",
        extra_additional="host.example.test. 60 IN A 198.51.100.7",
    ),
    Case(
        "_https._tcp." + EX,
        "SRV",
        "SRV in the shipped example",
        extra_additional="""
        www.example.internal. 3600 IN A 192.0.2.10
        www.example.internal. 3600 IN AAAA 2001:db8::10
        """,
    ),
    Case("host." + TEST, "A", "A with its own TTL"),
    Case("host." + TEST, "TXT", "TXT with two strings"),
    Case("www." + EX, "AAAA", "AAAA"),
    Case(EX, "CAA", "CAA"),
    Case(EX, "TXT", "TXT at the apex"),
    Case("4.100." + TEST, "PTR", "PTR"),
    Case("mixed.case." + TEST, "A", "an owner spelled in mixed case in the file"),
    Case("chain1." + TEST, "A", "a CNAME chain chased inside the zone"),
    Case("api." + EX, "A", "a CNAME chased inside the zone (shipped example)"),
    Case("chain1." + TEST, "CNAME", "CNAME asked: not chased"),
    Case("to-nx." + TEST, "A", "a CNAME to a missing name: NXDOMAIN with the CNAME (RFC 6604)"),
    Case("to-nodata." + TEST, "MX", "a CNAME to a name without the type: NODATA with the CNAME (RFC 2308 2.2)"),
    Case("loop1." + TEST, "A", "a CNAME loop: the chase stops"),
    Case("out." + TEST, "A", "a CNAME out of the zone: the CNAME alone (no forwarding here)"),
    Case("docs." + EX, "A", "a CNAME out of the zone (shipped example)"),
    Case("cross." + TEST, "A", "a CNAME into another zone we serve: chased there"),
    Case("crossnx." + TEST, "A", "a CNAME to a missing name in another zone: NXDOMAIN with that zone's SOA"),
    Case("todel." + TEST, "A", "a CNAME into a delegation: the CNAME, AA set, and the referral"),
    Case("foo." + TEST, "A", "the apex wildcard: the owner is the query name (RFC 4592 3.3.1)"),
    Case("foo." + TEST, "MX", "the wildcard matches, but has no MX: NODATA"),
    Case("x.apps." + EX, "A", "a wildcard below the apex"),
    Case("apps." + EX, "A", "the wildcard's parent: an empty non-terminal, NODATA"),
    Case("x.y.apps." + EX, "TXT", "a wildcard answers deeper names too"),
    Case("a.wc." + TEST, "A", "a wildcard CNAME, chased"),
    Case("a.b.wc." + TEST, "CNAME", "a wildcard CNAME asked as CNAME"),
    Case("*." + TEST, "A", "the wildcard asked by its own name"),
    Case("x." + TEST, "A", "an empty non-terminal: NODATA, not the wildcard (RFC 4592 2.2.2)"),
    Case("ent.x." + TEST, "A", "a deeper empty non-terminal: NODATA"),
    Case("y.ent.x." + TEST, "A", "below an empty non-terminal: NXDOMAIN, the wildcard is blocked"),
    Case("y.x." + TEST, "A", "below an empty non-terminal: NXDOMAIN"),
    Case("svc.apps." + EX, "A", "the shipped example's empty non-terminal: NODATA"),
    Case("x.svc.apps." + EX, "A", "the shipped example: the wildcard blocked by the empty non-terminal"),
    Case("nope." + EX, "A", "NXDOMAIN: SOA with TTL min(SOA TTL, MINIMUM) (RFC 2308 3)"),
    Case("host." + TEST, "AAAA", "NODATA with the SOA"),
    Case("www." + EX, "MX", "NODATA (shipped example)"),
    Case("sub." + TEST, "NS", "a delegation point asked for NS: a referral, AA clear"),
    Case("sub." + TEST, "A", "at a delegation: a referral with the glue"),
    Case("a.sub." + TEST, "A", "below a delegation: a referral with A and AAAA glue"),
    Case("ns1.sub." + TEST, "A", "a glue name: a referral, not an authoritative answer"),
    Case("sub." + TEST, "DS", "DS at a cut: answered from the parent, AA set (RFC 4035 3.1.4.1)"),
    Case("nodsdel." + TEST, "DS", "DS at a cut without one: NODATA from the parent"),
    Case("x.nodsdel." + TEST, "A", "a delegation without glue"),
    Case("host.lab." + EX, "A", "the shipped example's delegation"),
    Case("host." + TEST, "ANY", "ANY: one RRset, the name's first in the file (RFC 8482 4.2; NSD over UDP)"),
    Case(EX, "ANY", "ANY at the apex: the SOA"),
    Case("x.apps." + EX, "ANY", "ANY on a wildcard"),
    Case("host." + TEST, "ANY", "ANY over TCP: the same one RRset", tcp=True),
    Case("nothing.example.", "A", "outside every zone: REFUSED by both (dnsd: the chain's end)"),
]


def summary(msg: dns.message.Message) -> tuple[str, bool, set[str], set[str], set[str]]:
    return (
        rcode_text(msg),
        bool(msg.flags & dns.flags.AA),
        rr_lines(msg.answer),
        rr_lines(msg.authority),
        rr_lines(msg.additional),
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}/{c.qtype}")
def test_same_as_nsd(case: Case, dnsd: DnsdHandle, nsd_minimal: Nsd, nsd_full: Nsd) -> None:
    got = summary(query(dnsd, case.name, case.qtype, tcp=case.tcp))
    want = summary(query(nsd_minimal.addr, case.name, case.qtype, tcp=case.tcp))
    extra = zone_lines(case.extra_additional) if case.extra_additional.strip() else set()
    if extra:
        full = summary(query(nsd_full.addr, case.name, case.qtype, tcp=case.tcp))
        assert extra <= full[4], f"NSD without minimal-responses does not send {sorted(extra - full[4])}"
        assert not (extra & want[4]), "the listed difference is no difference"
        want = (*want[:4], want[4] | extra)
    assert got[:2] == want[:2], f"{case.rule}: rcode/AA dnsd={got[:2]} nsd={want[:2]}"
    for i, section in ((2, "answer"), (3, "authority"), (4, "additional")):
        assert got[i] == want[i], (
            f"{case.rule}: {section} differs\n  missing: {sorted(want[i] - got[i])}\n  unexpected: {sorted(got[i] - want[i])}"
        )


def owners(msg: dns.message.Message, section: int) -> list[str]:
    """The owner names of one section as sent, case included."""
    return sorted(r.name.to_text() for r in (msg.answer, msg.authority, msg.additional)[section])


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("HoSt.Example.TEST.", "A"),
        ("FOO.example.TEST.", "A"),  # the wildcard's owner is the query name as asked
        ("Chain1.EXAMPLE.test.", "A"),  # and the chased target's zone part
        ("NoPe.Example.Test.", "A"),  # the SOA's owner in authority
        ("A.Sub.Example.Test.", "A"),  # the referral's NS owner and the glue
        ("EXAMPLE.INTERNAL.", "MX"),  # the exchange's address in additional
        ("MIXED.case.example.test.", "A"),
    ],
)
def test_case_preserved(name: str, qtype: str, dnsd: DnsdHandle, nsd_minimal: Nsd) -> None:
    """The answer's owner names are spelled as NSD spells them, and every owner's zone part as the question
    spells it (RFC 4343). Deliberate difference: an owner between the question and the zone (a referral's cut,
    Sub.Example.Test. for A.Sub.Example.Test.) keeps the zone file's lower case above the zone part, where NSD
    copies the question's spelling (render.py seeds compression with the zone's suffixes only)."""
    got = query(dnsd, name, qtype)
    assert got.answer or got.authority, "no records"
    assert owners(got, 0) == owners(query(nsd_minimal.addr, name, qtype), 0)
    zone = next(o for o in ORIGINS if name.lower().endswith(o + "."))
    spelled = name[len(name) - len(zone) - 1 :]
    for section in range(3):
        for owner in owners(got, section):
            assert owner.endswith(spelled), f"{owner} is not spelled {spelled}"

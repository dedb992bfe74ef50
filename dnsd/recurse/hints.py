"""Root hints: the IANA named.root built in, or a file in named.root format (`root_hints`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdatatype
import dns.rrset
import dns.zonefile

from dnsd.errors import DnsdError

# IANA's named.root (https://www.internic.net/domain/named.root), last update April 18, 2024, root zone 2024041801.
NAMED_ROOT = """\
.                        3600000      NS    A.ROOT-SERVERS.NET.
A.ROOT-SERVERS.NET.      3600000      A     198.41.0.4
A.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:ba3e::2:30
.                        3600000      NS    B.ROOT-SERVERS.NET.
B.ROOT-SERVERS.NET.      3600000      A     170.247.170.2
B.ROOT-SERVERS.NET.      3600000      AAAA  2801:1b8:10::b
.                        3600000      NS    C.ROOT-SERVERS.NET.
C.ROOT-SERVERS.NET.      3600000      A     192.33.4.12
C.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2::c
.                        3600000      NS    D.ROOT-SERVERS.NET.
D.ROOT-SERVERS.NET.      3600000      A     199.7.91.13
D.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2d::d
.                        3600000      NS    E.ROOT-SERVERS.NET.
E.ROOT-SERVERS.NET.      3600000      A     192.203.230.10
E.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:a8::e
.                        3600000      NS    F.ROOT-SERVERS.NET.
F.ROOT-SERVERS.NET.      3600000      A     192.5.5.241
F.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2f::f
.                        3600000      NS    G.ROOT-SERVERS.NET.
G.ROOT-SERVERS.NET.      3600000      A     192.112.36.4
G.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:12::d0d
.                        3600000      NS    H.ROOT-SERVERS.NET.
H.ROOT-SERVERS.NET.      3600000      A     198.97.190.53
H.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:1::53
.                        3600000      NS    I.ROOT-SERVERS.NET.
I.ROOT-SERVERS.NET.      3600000      A     192.36.148.17
I.ROOT-SERVERS.NET.      3600000      AAAA  2001:7fe::53
.                        3600000      NS    J.ROOT-SERVERS.NET.
J.ROOT-SERVERS.NET.      3600000      A     192.58.128.30
J.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:c27::2:30
.                        3600000      NS    K.ROOT-SERVERS.NET.
K.ROOT-SERVERS.NET.      3600000      A     193.0.14.129
K.ROOT-SERVERS.NET.      3600000      AAAA  2001:7fd::1
.                        3600000      NS    L.ROOT-SERVERS.NET.
L.ROOT-SERVERS.NET.      3600000      A     199.7.83.42
L.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:9f::42
.                        3600000      NS    M.ROOT-SERVERS.NET.
M.ROOT-SERVERS.NET.      3600000      A     202.12.27.33
M.ROOT-SERVERS.NET.      3600000      AAAA  2001:dc3::35
"""


@dataclass(frozen=True, slots=True)
class Hints:
    """The root's name servers and their addresses: where every walk starts when nothing closer is known."""

    ns: tuple[dns.name.Name, ...]
    addresses: tuple[tuple[dns.name.Name, tuple[str, ...]], ...]  # (server name, its addresses), in file order


def parse_hints(text: str, where: str = "<built-in>") -> Hints:
    """Root hints from named.root text: the root NS set and the A/AAAA records of its names. A bad file is a
    DnsdError naming the file and the line (dnspython's zone-file reader reports the line)."""
    try:
        rrsets = _read(text)
    except dns.exception.DNSException as exc:
        raise DnsdError(f"root_hints: {where}: {_bad_line(text, exc)}") from exc
    ns: list[dns.name.Name] = []
    addrs: dict[dns.name.Name, list[str]] = {}
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.NS and rrset.name == dns.name.root:
            ns.extend(rd.target for rd in rrset if rd.target not in ns)
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addrs.setdefault(rrset.name, []).extend(rd.address for rd in rrset)
    usable = [n for n in ns if addrs.get(n)]
    if not usable:
        raise DnsdError(f"root_hints: {where}: no root NS record with an address (A or AAAA) was found")
    return Hints(tuple(ns), tuple((n, tuple(addrs[n])) for n in usable))


def _read(text: str) -> list[dns.rrset.RRset]:
    return dns.zonefile.read_rrsets(text, origin=dns.name.root, relativize=False, default_ttl=3600000)


def _bad_line(text: str, exc: dns.exception.DNSException) -> str:
    """The first line that does not parse on its own (named.root has one record a line; dnspython's own line
    number is one past a bad last field), else dnspython's message."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.split(";", 1)[0].strip() and "(" not in line:
            try:
                _read(line + "\n")
            except dns.exception.DNSException as one:
                return f"line {number}: {str(one).split(': ', 1)[-1]}"
    return str(exc).replace("<input>:", "line ", 1)


def load_hints(path: Path | None) -> Hints:
    """The hints of `root_hints` (a named.root file), or IANA's when it is not set; read once, at start."""
    if path is None:
        return parse_hints(NAMED_ROOT)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DnsdError(f"root_hints: cannot read {str(path)!r}: {exc}") from exc
    return parse_hints(text, str(path))

"""One loaded zone file and its lookup (RFC 1034 4.3.2, RFC 4592 wildcards, RFC 2308 negative answers)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.zone

from dnsd.proto.answer import (
    AAAA,
    ANY,
    CNAME,
    MX,
    NOERROR,
    NS,
    NXDOMAIN,
    RR,
    SOA,
    SRV,
    A,
    Answer,
    Labels,
    Tag,
    zone_tag,
)

DS = 43
MAX_CHASE = 8  # CNAMEs followed before the chain is cut off (a loop or a long chain), per zone and across zones
IGNORED_SUFFIXES = (".md", ".txt", "~", ".swp", ".swx", ".tmp", ".bak", ".orig", ".rej")


class ZoneError(Exception):
    """A zone file that cannot be served; the message is `PATH:LINE: reason` when the reader knows the line."""


@dataclass(frozen=True, slots=True)
class RRSet:
    """One RRset: its records ready to render (owner lower-case, raw rdata) and the names its rdata points at
    (MX exchange, SRV target, NS host, CNAME target), for the additional section and the CNAME chase."""

    rrs: tuple[RR, ...]
    targets: tuple[Labels, ...]


def labels(name: dns.name.Name) -> Labels:
    """The lower-case labels of an absolute dnspython name, without the root."""
    return tuple(lab.decode("latin-1").lower() for lab in name.labels if lab)


def origin_from_filename(path: Path) -> str:
    """The origin a file without $ORIGIN is read with: its name, less a `.zone` suffix (`example.org.zone` and
    `example.org` both serve example.org.)."""
    return path.name.removesuffix(".zone").rstrip(".") + "."


def is_zone_file(path: Path) -> bool:
    """Hidden files, editor and patch leftovers and documentation (README.md) are never read as zones."""
    name = path.name
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES) and "dpkg-" not in name


@dataclass(frozen=True, slots=True)
class Zone:
    path: Path
    origin: Labels
    tag: Tag
    nodes: dict[Labels, dict[int, RRSet]]  # owner -> type -> RRset (every name with records)
    names: frozenset[Labels]  # every name that exists: owners and the empty non-terminals above them
    cuts: frozenset[Labels]  # delegation points: owners of NS records below the apex
    soa_neg: RR  # the SOA for the authority section of negative answers, TTL min(SOA TTL, MINIMUM) (RFC 2308 3)

    # ------------------------------------------------------------ lookup

    def lookup(self, qname: Labels, qtype: int) -> Answer:
        """The answer for a lower-case name inside this zone, its CNAMEs chased inside it."""
        ans = self.new_answer()
        self.answer_into(qname, qtype, ans)
        return ans

    def new_answer(self) -> Answer:
        return Answer(NOERROR, zone=self.origin, tags=frozenset((self.tag,)))

    def answer_into(self, name: Labels, qtype: int, ans: Answer) -> Labels | None:
        """Answer a lower-case name inside this zone into ans; a CNAME target outside this zone that is still
        to be followed (by the link, in another zone), if any."""
        seen: set[Labels] = set()
        for _ in range(MAX_CHASE + 1):
            target = self._step(name, qtype, ans)
            if target is None:
                return None
            seen.add(name)
            # RFC 1034 4.3.2 step 3a: a CNAME restarts the lookup at its target (a loop ends the chase).
            if target in seen:
                return None
            if not self.contains(target):
                return target
            name = target
        return None

    def contains(self, name: Labels) -> bool:
        n = len(self.origin)
        return len(name) >= n and name[len(name) - n :] == self.origin

    def _step(self, name: Labels, qtype: int, ans: Answer) -> Labels | None:
        """Answer one name into ans; the CNAME target to follow, if any."""
        n = len(self.origin)
        # Walk down from the apex: a cut above (or at) the name makes it a referral (RFC 1034 4.3.2 step 3b);
        # a missing name means no exact match: a wildcard at the closest encloser, else NXDOMAIN (RFC 4592 3.3.1).
        for depth in range(n + 1, len(name) + 1):
            node = name[len(name) - depth :]
            if node in self.cuts and not (node == name and qtype == DS):
                # DS lives on the parent side of the cut (RFC 4035 3.1.4.1): answered here, not referred.
                self._referral(node, ans)
                return None
            if node not in self.names:
                wild = ("*", *name[len(name) - depth + 1 :])
                if wild in self.nodes:
                    return self._answer(self.nodes[wild], name, qtype, ans)
                ans.rcode = NXDOMAIN  # also at the end of a CNAME chain (RFC 6604 2)
                ans.authority.append(self.soa_neg)
                return None
        data = self.nodes.get(name)
        if data is None:  # an empty non-terminal: the name exists, with no data (RFC 4592 2.2.2)
            ans.authority.append(self.soa_neg)
            return None
        return self._answer(data, name, qtype, ans)

    def _answer(self, data: dict[int, RRSet], owner: Labels, qtype: int, ans: Answer) -> Labels | None:
        """The records of one node for qtype, renamed to owner (the query name for a wildcard, RFC 4592 3.3.1)."""
        if qtype == ANY:
            # One RRset, the name's first in file order, as NSD answers ANY over UDP (RFC 8482 4.2: a subset).
            self._add(next(iter(data.values())), owner, ans)
            return None
        rrset = data.get(qtype)
        if rrset is not None:
            self._add(rrset, owner, ans)
            return None
        cname = data.get(CNAME)
        if cname is not None:
            self._add(cname, owner, ans)
            return cname.targets[0]
        ans.authority.append(self.soa_neg)  # NODATA, also at the end of a CNAME chain (RFC 2308 2.2)
        return None

    def _add(self, rrset: RRSet, owner: Labels, ans: Answer) -> None:
        rrs = rrset.rrs if rrset.rrs[0].name == owner else tuple(RR(owner, r.rtype, r.ttl, r.rdata) for r in rrset.rrs)
        ans.answer.extend(rrs)
        if rrs[0].rtype in (MX, SRV, NS):
            self._additional(rrset.targets, ans)

    def _additional(self, targets: Iterable[Labels], ans: Answer) -> None:
        """The addresses of MX, SRV and NS targets inside this zone (RFC 1035 3.3.9, RFC 2782, RFC 1034 4.3.2
        step 6), glue below a cut included."""
        for target in targets:
            data = self.nodes.get(target)
            if data is None:
                continue
            for rtype in (A, AAAA):
                rrset = data.get(rtype)
                if rrset is not None:
                    for rr in rrset.rrs:
                        if rr not in ans.additional:
                            ans.additional.append(rr)

    def _referral(self, cut: Labels, ans: Answer) -> None:
        """A delegation: the NS RRset of the cut in authority, glue in additional, AA clear (RFC 1034 4.3.2)."""
        ns = self.nodes[cut][NS]
        # AA stays set when the CNAMEs that led here are ours (RFC 1035 4.1.1: AA is about the answer section).
        ans.aa = bool(ans.answer)
        ans.authority.extend(ns.rrs)
        self._additional(ns.targets, ans)


# ---------------------------------------------------------------- loading


def load_zone(path: Path, text: str | None = None) -> Zone:
    """Parse a whole zone file (dnspython's reader). Raises ZoneError `PATH:LINE: reason` (or `PATH: reason`)."""
    origin: str | None = None
    try:
        if text is None:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        try:
            # origin=None: the file's $ORIGIN decides; a file without one is read with its file name.
            z = dns.zone.from_text(text, origin=None, relativize=False, filename=str(path))
        except (dns.zone.UnknownOrigin, AssertionError):
            # A relative name before any $ORIGIN, or no record at all (dnspython asserts an origin then).
            origin = origin_from_filename(path)
            z = dns.zone.from_text(text, origin=origin, relativize=False, filename=str(path))
    except OSError as exc:
        raise ZoneError(f"{path}: {exc.strerror or exc}") from exc
    except dns.exception.SyntaxError as exc:
        assert text is not None
        raise ZoneError(_located(path, text, origin, str(exc))) from exc
    except dns.zone.NoSOA as exc:
        raise ZoneError(f"{path}: no SOA record at the zone apex") from exc
    except dns.zone.NoNS as exc:
        raise ZoneError(f"{path}: no NS records at the zone apex") from exc
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise ZoneError(f"{path}: {exc}") from exc
    return build_zone(path, z)


def _parse_error(path: Path, text: str, origin: str | None) -> str | None:
    """The reader's syntax error for text, without its `PATH:LINE: ` prefix; None if it reads."""
    try:
        dns.zone.from_text(text, origin=origin, relativize=False, filename=str(path), check_origin=False)
    except dns.exception.SyntaxError as exc:
        msg = str(exc)
        return msg[len(f"{path}:") :].partition(": ")[2] if msg.startswith(f"{path}:") else msg
    except Exception:  # anything else (a missing $ORIGIN included) is not that syntax error
        return None
    return None


def _located(path: Path, text: str, origin: str | None, msg: str) -> str:
    """`PATH:LINE: reason` with the line of the record at fault. dnspython reports the line its tokenizer is on,
    one past the record when the error shows only once the record's end of line was read (a bad address, a
    missing field); so if the lines before the reported one fail alone with the same reason, the record is
    the line before."""
    prefix = f"{path}:"
    if not msg.startswith(prefix):
        return f"{path}: {msg}"
    line_text, _, reason = msg[len(prefix) :].partition(": ")
    if not line_text.isdigit():
        return msg
    line = int(line_text)
    if line > 1:
        head = "".join(text.splitlines(keepends=True)[: line - 1])
        if _parse_error(path, head, origin) == reason:
            line -= 1
    return f"{path}:{line}: {reason}"


def build_zone(path: Path, z: dns.zone.Zone) -> Zone:
    assert z.origin is not None
    origin = labels(z.origin)
    nodes: dict[Labels, dict[int, RRSet]] = {}
    names: set[Labels] = {origin}
    cuts: set[Labels] = set()
    for name, node in z.nodes.items():
        owner = labels(name if name.is_absolute() else name.derelativize(z.origin))
        data: dict[int, RRSet] = {}  # in the file's order (dnspython keeps it): ANY answers the first
        for rds in node.rdatasets:
            if rds.covers != dns.rdatatype.NONE:
                continue  # RRSIGs are not served: dnsd does not sign (no DNSSEC)
            rtype = int(rds.rdtype)
            rrs = tuple(RR(owner, rtype, rds.ttl, (rd.to_wire(),)) for rd in rds)
            targets = (_target(rd) for rd in rds)
            data[rtype] = RRSet(rrs, tuple(t for t in targets if t is not None))
        if not data:
            continue
        nodes[owner] = data
        for i in range(len(owner) - len(origin) + 1):
            names.add(owner[i:])
        if NS in data and owner != origin:
            cuts.add(owner)
    soa_rds = z.find_rdataset(z.origin, dns.rdatatype.SOA)
    soa = soa_rds[0]
    neg_ttl = min(soa_rds.ttl, int(soa.minimum))
    soa_neg = RR(origin, SOA, neg_ttl, (soa.to_wire(),))
    return Zone(path, origin, zone_tag(".".join(origin)), nodes, frozenset(names), frozenset(cuts), soa_neg)


def _target(rd: dns.rdata.Rdata) -> Labels | None:
    """The name an MX, SRV, NS or CNAME record points at."""
    for attr in ("exchange", "target"):
        value = getattr(rd, attr, None)
        if isinstance(value, dns.name.Name):
            return labels(value)
    return None

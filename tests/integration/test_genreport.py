"""ISC's DNS compliance checks (genreport, from DNS-Compliance-Testing) run against dnsd without the tool.

genreport.c describes each check as one row of its `opts[]` table (name, EDNS payload, flags, version and
options, TCP or not, header flags to set, opcode, query type) and grades every reply in `process()`: it adds a tag
for each thing it finds wrong (`noaa`, `nosoa`, `opt`, `mbz`, `badversion`, an rcode such as `nxdomain`...) and
`ok` when it found nothing. CHECKS below is that table, with the result genreport prints for dnsd written next to
each row; `build` makes the query the way genreport's `dotest()` does and `grade` is a port of `process()`, so a
row fails exactly when genreport would print something else.

The query is SOA at the zone apex (cluster.local) unless the row says otherwise. In genreport's normal mode the
expectation is NOERROR with AA and the zone's SOA in the answer (`noaa`, `nosoa`); unknown opcodes get NOTIMP with
nothing echoed; EDNS version 1 gets BADVERS with an OPT of version 0 and no SOA (`soa`).

Two rows are not in genreport's default EDNS group: `dnswkk` (a query signed with TSIG, key name `.`, all-zero
hmac-sha256 key, what `dig -y hmac-sha256:.:AAAA...=` sends) and `signed`, which genreport prints as the result of
`do` followed by `,yes` when RRSIGs came back (dnsd signs nothing). dnsd has no TSIG key, so `dnswkk` gets NOTAUTH
with an unsigned BADKEY TSIG (RFC 8945 5.2.1), which genreport reports as `notauth,badkey`, as for any server that
does not hold that key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dns.name
import pytest
from support import DnsdHandle, base_config, run_dnsd
from support.rawdns import (
    AD,
    CD,
    CLASS_ANY,
    IN,
    OPT,
    RA,
    RD,
    SOA,
    TC,
    TSIG,
    Z,
    tcp_exchange,
    udp_exchange,
    wire_name,
)
from support.rawdns import PROTOCOL_MANIFESTS as MANIFESTS

ZONE = "cluster.local"
AA_FLAG = 0x0400
RRSIG, DNSKEY = 46, 48
DO_FLAG = 0x8000
COOKIE = b"\x00\x0a\x00\x08\x01\x02\x03\x04\x05\x06\x07\x08"  # client cookie 0102030405060708
NSID = b"\x00\x03\x00\x00"
EXPIRE = b"\x00\x09\x00\x00"
ECS = b"\x00\x08\x00\x04\x00\x01\x00\x00"  # family 1, source 0, scope 0: 0.0.0.0/0
OPT100 = b"\x00\x64\x00\x00"  # option code 100, unassigned: must not be echoed
HMAC_SHA256 = wire_name("hmac-sha256.")


@dataclass(frozen=True)
class Check:
    """One row of genreport's opts[] (same fields, same defaults: no EDNS, no flags, opcode QUERY, type SOA)."""

    name: str
    expect: str  # what genreport prints for this check against dnsd
    rcode: int = 0  # the rcode dnsd answers (asserted too, so that a table row reads on its own)
    rdata: bytes = b""  # EDNS options
    udpsize: int = 0  # 0: no OPT record
    flags: int = 0  # EDNS flags (DO = 0x8000)
    version: int = 0
    tcp: bool = False
    cookie: bool = False  # the OPT carries a client cookie
    ignore: bool = False  # ignore TC (no retry over TCP) and check the size instead
    tc: bool = False
    rd: bool = False
    ra: bool = False
    cd: bool = False
    ad: bool = False
    aa: bool = False
    z: bool = False
    opcode: int = 0
    qtype: int = SOA
    tsig: bool = False  # dnswkk: signed with the well-known key


NOTIMP, NOTAUTH, BADVERS = 4, 9, 16

# genreport.c opts[], in its order; the dig command each row stands for is genreport's own.
CHECKS = [
    Check("dns", "ok"),  # dig +noedns +noad +norec SOA <zone>
    Check("aa", "ok", aa=True),  # dig +noedns +noad +norec +aaflag SOA <zone>
    Check("ad", "ok", ad=True),  # dig +noedns +ad +norec SOA <zone>
    Check("cd", "ok", cd=True),  # dig +noedns +noad +norec +cd SOA <zone>
    Check("ra", "ok", ra=True),  # dig +noedns +noad +norec +raflag SOA <zone>
    Check("rd", "ok", rd=True),  # dig +noedns +noad +rec SOA <zone>
    Check("tc", "ok", tc=True),  # dig +noedns +noad +norec +tcflag SOA <zone>
    Check("zflag", "ok", z=True),  # dig +noedns +noad +norec +zflag SOA <zone>
    Check("opcode", "ok", NOTIMP, opcode=15, qtype=0),  # dig +noedns +noad +norec +header-only +opcode=15
    Check(  # dig +noedns +header-only +opcode=15 +tcflag +rec +raflag +cd +ad +aaflag +zflag
        "opcodeflg", "ok", NOTIMP, tc=True, rd=True, ra=True, cd=True, ad=True, aa=True, z=True, opcode=15, qtype=0
    ),
    Check("type666", "ok", qtype=666),  # dig +noedns +noad +norec TYPE666 <zone>
    Check("tcp", "ok", tcp=True),  # dig +noedns +noad +norec +tcp SOA <zone>
    Check("edns", "ok", udpsize=4096),  # dig +edns=0 +nocookie +noad +norec SOA <zone>
    Check("edns1", "ok", BADVERS, udpsize=4096, version=1),  # dig +edns=1 +noednsneg +nocookie +noad +norec SOA
    # dig +edns=0 +nocookie +noad +norec +dnssec +ignore +bufsize=512 DNSKEY <zone>
    Check("edns@512", "ok", udpsize=512, flags=DO_FLAG, ignore=True, qtype=DNSKEY),
    Check("ednsopt", "ok", rdata=OPT100, udpsize=4096),  # dig +edns=0 +nocookie +noad +norec +ednsopt=100 SOA
    Check("edns1opt", "ok", BADVERS, rdata=OPT100, udpsize=4096, version=1),  # dig +edns=1 ... +ednsopt=100 SOA
    Check("do", "ok", udpsize=4096, flags=DO_FLAG),  # dig +edns=0 +nocookie +noad +norec +dnssec SOA <zone>
    Check("docd", "ok", udpsize=4096, flags=DO_FLAG, cd=True),  # dig +edns=0 ... +dnssec +cd SOA <zone>
    Check("edns1do", "ok", BADVERS, udpsize=4096, flags=DO_FLAG, version=1),  # dig +edns=1 ... +dnssec SOA
    Check("ednsflags", "ok", udpsize=4096, flags=0x0080),  # dig +edns=0 ... +ednsflags=0x0080 SOA <zone>
    # dig +edns=0 +noad +norec +nsid +subnet=0.0.0.0/0 +expire +cookie=0102030405060708 SOA <zone>
    Check("optlist", "ok", rdata=NSID + ECS + EXPIRE + COOKIE, udpsize=4096, cookie=True),
    Check("ednsnsid", "ok", rdata=NSID, udpsize=4096),  # dig +edns=0 +nocookie +noad +norec +nsid SOA <zone>
    Check("ednscookie", "ok", rdata=COOKIE, udpsize=4096, cookie=True),  # dig +edns=0 ... +cookie=0102... SOA
    Check("ednsexpire", "ok", rdata=EXPIRE, udpsize=4096),  # dig +edns=0 +nocookie +noad +norec +expire SOA
    Check("ednssubnet", "ok", rdata=ECS, udpsize=4096),  # dig +edns=0 ... +subnet=0.0.0.0/0 SOA <zone>
    Check("edns1nsid", "ok", BADVERS, rdata=NSID, udpsize=4096, version=1),  # dig +edns=1 ... +nsid SOA
    Check("edns1cookie", "ok", BADVERS, rdata=COOKIE, udpsize=4096, version=1, cookie=True),  # +cookie=0102...
    Check("edns1expire", "ok", BADVERS, rdata=EXPIRE, udpsize=4096, version=1),  # dig +edns=1 ... +expire
    Check("edns1subnet", "ok", BADVERS, rdata=ECS, udpsize=4096, version=1),  # dig +edns=1 ... +subnet=0.0.0.0/0
    # dig +edns=0 +nocookie +noad +norec +dnssec +bufsize=512 +tcp DNSKEY <zone>
    Check("ednstcp", "ok", udpsize=512, flags=DO_FLAG, tcp=True, qtype=DNSKEY),
    # dig +edns=0 +cookie=0102030405060708 +noad +norec +dnssec SOA <zone>
    Check("bind11", "ok", rdata=COOKIE, udpsize=4096, flags=DO_FLAG, cookie=True),
    # dig +edns=0 +cookie=0102030405060708 +ad +rec SOA <zone>
    Check("dig11", "ok", rdata=COOKIE, udpsize=4096, cookie=True, rd=True, ad=True),
    # dig +noedns +noad +norec -y hmac-sha256:.:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= SOA <zone>
    Check("dnswkk", "notauth,badkey", NOTAUTH, tsig=True),
]

# genreport's TYPE group: every type below at the zone apex, no EDNS (dig +noedns +noad +norec <TYPE> <zone>).
# process() wants rcode NOERROR (anything else is tagged, `nxdomain` included) and AA: the apex exists, so every
# type is NODATA or an answer (RFC 8020); a timeout is tagged too.
TYPES = {
    "A": 1, "NS": 2, "MD": 3, "MF": 4, "CNAME": 5, "SOA": 6, "MB": 7, "MG": 8, "MR": 9, "NULL": 10, "WKS": 11,
    "PTR": 12, "HINFO": 13, "MINFO": 14, "MX": 15, "TXT": 16, "RP": 17, "AFSDB": 18, "X25": 19, "ISDN": 20,
    "RT": 21, "NSAP": 22, "NSAP-PTR": 23, "SIG": 24, "KEY": 25, "PX": 26, "GPOS": 27, "AAAA": 28, "LOC": 29,
    "NXT": 30, "SRV": 33, "NAPTR": 35, "KX": 36, "CERT": 37, "A6": 38, "DNAME": 39, "APL": 42, "DS": 43,
    "SSHFP": 44, "IPSECKEY": 45, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "DHCID": 49, "NSEC3": 50,
    "NSEC3PARAM": 51, "TLSA": 52, "SMIMEA": 53, "HIP": 55, "CDS": 59, "CDNSKEY": 60, "OPENPGPKEY": 61, "SPF": 99,
    "NID": 104, "L32": 105, "L64": 106, "LP": 107, "EUI48": 108, "EUI64": 109, "URI": 256, "CAA": 257,
    "AVC": 258, "DOA": 259, "DLV": 32769, "TYPE1000": 1000,
}  # fmt: skip
TYPE_CHECKS = [Check(name, "ok", qtype=code) for name, code in TYPES.items()]


# ---------------------------------------------------------------- building a query as dotest() does


def build(check: Check, qid: int) -> bytes:
    """res_mkquery's header (RD cleared unless the check sets it), then the check's flags; an unknown opcode
    sends the header alone (QDCOUNT 0); the OPT record, then for dnswkk a TSIG with a real hmac-sha256 MAC."""
    flags = (check.opcode << 11) | (RD if check.rd else 0)
    for on, bit in ((check.tc, TC), (check.ra, RA), (check.z, Z), (check.ad, AD), (check.cd, CD)):
        flags |= bit if on else 0
    # genreport's dotest() never sets AA although its table has the column (dig's +aaflag does): set it here,
    # which is the check the row names.
    flags |= AA_FLAG if check.aa else 0
    if check.opcode:
        return struct.pack("!6H", qid, flags, 0, 0, 0, 0)
    ar = (1 if check.udpsize else 0) + (1 if check.tsig else 0)
    msg = struct.pack("!6H", qid, flags, 1, 0, 0, ar) + wire_name(ZONE) + struct.pack("!HH", check.qtype, IN)
    if check.udpsize:
        ttl = (check.version << 16) | check.flags
        msg += b"\x00" + struct.pack("!HHIH", OPT, check.udpsize, ttl, len(check.rdata)) + check.rdata
    if check.tsig:
        msg += _wkk_tsig(msg, qid)
    return msg


def _wkk_tsig(unsigned: bytes, qid: int) -> bytes:
    """The TSIG record of genreport's dnswkk (RFC 8945 4.3.3 variables): key `.`, all-zero 32-octet key."""
    now = int(time.time())
    signed_time = struct.pack("!HIH", 0, now, 300)  # time signed (48 bits), fudge 300
    variables = b"\x00" + struct.pack("!HI", CLASS_ANY, 0) + HMAC_SHA256 + signed_time + struct.pack("!HH", 0, 0)
    unsigned_count = unsigned[:10] + struct.pack("!H", struct.unpack("!H", unsigned[10:12])[0] - 1)
    mac = hmac.new(bytes(32), unsigned_count + unsigned[12:] + variables, hashlib.sha256).digest()
    rdata = HMAC_SHA256 + signed_time + struct.pack("!H", len(mac)) + mac + struct.pack("!HHH", qid, 0, 0)
    return b"\x00" + struct.pack("!HHIH", TSIG, CLASS_ANY, 0, len(rdata)) + rdata


# ---------------------------------------------------------------- grading a reply as process() does

RCODES = {
    0: "noerror", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused", 6: "yxdomain",
    7: "yxrrset", 8: "nxrrset", 9: "notauth", 10: "notzone", 16: "badvers", 23: "badcookie",
}  # fmt: skip
TSIG_ERRORS = {16: "badsig", 17: "badkey", 18: "badtime"}
OPCODES = {0: "query", 1: "iquery", 2: "status", 4: "notify", 5: "update"}


class Malformed(Exception):
    pass


@dataclass
class Seen:
    """What process() notes while walking the reply."""

    soa: bool = False
    rrsig: bool = False
    opt: bool = False
    edns_ttl: int = 0
    nsid: bool = False
    ecs: bool = False
    expire: bool = False
    cookie: bool = False
    good_cookie: bool = False
    bad_cookie: bool = False  # a server cookie whose client half is not ours, on a check that sent one
    echo: bool = False
    tsig: bool = False
    tsig_error: int = 0
    tsig_tags: tuple[str, ...] = ()


def _name(msg: bytes, off: int) -> tuple[str, int]:
    try:
        name, used = dns.name.from_wire(msg, off)
    except Exception as exc:
        raise Malformed(str(exc)) from exc
    return name.to_text(omit_final_dot=True).lower(), off + used


def _walk(check: Check, reply: bytes, tags: list[str]) -> Seen:
    seen = Seen()
    qd, an, ns, ar = struct.unpack_from("!4H", reply, 4)
    off = 12
    if check.opcode and qd:
        tags.append("non-empty-question-section")
    else:
        for _ in range(qd):
            name, off = _name(reply, off)
            qtype = struct.unpack_from("!H", reply, off)[0]
            off += 4
            if name != ZONE or qtype != check.qtype:
                tags.append("mismatch")
    for section, count in (("answer", an), ("authority", ns), ("additional", ar)):
        if check.opcode and count:
            tags.append(f"non-empty-{section}-section")
            return seen
        for i in range(count):
            name, off = _name(reply, off)
            if off + 10 > len(reply):
                raise Malformed("record header")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", reply, off)
            off += 10
            if off + rdlen > len(reply):
                raise Malformed("record data")
            rdata = reply[off : off + rdlen]
            if section == "answer":
                seen.soa |= rtype == SOA and name == ZONE
                seen.rrsig |= rtype == RRSIG
            elif section == "additional" and rtype == OPT:
                if seen.opt:
                    raise Malformed("two OPT records")
                _read_opt(check, seen, rclass, ttl, rdata)
            elif section == "additional" and rtype == TSIG:
                if seen.tsig:
                    raise Malformed("two TSIG records")
                _read_tsig(seen, reply, off, rdlen, name, rclass, ttl, last=i + 1 == count)
            off += rdlen
    if off != len(reply):
        raise Malformed("octets after the last record")
    return seen


def _read_opt(check: Check, seen: Seen, rclass: int, ttl: int, rdata: bytes) -> None:
    seen.opt, seen.edns_ttl = True, ttl
    i = 0
    while len(rdata) - i >= 4:
        code, length = struct.unpack_from("!HH", rdata, i)
        i += 4
        if len(rdata) - i < length:
            raise Malformed("EDNS option length")
        value = rdata[i : i + length]
        seen.nsid |= code == 3 and length > 0
        seen.ecs |= code == 8
        seen.expire |= code == 9 and length == 4
        if code == 10 and 16 <= length <= 40:
            seen.cookie = True
            if value[:8] == COOKIE[4:]:
                seen.good_cookie = True
            elif check.cookie:
                seen.bad_cookie = True
        seen.echo |= code == 100
        i += length
    if i != len(rdata):
        raise Malformed("EDNS options")


def _read_tsig(seen: Seen, reply: bytes, off: int, rdlen: int, owner: str, rclass: int, ttl: int, last: bool) -> None:
    tags = []
    if not last:
        tags.append("tsig-not-last")
    if rclass != CLASS_ANY:
        tags.append("tsig-bad-class")
    if ttl != 0:
        tags.append("tsig-bad-ttl")
    if owner not in ("", "."):
        tags.append("tsig-wrong-key")
    alg, p = _name(reply[: off + rdlen], off)
    if alg != "hmac-sha256":
        tags.append("tsig-wrong-alg")
    end = off + rdlen
    if end - p < 10:
        raise Malformed("TSIG RDATA")
    high, low, fudge, mac_len = struct.unpack_from("!HIHH", reply, p)
    p += 10
    if fudge == 0:
        tags.append("tsig-bad-fudge")
    signed, now = (high << 32) | low, int(time.time())
    if not now - fudge <= signed <= now + fudge:
        tags.append("tsig-bad-time")
    if end - p < mac_len + 6:
        raise Malformed("TSIG MAC")
    p += mac_len
    _orig_id, error, other_len = struct.unpack_from("!HHH", reply, p)
    p += 6
    if error == 18 and other_len != 6:
        tags.append("tsig-bad-other-len")
    if p + other_len != end:
        raise Malformed("TSIG other data")
    # genreport checks the MAC when the error is NOERROR or BADTIME; dnsd holds no key and never signs, so any
    # such reply would carry a MAC no key made.
    if error in (0, 18):
        tags.append("tsig-bad-sig")
    seen.tsig, seen.tsig_error, seen.tsig_tags = True, error, tuple(tags)


def grade(check: Check, reply: bytes | None) -> tuple[str, int]:
    """The result genreport prints for one check: its tags, comma-separated (`ok` when nothing was wrong); and
    the reply's rcode, extended by the OPT record's upper bits (RFC 6891 6.1.3), -1 without a reply."""
    if reply is None:
        return "timeout", -1
    tags: list[str] = []
    try:
        seen = _walk(check, reply, tags)
    except (Malformed, struct.error):
        return "malformed", -1
    b2, b3 = reply[2], reply[3]
    opcode, aa, rd = (b2 >> 3) & 0xF, b2 & 0x04, b2 & 0x01
    ra, z, ad, cd = b3 & 0x80, b3 & 0x40, b3 & 0x20, b3 & 0x10
    rcode = (b3 & 0x0F) + ((seen.edns_ttl & 0xFF000000) >> 20)
    ok = not tags
    add_rcode = True

    def tag(t: str) -> None:
        nonlocal ok
        tags.append(t)
        ok = False

    if opcode != check.opcode:
        tag(OPCODES.get(opcode, f"opcode{opcode}"))
    if check.version == 0:
        bad = rcode != 0 and (not check.cookie or rcode != 23 or not seen.cookie)
        if check.opcode == 0 and bad:
            tag(RCODES.get(rcode, f"rcode{rcode}"))
            add_rcode = False
        if check.opcode != 0 and rcode != NOTIMP:
            tag(RCODES.get(rcode, f"rcode{rcode}"))
            add_rcode = False
    if seen.tsig and seen.tsig_error:
        if add_rcode and rcode != NOTAUTH:
            tag(RCODES.get(rcode, f"rcode{rcode}"))
        tag(TSIG_ERRORS.get(seen.tsig_error, f"rcode{seen.tsig_error}"))
    if check.tsig and not seen.tsig:
        tag("notsig")
    for t in seen.tsig_tags:
        tag(t)
    if check.version and rcode != BADVERS:
        tag(RCODES.get(rcode, f"rcode{rcode}"))
    version = (seen.edns_ttl >> 16) & 0xFF
    if seen.opt and version:
        tag("version-not-zero")
    if seen.opt and ((version < check.version) != (rcode == BADVERS)):
        tag("badversion")
    if not seen.opt and check.udpsize:
        tag("noopt")
    if seen.opt and not check.udpsize:
        tag("opt")
    if check.qtype == SOA and check.version == 0 and not check.ignore and not seen.soa and rcode == 0:
        tag("nosoa")
    if check.qtype == SOA and seen.soa and (check.version or rcode != 0):
        tag("soa")
    if seen.echo:
        tag("echoed")
    if seen.bad_cookie:
        ok = False
    do_sent, do_back = check.flags & DO_FLAG, seen.edns_ttl & DO_FLAG
    if seen.opt and do_sent and not do_back and seen.rrsig:
        tag("nodo")
    if seen.opt and do_sent and check.cd and do_back and not cd and seen.rrsig:
        tag("nocd")
    if not aa and check.version == 0 and rcode == 0 and check.opcode == 0:
        tag("noaa")
    if aa and check.opcode:
        tag("aa")
    if ra and check.opcode:
        tag("ra")
    if rd and (check.opcode or not check.rd):
        tag("rd")
    if not rd and check.rd and check.opcode == 0:
        tag("nord")
    if ad and (check.opcode or (not check.ad and not do_sent)):
        tag("ad")
    if cd and (check.opcode or not check.cd):
        tag("cd")
    if z:
        tag("z")
    if seen.edns_ttl & 0x7FFF:
        tag("mbz")
    if check.ignore and len(reply) > (check.udpsize or 512):
        tag("toobig")
    if ok:
        tags.append("ok")
    # informational tags, printed after the verdict
    if seen.nsid:
        tags.append("nsid")
    if seen.expire:
        tags.append("expire")
    if seen.cookie and check.cookie:
        tags.append(("cookie" if seen.good_cookie else "cookie-mismatch") + ("+badcookie" if rcode == 23 else ""))
    elif seen.cookie:
        tags.append("cookie")
    if seen.ecs:
        tags.append("subnet")
    return ",".join(tags), rcode


# ---------------------------------------------------------------- running the checks


@pytest.fixture(scope="module")
def server() -> Iterator[DnsdHandle]:
    handle = run_dnsd(base_config(MANIFESTS))
    yield handle
    handle.stop()


def run_check(server: DnsdHandle, check: Check) -> tuple[str, int, bytes | None]:
    """Send the check's query as genreport does: over TCP for TCP checks, else UDP, and over TCP again when a
    UDP reply is truncated (unless the check ignores TC). Return genreport's verdict, the rcode and the reply."""
    qid = secrets.randbelow(0x10000)
    packet = build(check, qid)
    reply = (tcp_exchange if check.tcp else udp_exchange)(server.addr, packet)
    if reply is not None and not check.tcp and reply[2] & 0x02 and not check.ignore:
        reply = tcp_exchange(server.addr, packet)
    if reply is not None:
        assert struct.unpack("!H", reply[:2])[0] == qid, f"{check.name}: ID not echoed"
    verdict, rcode = grade(check, reply)
    return verdict, rcode, reply


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_genreport_check(server: DnsdHandle, check: Check) -> None:
    verdict, rcode, _ = run_check(server, check)
    assert verdict == check.expect, f"genreport would print {check.name}={verdict}, want {check.expect}"
    assert rcode == check.rcode, f"{check.name}: rcode {RCODES.get(rcode, rcode)}, want {RCODES[check.rcode]}"


def test_genreport_signed(server: DnsdHandle) -> None:
    """genreport prints `signed=` with the result of `do`, plus `,yes` when RRSIGs came back: dnsd signs nothing."""
    do = next(c for c in CHECKS if c.name == "do")
    verdict, _, reply = run_check(server, do)
    assert reply is not None
    assert verdict + (",yes" if RRSIG in _answer_types(reply) else "") == "ok"


def _answer_types(reply: bytes) -> list[int]:
    an = struct.unpack_from("!H", reply, 6)[0]
    _, off = _name(reply, 12)
    off += 4
    out = []
    for _ in range(an):
        _, off = _name(reply, off)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", reply, off)
        out.append(rtype)
        off += 10 + rdlen
    return out


@pytest.mark.parametrize("check", TYPE_CHECKS, ids=lambda c: c.name)
def test_genreport_type(server: DnsdHandle, check: Check) -> None:
    """The TYPE group: NOERROR with AA for every type at the apex (NODATA or an answer), never a timeout."""
    verdict, rcode, _ = run_check(server, check)
    assert verdict == check.expect, f"genreport would print {check.name}={verdict}, want {check.expect}"
    assert rcode == 0

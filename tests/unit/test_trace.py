"""EDNS option 65001 (`dnsd query --trace`): the walk's encoding and cap, and finding the option in a query."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.edns
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsd.proto.trace import (
    MAX_TRACE_BYTES,
    TRACE_OPTION,
    decode_trace,
    encode_trace,
    trace_option,
    wants_trace,
)
from dnsd.proto.wire import Verdict, check_header, parse_query


def option(code: int, data: bytes = b"") -> dns.edns.GenericOption:
    return dns.edns.GenericOption(dns.edns.OptionType.make(code), data)


def wire(
    name: str | dns.name.Name = "web.default.svc.cluster.local.",
    options: list[dns.edns.Option] | None = None,
    *,
    edns: bool = True,
    tsig: bool = False,
    rdtype: str = "A",
) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None, options=options or [])
    if tsig:
        q.use_tsig(dns.tsigkeyring.from_text({"k.": "MTIzNDU2Nzg5MDEyMzQ1Ng=="}), keyname="k.")
    return q.to_wire()


def ixfr_wire(options: list[dns.edns.Option]) -> bytes:
    """An IXFR query: the client's SOA in the authority section before the OPT (RFC 1995 3)."""
    q = dns.message.make_query("cluster.local.", "IXFR", use_edns=0, options=options)
    soa = dns.rrset.from_text("cluster.local.", 0, "IN", "SOA", "ns.dns.cluster.local. h.cluster.local. 1 2 3 4 5")
    q.authority.append(soa)
    return q.to_wire()


@dataclass(frozen=True)
class WantsCase:
    name: str
    data: bytes
    want: bool


COOKIE = option(10, bytes(range(8)))
WANTS = [
    WantsCase("no EDNS", wire(edns=False), False),
    WantsCase("EDNS, no options", wire(), False),
    WantsCase("option 65001 alone", wire(options=[option(TRACE_OPTION)]), True),
    WantsCase("65001 after a COOKIE", wire(options=[COOKIE, option(TRACE_OPTION)]), True),
    WantsCase("65001 before a COOKIE", wire(options=[option(TRACE_OPTION), COOKIE]), True),
    WantsCase("65001 with data (still asked)", wire(options=[option(TRACE_OPTION, b"x")]), True),
    WantsCase("65002, another local option", wire(options=[option(65002)]), False),
    # the two octets 0xFD 0xE9 appear, but in option data and in the name: not an option code
    WantsCase("FDE9 inside another option's data", wire(options=[option(65002, b"\xfd\xe9\x00\x00")]), False),
    WantsCase("FDE9 in the question name", wire(name=dns.name.Name([b"a\xfd\xe9", b"cluster", b"local", b""])), False),
    WantsCase("65001 and TSIG after the OPT", wire(options=[option(TRACE_OPTION)], tsig=True), True),
    WantsCase("TSIG, no 65001", wire(options=[COOKIE], tsig=True), False),
    WantsCase("IXFR: authority SOA, then OPT with 65001", ixfr_wire([option(TRACE_OPTION)]), True),
    WantsCase("IXFR: authority SOA, OPT without", ixfr_wire([COOKIE]), False),
]


@pytest.mark.parametrize("case", WANTS, ids=[c.name for c in WANTS])
def test_wants_trace(case: WantsCase) -> None:
    # every case is a query the server accepts: wants_trace's contract is a parsed query
    assert check_header(case.data) is Verdict.OK
    parse_query(case.data)
    assert wants_trace(case.data) is case.want


def test_wants_trace_garbage_is_false() -> None:
    """Never raises: truncations of a traced query at every length, and a bad label, are False or True, never an
    exception; the whole message is True."""
    data = wire(options=[option(TRACE_OPTION)])
    for n in range(len(data)):
        assert wants_trace(data[:n]) in (False, True)
    assert not wants_trace(data[:-1])  # the option header cut: its 4 octets no longer fit in the RDATA
    bad_label = data[:12] + b"\x50" + data[13:]  # 0x50: neither a label length nor a pointer
    assert wants_trace(bad_label) is False


def test_wants_trace_opt_rdata_runs_past_end() -> None:
    """An OPT whose RDLENGTH runs past the message is not searched (the option would be read from nowhere)."""
    data = bytearray(wire(options=[option(TRACE_OPTION)]))
    opt_rdlen_at = len(data) - 4 - 2  # the option (4 octets) follows RDLENGTH (2 octets)
    struct.pack_into("!H", data, opt_rdlen_at, 40)
    assert wants_trace(bytes(data)) is False


@dataclass(frozen=True)
class EncodeCase:
    name: str
    lines: list[str]
    want: list[str]


ENCODE = [
    EncodeCase("empty walk", [], []),
    EncodeCase("one step", ["cluster: NOERROR 1 answer"], ["cluster: NOERROR 1 answer"]),
    EncodeCase(
        "steps in order",
        ["cache: miss", "cluster: not ours", "forward 127.0.0.1:53: NOERROR"],
        ["cache: miss", "cluster: not ours", "forward 127.0.0.1:53: NOERROR"],
    ),
    EncodeCase("non-ASCII kept", ["zone bücher.test: NXDOMAIN"], ["zone bücher.test: NXDOMAIN"]),
    # a label holding a newline (client octets decoded as latin-1) must not split one step in two
    EncodeCase(
        "newline escaped", ["cluster: a\nb.cluster.local. NXDOMAIN"], ["cluster: a\\010b.cluster.local. NXDOMAIN"]
    ),
    EncodeCase("DEL escaped", ["x\x7fy"], ["x\\127y"]),
    EncodeCase("lone surrogate replaced", ["x\udcffy"], ["x?y"]),
]


@pytest.mark.parametrize("case", ENCODE, ids=[c.name for c in ENCODE])
def test_encode_decode(case: EncodeCase) -> None:
    data = encode_trace(case.lines)
    data.decode("utf-8")  # always valid UTF-8
    assert decode_trace(data) == case.want


def test_cap_keeps_whole_lines_and_says_how_many_were_cut() -> None:
    lines = [f"step {i:04d}: " + "x" * 90 for i in range(500)]  # about 50 KB
    data = encode_trace(lines)
    assert len(data) <= MAX_TRACE_BYTES
    got = decode_trace(data)
    kept = got[:-1]
    assert kept == lines[: len(kept)], "the walk's start is kept whole, in order"
    assert len(kept) > 100
    assert got[-1] == f"... {500 - len(kept)} more steps cut (the walk is capped at {MAX_TRACE_BYTES} octets)"


STEP = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=300)


@given(st.lists(STEP, max_size=80), st.integers(min_value=80, max_value=4000))
def test_cap_holds_for_any_walk(lines: list[str], limit: int) -> None:
    """Any printable lines, any limit: the data fits and decodes to the whole walk, or to its start and one cut
    mark that counts the rest."""
    data = encode_trace(lines, limit)
    assert len(data) <= limit
    got = decode_trace(data)
    if got == lines:
        assert len("\n".join(lines).encode()) <= limit
        return
    kept = got[:-1]
    assert kept == lines[: len(kept)]
    assert got[-1] == f"... {len(lines) - len(kept)} more steps cut (the walk is capped at {limit} octets)"


def test_traced_reply_stays_under_16k() -> None:
    """The capped option in a reply with a few records: under 16 KB on the wire (the contract with render)."""
    reply = dns.message.make_response(dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=0))
    reply.answer.append(
        dns.rrset.from_text("web.default.svc.cluster.local.", 5, "IN", "A", *[f"10.0.0.{i}" for i in range(1, 60)])
    )
    data = encode_trace(["y" * 200] * 1000)
    reply.use_edns(0, options=[option(TRACE_OPTION, data)])
    assert len(reply.to_wire(max_size=65535)) < 16 * 1024


def test_trace_option_framing() -> None:
    """trace_option is code, length, data (RFC 6891 6.1.2): dnspython reads it back from a reply's OPT."""
    lines = ["cache: miss", "cluster: NOERROR"]
    raw = trace_option(lines)
    assert raw[:2] == struct.pack("!H", TRACE_OPTION)
    assert struct.unpack("!H", raw[2:4])[0] == len(raw) - 4
    reply = dns.message.make_response(dns.message.make_query("x.", "A", use_edns=0))
    reply.use_edns(0, options=[option(TRACE_OPTION, raw[4:])])
    back = dns.message.from_wire(reply.to_wire())
    got = [o for o in back.options if o.otype == TRACE_OPTION]
    assert len(got) == 1 and decode_trace(got[0].to_wire() or b"") == lines

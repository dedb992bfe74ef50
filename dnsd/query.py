"""`dnsd query NAME [TYPE] [--server ADDR] [--tcp] [--trace]`: ask a running dnsd and print the reply as dig does.

The client side of --trace: the query carries EDNS option 65001 with empty data, and the walk comes back as the
data of option 65001 in the reply's OPT record (dnsd.proto.trace). Exit 0 when a reply came back, whatever its
rcode; 1 when none did (timeout, refused connection, malformed reply); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnsd.proto.trace import TRACE_OPTION, decode_trace

DEFAULT_SERVER = "127.0.0.1:1053"  # the default listen address (dnsd.config Config.listen)
DEFAULT_PORT = 1053
DEFAULT_TIMEOUT = 2.0
PAYLOAD = 1232  # the EDNS UDP size dnsd advertises (DNS Flag Day 2020); larger replies come over TCP

USAGE_EXIT, NO_ANSWER_EXIT = 2, 1


class UsageError(Exception):
    """A bad argument: printed with the usage line, exit 2."""


@dataclass(frozen=True, slots=True)
class Server:
    host: str  # an IP address
    port: int

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{shown}:{self.port}"


def parse_server(text: str) -> Server:
    """host, host:port, [v6]:port or a bare IPv6 address; localhost is 127.0.0.1 (dnsd's default listen
    address), any other host name is looked up once with getaddrinfo."""
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            raise UsageError(f"--server {text!r}: expected [IPv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port = DEFAULT_PORT
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--server {text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    if not host:
        raise UsageError(f"--server {text!r}: no host")
    if host == "localhost":
        host = "127.0.0.1"  # as the config reads `listen: localhost:...` (dnsd.config.parse_hostport): no lookup
    try:
        return Server(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise UsageError(f"--server {text!r}: cannot resolve {host!r}: {exc}") from None
    return Server(str(infos[0][4][0]), port)


def parse_type(text: str) -> dns.rdatatype.RdataType:
    try:
        rdtype = dns.rdatatype.from_text(text)
    except dns.rdatatype.UnknownRdatatype:
        raise UsageError(f"unknown record type {text!r} (A, AAAA, SRV, PTR, TXT, NS, SOA, ANY, TYPE65...)") from None
    if dns.rdatatype.is_metatype(rdtype) and rdtype not in (dns.rdatatype.ANY,):
        # AXFR/IXFR are multi-message transfers, OPT and TSIG are not questions (RFC 6891 6.1.1, RFC 8945)
        raise UsageError(f"{text}: not a type a single query can ask for")
    return rdtype


def parse_name(text: str) -> dns.name.Name:
    """The name as dig takes it: always absolute (no search list)."""
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise UsageError(f"bad name {text!r}: {exc}") from None


def make_query(name: dns.name.Name, rdtype: dns.rdatatype.RdataType, trace: bool) -> dns.message.QueryMessage:
    options: list[dns.edns.Option] = (
        [dns.edns.GenericOption(dns.edns.OptionType.make(TRACE_OPTION), b"")] if trace else []
    )
    return dns.message.make_query(name, rdtype, use_edns=0, payload=PAYLOAD, options=options)


def ask(q: dns.message.Message, server: Server, tcp: bool, timeout: float) -> tuple[dns.message.Message, str]:
    """Send q; return the reply and the transport that brought it. UDP first unless tcp; a truncated UDP reply
    is asked again over TCP (RFC 7766 5, as dig does), in the time left of the one timeout."""
    deadline = time.monotonic() + timeout
    if not tcp:
        reply = dns.query.udp(q, server.host, timeout=timeout, port=server.port)
        if not reply.flags & dns.flags.TC:
            return reply, "UDP"
    left = max(0.05, deadline - time.monotonic())
    return dns.query.tcp(q, server.host, timeout=left, port=server.port), "TCP"


# ---------------------------------------------------------------- output

_FLAGS = (("qr", dns.flags.QR), ("aa", dns.flags.AA), ("tc", dns.flags.TC), ("rd", dns.flags.RD),
          ("ra", dns.flags.RA), ("ad", dns.flags.AD), ("cd", dns.flags.CD))  # fmt: skip


def _flags_text(msg: dns.message.Message) -> str:
    return " ".join(name for name, flag in _FLAGS if msg.flags & flag)


def _section(title: str, rrsets: list[dns.rrset.RRset]) -> list[str]:
    if not rrsets:
        return []
    lines = ["", f";; {title} SECTION:"]
    for rrset in rrsets:
        lines += rrset.to_text().splitlines()
    return lines


def trace_lines(reply: dns.message.Message) -> list[str] | None:
    """The walk from the reply's option 65001, or None when the reply carries none."""
    for opt in reply.options:
        if opt.otype == TRACE_OPTION:
            return decode_trace(opt.to_wire() or b"")
    return None


def render(reply: dns.message.Message, server: Server, transport: str, took: float, trace: bool) -> str:
    """A reply as dig prints it: header, EDNS pseudo-section, the sections as zone-file lines, then (--trace)
    the walk, then the server and the time."""
    question = reply.question[0] if reply.question else None
    counts = (len(reply.question), sum(len(r) for r in reply.answer), sum(len(r) for r in reply.authority),
              sum(len(r) for r in reply.additional) + (1 if reply.edns >= 0 else 0))  # fmt: skip
    lines = [
        f";; ->>HEADER<<- opcode: {dns.opcode.to_text(reply.opcode())}, "
        f"status: {dns.rcode.to_text(reply.rcode())}, id: {reply.id}",
        f";; flags: {_flags_text(reply)}; QUERY: {counts[0]}, ANSWER: {counts[1]}, AUTHORITY: {counts[2]}, "
        f"ADDITIONAL: {counts[3]}",
    ]
    if reply.edns >= 0:
        ednsflags = " do" if reply.ednsflags & dns.flags.DO else ""
        lines += [
            "",
            ";; OPT PSEUDOSECTION:",
            f"; EDNS: version: {reply.edns}, flags:{ednsflags}; udp: {reply.payload}",
        ]
        for opt in reply.options:
            if opt.otype != TRACE_OPTION:
                lines.append(f"; {dns.edns.OptionType.to_text(opt.otype)}: {opt.to_text()}")
    if question is not None:
        lines += ["", ";; QUESTION SECTION:", f";{question.name} {dns.rdataclass.to_text(question.rdclass)} "
                  f"{dns.rdatatype.to_text(question.rdtype)}"]  # fmt: skip
    lines += _section("ANSWER", reply.answer)
    lines += _section("AUTHORITY", reply.authority)
    lines += _section("ADDITIONAL", reply.additional)
    if trace:
        walk = trace_lines(reply)
        lines.append("")
        if walk is None:
            lines.append(f";; TRACE: none in the reply (no option {TRACE_OPTION}: a dnsd without --trace, or not dnsd)")
        else:
            lines.append(f";; TRACE ({len(walk)} steps):")
            lines += [f";;   {step}" for step in walk]
    lines += ["", f";; Query time: {took * 1000:.1f} msec", f";; SERVER: {server.host}#{server.port}({transport})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsd query",
        description="Ask a running dnsd one question and print the reply as dig does.",
        epilog="Exit status: 0 when a reply came back (whatever its rcode), 1 when none did, 2 on a usage error.",
    )
    p.add_argument("name", help="the name to ask for (always absolute: no search list)")
    p.add_argument("type", nargs="?", default="A", help="record type (default A)")
    p.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        metavar="ADDR",
        help=f"host, host:port or [IPv6]:port (default {DEFAULT_SERVER}; port {DEFAULT_PORT} if none)",
    )
    p.add_argument("--tcp", action="store_true", help="ask over TCP (default UDP, TCP when the reply is truncated)")
    p.add_argument("--trace", action="store_true", help=f"ask dnsd for its walk (EDNS option {TRACE_OPTION})")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the reply (default {DEFAULT_TIMEOUT})",
    )
    return p


def main(argv: list[str]) -> int:
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # -h (0) or argparse's own usage error (2): returned, so main() stays callable
        return int(exc.code or 0)
    try:
        if not 0 < args.timeout <= 60:
            raise UsageError("--timeout must be above 0 and at most 60 seconds")
        name, rdtype = parse_name(args.name), parse_type(args.type)
        server = parse_server(args.server)
    except UsageError as exc:
        print(p.format_usage().rstrip(), file=sys.stderr)
        print(f"dnsd query: error: {exc}", file=sys.stderr)
        return USAGE_EXIT
    q = make_query(name, rdtype, args.trace)
    started = time.perf_counter()
    try:
        reply, transport = ask(q, server, args.tcp, args.timeout)
    except dns.exception.Timeout:
        print(f"dnsd query: no reply from {server} within {args.timeout:g} s (is dnsd running there?)", file=sys.stderr)
        return NO_ANSWER_EXIT
    except ConnectionRefusedError:
        print(f"dnsd query: {server} refused the TCP connection (is dnsd running there?)", file=sys.stderr)
        return NO_ANSWER_EXIT
    except OSError as exc:
        print(f"dnsd query: cannot reach {server}: {exc.strerror or exc}", file=sys.stderr)
        return NO_ANSWER_EXIT
    except (EOFError, dns.exception.DNSException) as exc:
        # a connection closed before the reply, or a reply that does not parse or does not match the query
        print(f"dnsd query: no usable reply from {server}: {exc or type(exc).__name__}", file=sys.stderr)
        return NO_ANSWER_EXIT
    took = time.perf_counter() - started
    print(render(reply, server, transport, took, args.trace))
    return 0

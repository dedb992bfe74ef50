"""The server side of `dnsd query --trace` (dnsd.engine, dnsd.proto.trace): the walk of one query in EDNS option
65001 of the reply, only for clients in allow_recursion, cut with TC when it would not fit a UDP reply."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest
from support import FIXTURE_CLUSTER, DnsdHandle, base_config, make_query
from support.scripted import Scripted, ScriptedUpstream

from dnsd.proto.trace import TRACE_OPTION, decode_trace


@pytest.fixture()
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    up.script[("a.example.", "A")] = Scripted(answer="a.example. 60 IN A 192.0.2.1")
    up.script[("alias.example.", "A")] = Scripted(
        answer="alias.example. 60 IN CNAME kubernetes.default.svc.cluster.local."
    )
    yield up
    up.stop()


@pytest.fixture()
def server(dnsd_factory: Callable[..., DnsdHandle], upstream: ScriptedUpstream) -> DnsdHandle:
    cfg = base_config(FIXTURE_CLUSTER)
    cfg.update({"recursion": "forward", "forward": {"upstreams": [upstream.addr]}, "allow_recursion": ["127.0.0.1/32"]})
    return dnsd_factory(config=cfg)


def traced(
    h: DnsdHandle, name: str, *, tcp: bool = True, source: str = "127.0.0.1"
) -> tuple[dns.message.Message, list[str] | None]:
    q = make_query(name, "A")
    q.use_edns(0, payload=1232, options=[dns.edns.GenericOption(TRACE_OPTION, b"")])
    if tcp:
        msg = dns.query.tcp(q, h.host, port=h.port, timeout=3, source=source)
    else:
        msg = dns.query.udp(q, h.host, port=h.port, timeout=3, source=source)
    for opt in msg.options:
        if opt.otype == TRACE_OPTION:
            return msg, decode_trace(opt.to_wire())
    return msg, None


@dataclass(frozen=True)
class TraceCase:
    id: str
    name: str
    steps: tuple[str, ...]  # the walk's lines, in order, by their start (each followed by the next)


CASES = [
    TraceCase(
        "cluster",
        "kubernetes.default.svc.cluster.local.",
        ("query:", "cluster: NOERROR", "reply: NOERROR from cluster"),
    ),
    TraceCase(
        "forwarded-then-cached",
        "a.example.",
        (
            "query:",
            "a.example.: not in the zones",
            "cache: miss",
            "forward: 127.0.0.1:",
            "cache: kept for 60 s",
            "forward: NOERROR",
            "reply: NOERROR from forward",
        ),
    ),
    TraceCase(
        "cname-chased",
        "alias.example.",
        (
            "query:",
            "cache: miss",
            "forward:",
            "chain: chasing the CNAME target kubernetes.default.svc.cluster.local.",
            "cluster: NOERROR",
            "reply: NOERROR from forward+cluster",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_walk(server: DnsdHandle, case: TraceCase) -> None:
    _msg, lines = traced(server, case.name)
    assert lines is not None, "a traced query from an allowed client gets the walk"
    at = 0
    for step in case.steps:
        found = next((i for i in range(at, len(lines)) if lines[i].startswith(step)), None)
        assert found is not None, f"{step!r} missing after line {at} in {lines}"
        at = found + 1


def test_second_query_is_a_cache_hit(server: DnsdHandle) -> None:
    traced(server, "a.example.")
    _msg, lines = traced(server, "a.example.")
    assert lines is not None and any(line.startswith("cache: hit") for line in lines), lines
    assert lines[-1].startswith("reply: NOERROR from cache")


def test_no_walk_for_a_client_outside_allow_recursion(server: DnsdHandle) -> None:
    msg, lines = traced(server, "kubernetes.default.svc.cluster.local.", source="127.0.0.2")
    assert msg.answer and lines is None


def test_walk_too_big_for_udp_is_cut_with_tc(server: DnsdHandle) -> None:
    """A 512-octet UDP client asking for a walk that does not fit: header, question, OPT and TC, no walk."""
    long_name = ("x" * 60 + ".") * 3 + "example."  # named twice in the walk: over 512 octets with the rest
    q = make_query(long_name, "A")
    q.use_edns(0, payload=512, options=[dns.edns.GenericOption(TRACE_OPTION, b"")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q.to_wire(), (server.host, server.port))
        wire = s.recv(65535)
    msg = dns.message.from_wire(wire)
    assert len(wire) <= 512
    assert msg.flags & dns.flags.TC and not msg.answer
    assert not [o for o in msg.options if o.otype == TRACE_OPTION]

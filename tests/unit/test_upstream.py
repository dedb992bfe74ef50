"""The upstream client's pieces and the forward link's conversions, without a network: server parsing, the
request we send, upstream replies as Answers (OPT dropped, raw rdata, spelling kept), policy order."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rrset
import pytest

from dnsd.forward.link import Group, Upstream
from dnsd.proto.answer import NXDOMAIN, OPT, SOA, A
from dnsd.upstream.answer import to_answer
from dnsd.upstream.client import Server, make_request, parse_server


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("192.0.2.1", Server("192.0.2.1", 53)),
        ("192.0.2.1:5353", Server("192.0.2.1", 5353)),
        ("[2001:db8::1]:53", Server("2001:db8::1", 53)),
        ("[2001:DB8::1]:54", Server("2001:db8::1", 54)),
        ("2001:db8::1", Server("2001:db8::1", 53)),
    ],
)
def test_parse_server(text: str, server: Server) -> None:
    assert parse_server(text) == server


def test_requests_get_fresh_random_ids_and_edns() -> None:
    reqs = [make_request(dns.name.from_text("Www.Example.ORG."), A, do=True) for _ in range(64)]
    assert len({r.id for r in reqs}) > 60, "IDs from secrets, not a counter"
    assert all(r.flags & dns.flags.RD for r in reqs)
    assert all(r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO for r in reqs)
    assert reqs[0].question[0].name.to_text() == "Www.Example.ORG.", "the client's spelling"


def _reply(text: str) -> dns.message.Message:
    q = dns.message.make_query("WWW.example.org.", "A", use_edns=0)
    r = dns.message.make_response(q)
    for section, lines in zip((r.answer, r.authority, r.additional), text.split("|"), strict=True):
        for line in filter(None, (x.strip() for x in lines.splitlines())):
            name, ttl, cls, typ, rdata = line.split(None, 4)
            section.append(dns.rrset.from_text(name, int(ttl), cls, typ, rdata))
    return dns.message.from_wire(r.to_wire())


def test_to_answer_keeps_records_as_raw_rdata() -> None:
    reply = _reply(
        "WWW.example.org. 30 IN CNAME Web.Example.NET.\nWeb.Example.NET. 20 IN A 192.0.2.7|"
        "example.org. 60 IN NS ns.example.org.|ns.example.org. 60 IN A 192.0.2.53"
    )
    ans = to_answer(reply)
    assert (ans.rcode, ans.aa, ans.ra, ans.cacheable, ans.zone) == (0, False, True, False, None)
    assert [(rr.name, rr.rtype, rr.ttl) for rr in ans.answer] == [
        (("WWW", "example", "org"), 5, 30),
        (("Web", "Example", "NET"), A, 20),
    ]
    # rdata as the wire form, names uncompressed (RFC 3597 4) and spelled as the upstream wrote them
    assert ans.answer[0].rdata == (b"\x03Web\x07Example\x03NET\x00",)
    assert ans.answer[1].rdata == (bytes([192, 0, 2, 7]),)
    assert len(ans.authority) == 1 and len(ans.additional) == 1
    assert all(rr.rtype != OPT for rr in ans.additional), "the upstream's OPT never reaches a client"


def test_to_answer_nxdomain_with_soa() -> None:
    reply = _reply("|example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 5|")
    reply.set_rcode(NXDOMAIN)
    ans = to_answer(reply)
    assert ans.rcode == NXDOMAIN and [rr.rtype for rr in ans.authority] == [SOA]


def _group(policy: str, down: set[int] = frozenset()) -> Group:  # type: ignore[assignment]
    ups = [Upstream(Server(f"192.0.2.{i}", 53)) for i in range(1, 4)]
    for i in down:
        ups[i - 1].down = True
    return Group((), ups, policy)


def _order(g: Group) -> list[int]:
    return [int(u.server.host.rsplit(".", 1)[1]) for u in g.order()]


@pytest.mark.parametrize(
    ("policy", "down", "orders"),
    [
        ("sequential", set(), [[1, 2, 3], [1, 2, 3]]),
        ("sequential", {1}, [[2, 3, 1], [2, 3, 1]]),
        ("round_robin", set(), [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]]),
        ("round_robin", {2}, [[1, 3, 2], [3, 1, 2], [3, 1, 2]]),
    ],
)
def test_policy_order_puts_down_upstreams_last(policy: str, down: set[int], orders: list[list[int]]) -> None:
    g = _group(policy, down)
    assert [_order(g) for _ in orders] == orders


def test_random_order_is_a_permutation_with_down_last() -> None:
    g = _group("random", {3})
    seen = {tuple(_order(g)) for _ in range(200)}
    assert seen == {(1, 2, 3), (2, 1, 3)}

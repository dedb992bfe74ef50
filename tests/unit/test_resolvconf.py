"""resolv.conf parsing for forward.upstreams: the nameserver lines, in order, without our own addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsd.config import ListenAddress
from dnsd.forward.resolvconf import is_own, parse_resolv_conf, read_resolv_conf
from dnsd.upstream.client import Server

PARSE_CASES = [
    ("one", "nameserver 10.96.0.10\n", ["10.96.0.10"]),
    (
        "kubelet-style",
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        ["10.96.0.10"],
    ),
    ("order-kept", "nameserver 192.0.2.2\nnameserver 192.0.2.1\n", ["192.0.2.2", "192.0.2.1"]),
    ("duplicates", "nameserver 192.0.2.1\nnameserver 192.0.2.1\n", ["192.0.2.1"]),
    ("ipv6-zone", "nameserver fe80::1%eth0\nnameserver 2001:db8::1\n", ["fe80::1", "2001:db8::1"]),
    (
        "comments-and-junk",
        "# nameserver 192.0.2.9\n; x\nnameserver not-an-ip\nnameserver\nnameserver 192.0.2.3 x\n",
        ["192.0.2.3"],
    ),
    ("leading-space", "   nameserver\t192.0.2.4\n", ["192.0.2.4"]),
    ("none", "search example.org\n", []),
]


@pytest.mark.parametrize(("text", "want"), [(t, w) for _, t, w in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_resolv_conf(text: str, want: list[str]) -> None:
    assert parse_resolv_conf(text) == [Server(ip, 53) for ip in want]


OWN_CASES = [
    ("same-address", Server("127.0.0.1", 53), [ListenAddress("127.0.0.1", 53)], True),
    ("other-port", Server("127.0.0.1", 53), [ListenAddress("127.0.0.1", 1053)], False),
    ("wildcard-loopback", Server("127.0.0.53", 53), [ListenAddress("0.0.0.0", 53)], True),
    ("wildcard-remote", Server("192.0.2.1", 53), [ListenAddress("0.0.0.0", 53)], False),
    ("v6-wildcard", Server("::1", 53), [ListenAddress("::", 53)], True),
    ("other-address", Server("192.0.2.1", 53), [ListenAddress("127.0.0.1", 53)], False),
]


@pytest.mark.parametrize(("server", "listen", "own"), [c[1:] for c in OWN_CASES], ids=[c[0] for c in OWN_CASES])
def test_is_own(server: Server, listen: list[ListenAddress], own: bool) -> None:
    assert is_own(server, listen) is own


def test_read_skips_our_own_and_survives_a_missing_file(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.1\n")
    assert read_resolv_conf(conf, [ListenAddress("127.0.0.1", 53)]) == [Server("192.0.2.1", 53)]
    assert read_resolv_conf(tmp_path / "absent", []) == []

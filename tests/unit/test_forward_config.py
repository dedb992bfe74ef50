"""The forward section's DoT upstreams (`tls://IP[:port]#name`, `forward.tls_ca`) and the forwarding-loop check
(an upstream that is one of our own listen addresses), at parse time, in with_overrides (the command line) and
in `dnsd check-config`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dnsd.cli import check_config
from dnsd.config import ForwardConfig, parse_config, with_overrides
from dnsd.errors import ConfigError, DnsdError
from dnsd.forward.link import Forwarder
from dnsd.upstream.tls import TlsServer, parse_tls_server


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("tls://192.0.2.1#dns.example", TlsServer("192.0.2.1", 853, "dns.example")),
        ("tls://192.0.2.1:8853#dns.example", TlsServer("192.0.2.1", 8853, "dns.example")),
        ("tls://[2001:DB8::1]:853#DNS.Example.", TlsServer("2001:db8::1", 853, "dns.example")),
        ("tls://2001:db8::1#one.one.one.one", TlsServer("2001:db8::1", 853, "one.one.one.one")),
    ],
)
def test_parse_tls_server(text: str, server: TlsServer) -> None:
    assert parse_tls_server(text) == server
    cfg = parse_config({"forward": {"upstreams": [text]}})
    assert cfg.forward is not None and cfg.forward.upstreams == (text,)


@dataclass(frozen=True)
class Bad:
    id: str
    config: dict[str, Any]
    message: str


BAD = [
    Bad("tls-no-name", {"forward": {"upstreams": ["tls://192.0.2.1"]}}, "needs '#server.name'"),
    Bad("tls-empty-name", {"forward": {"upstreams": ["tls://192.0.2.1:853#"]}}, "needs '#server.name'"),
    Bad("tls-bad-name", {"forward": {"upstreams": ["tls://192.0.2.1#bad name"]}}, "must be a domain name"),
    Bad("tls-hostname", {"forward": {"upstreams": ["tls://dns.example#dns.example"]}}, "must be an IP address"),
    Bad("tls-port", {"forward": {"upstreams": ["tls://192.0.2.1:99999#x.example"]}}, "port must be between"),
    Bad("tls-ca-not-string", {"forward": {"tls_ca": 5}}, "forward.tls_ca"),
    Bad(
        "loop-plain",
        {"listen": ["127.0.0.1:5300"], "forward": {"upstreams": ["127.0.0.1:5300"]}},
        "forward.upstreams[0]: '127.0.0.1:5300' is dnsd's own listen address (a forwarding loop)",
    ),
    Bad(
        "loop-default-port",
        {"listen": ["127.0.0.1:53"], "forward": {"upstreams": ["192.0.2.1", "127.0.0.1"]}},
        "forward.upstreams[1]: '127.0.0.1' is dnsd's own listen address",
    ),
    Bad(
        "loop-v6-spelling",
        {"listen": ["[::1]:5300"], "forward": {"upstreams": ["[0:0::1]:5300"]}},
        "forward.upstreams[0]: '[0:0::1]:5300' is dnsd's own listen address",
    ),
    Bad(
        "loop-tls",
        {"listen": ["127.0.0.1:853"], "forward": {"upstreams": ["tls://127.0.0.1#dns.example"]}},
        "is dnsd's own listen address",
    ),
    Bad(
        "loop-stub-domain",
        {"listen": ["127.0.0.1:5300"], "forward": {"domains": {"corp.example": ["127.0.0.1:5300"]}}},
        "forward.domains.corp.example[0]: '127.0.0.1:5300' is dnsd's own listen address",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_forward_configs(case: Bad) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(case.config)
    assert case.message in str(info.value)


@pytest.mark.parametrize(
    "config",
    [
        {"listen": ["127.0.0.1:5300"], "forward": {"upstreams": ["127.0.0.1:5301", "127.0.0.2:5300"]}},
        {"listen": ["127.0.0.1:5300"], "forward": {"upstreams": ["tls://127.0.0.1:5301#x.example"]}},
        {"listen": ["127.0.0.1:5300"], "forward": None},
    ],
    ids=["other-port-or-ip", "tls-other-port", "no-forwarding"],
)
def test_not_a_loop(config: dict[str, Any]) -> None:
    parse_config(config)


def test_tls_ca_is_a_path() -> None:
    cfg = parse_config({"forward": {"tls_ca": "/etc/dnsd/ca.pem"}})
    assert cfg.forward is not None and cfg.forward.tls_ca == Path("/etc/dnsd/ca.pem")
    assert parse_config({}).forward is not None and parse_config({}).forward.tls_ca is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [(["127.0.0.1:5300"], None), (None, ["127.0.0.1:1053"])],
    ids=["--listen-onto-upstream", "--upstream-onto-listen"],
)
def test_loop_made_by_flags(listen: list[str] | None, upstream: list[str] | None) -> None:
    base = parse_config({"listen": ["127.0.0.1:1053"], "forward": {"upstreams": ["127.0.0.1:5300"]}})
    with pytest.raises(ConfigError, match="a forwarding loop"):
        with_overrides(base, listen=listen, upstream=upstream)


def test_check_config_reports_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "dnsd.yaml"
    p.write_text("listen: ['127.0.0.1:5300']\nforward:\n  upstreams: ['127.0.0.1:5300']\n")
    assert check_config([str(p)]) == 1
    err = capsys.readouterr().err
    assert "forward.upstreams[0]: '127.0.0.1:5300' is dnsd's own listen address (a forwarding loop)" in err


@pytest.mark.parametrize(
    ("content", "error"),
    [(None, "cannot load"), ("not a certificate\n", "cannot load")],
    ids=["missing-file", "not-pem"],
)
def test_bad_tls_ca_fails_at_start(tmp_path: Path, content: str | None, error: str) -> None:
    """The CA bundle is loaded when the forward link is built (start), not on the first query."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    cfg = ForwardConfig(upstreams=("tls://127.0.0.1:8853#dns.example",), tls_ca=ca)
    with pytest.raises(DnsdError, match=f"forward.tls_ca: {error}"):
        Forwarder(cfg)
    Forwarder(replace(cfg, upstreams=("127.0.0.1:5353",)))  # no tls:// upstream: the bundle is never read


@pytest.mark.parametrize(
    ("recursion", "want"), [("off", "forward"), ("forward", "forward"), ("iterative", "iterative")]
)
def test_upstream_flag_turns_forwarding_on(recursion: str, want: str) -> None:
    """`dnsd --upstream ADDR` on a config that does not forward (make run's) means: forward to ADDR."""
    cfg = with_overrides(parse_config({"recursion": recursion, "forward": None}), upstream=["127.0.0.1:5300"])
    assert cfg.recursion == want
    assert cfg.forward is not None and cfg.forward.upstreams == ("127.0.0.1:5300",)

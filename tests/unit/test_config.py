"""The configuration contract (the README's configuration table).

parse_config(dict) and load_config(path) accept every key of the contract with its documented default, accept
null or empty values for the sections that arrive later, and reject unknown keys and bad values with a
ConfigError whose message reads `path.to.key: what is wrong: value`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import config_expectations

import dnsd.config
from dnsd.config import MAX_CONFIG_BYTES, check_buildable, load_config, parse_config
from dnsd.errors import ConfigError, DnsdError

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"
GOOD = sorted((CONFIGS / "good").glob("*.yaml"))
BAD = sorted((CONFIGS / "bad").glob("*.yaml"))
REFUSED = sorted((CONFIGS / "refused").glob("*.yaml"))  # valid config that `run` and `check-config` refuse
SHIPPED = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))

FILES = {"files": "tests/data/store/e2e"}


def with_source(**cluster: Any) -> dict[str, Any]:
    """A cluster section with a files source plus the given keys."""
    return {"source": dict(FILES), **cluster}


def test_config_error_is_exported_by_dnsd_config() -> None:
    assert vars(dnsd.config)["ConfigError"] is ConfigError
    assert issubclass(ConfigError, DnsdError)


# ---------------------------------------------------------------- defaults


def test_empty_config_takes_every_documented_default() -> None:
    cfg = parse_config({})
    assert [(a.host, a.port) for a in cfg.listen] == [("127.0.0.1", 1053)]
    assert cfg.workers == 1
    assert cfg.http is not None and (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8080)
    cl = cfg.cluster
    assert cl.domain == "cluster.local"
    assert tuple(cl.reverse_zones) == ("in-addr.arpa", "ip6.arpa")
    assert cl.ttl == 5
    assert cl.pods == "disabled"
    assert cl.endpoint_pod_names is False
    assert cl.ignore_empty_service is False
    assert tuple(cl.namespaces) == ()
    assert tuple(cl.fallthrough) == ()
    assert Path(cl.source.path) == Path("config/cluster")  # type: ignore[union-attr]
    assert cfg.zones is not None and Path(cfg.zones) == Path("zones")
    assert cfg.forward is not None
    assert tuple(cfg.forward.upstreams) == ("/etc/resolv.conf",)
    assert cfg.forward.policy == "sequential"
    assert cfg.forward.timeout == 2.0
    assert len(cfg.forward.domains) == 0
    assert cfg.recursion == "forward"
    assert cfg.root_hints is None
    assert (cfg.cache.size, cfg.cache.success_ttl_max, cfg.cache.denial_ttl_max) == (10000, 3600, 1800)
    assert (cfg.cache.prefetch, cfg.cache.serve_stale) == (False, 0)
    assert tuple(cfg.allow_recursion) == (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    )
    assert (cfg.log.level, cfg.log.queries) == ("info", False)
    assert (cfg.tcp.idle_timeout, cfg.tcp.message_timeout) == (10, 2)
    assert (cfg.tcp.max_connections, cfg.tcp.max_pipeline) == (1000, 100)


def test_contract_file_with_every_key_equals_the_defaults() -> None:
    """The README's full example, every key spelled out with its default, means the same as an empty config."""
    assert load_config(CONFIGS / "good" / "contract-defaults.yaml") == parse_config({})


def test_empty_file_is_the_default_config() -> None:
    assert load_config(CONFIGS / "good" / "empty-file.yaml") == parse_config({})


# ---------------------------------------------------------------- accepted values


@dataclass(frozen=True)
class Good:
    id: str
    data: dict[str, Any]
    check: tuple[tuple[str, Any], ...] = ()  # (dotted attribute path, expected value)


GOOD_CASES = [
    Good("ttl-zero", {"cluster": with_source(ttl=0)}, (("cluster.ttl", 0),)),
    Good("ttl-max", {"cluster": with_source(ttl=3600)}, (("cluster.ttl", 3600),)),
    Good("pods-insecure", {"cluster": with_source(pods="insecure")}, (("cluster.pods", "insecure"),)),
    Good("pods-verified", {"cluster": with_source(pods="verified")}, (("cluster.pods", "verified"),)),
    Good(
        "domain-trailing-dot",
        {"cluster": with_source(domain="Example.Internal.")},
        (("cluster.domain", "example.internal"),),
    ),
    Good(
        "namespaces",
        {"cluster": with_source(namespaces=["default", "kube-system"])},
        (("cluster.namespaces", ("default", "kube-system")),),
    ),
    Good(
        "fallthrough",
        {"cluster": with_source(fallthrough=["in-addr.arpa", "ip6.arpa"])},
        (("cluster.fallthrough", ("in-addr.arpa", "ip6.arpa")),),
    ),
    Good(
        "reverse-subzone",
        {"cluster": with_source(reverse_zones=["0.96.10.in-addr.arpa"])},
        (("cluster.reverse_zones", ("0.96.10.in-addr.arpa",)),),
    ),
    Good(
        "bools",
        {"cluster": with_source(endpoint_pod_names=True, ignore_empty_service=True)},
        (("cluster.endpoint_pod_names", True), ("cluster.ignore_empty_service", True)),
    ),
    Good("listen-v4-v6", {"listen": ["127.0.0.1:0", "[::1]:5353"]}, ()),
    Good("workers", {"workers": 4}, (("workers", 4),)),
    Good("http-null", {"http": None}, (("http", None),)),
    Good("http-empty", {"http": ""}, (("http", None),)),
    Good("zones-null", {"zones": None}, (("zones", None),)),
    Good("zones-empty", {"zones": ""}, (("zones", None),)),
    Good("forward-null", {"forward": None}, ()),
    Good("forward-empty", {"forward": {}}, ()),
    Good(
        "forward-full",
        {
            "forward": {
                "upstreams": ["127.0.0.1:25353", "::1", "/etc/resolv.conf"],
                "policy": "random",
                "timeout": 0.25,
                "domains": {"corp.example": ["10.0.0.53"]},
            }
        },
        (("forward.policy", "random"), ("forward.timeout", 0.25)),
    ),
    Good("forward-round-robin", {"forward": {"policy": "round_robin"}}, (("forward.policy", "round_robin"),)),
    Good("recursion-null", {"recursion": None}, ()),
    Good("recursion-empty", {"recursion": ""}, ()),
    Good("recursion-iterative", {"recursion": "iterative"}, (("recursion", "iterative"),)),
    Good("recursion-off", {"recursion": "off"}, (("recursion", "off"),)),
    Good("root-hints-null", {"root_hints": None}, (("root_hints", None),)),
    Good("root-hints-empty", {"root_hints": ""}, (("root_hints", None),)),
    Good("cache-null", {"cache": None}, (("cache.size", 10000),)),
    Good("cache-empty", {"cache": {}}, (("cache.size", 10000),)),
    Good(
        "cache-full",
        {"cache": {"size": 0, "success_ttl_max": 60, "denial_ttl_max": 30, "prefetch": True, "serve_stale": 600}},
        (("cache.size", 0), ("cache.serve_stale", 600), ("cache.prefetch", True)),
    ),
    Good("allow-recursion-empty", {"allow_recursion": []}, (("allow_recursion", ()),)),
    Good("allow-recursion-null", {"allow_recursion": None}, ()),
    Good("log-null", {"log": None}, (("log.level", "info"),)),
    Good("log-empty", {"log": {}}, (("log.level", "info"),)),
    Good("log-debug", {"log": {"level": "debug", "queries": True}}, (("log.level", "debug"), ("log.queries", True))),
    Good(
        "tcp",
        {"tcp": {"idle_timeout": 3, "message_timeout": 1, "max_connections": 5, "max_pipeline": 2}},
        (("tcp.max_connections", 5), ("tcp.max_pipeline", 2)),
    ),
    Good("tcp-null", {"tcp": None}, (("tcp.max_connections", 1000),)),
    # timeout bounds, inclusive at both ends
    Good("forward-timeout-min", {"forward": {"timeout": 0.05}}, (("forward.timeout", 0.05),)),
    Good("forward-timeout-max", {"forward": {"timeout": 60}}, (("forward.timeout", 60.0),)),
    Good(
        "tcp-timeouts-min",
        {"tcp": {"idle_timeout": 0.05, "message_timeout": 0.05}},
        (("tcp.idle_timeout", 0.05), ("tcp.message_timeout", 0.05)),
    ),
    Good(
        "tcp-timeouts-max",
        {"tcp": {"idle_timeout": 3600, "message_timeout": 600}},
        (("tcp.idle_timeout", 3600.0), ("tcp.message_timeout", 600.0)),
    ),
    Good("cluster-null", {"cluster": None}, (("cluster.ttl", 5),)),
    Good(
        "lists-null",
        {"cluster": with_source(reverse_zones=None, namespaces=None, fallthrough=None)},
        (("cluster.namespaces", ()),),
    ),
    Good("source-kubernetes-in-cluster", {"cluster": {"source": {"kubernetes": {"in_cluster": True}}}}, ()),
    Good("source-kubernetes-kubeconfig", {"cluster": {"source": {"kubernetes": {"kubeconfig": "~/.kube/config"}}}}, ()),
    Good(
        "source-etcd",
        {"cluster": {"source": {"etcd": {"endpoints": ["http://127.0.0.1:2379"], "prefix": "/dnsd/"}}}},
        (),
    ),
]


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("case", GOOD_CASES, ids=[c.id for c in GOOD_CASES])
def test_accepted(case: Good) -> None:
    cfg = parse_config(case.data)
    for dotted, want in case.check:
        got = _attr(cfg, dotted)
        if isinstance(want, tuple):
            got = tuple(got)
        assert got == want, f"{dotted}: {got!r} != {want!r}"


@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_good_files_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.cluster.ttl in range(0, 3601)


def test_recursion_off_written_bare_in_yaml() -> None:
    """`recursion: off` as the contract spells it; YAML 1.1 reads a bare `off` as false."""
    cfg = load_config(CONFIGS / "good" / "recursion-off.yaml")
    assert cfg.recursion == "off"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_load(path: Path) -> None:
    load_config(path)


def test_default_config_is_shipped() -> None:
    assert (Path(__file__).resolve().parents[2] / "config" / "dnsd.yaml").is_file()


# ---------------------------------------------------------------- rejected values


@dataclass(frozen=True)
class Bad:
    id: str
    data: Any
    path: str  # the key path the message must start with
    value: str | None = None  # text the message must contain after the path (None: path only)
    extra: tuple[str, ...] = field(default=())


BAD_CASES = [
    # unknown keys, at every depth
    Bad("unknown-top", {"clusterr": {}}, "clusterr"),
    Bad("unknown-cluster", {"cluster": with_source(ttll=5)}, "cluster.ttll"),
    Bad("unknown-source", {"cluster": {"source": {"files": "x", "filez": "y"}}}, "cluster.source.filez"),
    Bad(
        "unknown-kubernetes",
        {"cluster": {"source": {"kubernetes": {"in_cluster": True, "token": "x"}}}},
        "cluster.source.kubernetes.token",
    ),
    Bad("unknown-forward", {"forward": {"upstream": ["1.1.1.1"]}}, "forward.upstream"),
    Bad("unknown-cache", {"cache": {"sise": 10}}, "cache.sise"),
    Bad("unknown-log", {"log": {"levle": "info"}}, "log.levle"),
    Bad("unknown-tcp", {"tcp": {"idle": 3}}, "tcp.idle"),
    # bad values
    Bad("ttl-negative", {"cluster": with_source(ttl=-1)}, "cluster.ttl", "-1"),
    Bad("ttl-too-big", {"cluster": with_source(ttl=3601)}, "cluster.ttl", "3601"),
    Bad("ttl-string", {"cluster": with_source(ttl="5s")}, "cluster.ttl", "5s"),
    Bad("ttl-bool", {"cluster": with_source(ttl=True)}, "cluster.ttl", "True"),
    Bad("pods-sometimes", {"cluster": with_source(pods="sometimes")}, "cluster.pods", "sometimes"),
    Bad("pods-bool", {"cluster": with_source(pods=True)}, "cluster.pods", "True"),
    Bad("domain-bad", {"cluster": with_source(domain="bad domain!")}, "cluster.domain", "bad domain!"),
    Bad(
        "reverse-not-arpa",
        {"cluster": with_source(reverse_zones=["example.com"])},
        "cluster.reverse_zones",
        "example.com",
    ),
    Bad(
        "endpoint-pod-names-string",
        {"cluster": with_source(endpoint_pod_names="yes")},
        "cluster.endpoint_pod_names",
        "yes",
    ),
    Bad(
        "ignore-empty-service-int",
        {"cluster": with_source(ignore_empty_service=2)},
        "cluster.ignore_empty_service",
        "2",
    ),
    Bad("namespaces-not-list", {"cluster": with_source(namespaces="default")}, "cluster.namespaces", "default"),
    Bad(
        "namespaces-bad-name",
        {"cluster": with_source(namespaces=["Not_A_Namespace"])},
        "cluster.namespaces",
        "Not_A_Namespace",
    ),
    Bad(
        "fallthrough-not-list",
        {"cluster": with_source(fallthrough="in-addr.arpa")},
        "cluster.fallthrough",
        "in-addr.arpa",
    ),
    Bad(
        "source-two",
        {"cluster": {"source": {"files": "x", "etcd": {"endpoints": ["http://127.0.0.1:2379"]}}}},
        "cluster.source",
    ),
    Bad("source-none", {"cluster": {"source": {}}}, "cluster.source"),
    Bad("source-not-mapping", {"cluster": {"source": "config/cluster"}}, "cluster.source", "config/cluster"),
    Bad("kubernetes-neither", {"cluster": {"source": {"kubernetes": {}}}}, "cluster.source.kubernetes"),
    Bad("cluster-not-mapping", {"cluster": ["x"]}, "cluster"),
    Bad("listen-port", {"listen": ["127.0.0.1:70000"]}, "listen", "127.0.0.1:70000"),
    Bad("listen-nonsense", {"listen": ["nonsense"]}, "listen", "nonsense"),
    Bad("listen-hostname", {"listen": ["dns.example:53"]}, "listen", "dns.example:53"),
    Bad("listen-empty", {"listen": []}, "listen"),
    Bad("listen-v6-port", {"listen": ["[::1]:99999"]}, "listen", "99999"),
    Bad("workers-zero", {"workers": 0}, "workers", "0"),
    Bad("workers-string", {"workers": "two"}, "workers", "two"),
    Bad("http-nonsense", {"http": "nonsense"}, "http", "nonsense"),
    Bad("http-port", {"http": "127.0.0.1:80800"}, "http", "80800"),
    Bad("forward-policy", {"forward": {"policy": "fastest"}}, "forward.policy", "fastest"),
    Bad("forward-timeout-zero", {"forward": {"timeout": 0}}, "forward.timeout", "0"),
    Bad("forward-timeout-negative", {"forward": {"timeout": -1.5}}, "forward.timeout", "-1.5"),
    Bad("forward-upstream", {"forward": {"upstreams": ["not an ip"]}}, "forward.upstreams", "not an ip"),
    Bad("forward-upstreams-not-list", {"forward": {"upstreams": "1.1.1.1"}}, "forward.upstreams", "1.1.1.1"),
    Bad("forward-domains-list", {"forward": {"domains": ["corp.example"]}}, "forward.domains", "corp.example"),
    Bad("recursion-maybe", {"recursion": "maybe"}, "recursion", "maybe"),
    Bad("cache-size-negative", {"cache": {"size": -5}}, "cache.size", "-5"),
    Bad("cache-serve-stale-negative", {"cache": {"serve_stale": -1}}, "cache.serve_stale", "-1"),
    Bad("cache-prefetch-string", {"cache": {"prefetch": "sometimes"}}, "cache.prefetch", "sometimes"),
    Bad("allow-recursion-bad-cidr", {"allow_recursion": ["10.0.0.0/33"]}, "allow_recursion", "10.0.0.0/33"),
    Bad("log-level", {"log": {"level": "loud"}}, "log.level", "loud"),
    Bad("log-queries-string", {"log": {"queries": "yes please"}}, "log.queries", "yes please"),
    Bad("tcp-max-connections-zero", {"tcp": {"max_connections": 0}}, "tcp.max_connections", "0"),
    # timeouts: finite, at least 50 ms, and a sane maximum
    Bad("forward-timeout-tiny", {"forward": {"timeout": 0.049}}, "forward.timeout", "0.049"),
    Bad("forward-timeout-huge", {"forward": {"timeout": 60.5}}, "forward.timeout", "60.5"),
    Bad("forward-timeout-nan", {"forward": {"timeout": float("nan")}}, "forward.timeout", "nan"),
    Bad("forward-timeout-inf", {"forward": {"timeout": float("inf")}}, "forward.timeout", "inf"),
    Bad("forward-timeout-string", {"forward": {"timeout": "2s"}}, "forward.timeout", "2s"),
    Bad("tcp-idle-timeout-zero", {"tcp": {"idle_timeout": 0}}, "tcp.idle_timeout", "0"),
    Bad("tcp-idle-timeout-tiny", {"tcp": {"idle_timeout": 0.01}}, "tcp.idle_timeout", "0.01"),
    Bad("tcp-idle-timeout-huge", {"tcp": {"idle_timeout": 3601}}, "tcp.idle_timeout", "3601"),
    Bad("tcp-idle-timeout-minus-inf", {"tcp": {"idle_timeout": float("-inf")}}, "tcp.idle_timeout", "-inf"),
    Bad("tcp-message-timeout-zero", {"tcp": {"message_timeout": 0}}, "tcp.message_timeout", "0"),
    Bad("tcp-message-timeout-nan", {"tcp": {"message_timeout": float("nan")}}, "tcp.message_timeout", "nan"),
    Bad("tcp-message-timeout-huge", {"tcp": {"message_timeout": 601}}, "tcp.message_timeout", "601"),
    Bad("tcp-max-pipeline-huge", {"tcp": {"max_pipeline": 10_001}}, "tcp.max_pipeline", "10001"),
    Bad("tcp-max-connections-huge", {"tcp": {"max_connections": 100_001}}, "tcp.max_connections", "100001"),
    Bad("cache-size-huge", {"cache": {"size": 10_000_001}}, "cache.size", "10000001"),
    Bad("cache-success-ttl-huge", {"cache": {"success_ttl_max": 7 * 86400 + 1}}, "cache.success_ttl_max", "604801"),
    Bad("cache-denial-ttl-huge", {"cache": {"denial_ttl_max": 86401}}, "cache.denial_ttl_max", "86401"),
    Bad("workers-huge", {"workers": 65}, "workers", "65"),
    # a huge bad value is quoted shortened: the error stays one short line
    Bad("long-value-shortened", {"recursion": "x" * 10_000}, "recursion", "'" + "x" * 79 + "..."),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_rejected(case: Bad) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(case.data)
    msg = str(info.value)
    assert msg.startswith(case.path), f"message does not start with the key path {case.path!r}: {msg!r}"
    rest = msg[len(case.path) :]
    # `path: what is wrong: value` (a list index such as listen[0] may sit between the path and the colon)
    m = re.match(r"(\[\d+\])?: (.+): (.*)$", rest, re.S)
    assert m, f"message is not 'path: what is wrong: value': {msg!r}"
    assert m.group(2).strip(), f"no reason in {msg!r}"
    if case.value is not None:
        assert case.value in m.group(3) or case.value in m.group(2), f"value {case.value!r} not named in {msg!r}"


@pytest.mark.parametrize(
    "data, kind", [(["listen", "127.0.0.1:53"], "a list"), ("listen", "a string"), (5, "a single value")]
)
def test_top_level_not_a_mapping(data: Any, kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == f"the top level must be a mapping of keys (such as `listen:`), not {kind}"


def test_long_bad_value_message_is_short() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"recursion": "x" * 100_000})
    assert len(str(info.value)) < 200, str(info.value)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_files_rejected(path: Path) -> None:
    subs, regexes = config_expectations(path)
    assert subs or regexes, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert path.name in msg, f"the file is not named: {msg!r}"
    for sub in subs:
        assert sub in msg, f"{sub!r} not in {msg!r}"
    for rx in regexes:
        assert re.search(rx, msg), f"{rx!r} does not match {msg!r}"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_yaml_list_document_rejected(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text(yaml.safe_dump(["listen", "127.0.0.1:53"]))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert "list.yaml" in str(info.value)


def test_bad_value_in_file_names_path_and_value(tmp_path: Path) -> None:
    p = tmp_path / "dnsd.yaml"
    p.write_text("cluster:\n  source: {files: x}\n  ttl: 99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "cluster.ttl" in msg and "99999" in msg and "dnsd.yaml" in msg


# ---------------------------------------------------------------- what a file may be (issue 5 section 3)


def test_anchors_aliases_and_merge_keys_within_limits() -> None:
    cfg = load_config(CONFIGS / "good" / "anchors-and-merge.yaml")
    assert (cfg.tcp.idle_timeout, cfg.tcp.message_timeout) == (5.0, 2.0)  # the explicit key beats the merged one
    assert cfg.cluster.reverse_zones == cfg.cluster.fallthrough == ("in-addr.arpa", "ip6.arpa")


@dataclass(frozen=True)
class RawFile:
    id: str
    content: bytes
    error: str | None  # regex the message must match after "FILE"; None: the file loads


RAW_FILES = [
    RawFile("utf8-bom", b"\xef\xbb\xbfworkers: 2\n", None),
    RawFile("utf8-comment", "# caf\u00e9 \u2014 r\u00e9sum\u00e9\nworkers: 2\n".encode(), None),
    RawFile("exactly-the-cap", b"workers: 2\n" + b"#" * (MAX_CONFIG_BYTES - 12) + b"\n", None),
    RawFile("one-byte-over-the-cap", b"workers: 2\n" + b"#" * (MAX_CONFIG_BYTES - 11) + b"\n", r": larger than 1 MiB"),
    RawFile("latin-1", b"workers: 2\n# caf\xe9\n", r":2: not UTF-8 text \(byte 0xe9 at offset 16\)"),
    RawFile("utf-16", "workers: 2\n".encode("utf-16"), r":1: not UTF-8 text \(byte 0xff at offset 0\)"),
    RawFile("nul-byte", b"workers: 2\nhttp: \x00\n", r":2: not valid YAML: control character #x0000"),
    RawFile(
        "elf-header", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), r":2: not UTF-8 text \(byte 0x80 at offset 136\)"
    ),
    RawFile("escape-sequence", b"workers: 2\n\x1b[31m\n", r":2: not valid YAML: control character #x001b"),
    RawFile("huge-integer", b"workers: " + b"9" * 5000 + b"\n", r":1: workers: value longer than 4096 characters"),
    RawFile("huge-key", b"? " + b"k" * 5000 + b"\n: 1\n", r":1: k{80}\.\.\.: value longer than 4096 characters"),
    RawFile("unhashable-key", b"? [a, b]\n: 1\n", r":1: not valid YAML: found unhashable key"),
    RawFile("python-tag", b"workers: !!python/object/apply:os.system [true]\n", r":1: not valid YAML: could not"),
    RawFile("tab-indent", b"cluster:\n\tttl: 5\n", r":2: not valid YAML: found character '\\t'"),
    RawFile("scalar-document", b"just some text\n", r": the top level must be a mapping of keys .* not a string"),
    RawFile(
        "duplicate-in-list-item",
        b'forward:\n  upstreams: ["127.0.0.1"]\n  upstreams: ["::1"]\n',
        r":3: forward\.upstreams: duplicate key \(first on line 2\)",
    ),
    RawFile("duplicate-null-and-empty", b"zones:\nzones: ''\n", r":2: zones: duplicate key \(first on line 1\)"),
]


@pytest.mark.parametrize("case", RAW_FILES, ids=[c.id for c in RAW_FILES])
def test_raw_file(tmp_path: Path, case: RawFile) -> None:
    path = tmp_path / "dnsd.yaml"
    path.write_bytes(case.content)
    if case.error is None:
        load_config(path)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert re.match(case.error, msg[len(str(path)) :]), f"{case.error!r} does not match {msg!r}"
    assert "\n" not in msg and len(msg) < 300 + len(str(path)), msg


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda d: d, r": is a directory, not a config file$"),
        (lambda d: Path("/dev/zero"), r": larger than 1 MiB"),
        (lambda d: d / "absent.yaml", r": cannot read: No such file or directory$"),
        (lambda d: d / "file.yaml" / "under-a-file.yaml", r": cannot read: Not a directory$"),
    ],
    ids=["directory", "dev-zero", "missing", "not-a-directory-on-the-way"],
)
def test_unreadable_path(tmp_path: Path, make: Any, error: str) -> None:
    (tmp_path / "file.yaml").write_text("workers: 1\n")
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and re.search(error, msg), msg


@pytest.mark.parametrize("path", REFUSED, ids=[p.name for p in REFUSED])
def test_refused_files_parse_but_cannot_be_built(path: Path) -> None:
    """Valid config (load_config accepts it) that `run` refuses before listening, and check-config reports."""
    subs, regexes = config_expectations(path)
    assert subs or regexes, f"{path.name} has no '# expect:' line"
    cfg = load_config(path)
    with pytest.raises(DnsdError) as info:
        check_buildable(cfg)
    msg = str(info.value)
    for sub in subs:
        assert sub in msg, f"{sub!r} not in {msg!r}"
    for rx in regexes:
        assert re.search(rx, msg), f"{rx!r} does not match {msg!r}"


def test_files_source_missing_directory_is_buildable() -> None:
    """A missing manifest directory is allowed: it is watched until it appears."""
    check_buildable(load_config(CONFIGS / "good" / "files-source-missing-dir.yaml"))


# ---------------------------------------------------------------- every reason at once (issue 7: reload)


def test_every_bad_top_level_key_is_reported_one_line_each(tmp_path: Path) -> None:
    """A config with three bad keys names all three (a reload logs them all; check-config prints them all), each
    line naming the file; within one key, the first problem."""
    path = tmp_path / "three.yaml"
    path.write_text("listen: [nonsense]\ncluster: {ttl: -1}\nlog: {format: xml, sample: 2}\nworkers: 1\n")
    with pytest.raises(dnsd.config.ConfigErrors) as caught:
        load_config(path)
    assert caught.value.reasons == [
        f"{path}: listen[0]: host must be an IP address: 'nonsense'",
        f"{path}: cluster.ttl: must be between 0 and 3600: -1",
        f"{path}: log.format: must be one of text | json: 'xml'",
    ]
    assert str(caught.value).splitlines() == caught.value.reasons


@pytest.mark.parametrize(
    ("data", "want"),
    [
        ({}, (5.0, 5.0, "text", 1.0)),
        ({"drain": {"lameduck": 0, "grace": 30}, "log": {"format": "json", "sample": 0.01}}, (0.0, 30.0, "json", 0.01)),
        ({"drain": None, "log": {"sample": None}}, (5.0, 5.0, "text", 1.0)),
    ],
)
def test_drain_and_log_keys(data: dict[str, Any], want: tuple[float, float, str, float]) -> None:
    cfg = parse_config(data)
    assert (cfg.drain.lameduck, cfg.drain.grace, cfg.log.format, cfg.log.sample) == want

"""The YAML configuration: frozen dataclasses, defaults, and validation that names the key path and value."""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dnsd.errors import ConfigError

T = TypeVar("T")

_MISSING: Any = object()
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FilesSource:
    path: Path


@dataclass(frozen=True, slots=True)
class KubernetesSource:
    """The Kubernetes API (list + watch): credentials as kubectl finds them, from a kubeconfig (its current
    context, or `context`) or in-cluster (the service-account token, CA and KUBERNETES_SERVICE_HOST/PORT)."""

    kubeconfig: str | None = None
    in_cluster: bool = False
    context: str | None = None


@dataclass(frozen=True, slots=True)
class EtcdSource:
    """etcd v3 through its JSON gateway: range then watch a key prefix; values are Kubernetes objects as JSON."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = "/dnsd/"


Source = FilesSource | KubernetesSource | EtcdSource


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    domain: str = "cluster.local"
    reverse_zones: tuple[str, ...] = ("in-addr.arpa", "ip6.arpa")
    ttl: int = 5
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False
    namespaces: tuple[str, ...] = ()
    fallthrough: tuple[str, ...] = ()
    source: Source = field(default_factory=lambda: FilesSource(Path("config/cluster")))
    snapshot: Path | None = None  # the last-known-good snapshot of the store (None: none kept)


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    upstreams: tuple[str, ...] = ("/etc/resolv.conf",)
    policy: str = "sequential"
    timeout: float = 2.0
    domains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    tls_ca: Path | None = None  # CA bundle (PEM) for tls:// upstreams; None: the system's CAs


@dataclass(frozen=True, slots=True)
class CacheConfig:
    size: int = 10000
    success_ttl_max: int = 3600
    denial_ttl_max: int = 1800
    prefetch: bool = False
    serve_stale: int = 0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    queries: bool = False
    format: str = "text"  # text: one human line per record; json: one JSON object per line (dnsd.observe.logs)
    sample: float = 1.0  # the fraction of query lines kept (log.queries), 0..1


@dataclass(frozen=True, slots=True)
class DrainConfig:
    """SIGTERM: answer on for `lameduck` seconds while /ready says 503 (so load balancers and kube-proxy take
    this instance out), then stop accepting and give what is in flight at most `grace` seconds to finish."""

    lameduck: float = 5.0
    grace: float = 5.0


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """RFC 7766 limits: idle timeout, per-message read timeout, connection cap, queries in flight per connection."""

    idle_timeout: float = 10.0
    message_timeout: float = 2.0
    max_connections: int = 1000
    max_pipeline: int = 100


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 1053),)
    workers: int = 1
    http: ListenAddress | None = ListenAddress("127.0.0.1", 8080)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    zones: Path | None = Path("zones")
    forward: ForwardConfig | None = field(default_factory=ForwardConfig)
    recursion: str = "forward"
    root_hints: Path | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    allow_recursion: tuple[str, ...] = (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    )
    log: LogConfig = field(default_factory=LogConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    drain: DrainConfig = field(default_factory=DrainConfig)


# ---------------------------------------------------------------- validation helpers


_SHOWN = 80  # characters of a bad value or key quoted in an error: errors stay one short line


def _short_text(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _fail(path: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{path}: {what}: {_short_text(repr(value))}")


def _section(data: Any, path: str, keys: set[str]) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _fail(path, "must be a mapping", data)
    for key in data:
        if not isinstance(key, str) or key not in keys:
            sub = _short_text(f"{path}.{key}" if path else str(key))
            raise _fail(sub, "unknown key (allowed: " + ", ".join(sorted(keys)) + ")", key)
    return data


def _get(data: Mapping[str, Any], key: str, path: str, conv: Callable[[Any, str], T], default: T) -> T:
    """Convert data[key]; a missing key or an explicit null gives the default."""
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None or value == "":
        return default
    return conv(value, f"{path}.{key}" if path else key)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "must be true or false", value)
    return value


def _int(lo: int, hi: int) -> Callable[[Any, str], int]:
    def conv(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "must be an integer", value)
        if not lo <= value <= hi:
            raise _fail(path, f"must be between {lo} and {hi}", value)
        return value

    return conv


def _float(lo: float, hi: float) -> Callable[[Any, str], float]:
    """A finite number of seconds in [lo, hi]; YAML's .nan and .inf are refused by name."""

    def conv(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, "must be a number", value)
        if not math.isfinite(value):
            raise _fail(path, "must be a finite number", value)
        if not lo <= value <= hi:
            raise _fail(path, f"must be between {lo:g} and {hi:g}", value)
        return float(value)

    return conv


def _choice(*options: str) -> Callable[[Any, str], str]:
    def conv(value: Any, path: str) -> str:
        if value not in options:
            raise _fail(path, "must be one of " + " | ".join(options), value)
        return str(value)

    return conv


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "must be a non-empty string", value)
    return value


def _list(item: Callable[[Any, str], T]) -> Callable[[Any, str], tuple[T, ...]]:
    def conv(value: Any, path: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _fail(path, "must be a list", value)
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return conv


MAX_CLUSTER_DOMAIN = 56
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _domain(value: Any, path: str) -> str:
    """A DNS zone name, lower-cased, without the trailing dot (RFC 1035 2.3.4 length limits)."""
    if not isinstance(value, str):
        raise _fail(path, "must be a domain name", value)
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(lab) for lab in name.split(".")):
        raise _fail(path, "must be a domain name", value)
    return name


def _zone_or_root(value: Any, path: str) -> str:
    """A domain name, or "." for the root (every name); the root is kept as ""."""
    if value == ".":
        return ""
    return _domain(value, path)


def _k8s_name(value: Any, path: str) -> str:
    """An RFC 1123 label, as Kubernetes namespace names are."""
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise _fail(path, "must be a Kubernetes namespace name", value)
    return value


def parse_hostport(value: Any, path: str, default_port: int | None = None) -> ListenAddress:
    """'ip:port' or '[v6]:port' (or a bare ip when a default port is given)."""
    if not isinstance(value, str):
        raise _fail(path, "must be 'host:port'", value)
    text = value.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.%a-z]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?|([0-9a-fA-F:]+)", text)
    if not m:
        raise _fail(path, "must be 'host:port' or '[ipv6]:port'", value)
    host = m.group(1) or m.group(3) or m.group(5)
    port_text = m.group(2) or m.group(4)
    if m.group(5) is not None:
        port_text = None
    if port_text is None:
        if default_port is None:
            raise _fail(path, "needs a port ('host:port')", value)
        port = default_port
    else:
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise _fail(path, "port must be between 0 and 65535", value)
    if host in ("localhost",):
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _fail(path, "host must be an IP address", value) from None
    return ListenAddress(host, port)


def _listen(value: Any, path: str) -> tuple[ListenAddress, ...]:
    if isinstance(value, str):
        value = [value]
    addrs = _list(lambda v, p: parse_hostport(v, p, default_port=53))(value, path)
    if not addrs:
        raise _fail(path, "must list at least one address", value)
    return addrs


def _cidr(value: Any, path: str) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        raise _fail(path, "must be a CIDR such as 10.0.0.0/8", value) from None


TLS_PORT = 853  # DNS over TLS (RFC 7858 3.1)
_TLS_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def parse_tls_upstream(value: str, path: str) -> tuple[ListenAddress, str]:
    """'tls://IP[:port]#server.name' (RFC 7858): the address, port 853 by default, and the name the server's
    certificate is verified against (required: an IP address alone names no certificate)."""
    rest = value[len("tls://") :]
    addr_text, sep, name = rest.partition("#")
    if not sep or not name:
        raise _fail(path, "a tls:// upstream needs '#server.name' (the name its certificate is checked against)", value)
    if len(name) > 253 or not _TLS_NAME.fullmatch(name):
        raise _fail(path, "the name after '#' must be a domain name", value)
    return parse_hostport(addr_text, path, default_port=TLS_PORT), name.rstrip(".").lower()


def _upstream(value: Any, path: str) -> str:
    """'ip', 'ip:port', '[v6]:port', 'tls://IP[:port]#server.name' or the path of a resolv.conf file."""
    if not isinstance(value, str) or not value:
        raise _fail(path, "must be an address or a resolv.conf path", value)
    if value.startswith("/") or value.startswith("."):
        return value
    if value.startswith("tls://"):
        parse_tls_upstream(value, path)
        return value
    parse_hostport(value, path, default_port=53)
    return value


def upstream_address(value: str) -> ListenAddress | None:
    """The IP and port an (already validated) upstream spec sends to; None for a resolv.conf path."""
    if value.startswith(("/", ".")):
        return None
    if value.startswith("tls://"):
        return parse_tls_upstream(value, "upstream")[0]
    return parse_hostport(value, "upstream", default_port=53)


def _same_address(a: ListenAddress, b: ListenAddress) -> bool:
    try:
        return a.port == b.port and ipaddress.ip_address(a.host.split("%")[0]) == ipaddress.ip_address(
            b.host.split("%")[0]
        )
    except ValueError:
        return False


def check_forward_loop(cfg: Config) -> None:
    """An upstream that is one of our own listen addresses (same IP and port) would send every forwarded query
    back to us, forever (a forwarding loop, issue 6): a config error. resolv.conf files are filtered of our own
    addresses when read (dnsd.forward.resolvconf)."""
    if cfg.forward is None:
        return
    groups: list[tuple[str, tuple[str, ...]]] = [("forward.upstreams", cfg.forward.upstreams)]
    groups += [(f"forward.domains.{d}", ups) for d, ups in cfg.forward.domains]
    for path, ups in groups:
        for i, spec in enumerate(ups):
            addr = upstream_address(spec)
            if addr is None:
                continue
            for own in cfg.listen:
                if _same_address(addr, own):
                    raise ConfigError(f"{path}[{i}]: {spec!r} is dnsd's own listen address (a forwarding loop)")


# ---------------------------------------------------------------- sections


def _source(value: Any, path: str) -> Source:
    data = _section(value, path, {"files", "kubernetes", "etcd"})
    present = [k for k in ("files", "kubernetes", "etcd") if data.get(k) is not None]
    if len(present) != 1:
        raise _fail(path, "must name exactly one of files, kubernetes, etcd", dict(data))
    kind = present[0]
    sub = f"{path}.{kind}"
    if kind == "files":
        return FilesSource(Path(_str(data["files"], sub)))
    if kind == "kubernetes":
        k = _section(data["kubernetes"], sub, {"kubeconfig", "in_cluster", "context"})
        kubeconfig = _get(k, "kubeconfig", sub, _str, None)
        in_cluster = _get(k, "in_cluster", sub, _bool, False)
        if (kubeconfig is None) == (not in_cluster):
            raise _fail(sub, "needs exactly one of kubeconfig or in_cluster: true", dict(k))
        context = _get(k, "context", sub, _str, None)
        if context is not None and in_cluster:
            raise _fail(f"{sub}.context", "is for a kubeconfig, not in_cluster", context)
        return KubernetesSource(kubeconfig=kubeconfig, in_cluster=in_cluster, context=context)
    e = _section(data["etcd"], sub, {"endpoints", "prefix"})
    d = EtcdSource()
    endpoints = _get(e, "endpoints", sub, _list(_str), d.endpoints)
    if not endpoints:
        raise _fail(f"{sub}.endpoints", "must list at least one endpoint", [])
    return EtcdSource(endpoints=endpoints, prefix=_get(e, "prefix", sub, _str, d.prefix))


def _cluster(value: Any, path: str) -> ClusterConfig:
    keys = {
        "domain",
        "reverse_zones",
        "ttl",
        "pods",
        "endpoint_pod_names",
        "ignore_empty_service",
        "namespaces",
        "fallthrough",
        "source",
        "snapshot",
    }
    data = _section(value, path, keys)
    d = ClusterConfig()
    domain = _get(data, "domain", path, _domain, d.domain)
    if len(domain) > MAX_CLUSTER_DOMAIN:
        # The longest name the cluster link writes is `<63>.<63>.<63>.svc.<domain>.` (an endpoint of a service in a
        # namespace, each a 63-octet label): 199 octets plus the domain must stay within 255 (RFC 1035 2.3.4).
        raise _fail(f"{path}.domain", f"must be at most {MAX_CLUSTER_DOMAIN} characters", domain)
    reverse = _get(data, "reverse_zones", path, _list(_domain), d.reverse_zones)
    for i, zone in enumerate(reverse):
        if not (zone.endswith("in-addr.arpa") or zone.endswith("ip6.arpa")):
            raise _fail(f"{path}.reverse_zones[{i}]", "must be in-addr.arpa, ip6.arpa or a zone below them", zone)
    # "." is every zone, as CoreDNS's bare `fallthrough`; it is kept as "" (the root, no labels).
    fallthrough = _get(data, "fallthrough", path, _list(_zone_or_root), d.fallthrough)
    return ClusterConfig(
        domain=domain,
        reverse_zones=reverse,
        ttl=_get(data, "ttl", path, _int(0, 3600), d.ttl),
        pods=_get(data, "pods", path, _choice("disabled", "insecure", "verified"), d.pods),
        endpoint_pod_names=_get(data, "endpoint_pod_names", path, _bool, d.endpoint_pod_names),
        ignore_empty_service=_get(data, "ignore_empty_service", path, _bool, d.ignore_empty_service),
        namespaces=_get(data, "namespaces", path, _list(_k8s_name), d.namespaces),
        fallthrough=fallthrough,
        source=_get(data, "source", path, _source, d.source),
        snapshot=_get(data, "snapshot", path, _path, d.snapshot),
    )


# Timeout bounds in seconds. Below 50 ms a timeout is shorter than many round trips and every query would time
# out; the upper bounds keep a typo (600 for 0.6) from parking queries or connections for hours. RFC 1536
# section 1 and RFC 8767 section 5 put useful forwarding timeouts in the 1-10 s range; RFC 7766 section 6.2.3
# asks for TCP idle timeouts of "at least a few seconds" (the lower bound here stays low for tests).
FORWARD_TIMEOUT = (0.05, 60.0)
TCP_IDLE_TIMEOUT = (0.05, 3600.0)
TCP_MESSAGE_TIMEOUT = (0.05, 600.0)


def _forward(value: Any, path: str) -> ForwardConfig:
    data = _section(value, path, {"upstreams", "policy", "timeout", "domains", "tls_ca"})
    d = ForwardConfig()
    domains_raw = data.get("domains")
    domains: list[tuple[str, tuple[str, ...]]] = []
    if domains_raw is not None:
        if not isinstance(domains_raw, Mapping):
            raise _fail(f"{path}.domains", "must be a mapping of domain to upstream list", domains_raw)
        for name, ups in domains_raw.items():
            sub = f"{path}.domains.{name}"
            domains.append((_domain(name, sub), _list(_upstream)(ups, sub)))
    return ForwardConfig(
        upstreams=_get(data, "upstreams", path, _list(_upstream), d.upstreams),
        policy=_get(data, "policy", path, _choice("sequential", "random", "round_robin"), d.policy),
        timeout=_get(data, "timeout", path, _float(*FORWARD_TIMEOUT), d.timeout),
        domains=tuple(domains),
        tls_ca=_get(data, "tls_ca", path, _path, d.tls_ca),
    )


def _cache(value: Any, path: str) -> CacheConfig:
    data = _section(value, path, {"size", "success_ttl_max", "denial_ttl_max", "prefetch", "serve_stale"})
    d = CacheConfig()
    return CacheConfig(
        size=_get(data, "size", path, _int(0, 10_000_000), d.size),
        success_ttl_max=_get(data, "success_ttl_max", path, _int(0, 7 * 86400), d.success_ttl_max),
        denial_ttl_max=_get(data, "denial_ttl_max", path, _int(0, 86400), d.denial_ttl_max),
        prefetch=_get(data, "prefetch", path, _bool, d.prefetch),
        serve_stale=_get(data, "serve_stale", path, _int(0, 7 * 86400), d.serve_stale),
    )


def _log(value: Any, path: str) -> LogConfig:
    data = _section(value, path, {"level", "queries", "format", "sample"})
    d = LogConfig()
    return LogConfig(
        level=_get(data, "level", path, _choice(*LOG_LEVELS), d.level),
        queries=_get(data, "queries", path, _bool, d.queries),
        format=_get(data, "format", path, _choice(*LOG_FORMATS), d.format),
        sample=_get(data, "sample", path, _float(0.0, 1.0), d.sample),
    )


# Drain bounds in seconds: a Kubernetes pod's terminationGracePeriodSeconds defaults to 30, and both periods
# must fit in it; 0 turns a period off (the tests use short ones).
DRAIN_PERIOD = (0.0, 300.0)


def _drain(value: Any, path: str) -> DrainConfig:
    data = _section(value, path, {"lameduck", "grace"})
    d = DrainConfig()
    return DrainConfig(
        lameduck=_get(data, "lameduck", path, _float(*DRAIN_PERIOD), d.lameduck),
        grace=_get(data, "grace", path, _float(*DRAIN_PERIOD), d.grace),
    )


def _tcp(value: Any, path: str) -> TcpConfig:
    data = _section(value, path, {"idle_timeout", "message_timeout", "max_connections", "max_pipeline"})
    d = TcpConfig()
    return TcpConfig(
        idle_timeout=_get(data, "idle_timeout", path, _float(*TCP_IDLE_TIMEOUT), d.idle_timeout),
        message_timeout=_get(data, "message_timeout", path, _float(*TCP_MESSAGE_TIMEOUT), d.message_timeout),
        max_connections=_get(data, "max_connections", path, _int(1, 100_000), d.max_connections),
        max_pipeline=_get(data, "max_pipeline", path, _int(1, 10_000), d.max_pipeline),
    )


def _recursion(value: Any, path: str) -> str:
    # YAML 1.1 reads a bare `off` as false: accept it as the "off" it was meant to be.
    if value is False:
        return "off"
    return _choice("forward", "iterative", "off")(value, path)


def _path(value: Any, path: str) -> Path:
    return Path(_str(value, path))


TOP_KEYS = {
    "listen",
    "workers",
    "http",
    "cluster",
    "zones",
    "forward",
    "recursion",
    "root_hints",
    "cache",
    "allow_recursion",
    "log",
    "tcp",
    "drain",
}


class ConfigErrors(ConfigError):
    """Every reason a config was refused, one line each (a reload logs them all, check-config prints them all)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("\n".join(reasons))
        self.reasons = reasons


def parse_config(data: Any) -> Config:
    """Validate a loaded YAML document and build the Config; raise ConfigError naming the key path. Every
    top-level key is checked even after one failed, so that the error names every bad key (one line each;
    within a key, the first problem)."""
    if data is not None and not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else "a string" if isinstance(data, str) else "a single value"
        raise ConfigError(f"the top level must be a mapping of keys (such as `listen:`), not {kind}")
    top = _section(data, "", TOP_KEYS)
    d = Config()
    errors: list[str] = []

    def take(convert: Callable[[], T], default: T) -> T:
        try:
            return convert()
        except ConfigError as exc:
            errors.append(str(exc))
            return default

    http: ListenAddress | None = d.http
    if "http" in top:
        raw_http = top["http"]
        http = take(lambda: None if raw_http in (None, "") else parse_hostport(raw_http, "http"), d.http)
    zones: Path | None = d.zones
    if "zones" in top:
        raw_zones = top["zones"]
        zones = take(lambda: None if raw_zones in (None, "") else _path(raw_zones, "zones"), d.zones)
    forward: ForwardConfig | None = d.forward
    if "forward" in top:
        raw_forward = top["forward"]
        forward = take(lambda: None if raw_forward is None else _forward(raw_forward, "forward"), d.forward)
    cfg = Config(
        listen=take(lambda: _get(top, "listen", "", _listen, d.listen), d.listen),
        workers=take(lambda: _get(top, "workers", "", _int(1, 64), d.workers), d.workers),
        http=http,
        cluster=take(lambda: _get(top, "cluster", "", _cluster, d.cluster), d.cluster),
        zones=zones,
        forward=forward,
        recursion=take(lambda: _get(top, "recursion", "", _recursion, d.recursion), d.recursion),
        root_hints=take(lambda: _get(top, "root_hints", "", _path, d.root_hints), d.root_hints),
        cache=take(lambda: _get(top, "cache", "", _cache, d.cache), d.cache),
        allow_recursion=take(
            lambda: _get(top, "allow_recursion", "", _list(_cidr), d.allow_recursion), d.allow_recursion
        ),
        log=take(lambda: _get(top, "log", "", _log, d.log), d.log),
        tcp=take(lambda: _get(top, "tcp", "", _tcp, d.tcp), d.tcp),
        drain=take(lambda: _get(top, "drain", "", _drain, d.drain), d.drain),
    )
    if not errors:
        take(lambda: check_forward_loop(cfg), None)
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigErrors(errors)
    return cfg


# Bounds on what a config file may be: a dnsd config is a few kB of YAML, four or five levels deep. The caps
# turn a wrong path (/dev/zero, a binary, a log file) and a YAML alias bomb ("billion laughs": aliases that
# expand to exponentially many nodes) into one-line errors instead of a MemoryError or a traceback.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32  # nesting of mappings and lists; PyYAML's composer recurses, so this also keeps it off the stack limit
MAX_NODES = 100_000  # YAML nodes with every alias expanded: what validation would walk
MAX_SCALAR = 4096  # characters in one value (PATH_MAX); also below Python's 4300-digit int conversion limit

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while it composes the node tree."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _node_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _check_nodes(root: yaml.Node) -> None:
    """Walk the composed tree before anything is built from it: duplicate mapping keys (YAML 1.2 section 3.2.1.1
    says keys are unique; PyYAML silently keeps the last one), over-long values and alias expansion beyond
    MAX_NODES. Iterative, and an alias is walked again each time it is used, so a self-referencing alias or a
    bomb hits the node cap rather than the stack. Errors read `LINE: key.path: what`."""
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    count = 0
    while stack:
        node, path, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(
                f"{_node_line(node)}: {path or 'top level'}: more than {MAX_NODES} YAML values once aliases "
                "are expanded (a YAML alias bomb?)"
            )
        if depth > MAX_DEPTH:  # only reachable through aliases: the composer already bounds the text's nesting
            raise ConfigError(f"{_node_line(node)}: {path}: nested more than {MAX_DEPTH} levels deep through aliases")
        if isinstance(node, yaml.ScalarNode):
            if len(str(node.value)) > MAX_SCALAR:
                raise ConfigError(
                    f"{_node_line(node)}: {path or 'top level'}: value longer than {MAX_SCALAR} characters"
                )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:  # `<<: *defaults`: merged keys may be overridden, by design
                    stack.append((value, path, depth + 1))
                    continue
                sub = path or ""
                if isinstance(key, yaml.ScalarNode):
                    name = _short_text(str(key.value))
                    sub = f"{path}.{name}" if path else name
                    ident = (str(key.tag), str(key.value))
                    if ident in first:
                        raise ConfigError(
                            f"{_node_line(key)}: {sub}: duplicate key (first on line {first[ident]}); "
                            "YAML would silently keep only the last"
                        )
                    first[ident] = _node_line(key)
                stack.append((key, sub, depth + 1))
                stack.append((value, sub, depth + 1))


def _read_text(p: Path) -> str:
    """At most MAX_CONFIG_BYTES of strict UTF-8 (YAML 1.2 section 5.2; a config is never UTF-16)."""
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES // (1 << 20)} MiB; not a dnsd config")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); not a dnsd config"
        ) from None


def _load_yaml(p: Path, text: str) -> Any:
    loader: _ConfigLoader | None = None
    try:
        try:
            loader = _ConfigLoader(text)  # the reader checks every character here
            node = loader.get_single_node()
            if node is None:
                return None
            try:
                _check_nodes(node)
            except ConfigError as exc:
                raise ConfigError(f"{p}:{exc}") from None
            return loader.construct_document(node)
        except yaml.reader.ReaderError as exc:
            # a character YAML does not allow (NUL, most C0 controls): a binary file, most likely
            line = text[: exc.position].count("\n") + 1
            raise ConfigError(
                f"{p}:{line}: not valid YAML: control character #x{exc.character:04x} (a binary file?)"
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
            problem = str(getattr(exc, "problem", None) or exc)
            context = getattr(exc, "context", None)
            if context:
                problem += f" ({context})"
            raise ConfigError(f"{where}: not valid YAML: {' '.join(problem.split())}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; every error is one line naming the file (and the line where YAML
    knows it): unreadable, too big, not UTF-8, not YAML, a duplicate key, a bad key or value."""
    p = Path(path)
    data = _load_yaml(p, _read_text(p))
    try:
        return parse_config(data if data is not None else {})
    except ConfigErrors as exc:
        raise ConfigErrors([f"{p}: {r}" for r in exc.reasons]) from None
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def with_overrides(
    cfg: Config,
    *,
    listen: list[str] | None = None,
    manifests: str | None = None,
    domain: str | None = None,
    http: str | None = None,
    upstream: list[str] | None = None,
    log_level: str | None = None,
    workers: int | None = None,
) -> Config:
    """Apply command-line flags over a loaded config (validated like the file's keys)."""
    if workers is not None:
        cfg = replace(cfg, workers=_int(1, 64)(workers, "--workers"))
    if listen:
        cfg = replace(cfg, listen=_listen(listen, "--listen"))
    cluster = cfg.cluster
    if manifests:
        cluster = replace(cluster, source=FilesSource(Path(manifests)))
    if domain:
        cluster = replace(cluster, domain=_domain(domain, "--domain"))
    cfg = replace(cfg, cluster=cluster)
    if http is not None:
        cfg = replace(cfg, http=None if http in ("", "off", "none") else parse_hostport(http, "--http"))
    if upstream:
        fwd = cfg.forward or ForwardConfig()
        cfg = replace(cfg, forward=replace(fwd, upstreams=_list(_upstream)(upstream, "--upstream")))
        if cfg.recursion == "off":
            cfg = replace(cfg, recursion="forward")  # --upstream says "forward to this": it turns forwarding on
    if log_level:
        cfg = replace(cfg, log=replace(cfg.log, level=_choice(*LOG_LEVELS)(log_level, "--log-level")))
    check_forward_loop(cfg)
    return cfg


@dataclass(frozen=True, slots=True)
class Overrides:
    """The command-line flags over the config file: applied at start and again at every reload, so a reload
    never undoes a flag."""

    listen: tuple[str, ...] = ()
    manifests: str | None = None
    domain: str | None = None
    http: str | None = None
    upstream: tuple[str, ...] = ()
    log_level: str | None = None
    workers: int | None = None

    def apply(self, cfg: Config) -> Config:
        return with_overrides(
            cfg,
            listen=list(self.listen) or None,
            manifests=self.manifests,
            domain=self.domain,
            http=self.http,
            upstream=list(self.upstream) or None,
            log_level=self.log_level,
            workers=self.workers,
        )


def check_buildable(cfg: Config) -> None:
    """What `run` refuses before it listens, and `dnsd check-config` reports: a source backend that is not
    built yet, or a files source whose path exists but is not a directory. A missing directory is fine: it
    is watched until it appears."""
    source = cfg.cluster.source
    if not isinstance(source, FilesSource):
        kind = type(source).__name__.removesuffix("Source").lower()
        if importlib.util.find_spec(f"dnsd.sources.{kind}") is None:
            raise ConfigError(f"cluster.source: the {kind} backend is not built yet; use cluster.source.files")
        return
    if source.path.exists() and not source.path.is_dir():
        what = "is a file, not a directory" if source.path.is_file() else "is not a directory"
        raise ConfigError(f"cluster.source.files: {str(source.path)!r} {what} (of Kubernetes manifests)")


def read_config(path: Path | None, overrides: Overrides = Overrides()) -> Config:
    """The one validation path: `dnsd check-config FILE`, the start, and every reload (SIGHUP or a change to
    the file) read a config through here. path None: the built-in defaults. Raises ConfigError (ConfigErrors
    with every reason when there are several), each line naming the file."""
    cfg = overrides.apply(load_config(path) if path is not None else parse_config({}))
    try:
        check_buildable(cfg)
    except ConfigError as exc:
        from_file = path is not None and not overrides.manifests  # --manifests, not the file, named the source
        raise ConfigError(f"{path}: {exc}" if from_file else str(exc)) from None
    return cfg

"""Slim frozen objects holding only what DNS needs from Kubernetes, and converters from manifest dicts.

Which objects are ours: core `v1` Namespace, Service, Endpoints and Pod, and `discovery.k8s.io/v1` EndpointSlice.
An object whose `apiVersion` is missing is taken as that kind (hand-written manifests often omit it); any other
group or version (`serving.knative.dev/v1` Service, `discovery.k8s.io/v1beta1` EndpointSlice, CRDs, every other
kind) is not ours and is skipped, as CoreDNS, which watches only these groups, never sees it. An EndpointSlice
without the `kubernetes.io/service-name` label (multi-cluster and hand-managed slices) belongs to no Service and is
skipped too (CoreDNS indexes slices by that label).

An object of ours with invalid content raises ManifestError (that object's error, never the file's). Every name
that goes on the wire is checked here, when the object is read: namespace and service names (RFC 1123 labels),
ExternalName targets (RFC 1035 2.3.4 lengths, RFC 1123 host name characters), endpoint hostnames (RFC 1123
labels; an invalid one is dropped with a warning and the endpoint keeps its dashed-IP name).

Limits: the MAX_* constants below. Where the Kubernetes API validates a maximum, the API's own value is used (an
API server never holds more); elsewhere a sane cap. An object over a limit is that object's error.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnsd.errors import ManifestError

# RFC 1123 label (namespace and service names) and DNS-1123 subdomain (pod, slice names).
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# One label of a host name, any length (the length is checked on its own, for a better message).
_HOST_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

KINDS = ("Namespace", "Service", "EndpointSlice", "Endpoints", "Pod")
# The apiVersion each kind of ours must have (or none at all).
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "Endpoints": "v1",
    "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
}
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# ---------------------------------------------------------------- limits
# Kubernetes API validation (pkg/apis/discovery/validation): maxEndpoints, maxPorts, maxAddresses per slice.
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ENDPOINT_ADDRESSES = 100
# A Service holds at most two cluster IPs, one per family (API validation of spec.clusterIPs, dual-stack).
MAX_CLUSTER_IPS = 2
# The API does not cap a Service's ports; 1024 is far above any real service and bounds the SRV work per name.
MAX_SERVICE_PORTS = 1024
# v1 Endpoints have no API caps either; the endpoints controller truncates at 1000 addresses
# (endpoints.kubernetes.io/over-capacity). These caps leave room for hand-managed objects and bound the work.
MAX_V1_SUBSETS = 1000
MAX_V1_ADDRESSES = 10000  # ready and not-ready addresses over all subsets
MAX_V1_PORTS = 1024  # per subset, as MAX_SERVICE_PORTS
# RFC 1035 2.3.4: a label is at most 63 octets, a name at most 255 octets on the wire, i.e. 253 characters of
# text without the trailing dot.
MAX_LABEL = 63
MAX_NAME_TEXT = 253


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    # object_key's result, kept once worked out: every table keyed by object (the store's, a source's) then
    # shares one tuple instead of holding its own (64 bytes an object). Not part of the object's value.
    _key: ObjectKey | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str  # lower case: tcp, udp, sctp


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ips: tuple[str, ...]  # canonical text; empty for headless and ExternalName
    headless: bool
    ports: tuple[ServicePort, ...]
    external_name: str  # lower case, no trailing dot; "" unless ExternalName
    publish_not_ready: bool
    # object_key's result, kept once worked out: every table keyed by object (the store's, a source's) then
    # shares one tuple instead of holding its own (64 bytes an object). Not part of the object's value.
    _key: ObjectKey | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Endpoint:
    # The addresses as written in the slice (CoreDNS uses the text verbatim for names): read them as `addresses`.
    # Nearly every endpoint has one, held as itself (a tuple for it would be 48 bytes an endpoint).
    _addresses: str | tuple[str, ...]
    ready: bool  # conditions.ready, with null counted as ready
    hostname: str  # a valid RFC 1123 label, lower case, or ""
    pod_name: str  # targetRef.name when targetRef.kind is Pod (or unset) and it is a valid label, else ""
    node_name: str

    def __post_init__(self) -> None:
        if isinstance(self._addresses, tuple) and len(self._addresses) == 1:
            object.__setattr__(self, "_addresses", self._addresses[0])  # one form for one address: equality

    @property
    def addresses(self) -> tuple[str, ...]:
        held = self._addresses
        return (held,) if isinstance(held, str) else held


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int  # -1 when the slice lists no ports (CoreDNS's sentinel)
    protocol: str


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """A discovery.k8s.io/v1 EndpointSlice, or a v1 Endpoints object converted to the same shape.

    A v1 Endpoints object carries its ports per subset, so its conversion holds one slice per subset in
    `subsets` (each with that subset's endpoints and ports: the store serves those); its own `endpoints` are the
    union of them and its `ports` those of the first subset."""

    namespace: str
    name: str
    service: str
    address_type: str  # IPv4, IPv6, FQDN ("mixed" for v1 Endpoints)
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    from_endpoints: bool = False  # converted from a v1 Endpoints object
    subsets: tuple[EndpointSlice, ...] = ()  # v1 Endpoints only: one slice per subset
    # object_key's result, kept once worked out: every table keyed by object (the store's, a source's) then
    # shares one tuple instead of holding its own (64 bytes an object). Not part of the object's value.
    _key: ObjectKey | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...]  # status.podIPs (podIP first)
    phase: str
    deleting: bool
    # object_key's result, kept once worked out: every table keyed by object (the store's, a source's) then
    # shares one tuple instead of holding its own (64 bytes an object). Not part of the object's value.
    _key: ObjectKey | None = field(default=None, init=False, repr=False, compare=False)


KubeObject = Namespace | Service | EndpointSlice | Pod
ObjectKey = tuple[str, str, str]  # (kind, namespace or "" for cluster-scoped objects, name)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A well-formed object dnsd does not use, with the reason (logged at debug level)."""

    reason: str


def object_key(obj: KubeObject) -> ObjectKey:
    """(kind, namespace, name): the identity two files can both define. The same tuple each time for an object
    (kept in its `_key`; two threads racing here both store an equal tuple)."""
    key = obj._key
    if key is None:
        if isinstance(obj, Namespace):
            key = ("Namespace", "", obj.name)
        elif isinstance(obj, EndpointSlice):
            key = ("Endpoints" if obj.from_endpoints else "EndpointSlice", obj.namespace, obj.name)
        else:
            key = (type(obj).__name__, obj.namespace, obj.name)
        object.__setattr__(obj, "_key", key)
    return key


def describe(key: ObjectKey) -> str:
    """How messages name an object: "Service shop/api", "Namespace shop" (cluster-scoped: no namespace)."""
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def our_kind(doc: Mapping[str, Any]) -> str | None:
    """The kind when the object is one of ours (kind and API group checked), else None."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in API_VERSIONS:
        return None
    api = doc.get("apiVersion")
    return kind if api is None or api == API_VERSIONS[kind] else None


def identity(doc: Mapping[str, Any]) -> ObjectKey | None:
    """The key of an object of ours whose name can be read, even when the rest of it is invalid; else None."""
    kind = our_kind(doc)
    meta = doc.get("metadata")
    if kind is None or not isinstance(meta, Mapping):
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    if kind == "Namespace":
        return (kind, "", name)
    ns = meta.get("namespace")
    if ns is None:
        ns = "default"
    return (kind, ns, name) if isinstance(ns, str) else None


# ---------------------------------------------------------------- sharing

# At 100,000 services most fields repeat a few values: namespaces, types, node names, protocols, whole port lists.
# The converters hand out one object per value (sys.intern for those strings, `shared` for port tuples), so the
# store holds each once; pickling (the parse child, the snapshot) keeps the sharing within one message.
SHARED_MAX = 4096  # distinct values `shared` remembers; when full it starts over (what it handed out stays shared)
_shared: dict[Hashable, Hashable] = {}
H = TypeVar("H", bound=Hashable)


def shared(value: H) -> H:
    """The first object seen equal to value (equal values of one class: a frozen model object compares its
    class too), so equal port lists are one tuple. Safe in threads: a race costs a duplicate, never a mix-up."""
    got = _shared.get(value)
    if got is None:
        if len(_shared) >= SHARED_MAX:
            _shared.clear()
        _shared[value] = got = value
    return got  # type: ignore[return-value]


# ---------------------------------------------------------------- converters

Notes = list[str]  # warnings about an object that is still used (an endpoint hostname dropped, ...)


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"{what} must be a mapping")
    return value


def _list(value: Any, what: str, limit: int | None = None) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{what} must be a list")
    if limit is not None and len(value) > limit:
        raise ManifestError(f"{what} has {len(value)} entries; at most {limit} are accepted")
    return value


def _name(meta: Mapping[str, Any], pattern: re.Pattern[str], what: str) -> str:
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{what}: metadata.name is missing")
    if not pattern.match(name):
        raise ManifestError(f"{what}: metadata.name {name!r} is not a valid DNS name")
    return name


def _namespace(meta: Mapping[str, Any], what: str) -> str:
    ns = meta.get("namespace", "default")
    if ns is None:
        ns = "default"
    if not isinstance(ns, str) or not _LABEL.match(ns):
        raise ManifestError(f"{what}: metadata.namespace {ns!r} is not a valid namespace name")
    return sys.intern(ns)


# A dotted-quad IPv4 address exactly as ipaddress accepts one (four ASCII decimal octets up to 255, no leading
# zeros; its text is then canonical): checked without building an IPv4Address, which took a quarter of the time
# of reading a manifest directory.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ip(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise ManifestError(f"{what}: {text!r} is not an IP address")
    if _IPV4.fullmatch(text):
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ManifestError(f"{what}: {text!r} is not an IP address") from None
    return text


def _port_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ManifestError(f"{what}: port {value!r} is not a number between 1 and 65535")
    return value


def _protocol(value: Any, what: str) -> str:
    proto = "TCP" if value is None else value
    if not isinstance(proto, str) or proto.upper() not in _PROTOCOLS:
        raise ManifestError(f"{what}: protocol {value!r} is not TCP, UDP or SCTP")
    return _PROTOCOLS[proto.upper()]


_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def dns_name(value: Any, what: str) -> str:
    """An absolute host name as served in a CNAME: lower case, without its one optional trailing dot.

    RFC 1035 2.3.4: labels of 1 to 63 octets, at most 255 octets on the wire (253 characters of text);
    RFC 1123 2.1 host name characters (letters, digits, inner hyphens), which is what Kubernetes validates
    (spec.externalName is a DNS-1123 subdomain). An IP-like name passes (CoreDNS ignores it at answer time)."""
    if not isinstance(value, str) or not value.strip("."):
        raise ManifestError(f"{what} is missing")
    name = value.lower().removesuffix(".")
    if len(name) > MAX_NAME_TEXT:
        raise ManifestError(f"{what} is {len(name)} characters long; a DNS name holds at most {MAX_NAME_TEXT}")
    for label in name.split("."):
        if not label:
            raise ManifestError(f"{what} {value!r} has an empty label")
        if len(label) > MAX_LABEL:
            raise ManifestError(f"{what} {value!r} has a label of {len(label)} characters; at most {MAX_LABEL}")
        if not _HOST_LABEL.match(label):
            raise ManifestError(
                f"{what} {value!r}: label {label!r} holds characters other than letters, digits and inner hyphens"
            )
    return name


def namespace_from(doc: Mapping[str, Any], notes: Notes) -> Namespace:
    meta = _map(doc.get("metadata"), "metadata")
    return Namespace(sys.intern(_name(meta, _LABEL, "Namespace")))


def _identity(doc: Mapping[str, Any], kind: str, pattern: re.Pattern[str]) -> tuple[Mapping[str, Any], str, str, str]:
    """metadata, namespace, name, and how errors name the object ("Service shop/api")."""
    meta = _map(doc.get("metadata"), "metadata")
    name = _name(meta, pattern, kind)
    ns = _namespace(meta, f"{kind} {name}")
    return meta, ns, name, describe((kind, ns, name))


def service_from(doc: Mapping[str, Any], notes: Notes) -> Service:
    _, ns, name, what = _identity(doc, "Service", _LABEL)
    spec = _map(doc.get("spec"), f"{what}: spec")
    stype = spec.get("type") or "ClusterIP"
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise ManifestError(f"{what}: spec.type {stype!r} is not a Service type")
    external = ""
    headless = False
    ips: list[str] = []
    if stype == "ExternalName":
        external = dns_name(spec.get("externalName"), f"{what}: spec.externalName")
    else:
        raw_ips = _list(spec.get("clusterIPs"), f"{what}: spec.clusterIPs", MAX_CLUSTER_IPS)
        if not raw_ips and spec.get("clusterIP") not in (None, ""):
            raw_ips = [spec.get("clusterIP")]
        # No IP at all is an apply-style manifest, before the API server allocates one: the service exists
        # (its endpoint names resolve) but has no address records of its own.
        if raw_ips and raw_ips[0] == "None":
            headless = True
        else:
            for i, ip in enumerate(raw_ips):
                text = _ip(ip, f"{what}: spec.clusterIPs[{i}]")
                ips.append(text if _IPV4.fullmatch(text) else str(ipaddress.ip_address(text)))
    ports: list[ServicePort] = []
    for i, p in enumerate(_list(spec.get("ports"), f"{what}: spec.ports", MAX_SERVICE_PORTS)):
        pm = _map(p, f"{what}: spec.ports[{i}]")
        pname = pm.get("name") or ""
        if not isinstance(pname, str):
            raise ManifestError(f"{what}: spec.ports[{i}].name must be a string")
        ports.append(
            ServicePort(
                sys.intern(pname.lower()),
                _port_number(pm.get("port"), f"{what}: spec.ports[{i}]"),
                _protocol(pm.get("protocol"), f"{what}: spec.ports[{i}]"),
            )
        )
    publish = spec.get("publishNotReadyAddresses") is True
    # shared(name): the Service's slices, which usually follow it, name it with the same string object.
    return Service(ns, shared(name), sys.intern(stype), tuple(ips), headless, shared(tuple(ports)), external, publish)


def _hostname(value: Any, what: str, notes: Notes) -> str:
    """An endpoint hostname becomes a label of its DNS name (spec 2.4.1): a valid RFC 1123 label or nothing.

    The API validates it as a DNS-1123 label, so an invalid one comes from a hand-written file; it is dropped
    with a warning and the endpoint keeps its dashed-IP name, never a label with an escaped dot in it."""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and _LABEL.match(value.lower()):
        return value.lower()
    shown = value if isinstance(value, str) and len(value) <= 100 else f"{str(value)[:100]}..."
    notes.append(f"{what}: hostname {shown!r} is not a DNS label (RFC 1123, 1-63 characters); ignored")
    return ""


def _pod_name(ref: Mapping[str, Any]) -> str:
    """targetRef.name of a Pod; only a valid label can name the endpoint (endpoint_pod_names), so others are ""."""
    name = ref.get("name")
    if ref.get("kind") not in (None, "Pod") or not isinstance(name, str):
        return ""
    # Pod names are DNS-1123 subdomains and may hold dots: such a name cannot be one label (CoreDNS would turn
    # it into several); the endpoint is then named after its address, as for a pod name of 64+ characters.
    return name if _LABEL.match(name.lower()) else ""


def _endpoint(e: Any, what: str, family: str, notes: Notes) -> Endpoint:
    em = _map(e, what)
    raw = _list(em.get("addresses"), f"{what}.addresses", MAX_ENDPOINT_ADDRESSES)
    addrs = tuple(_ip(a, f"{what}.addresses") for a in raw)
    if family in ("IPv4", "IPv6"):
        for a in addrs:
            if (_IPV4.fullmatch(a) is not None or ipaddress.ip_address(a).version == 4) != (family == "IPv4"):
                raise ManifestError(f"{what}: address {a!r} is not {family}")
    cond = _map(em.get("conditions"), f"{what}.conditions")
    ready = cond.get("ready")
    hostname = _hostname(em.get("hostname"), what, notes)
    pod = _pod_name(_map(em.get("targetRef"), f"{what}.targetRef"))
    node = em.get("nodeName") or ""
    # ready: null means "unknown", which consumers treat as ready (discovery.k8s.io/v1 API doc).
    return Endpoint(addrs, ready is not False, hostname, pod, sys.intern(str(node)))


def endpointslice_from(doc: Mapping[str, Any], notes: Notes) -> EndpointSlice | Skipped:
    meta, ns, name, what = _identity(doc, "EndpointSlice", _SUBDOMAIN)
    labels = _map(meta.get("labels"), f"{what}: metadata.labels")
    service = labels.get(SERVICE_NAME_LABEL)
    if service is None or service == "":
        # Multi-cluster (MCS), mirrored-elsewhere or hand-managed slices: no Service of ours owns them.
        return Skipped(f"{what} has no {SERVICE_NAME_LABEL} label")
    if not isinstance(service, str) or not _LABEL.match(service):
        raise ManifestError(f"{what}: label {SERVICE_NAME_LABEL} {service!r} is not a valid service name")
    family = doc.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        raise ManifestError(f"{what}: addressType {family!r} is not IPv4, IPv6 or FQDN")
    eps: list[Endpoint] = []
    raw_eps = _list(doc.get("endpoints"), f"{what}: endpoints", MAX_SLICE_ENDPOINTS)
    if family != "FQDN":  # FQDN slices carry no addresses DNS can serve
        for i, e in enumerate(raw_eps):
            eps.append(_endpoint(e, f"{what}: endpoints[{i}]", family, notes))
    ports = _ports(doc.get("ports"), what, MAX_SLICE_PORTS)
    return EndpointSlice(ns, name, shared(service), sys.intern(family), tuple(eps), ports)


def _ports(value: Any, what: str, limit: int) -> tuple[EndpointPort, ...]:
    ports: list[EndpointPort] = []
    for i, p in enumerate(_list(value, f"{what}: ports", limit)):
        pm = _map(p, f"{what}: ports[{i}]")
        pname = pm.get("name") or ""
        if not isinstance(pname, str):
            raise ManifestError(f"{what}: ports[{i}].name must be a string")
        number = pm.get("port")
        ports.append(
            EndpointPort(
                sys.intern(pname.lower()),
                -1 if number is None else _port_number(number, f"{what}: ports[{i}]"),
                _protocol(pm.get("protocol"), f"{what}: ports[{i}]"),
            )
        )
    # A slice without ports gets CoreDNS's sentinel port -1: A/AAAA yes, SRV never.
    return shared(tuple(ports)) if ports else NO_PORTS


NO_PORTS = (EndpointPort("", -1, "tcp"),)  # CoreDNS's sentinel: the slice lists no ports


def endpoints_from(doc: Mapping[str, Any], notes: Notes) -> EndpointSlice:
    """A v1 Endpoints object: one slice per subset, each with its own ports (an address is served with the
    ports of the subset it is listed in); `addresses` are ready, `notReadyAddresses` not."""
    _, ns, name, what = _identity(doc, "Endpoints", _LABEL)
    parts: list[EndpointSlice] = []
    total = 0
    for si, subset in enumerate(_list(doc.get("subsets"), f"{what}: subsets", MAX_V1_SUBSETS)):
        where = f"{what}: subsets[{si}]"
        sm = _map(subset, where)
        eps: list[Endpoint] = []
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            entries = _list(sm.get(key), f"{where}.{key}")
            total += len(entries)
            if total > MAX_V1_ADDRESSES:
                raise ManifestError(f"{what}: more than {MAX_V1_ADDRESSES} addresses")
            for ai, a in enumerate(entries):
                at = f"{where}.{key}[{ai}]"
                am = _map(a, at)
                ip = _ip(am.get("ip"), f"{at}.ip")
                hostname = _hostname(am.get("hostname"), at, notes)
                pod = _pod_name(_map(am.get("targetRef"), f"{at}.targetRef"))
                eps.append(Endpoint(ip, ready, hostname, pod, sys.intern(str(am.get("nodeName") or ""))))
        ports = _ports(sm.get("ports"), where, MAX_V1_PORTS)
        parts.append(EndpointSlice(ns, name, name, "mixed", tuple(eps), ports, True))
    everyone = tuple(ep for part in parts for ep in part.endpoints)
    first = parts[0].ports if parts else NO_PORTS
    return EndpointSlice(ns, name, name, "mixed", everyone, first, True, tuple(parts))


def pod_from(doc: Mapping[str, Any], notes: Notes) -> Pod:
    meta, ns, name, what = _identity(doc, "Pod", _SUBDOMAIN)
    status = _map(doc.get("status"), f"{what}: status")
    ips: list[str] = []
    primary = status.get("podIP")
    if primary:
        ips.append(_ip(primary, f"{what}: status.podIP"))
    for i, entry in enumerate(_list(status.get("podIPs"), f"{what}: status.podIPs", MAX_CLUSTER_IPS)):
        ip = _ip(_map(entry, f"{what}: status.podIPs[{i}]").get("ip"), f"{what}: status.podIPs[{i}].ip")
        if ip not in ips:
            ips.append(ip)
    phase = status.get("phase") or "Pending"
    return Pod(ns, name, tuple(ips), sys.intern(str(phase)), meta.get("deletionTimestamp") is not None)


CONVERTERS: dict[str, Callable[[Mapping[str, Any], Notes], KubeObject | Skipped]] = {
    "Namespace": namespace_from,
    "Service": service_from,
    "EndpointSlice": endpointslice_from,
    "Endpoints": endpoints_from,
    "Pod": pod_from,
}


def convert(doc: Mapping[str, Any], notes: Notes | None = None) -> KubeObject | Skipped:
    """Convert one manifest object: the object, or Skipped for what DNS does not use; ManifestError when an
    object of ours is invalid. Warnings about an object that is still used are appended to notes."""
    kind = our_kind(doc)
    if kind is None:
        return Skipped(f"kind {doc.get('kind')!r} apiVersion {doc.get('apiVersion')!r} is not used by DNS")
    return CONVERTERS[kind](doc, [] if notes is None else notes)


def object_from(doc: Mapping[str, Any]) -> KubeObject | None:
    """Convert one manifest object; None for objects DNS does not use; ManifestError when invalid."""
    obj = convert(doc)
    return None if isinstance(obj, Skipped) else obj

"""Slim frozen objects holding only what DNS needs from Kubernetes, and converters from manifest dicts."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dnsd.errors import ManifestError

# RFC 1123 label (namespace and service names) and DNS-1123 subdomain (pod, slice names).
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

KINDS = ("Namespace", "Service", "EndpointSlice", "Endpoints", "Pod")


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str


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


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]  # as written in the slice (CoreDNS uses the text verbatim for names)
    ready: bool  # conditions.ready, with null counted as ready
    hostname: str
    pod_name: str  # targetRef.name when targetRef.kind is Pod (or unset), else ""
    node_name: str


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int  # -1 when the slice lists no ports (CoreDNS's sentinel)
    protocol: str


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """A discovery.k8s.io/v1 EndpointSlice, or a v1 Endpoints subset set converted to the same shape."""

    namespace: str
    name: str
    service: str
    address_type: str  # IPv4, IPv6, FQDN
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    from_endpoints: bool = False  # converted from a v1 Endpoints object


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...]  # status.podIPs (podIP first)
    phase: str
    deleting: bool


KubeObject = Namespace | Service | EndpointSlice | Pod


def object_key(obj: KubeObject) -> tuple[str, str, str]:
    """(kind, namespace, name): the identity two files can both define."""
    if isinstance(obj, Namespace):
        return ("Namespace", "", obj.name)
    if isinstance(obj, EndpointSlice):
        return ("Endpoints" if obj.from_endpoints else "EndpointSlice", obj.namespace, obj.name)
    return (type(obj).__name__, obj.namespace, obj.name)


# ---------------------------------------------------------------- converters


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"{what} must be a mapping")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{what} must be a list")
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
    return ns


def _ip(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise ManifestError(f"{what}: {text!r} is not an IP address")
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
    if not isinstance(proto, str) or proto.upper() not in ("TCP", "UDP", "SCTP"):
        raise ManifestError(f"{what}: protocol {value!r} is not TCP, UDP or SCTP")
    return proto.lower()


def namespace_from(doc: Mapping[str, Any]) -> Namespace:
    meta = _map(doc.get("metadata"), "metadata")
    return Namespace(_name(meta, _LABEL, "Namespace"))


def _identity(doc: Mapping[str, Any], kind: str, pattern: re.Pattern[str]) -> tuple[Mapping[str, Any], str, str, str]:
    """metadata, namespace, name, and how errors name the object ("Service shop/api")."""
    meta = _map(doc.get("metadata"), "metadata")
    name = _name(meta, pattern, kind)
    ns = _namespace(meta, f"{kind} {name}")
    return meta, ns, name, f"{kind} {ns}/{name}"


def service_from(doc: Mapping[str, Any]) -> Service:
    _, ns, name, what = _identity(doc, "Service", _LABEL)
    spec = _map(doc.get("spec"), f"{what}: spec")
    stype = spec.get("type") or "ClusterIP"
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise ManifestError(f"{what}: spec.type {stype!r} is not a Service type")
    external = ""
    headless = False
    ips: list[str] = []
    if stype == "ExternalName":
        ext = spec.get("externalName")
        if not isinstance(ext, str) or not ext.strip("."):
            raise ManifestError(f"{what}: spec.externalName is missing")
        external = ext.lower().rstrip(".")
    else:
        raw_ips = _list(spec.get("clusterIPs"), f"{what}: spec.clusterIPs")
        if not raw_ips and spec.get("clusterIP") not in (None, ""):
            raw_ips = [spec.get("clusterIP")]
        # No IP at all is an apply-style manifest, before the API server allocates one: the service exists
        # (its endpoint names resolve) but has no address records of its own.
        if raw_ips and raw_ips[0] == "None":
            headless = True
        else:
            for i, ip in enumerate(raw_ips):
                ips.append(str(ipaddress.ip_address(_ip(ip, f"{what}: spec.clusterIPs[{i}]"))))
    ports: list[ServicePort] = []
    for i, p in enumerate(_list(spec.get("ports"), f"{what}: spec.ports")):
        pm = _map(p, f"{what}: spec.ports[{i}]")
        pname = pm.get("name") or ""
        if not isinstance(pname, str):
            raise ManifestError(f"{what}: spec.ports[{i}].name must be a string")
        ports.append(
            ServicePort(
                pname.lower(),
                _port_number(pm.get("port"), f"{what}: spec.ports[{i}]"),
                _protocol(pm.get("protocol"), f"{what}: spec.ports[{i}]"),
            )
        )
    publish = spec.get("publishNotReadyAddresses") is True
    return Service(ns, name, stype, tuple(ips), headless, tuple(ports), external, publish)


def _endpoint(e: Any, what: str, family: str) -> Endpoint:
    em = _map(e, what)
    addrs = tuple(_ip(a, f"{what}.addresses") for a in _list(em.get("addresses"), f"{what}.addresses"))
    if family in ("IPv4", "IPv6"):
        for a in addrs:
            if ipaddress.ip_address(a).version != (4 if family == "IPv4" else 6):
                raise ManifestError(f"{what}: address {a!r} is not {family}")
    cond = _map(em.get("conditions"), f"{what}.conditions")
    ready = cond.get("ready")
    hostname = em.get("hostname") or ""
    if not isinstance(hostname, str) or (hostname and not _LABEL.match(hostname.lower())):
        raise ManifestError(f"{what}: hostname {hostname!r} is not a DNS label")
    ref = _map(em.get("targetRef"), f"{what}.targetRef")
    pod = ""
    if ref.get("kind") in (None, "Pod") and isinstance(ref.get("name"), str):
        pod = ref["name"]
    node = em.get("nodeName") or ""
    # ready: null means "unknown", which consumers treat as ready (discovery.k8s.io/v1 API doc).
    return Endpoint(addrs, ready is not False, hostname.lower(), pod, str(node))


def endpointslice_from(doc: Mapping[str, Any]) -> EndpointSlice:
    meta, ns, name, what = _identity(doc, "EndpointSlice", _SUBDOMAIN)
    labels = _map(meta.get("labels"), f"{what}: metadata.labels")
    service = labels.get("kubernetes.io/service-name")
    if not isinstance(service, str) or not service:
        raise ManifestError(f"{what}: label kubernetes.io/service-name is missing")
    family = doc.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        raise ManifestError(f"{what}: addressType {family!r} is not IPv4, IPv6 or FQDN")
    eps: list[Endpoint] = []
    if family != "FQDN":  # FQDN slices carry no addresses DNS can serve
        for i, e in enumerate(_list(doc.get("endpoints"), f"{what}: endpoints")):
            eps.append(_endpoint(e, f"{what}: endpoints[{i}]", family))
    ports = _ports(doc.get("ports"), what)
    return EndpointSlice(ns, name, service, family, tuple(eps), ports)


def _ports(value: Any, what: str) -> tuple[EndpointPort, ...]:
    ports: list[EndpointPort] = []
    for i, p in enumerate(_list(value, f"{what}: ports")):
        pm = _map(p, f"{what}: ports[{i}]")
        pname = pm.get("name") or ""
        if not isinstance(pname, str):
            raise ManifestError(f"{what}: ports[{i}].name must be a string")
        number = pm.get("port")
        ports.append(
            EndpointPort(
                pname.lower(),
                -1 if number is None else _port_number(number, f"{what}: ports[{i}]"),
                _protocol(pm.get("protocol"), f"{what}: ports[{i}]"),
            )
        )
    # A slice without ports gets CoreDNS's sentinel port -1: A/AAAA yes, SRV never.
    return tuple(ports) or (EndpointPort("", -1, "tcp"),)


def endpoints_from(doc: Mapping[str, Any]) -> EndpointSlice:
    """A v1 Endpoints object as one slice: `addresses` ready, `notReadyAddresses` not ready."""
    _, ns, name, what = _identity(doc, "Endpoints", _LABEL)
    eps: list[Endpoint] = []
    ports: tuple[EndpointPort, ...] = ()
    for si, subset in enumerate(_list(doc.get("subsets"), f"{what}: subsets")):
        sm = _map(subset, f"{what}: subsets[{si}]")
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for ai, a in enumerate(_list(sm.get(key), f"{what}: subsets[{si}].{key}")):
                am = _map(a, f"{what}: subsets[{si}].{key}[{ai}]")
                ip = _ip(am.get("ip"), f"{what}: subsets[{si}].{key}[{ai}].ip")
                hostname = am.get("hostname") or ""
                ref = _map(am.get("targetRef"), "targetRef")
                pod = ref["name"] if ref.get("kind") in (None, "Pod") and isinstance(ref.get("name"), str) else ""
                eps.append(Endpoint((ip,), ready, str(hostname).lower(), pod, str(am.get("nodeName") or "")))
        if ports == ():
            ports = _ports(sm.get("ports"), f"{what}: subsets[{si}]")
    return EndpointSlice(ns, name, name, "mixed", tuple(eps), ports or (EndpointPort("", -1, "tcp"),), True)


def pod_from(doc: Mapping[str, Any]) -> Pod:
    meta, ns, name, what = _identity(doc, "Pod", _SUBDOMAIN)
    status = _map(doc.get("status"), f"{what}: status")
    ips: list[str] = []
    primary = status.get("podIP")
    if primary:
        ips.append(_ip(primary, f"{what}: status.podIP"))
    for i, entry in enumerate(_list(status.get("podIPs"), f"{what}: status.podIPs")):
        ip = _ip(_map(entry, f"{what}: status.podIPs[{i}]").get("ip"), f"{what}: status.podIPs[{i}].ip")
        if ip not in ips:
            ips.append(ip)
    phase = status.get("phase") or "Pending"
    return Pod(ns, name, tuple(ips), str(phase), meta.get("deletionTimestamp") is not None)


CONVERTERS: dict[str, Callable[[Mapping[str, Any]], KubeObject]] = {
    "Namespace": namespace_from,
    "Service": service_from,
    "EndpointSlice": endpointslice_from,
    "Endpoints": endpoints_from,
    "Pod": pod_from,
}


def object_from(doc: Mapping[str, Any]) -> KubeObject | None:
    """Convert one manifest object; None for kinds DNS does not use; ManifestError when invalid."""
    kind = doc.get("kind")
    conv = CONVERTERS.get(kind) if isinstance(kind, str) else None
    if conv is None:
        return None
    if kind == "EndpointSlice":
        api = doc.get("apiVersion")
        if api not in (None, "discovery.k8s.io/v1"):
            raise ManifestError(f"EndpointSlice apiVersion {api!r} is not discovery.k8s.io/v1")
    obj: KubeObject = conv(doc)
    return obj

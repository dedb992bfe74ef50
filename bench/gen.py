"""Generate the benchmark cluster three ways from one model, so both servers serve the same names.

Writes into OUT (default bench/out):
  cluster/<ns>.yaml     Kubernetes manifests (Namespace, Service, EndpointSlice) for dnsd
  nsd/cluster.local.zone the same records as an RFC 1035 zone file for NSD
  queries.txt           a dnsperf query file: 80% A for existing services, 10% SRV _http._tcp,
                        10% names that do not exist (NXDOMAIN); shuffled, lower case
  unique.txt            with --unique N: N dnsperf queries for names that are never repeated (random
                        labels under default.svc.cluster.local, all NXDOMAIN), for the miss path
  expected.json         counts (services, records, query mix) for the report
  gen-params.json       the parameters and this script's digest: with --cached, a rerun with the same
                        ones finds the files in place and writes nothing

The zone file is written from the Kubernetes DNS spec 1.1.0 as CoreDNS applies it (its
kubernetes plugin, TTL 5): ClusterIP A, headless A per ready endpoint, endpoint names
(hostname, else dashed IP; also under ClusterIP services), SRV per named port (priority 0,
weight max(1, 100 // N)), bare SRV on the service name, SOA/NS at the apex, dns-version TXT.
Not-ready endpoints (ready: false) are in the manifests but in no record. Reverse zones are
not part of the zone file (the query mix has no PTR queries).

Deterministic for a given --seed. The manifests are written as text from templates, not through
yaml.dump (100,000 services: about 6 s instead of ~3 min); the text is byte for byte what
yaml.safe_dump_all(..., sort_keys=False) writes for the dicts of service_manifest and
slice_manifest, which is what tests/integration/test_bench_gen.py checks.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOMAIN = "cluster.local"
TTL = 5
NAMESPACES = ["default", "shop", "payments", "search", "monitoring", "data", "identity", "media"]
PREFIXES = [
    "api", "web", "cart", "checkout", "auth", "users", "orders", "catalog", "inventory", "billing",
    "ledger", "search", "index", "cache", "queue", "worker", "notify", "mail", "render", "thumbs",
]  # fmt: skip
SERVICE_NET = ipaddress.IPv4Address("10.96.0.10")
POD_NET = ipaddress.IPv4Address("10.244.0.10")


@dataclass
class Endpoint:
    ip: str
    ready: bool
    hostname: str | None = None
    pod: str = ""
    node: str = ""

    @property
    def name(self) -> str:
        """The endpoint's DNS label: hostname, else the dashed IP (spec section 2.3)."""
        return self.hostname if self.hostname else self.ip.replace(".", "-")


@dataclass
class Port:
    name: str
    port: int  # the Service port (SRV port of a ClusterIP service)
    target: int  # the endpoint port (SRV port of a headless service)
    protocol: str = "TCP"


@dataclass
class Svc:
    name: str
    ns: str
    headless: bool
    cluster_ip: str | None
    ports: list[Port]
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.ns}.svc.{DOMAIN}."


def _dotted(ip: int) -> str:
    """str(ipaddress.IPv4Address(ip)), a few times faster (100,000 services have ~330,000 addresses)."""
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"


def build_model(n_services: int, n_namespaces: int, headless_every: int, seed: int) -> list[Svc]:
    rng = random.Random(seed)
    namespaces = NAMESPACES[:n_namespaces]
    services: list[Svc] = []
    pod_ip = int(POD_NET)
    counters: dict[tuple[str, str], int] = {}
    for i in range(n_services):
        ns = namespaces[i % len(namespaces)]
        prefix = PREFIXES[(i // len(namespaces)) % len(PREFIXES)]
        key = (ns, prefix)
        counters[key] = counters.get(key, 0) + 1
        name = f"{prefix}-{counters[key]:03d}" if counters[key] > 1 else prefix
        headless = i % headless_every == headless_every - 1
        ports = [Port("http", 80, 8080)]
        if not headless and i % 3 == 0:
            ports.append(Port("metrics", 9090, 9090))
        if not headless and i % 17 == 0:
            ports.append(Port("", 8443, 8443))  # an unnamed port: no _x._tcp SRV, but in the bare SRV
        n_ready = 3 if headless else rng.choice([1, 2, 2, 3])
        eps: list[Endpoint] = []
        with_hostnames = headless and (i // headless_every) % 2 == 0  # StatefulSet-style half
        for k in range(n_ready):
            ip = _dotted(pod_ip)
            pod_ip += 1
            host = f"{name}-{k}" if with_hostnames else None
            eps.append(
                Endpoint(
                    ip,
                    True,
                    host,
                    pod=f"{name}-{k}" if with_hostnames else f"{name}-{rng.randrange(16**10):010x}",
                    node=f"node-{rng.randrange(12)}",
                )
            )
        if i % 10 == 4:  # a not-ready endpoint: in the slice, in no record
            ip = _dotted(pod_ip)
            pod_ip += 1
            eps.append(Endpoint(ip, False, None, pod=f"{name}-{rng.randrange(16**10):010x}", node="node-0"))
        cluster_ip = None if headless else _dotted(int(SERVICE_NET) + i)
        services.append(Svc(name, ns, headless, cluster_ip, ports, eps))
    return services


# ---------------------------------------------------------------- manifests


def service_manifest(s: Svc) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": {"app": s.name},
        "ports": [
            {**({"name": p.name} if p.name else {}), "port": p.port, "targetPort": p.target, "protocol": p.protocol}
            for p in s.ports
        ],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
    }
    if s.headless:
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
    else:
        spec["clusterIP"] = s.cluster_ip
        spec["clusterIPs"] = [s.cluster_ip]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "namespace": s.ns, "labels": {"app": s.name}},
        "spec": spec,
    }


def slice_manifest(s: Svc, suffix: str) -> dict[str, Any]:
    endpoints: list[dict[str, Any]] = []
    for e in s.endpoints:
        ep: dict[str, Any] = {
            "addresses": [e.ip],
            "conditions": {"ready": e.ready, "serving": e.ready, "terminating": False},
            "nodeName": e.node,
            "targetRef": {"kind": "Pod", "name": e.pod, "namespace": s.ns},
        }
        if e.hostname:
            ep["hostname"] = e.hostname
        endpoints.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{s.name}-{suffix}",
            "namespace": s.ns,
            "labels": {
                "kubernetes.io/service-name": s.name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{**({"name": p.name} if p.name else {}), "port": p.target, "protocol": p.protocol} for p in s.ports],
    }


# The manifests as text. Every value written plain is a DNS label, a dotted IPv4 address or a fixed word, none of
# which YAML 1.1 reads as anything but a string (PLAIN checks the model's values), so no quoting is ever needed.
PLAIN = re.compile(r"[a-z][a-z0-9-]*|\d+\.\d+\.\d+\.\d+")


def _plain(value: str) -> str:
    if not PLAIN.fullmatch(value) or value in ("y", "n", "yes", "no", "on", "off", "true", "false", "null"):
        raise ValueError(f"gen: {value!r} would need quoting in YAML: extend the text writer before using it")
    return value


def namespace_yaml(ns: str) -> str:
    ns = _plain(ns)
    return (
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    kubernetes.io/metadata.name: {ns}\n"
    )


def _ports_yaml(ports: list[Port], indent: str, service: bool) -> str:
    """A Service's ports (port and targetPort) or an EndpointSlice's (the target port as port)."""
    if not ports:
        return " []\n"
    out = []
    for p in ports:
        fields = [f"name: {_plain(p.name)}"] if p.name else []
        fields.append(f"port: {p.port if service else p.target}")
        if service:
            fields.append(f"targetPort: {p.target}")
        fields.append(f"protocol: {p.protocol}")
        out.append(f"{indent}- " + f"\n{indent}  ".join(fields) + "\n")
    return "\n" + "".join(out)


def service_yaml(s: Svc) -> str:
    """service_manifest(s) as yaml.safe_dump(sort_keys=False) writes it."""
    name, ns = _plain(s.name), _plain(s.ns)
    ip = "None" if s.headless else _plain(s.cluster_ip or "")
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\n"
        f"spec:\n  type: ClusterIP\n  selector:\n    app: {name}\n  ports:"
        + _ports_yaml(s.ports, "  ", service=True)
        + "  ipFamilies:\n  - IPv4\n  ipFamilyPolicy: SingleStack\n  sessionAffinity: None\n"
        f"  internalTrafficPolicy: Cluster\n  clusterIP: {ip}\n  clusterIPs:\n  - {ip}\n"
    )


def slice_yaml(s: Svc, suffix: str) -> str:
    """slice_manifest(s, suffix) as yaml.safe_dump(sort_keys=False) writes it."""
    name, ns = _plain(s.name), _plain(s.ns)
    parts = [
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {_plain(name + '-' + suffix)}\n"
        f"  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\n"
        "    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\naddressType: IPv4\n"
        + ("endpoints:\n" if s.endpoints else "endpoints: []\n")
    ]
    for e in s.endpoints:
        ready = "true" if e.ready else "false"
        parts.append(
            f"- addresses:\n  - {_plain(e.ip)}\n  conditions:\n    ready: {ready}\n    serving: {ready}\n"
            f"    terminating: false\n  nodeName: {_plain(e.node)}\n  targetRef:\n    kind: Pod\n"
            f"    name: {_plain(e.pod)}\n    namespace: {ns}\n"
            + (f"  hostname: {_plain(e.hostname)}\n" if e.hostname else "")
        )
    parts.append("ports:" + _ports_yaml(s.ports, "", service=False))
    return "".join(parts)


def write_manifests(services: list[Svc], outdir: Path, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.yaml"):
        old.unlink()
    by_ns: dict[str, list[Svc]] = {}
    for s in services:
        by_ns.setdefault(s.ns, []).append(s)
    files: list[str] = []
    letters = "bcdfghjklmnpqrstvwxz2456789"
    for ns, svcs in by_ns.items():
        docs = [namespace_yaml(ns)]
        for s in svcs:
            docs.append(service_yaml(s))
            docs.append(slice_yaml(s, "".join(rng.choice(letters) for _ in range(5))))
        (outdir / f"{ns}.yaml").write_text("---\n".join(docs))
        files.append(f"{ns}.yaml")
    return files


# ---------------------------------------------------------------- zone file


def srv_items(s: Svc, port_filter: str | None) -> list[tuple[str, int]]:
    """(target, port) items in CoreDNS's order, before de-duplication (spec section 3.3)."""
    items: list[tuple[str, int]] = []
    if s.headless:
        for e in s.endpoints:
            if not e.ready:
                continue
            for p in s.ports:
                if port_filter is not None and p.name != port_filter:
                    continue
                items.append((f"{e.name}.{s.fqdn}", p.target))
    else:
        for p in s.ports:
            if port_filter is not None and p.name != port_filter:
                continue
            items.append((s.fqdn, p.port))
    return items


def srv_lines(owner: str, items: list[tuple[str, int]]) -> list[str]:
    weight = max(1, 100 // len(items)) if items else 0
    seen: list[tuple[str, int]] = []
    for it in items:
        if it not in seen:
            seen.append(it)
    return [f"{owner} {TTL} IN SRV 0 {weight} {port} {target}" for target, port in seen]


def zone_text(services: list[Svc], serial: int) -> tuple[str, int]:
    z = f"{DOMAIN}."
    lines = [
        "; generated by bench/gen.py: the benchmark cluster as CoreDNS's kubernetes plugin would answer it",
        f"$ORIGIN {z}",
        f"$TTL {TTL}",
        f"{z} {TTL} IN SOA ns.dns.{z} hostmaster.{z} {serial} 7200 1800 86400 {TTL}",
        f"{z} {TTL} IN NS ns.dns.{z}",
        f"ns.dns.{z} {TTL} IN A 127.0.0.1",
        f'dns-version.{z} 28800 IN TXT "1.1.0"',
    ]
    for s in services:
        ready = [e for e in s.endpoints if e.ready]
        if s.headless:
            lines += [f"{s.fqdn} {TTL} IN A {e.ip}" for e in ready]
        else:
            lines.append(f"{s.fqdn} {TTL} IN A {s.cluster_ip}")
        for e in ready:  # endpoint names: headless, and (CoreDNS extension) under ClusterIP services too
            lines.append(f"{e.name}.{s.fqdn} {TTL} IN A {e.ip}")
        lines += srv_lines(s.fqdn, srv_items(s, None))  # bare SRV: every port, named or not
        for p in s.ports:
            if p.name:
                lines += srv_lines(f"_{p.name}._{p.protocol.lower()}.{s.fqdn}", srv_items(s, p.name))
        for e in ready:  # an SRV query on an endpoint name lists that endpoint's (slice) ports
            lines += srv_lines(f"{e.name}.{s.fqdn}", [(f"{e.name}.{s.fqdn}", p.target) for p in s.ports])
    records = sum(1 for ln in lines if ln and not ln.startswith((";", "$")))
    return "\n".join(lines) + "\n", records


# ---------------------------------------------------------------- queries


def queries(services: list[Svc], total: int, seed: int) -> tuple[list[str], dict[str, int]]:
    rng = random.Random(seed + 2)
    n_srv = total // 10
    n_nx = total // 10
    n_a = total - n_srv - n_nx
    existing = {s.fqdn for s in services}
    namespaces = sorted({s.ns for s in services})
    out: list[str] = []
    out += [f"{rng.choice(services).fqdn.rstrip('.')} A" for _ in range(n_a)]
    out += [f"_http._tcp.{rng.choice(services).fqdn.rstrip('.')} SRV" for _ in range(n_srv)]
    nx: list[str] = []
    while len(nx) < n_nx:
        kind = len(nx) % 4
        if kind == 0:  # a service that does not exist in an existing namespace
            name = f"{rng.choice(PREFIXES)}-{rng.randrange(500, 100000)}.{rng.choice(namespaces)}.svc.{DOMAIN}."
        elif kind == 1:  # a namespace that does not exist
            name = f"{rng.choice(PREFIXES)}.ns-{rng.randrange(100000)}.svc.{DOMAIN}."
        elif kind == 2:  # a typo of an existing service (client search-path noise looks like this)
            s = rng.choice(services)
            name = f"{s.name}x.{s.ns}.svc.{DOMAIN}."
        else:  # a search-list expansion of an external name
            name = f"www.example{rng.randrange(1000)}.com.{rng.choice(namespaces)}.svc.{DOMAIN}."
        if name in existing:
            continue
        nx.append(f"{name.rstrip('.')} A")
    out += nx
    rng.shuffle(out)
    return [_lower_name(q) for q in out], {"A": n_a, "SRV": n_srv, "NXDOMAIN": n_nx}


def _lower_name(line: str) -> str:
    name, qtype = line.split()
    return f"{name.lower()} {qtype.upper()}"


UNIQUE_ZONE = f"default.svc.{DOMAIN}"  # namespaces[0]: every generated cluster has it
UNIQUE_MASK = (1 << 48) - 1
UNIQUE_STEP = 0x9E3779B97F4B  # odd, so i -> i * STEP + start (mod 2**48) is a bijection: no label repeats


def unique_queries(n: int, seed: int) -> str:
    """n dnsperf lines `u<12 hex>.default.svc.cluster.local A`, each name different (the label is a bijection of the
    line number, scattered over 2**48), none a service: generated names have no pure-hex label after a `u`. For
    the miss path: no name is asked twice within a pass, so no per-name table or cache can answer it."""
    start = random.Random(seed + 3).getrandbits(48)
    step, mask, tail = UNIQUE_STEP, UNIQUE_MASK, f".{UNIQUE_ZONE} A\n"
    return "".join([f"u{(i * step + start) & mask:012x}{tail}" for i in range(n)])


def gen_params(args: argparse.Namespace) -> dict[str, Any]:
    """What the output depends on: the arguments and this script's own text (a changed generator regenerates)."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    keys = ("services", "namespaces", "headless_every", "queries", "unique", "seed", "serial")
    return {"gen.py": digest, **{k: getattr(args, k) for k in keys}}


def cached(out: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of an earlier run with the same parameters whose files are all still there, else None."""
    try:
        stamp = json.loads((out / "gen-params.json").read_text())
        summary: dict[str, Any] = json.loads((out / "expected.json").read_text())
    except (OSError, ValueError):
        return None
    files = [out / "queries.txt", out / "nsd" / f"{DOMAIN}.zone", *(out / "cluster" / f for f in summary["files"])]
    if params["unique"]:
        files.append(out / "unique.txt")
    return summary if stamp == params and all(f.is_file() for f in files) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=6)
    ap.add_argument("--headless-every", type=int, default=10, help="every Nth service is headless (default 10)")
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--unique", type=int, default=0, help="write unique.txt: N never-repeated NXDOMAIN queries")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serial", type=int, default=1)
    ap.add_argument("--cached", action="store_true", help="write nothing when OUT holds this run's output already")
    args = ap.parse_args()

    out: Path = args.out
    params = gen_params(args)
    if args.cached and (summary := cached(out, params)) is not None:
        print(f"gen: {summary['services']} services, cached in {out} (same parameters and gen.py)")
        return
    (out / "gen-params.json").unlink(missing_ok=True)  # written last: an interrupted run is never taken as cached
    t0 = time.monotonic()
    services = build_model(args.services, args.namespaces, args.headless_every, args.seed)
    files = write_manifests(services, out / "cluster", args.seed)
    (out / "nsd").mkdir(parents=True, exist_ok=True)
    text, records = zone_text(services, args.serial)
    (out / "nsd" / f"{DOMAIN}.zone").write_text(text)
    qs, mix = queries(services, args.queries, args.seed)
    (out / "queries.txt").write_text("\n".join(qs) + "\n")
    if args.unique:
        (out / "unique.txt").write_text(unique_queries(args.unique, args.seed))
    else:
        (out / "unique.txt").unlink(missing_ok=True)
    summary = {
        "services": len(services),
        "headless": sum(1 for s in services if s.headless),
        "namespaces": len({s.ns for s in services}),
        "manifest_files": len(files),
        "files": files,
        "zone_records": records,
        "queries": len(qs),
        "query_mix": mix,
        "unique_queries": args.unique,
    }
    (out / "expected.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "gen-params.json").write_text(json.dumps(params, indent=2) + "\n")
    print(
        f"gen: {summary['services']} services ({summary['headless']} headless) in {summary['namespaces']} namespaces"
        f" -> {out / 'cluster'} ({len(files)} files); zone {records} records; {len(qs)} queries"
        f" (A {mix['A']}, SRV {mix['SRV']}, NXDOMAIN {mix['NXDOMAIN']})"
        + (f"; {args.unique} never-repeated queries" if args.unique else "")
        + f"; {time.monotonic() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()

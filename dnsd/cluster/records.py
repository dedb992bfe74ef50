"""Kubernetes DNS records (spec 1.1.0) answered as CoreDNS's kubernetes plugin answers them.

Section numbers in comments refer to the Kubernetes DNS-Based Service Discovery spec 1.1.0
(https://github.com/kubernetes/dns/blob/master/docs/specification.md); where the spec is silent, comments name the
CoreDNS behaviour or option that dnsd follows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dnsd.config import ClusterConfig
from dnsd.proto.answer import (
    AAAA,
    ABSENT_IP,
    ANY,
    APEX,
    CNAME,
    NOERROR,
    NS,
    NXDOMAIN,
    PTR,
    RR,
    SERVFAIL,
    SOA,
    SRV,
    TXT,
    A,
    Answer,
    Labels,
    Tag,
    absent_service_tag,
    in_zone,
    ip_tag,
    labels_of,
    pods_tag,
    service_tag,
)
from dnsd.store.model import Service
from dnsd.store.store import ReadyAddress, Store

DNS_VERSION_TTL = 28800  # spec 2.2 (CoreDNS): always 28800 whatever `ttl` says
MAX_CNAME_CHAIN = 8  # in-zone ExternalName chains longer than this are SERVFAIL (CoreDNS file plugin limit)
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400  # CoreDNS's apex SOA (the spec does not define the SOA)
# Records built per answer. A Service may list many ports and its slices hold up to 1000 endpoints each, so one
# SRV name can select 100 000 (address, port) pairs: building and rendering all of them would cost seconds per
# query for a reply that is cut at 64 KB anyway (RFC 1035 4.2.2). The caps are what a 64 KB TCP message holds.
MAX_ADDRESS_RRS = 4000  # A/AAAA answer records: 16 octets each with a compressed owner
MAX_SRV_RRS = 1024  # SRV answer records: about 60 octets each with an endpoint target, not compressed (RFC 2782)


@dataclass(slots=True)
class _Item:
    """One (address, port) pair of a lookup, before de-duplication (spec 2.3.2 / 2.4.2 with CoreDNS's weights: N
    counts these)."""

    target: Labels
    address: str
    port: int
    priority: int = 0


@dataclass(frozen=True, slots=True)
class _Items:
    """The items a name selects, made lazily so that an answer stops at its cap (MAX_SRV_RRS) without building
    the rest; count is CoreDNS's SRV-weight N, every (address, port) pair before de-duplication."""

    count: int
    each: Iterator[_Item]


class _Loop(Exception):
    """An in-zone CNAME chain looped or grew past MAX_CNAME_CHAIN."""


class ClusterRecords:
    """Answers every name in the cluster domain and the configured reverse zones from the store."""

    def __init__(self, cfg: ClusterConfig, store: Store, server_ips: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.store = store
        self.domain: Labels = labels_of(cfg.domain)
        self.reverse: list[Labels] = [labels_of(z) for z in cfg.reverse_zones]
        # Longest zone first: a query matches the longest configured zone (CoreDNS Zones.Matches).
        self.zones: list[Labels] = sorted([self.domain, *self.reverse], key=len, reverse=True)
        self.fallthrough: list[Labels] = [labels_of(z) for z in cfg.fallthrough]
        self.server_ips = [str(ipaddress.ip_address(ip)) for ip in server_ips]
        self.ttl = cfg.ttl
        self._soa: dict[Labels, RR] = {}  # soa(): the record of each zone at the current serial

    # ------------------------------------------------------------ entry point

    def zone_of(self, name: Labels) -> Labels | None:
        for zone in self.zones:
            if in_zone(name, zone):
                return zone
        return None

    def lookup(self, name: Labels, qtype: int) -> Answer | None:
        """The answer for a lower-case name, or None when the name is not ours (or falls through)."""
        zone = self.zone_of(name)
        if zone is None:
            return None
        tags: set[Tag] = set()
        try:
            ans = self._lookup(name, qtype, zone, tags, ())
        except _Loop:
            ans = Answer(SERVFAIL, zone=zone, cacheable=False)
        if ans.rcode == NXDOMAIN:
            if self.fallthrough and any(name[len(name) - len(z) :] == z for z in self.fallthrough):
                return None  # CoreDNS `fallthrough`: only NXDOMAIN falls through, never NODATA
            if not self.store.synced:
                # Before the first sync an absent name may exist: SERVFAIL with the SOA, never NXDOMAIN.
                ans = Answer(SERVFAIL, cacheable=False)
        if (ans.negative or (ans.rcode == SERVFAIL and not self.store.synced)) and not ans.authority:
            ans.authority = [self.soa(zone)]  # RFC 2308 3: the SOA on every negative answer
        if not self.store.synced:
            ans.cacheable = False
        ans.zone = zone
        ans.tags = frozenset(tags)
        return ans

    def _lookup(self, name: Labels, qtype: int, zone: Labels, tags: set[Tag], chain: tuple[Labels, ...]) -> Answer:
        rel = name[: len(name) - len(zone)]
        if zone != self.domain:
            return self._reverse(rel, qtype, zone, tags)
        if not rel:
            return self._apex(qtype, zone, tags)
        if rel == ("dns-version",):
            # spec 2.2; any other type is NXDOMAIN (a CoreDNS quirk)
            if qtype == TXT:
                return Answer(NOERROR, [RR(name, TXT, DNS_VERSION_TTL, ("1.1.0",))])
            return self._nx()
        if rel == ("ns", "dns"):
            return self._ns_dns(name, qtype, tags)
        kind = rel[-1]
        if kind == "svc":
            return self._svc(name, rel[:-1], qtype, zone, tags, chain)
        if kind == "pod":
            return self._pod(name, rel[:-1], qtype, tags)
        return self._nx()

    # ------------------------------------------------------------ helpers

    def _nx(self) -> Answer:
        return Answer(NXDOMAIN)

    def _nodata(self) -> Answer:
        return Answer(NOERROR)

    def soa(self, zone: Labels) -> RR:
        """CoreDNS's apex SOA: `<zone> min(ttl,300) SOA ns.dns.<zone> hostmaster.<zone> serial 7200 1800 86400 ttl`.
        One copy per zone and serial: every negative answer carries it."""
        kept = self._soa.get(zone)
        if kept is not None and kept.rdata[2] == self.store.serial:
            return kept
        rr = self._soa[zone] = self._make_soa(zone)
        return rr

    def _make_soa(self, zone: Labels) -> RR:
        return RR(
            zone,
            SOA,
            min(self.ttl, 300),
            (
                ("ns", "dns", *zone),
                ("hostmaster", *zone),
                self.store.serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.ttl,
            ),
        )

    def exposed(self, ns: str) -> bool:
        """CoreDNS `namespaces`: listed in `namespaces` (or no list) and a Namespace object exists."""
        return (not self.cfg.namespaces or ns in self.cfg.namespaces) and ns in self.store.namespaces

    def endpoint_name(self, item: ReadyAddress) -> str:
        """spec 2.4.1: hostname, then (CoreDNS `endpoint_pod_names`) the pod name under 64 chars, then the dashed
        IP."""
        ep = item.endpoint
        if ep.hostname:
            return ep.hostname
        if self.cfg.endpoint_pod_names and ep.pod_name and len(ep.pod_name) < 64:
            return ep.pod_name.lower()
        return dashed(item.address)

    def _addr_rr(self, owner: Labels, address: str) -> RR:
        return RR(owner, AAAA if ":" in address else A, self.ttl, (address,))

    # ------------------------------------------------------------ apex

    def _apex(self, qtype: int, zone: Labels, tags: set[Tag]) -> Answer:
        if qtype == SOA:
            return Answer(NOERROR, [self.soa(zone)])
        if qtype == NS:
            # CoreDNS plugin.NS: one NS record per name of nsAddrs, every address of it as glue in the
            # additional section (RFC 1034 4.3.2: the addresses a resolver needs to reach the named servers).
            tags.add(APEX)
            ns_names = self._ns_names(zone)
            ans = Answer(NOERROR, [RR(zone, NS, self.ttl, (target,)) for target in ns_names])
            for target, addrs in ns_names.items():
                ans.additional += [self._addr_rr(target, a) for a in addrs]
            return ans
        # Every other type, TXT included, is NODATA: the apex exists (RFC 8020). CoreDNS answers NXDOMAIN for
        # TXT here (its TXT lookup knows only dns-version.<zone>); dnsd does not copy that (README deviations).
        return self._nodata()

    def _ns_addrs(self, zone: Labels) -> list[tuple[Labels, str]]:
        """CoreDNS nsAddrs: (name, address) for the addresses dnsd is reached at, each address once.

        For each of our own IPs (server_ips), every service whose ready endpoints hold it: a ClusterIP service
        gives `<svc>.<ns>.svc.<zone>` with each of its ClusterIPs (dual-stack: both families; CoreDNS takes the
        first ClusterIP only), a headless one `<endpoint>.<svc>.<ns>.svc.<zone>` for each of its ready addresses
        (every replica, as CoreDNS lists the endpoint object holding our IP). When no service holds one of our
        IPs: `ns.dns.<zone>` with the IPs themselves. Services in namespaces that are not exposed are skipped:
        their names would not resolve (CoreDNS does not check)."""
        out: list[tuple[Labels, str]] = []
        seen_addr: set[str] = set()
        seen_svc: set[tuple[str, str]] = set()

        def add(name: Labels, address: str) -> None:
            if address not in seen_addr:  # CoreDNS: the first name of an address wins
                seen_addr.add(address)
                out.append((name, address))

        for ip in self.server_ips:
            for svc, _ in self.store.endpoints_with_ip(ip):
                key = (svc.namespace, svc.name)
                if key in seen_svc or not self.exposed(svc.namespace):
                    continue
                seen_svc.add(key)
                base = (svc.name, svc.namespace, "svc", *zone)
                if svc.headless:
                    for item in self.store.ready_addresses(svc.namespace, svc.name):
                        add((self.endpoint_name(item), *base), item.address)
                else:
                    for cip in svc.cluster_ips:  # none for an ExternalName service: it names no server
                        add(base, cip)
        if not out:
            for ip in self.server_ips:
                add(("ns", "dns", *zone), ip)
        return out

    def _ns_names(self, zone: Labels) -> dict[Labels, list[str]]:
        """The apex NS targets with their glue, in the order nsAddrs found them. With no address at all (dnsd
        listening on loopback only) the apex still has its NS record, ns.dns.<zone> without glue, as the SOA's
        MNAME names it (RFC 1034 4.2.1: a zone has NS records at its apex); CoreDNS answers no NS then."""
        out: dict[Labels, list[str]] = {}
        for name, address in self._ns_addrs(zone):
            out.setdefault(name, []).append(address)
        return out or {("ns", "dns", *zone): []}

    def _ns_dns(self, name: Labels, qtype: int, tags: set[Tag]) -> Answer:
        """`ns.dns.<zone>` A/AAAA: the nsAddrs addresses of the family asked, owned by the name asked (CoreDNS
        isDefaultNS). Any other type is NODATA: the name exists (CoreDNS answers NXDOMAIN)."""
        tags.add(APEX)
        if qtype not in (A, AAAA, ANY):
            return self._nodata()
        zone = name[2:]
        addrs = [a for _, a in self._ns_addrs(zone) if qtype == ANY or (":" in a) == (qtype == AAAA)]
        return Answer(NOERROR, [self._addr_rr(name, a) for a in addrs])

    # ------------------------------------------------------------ services

    def _svc(
        self, name: Labels, rel: Labels, qtype: int, zone: Labels, tags: set[Tag], chain: tuple[Labels, ...]
    ) -> Answer:
        # svc.<zone> and <ns>.svc.<zone> are empty non-terminals: they exist, so every type is NODATA
        # (RFC 8020), TXT included where CoreDNS answers NXDOMAIN (README deviations).
        if not rel:
            return self._nodata()
        ns = rel[-1]
        if not self.exposed(ns):
            return self._nx()
        if len(rel) == 1:
            return self._nodata()
        svc_name = rel[-2]
        svc = self.store.services.get((ns, svc_name))
        if svc is None:
            # One shared tag for every absent service of a namespace, not one per queried name: a flood of
            # random names must not grow the invalidation index (store.py emits it when a service appears).
            tags.add(absent_service_tag(ns))
            return self._nx()
        tags.add(service_tag(svc.namespace, svc.name))  # the store's strings, shared: not the query's copies
        below = rel[:-2]
        if len(below) > 2:
            return self._nx()  # spec 2.4.1: at most <hostname>.<service>.<ns>.svc.<zone>
        if svc.external_name:
            if below:
                return self._nx()  # nothing below an ExternalName resolves (spec 2.5)
            return self._external(name, svc, qtype, zone, tags, chain)
        items = self._service_items(svc, below, zone)
        if items is None:
            return self._nx()
        return self._from_items(name, items, qtype)

    def _service_items(self, svc: Service, below: Labels, zone: Labels) -> _Items | None:
        """The (address, port) items a name selects, or None when the name does not exist."""
        base = (svc.name, svc.namespace, "svc", *zone)
        if svc.headless or len(below) == 1:
            # Headless services, and endpoint names under any service (CoreDNS extension of spec 2.4.1).
            ready = self.store.ready_addresses(svc.namespace, svc.name)
            chosen = ready
            if len(below) == 1:
                chosen = [r for r in ready if self.endpoint_name(r) == below[0]]
            if not chosen:
                return None  # spec 2.4.1: no ready endpoint (or no such endpoint) is NXDOMAIN
            if len(below) == 2:
                by_port = self._by_port(chosen, below, base)
                return _Items(len(by_port), iter(by_port)) if by_port else None
            return _Items(sum(len(r.slice.ports) for r in chosen), self._endpoint_items(chosen, base))
        # A ClusterIP name needs the endpoints only for this option: not read otherwise (a miss stays cheap).
        if self.cfg.ignore_empty_service and not self.store.ready_addresses(svc.namespace, svc.name):
            return None  # CoreDNS `ignore empty_service`
        ports = [(p.name, p.protocol, p.port) for p in svc.ports] or [("", "tcp", -1)]
        if len(below) == 2:
            pname, proto = below[0].removeprefix("_"), below[1].removeprefix("_")
            ports = [p for p in ports if p[0] == pname and p[1] == proto and p[2] != -1]
            if not ports:
                return None
        items = (_Item(base, ip, port) for _, _, port in ports for ip in svc.cluster_ips)
        return _Items(len(ports) * len(svc.cluster_ips), items)

    def _endpoint_items(self, chosen: list[ReadyAddress], base: Labels) -> Iterator[_Item]:
        for r in chosen:
            target = (self.endpoint_name(r), *base)
            for p in r.slice.ports:
                yield _Item(target, r.address, p.port)

    def _by_port(self, chosen: list[ReadyAddress], below: Labels, base: Labels) -> list[_Item]:
        """`_<port>._<proto>` below a headless service: any two labels, a leading '_' optional (as CoreDNS reads
        spec 2.4.2)."""
        pname, proto = below[0].removeprefix("_"), below[1].removeprefix("_")
        return [
            _Item((self.endpoint_name(r), *base), r.address, p.port)
            for r in chosen
            for p in r.slice.ports
            if p.name == pname and p.protocol == proto and p.port != -1
        ]

    def _from_items(self, name: Labels, items: _Items, qtype: int) -> Answer:
        if qtype in (A, AAAA, ANY):
            want = {A: (False,), AAAA: (True,), ANY: (False, True)}[qtype]
            seen: set[str] = set()
            rrs: list[RR] = []
            for it in items.each:
                if (":" in it.address) in want and it.address not in seen:
                    if len(rrs) == MAX_ADDRESS_RRS:
                        break
                    seen.add(it.address)
                    rrs.append(self._addr_rr(name, it.address))
            return Answer(NOERROR, rrs)
        if qtype == SRV:
            return self._srv(name, items)
        return self._nodata()

    def _srv(self, name: Labels, items: _Items) -> Answer:
        """spec 2.3.2 / 2.4.2 as CoreDNS answers them: priority 0, weight max(1, floor(100/N)) with N counted before
        de-duplication, then one record per distinct (target, port) and one glue record per distinct (target,
        address); at most MAX_SRV_RRS records, the glue of the targets they name."""
        if not items.count:
            return self._nodata()
        weight = max(1, 100 // items.count)
        ans = Answer(NOERROR)
        seen_srv: set[tuple[Labels, int]] = set()
        seen_glue: set[tuple[Labels, str]] = set()
        for it in items.each:
            if it.port == -1:
                continue
            if (it.target, it.port) not in seen_srv:
                if len(ans.answer) == MAX_SRV_RRS:
                    break
                seen_srv.add((it.target, it.port))
                ans.answer.append(RR(name, SRV, self.ttl, (0, weight, it.port, it.target)))
            if (it.target, it.address) not in seen_glue:
                seen_glue.add((it.target, it.address))
                ans.additional.append(self._addr_rr(it.target, it.address))
        if not ans.answer:
            ans.additional = []
        return ans

    def _external(
        self, name: Labels, svc: Service, qtype: int, zone: Labels, tags: set[Tag], chain: tuple[Labels, ...]
    ) -> Answer:
        """spec 2.5: CNAME, chased locally when the target is in a zone we serve."""
        try:
            ipaddress.ip_address(svc.external_name)
            return self._nx()  # an IP-like externalName is ignored (CoreDNS quirk)
        except ValueError:
            pass
        target = labels_of(svc.external_name)
        cname = RR(name, CNAME, self.ttl, (target,))
        if qtype == CNAME:
            return Answer(NOERROR, [cname])
        if qtype not in (A, AAAA, ANY):
            return self._nodata()  # SRV, TXT and others: NODATA without the CNAME
        if target == name:
            return self._nodata()  # `x CNAME x` is skipped
        chain = (*chain, name)
        target_zone = self.zone_of(target)
        if target_zone is None:
            # Out of our zones: the CNAME alone until forwarding arrives (a resolver chases it).
            return Answer(NOERROR, [cname])
        if target in chain or len(chain) >= MAX_CNAME_CHAIN:
            raise _Loop
        rest = self._lookup(target, qtype, target_zone, tags, chain)
        # RFC 6604: the rcode is that of the last name in the chain; the SOA belongs to the target's zone.
        if rest.negative:
            rest.authority = rest.authority or [self.soa(target_zone)]
        return Answer(rest.rcode, [cname, *rest.answer], rest.authority, rest.additional)

    # ------------------------------------------------------------ pods

    def _pod(self, name: Labels, rel: Labels, qtype: int, tags: set[Tag]) -> Answer:
        """CoreDNS `pods` (not in the spec): `<dashed-ip>.<ns>.pod.<zone>` in insecure or verified mode."""
        if not rel:
            return self._nodata()  # pod.<zone> is NODATA in every mode
        if self.cfg.pods == "disabled" or len(rel) > 2:
            return self._nx()
        ns = rel[-1]
        if not self.exposed(ns):
            return self._nx()
        if len(rel) == 1:
            return self._nodata()
        ip = undash(rel[0])
        if ip is None:
            return self._nx()
        if self.cfg.pods == "verified":
            tags.add(pods_tag(ns))
            if not self.store.pod_has_ip(ns, ip):
                return self._nx()
        if (qtype in (A, AAAA, ANY) and (":" in ip) == (qtype == AAAA)) or qtype == ANY:
            return Answer(NOERROR, [self._addr_rr(name, ip)])
        return self._nodata()

    # ------------------------------------------------------------ reverse

    def _reverse(self, rel: Labels, qtype: int, zone: Labels, tags: set[Tag]) -> Answer:
        """spec 2.3.3 / 2.4.3: PTR for ClusterIPs (first service) and ready endpoint IPs (one per service and name)."""
        if not rel:
            if qtype == SOA:
                return Answer(NOERROR, [self.soa(zone)])
            if qtype == NS:
                return Answer(NOERROR, [RR(zone, NS, self.ttl, (("ns", "dns", *zone),))])
            return self._nodata()
        ip = reverse_to_ip((*rel, *zone))
        if ip is None:
            return self._nx()
        targets: list[Labels] = []
        for svc in self.store.services_with_cluster_ip(ip):
            if self.exposed(svc.namespace):
                targets.append((svc.name, svc.namespace, "svc", *self.domain))
                break
        if not targets:
            for svc, item in self.store.endpoints_with_ip(ip):
                if not self.exposed(svc.namespace):
                    continue
                target = (self.endpoint_name(item), svc.name, svc.namespace, "svc", *self.domain)
                if target not in targets:
                    targets.append(target)
        if not targets:
            tags.add(ABSENT_IP)  # shared, as for absent services; store.py emits it when any address appears
            return self._nx()
        tags.add(ip_tag(ip))
        if qtype != PTR:
            return self._nodata()
        name = (*rel, *zone)
        return Answer(NOERROR, [RR(name, PTR, self.ttl, (t,)) for t in targets])


# ---------------------------------------------------------------- name helpers

_OCTET = re.compile(r"[0-9]{1,3}")  # one in-addr.arpa label (ASCII digits only)
_DASHED_IP = re.compile(r"[0-9a-f-]+")  # a dashed IP label (CoreDNS pod names), lower-cased like every label


def dashed(address: str) -> str:
    """CoreDNS's dashed IP: 10.11.12.13 -> 10-11-12-13; IPv6 colons to dashes, a trailing '-' gets a '0'."""
    if ":" in address:
        out = address.lower().replace(":", "-")
        return out + "0" if out.endswith("-") else out
    return address.replace(".", "-")


def undash(label: str) -> str | None:
    """CoreDNS `pods`: exactly 3 dashes and no '--' is IPv4, otherwise IPv6; None if it is not an IP.

    Only ASCII hex digits and dashes can make an address: ipaddress would accept an IPv6 zone index
    (`fe80--1%eth0`), which Go's net.ParseIP, and so CoreDNS, rejects."""
    if not _DASHED_IP.fullmatch(label):
        return None
    text = label.replace("-", ".") if label.count("-") == 3 and "--" not in label else label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def reverse_to_ip(name: Labels) -> str | None:
    """`d.c.b.a.in-addr.arpa` or 32 nibbles under `ip6.arpa` to canonical IP text; None otherwise.

    Labels are client bytes decoded as latin-1, so digits are matched as ASCII: str.isdigit() also accepts
    superscripts such as '\xb2', on which int() raises."""
    if name[-2:] == ("in-addr", "arpa"):
        octets = name[:-2]
        if len(octets) != 4 or not all(_OCTET.fullmatch(o) and int(o) <= 255 for o in octets):
            return None
        if any(len(o) > 1 and o.startswith("0") for o in octets):
            return None
        return ".".join(reversed(octets))
    if name[-2:] == ("ip6", "arpa"):
        nibbles = name[:-2]
        if len(nibbles) != 32 or not all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            return None
        hexstr = "".join(reversed(nibbles))
        return str(ipaddress.IPv6Address(int(hexstr, 16)))
    return None

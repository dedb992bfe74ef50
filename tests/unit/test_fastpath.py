"""Pre-rendered answers: a store change drops exactly the answers that depended on what changed."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnsd.cluster.link import ClusterHandler
from dnsd.cluster.records import ClusterRecords
from dnsd.config import ClusterConfig
from dnsd.engine.chain import Chain
from dnsd.engine.engine import Engine
from dnsd.engine.fastpath import (
    ENTRY_OVERHEAD,
    EXACT_BUDGET,
    EXACT_OVERHEAD,
    MAX_EXACT_PER_ENTRY,
    FastTable,
    parsed_length,
)
from dnsd.store.model import Endpoint, EndpointPort, EndpointSlice, Namespace, Service, ServicePort
from dnsd.store.store import Store


def _svc(name: str, ip: str, ns: str = "default") -> Service:
    return Service(ns, name, "ClusterIP", (ip,), False, (ServicePort("http", 80, "tcp"),), "", False)


def _slice(svc: str, *ips: str, ns: str = "default") -> EndpointSlice:
    eps = tuple(Endpoint((ip,), True, "", "", "") for ip in ips)
    return EndpointSlice(ns, f"{svc}-x", svc, "IPv4", eps, (EndpointPort("http", 8080, "tcp"),))


def _engine() -> tuple[Engine, Store]:
    store = Store()
    store.apply([Namespace("default"), _svc("web", "10.96.0.20"), _svc("api", "10.96.0.30")], [])
    store.apply([_slice("web", "10.244.0.5"), _slice("api", "10.244.0.6")], [])
    store.mark_synced()
    records = ClusterRecords(ClusterConfig(), store)
    return Engine(Chain([ClusterHandler(records)]), store), store


def _ask(engine: Engine, name: str, rdtype: str = "A", qid: int = 4242) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    reply = engine.handle(q.to_wire(), False)
    assert reply is not None
    return dns.message.from_wire(reply)


@dataclass(frozen=True)
class Case:
    changed: str  # which store change
    dropped: set[str]  # warmed names whose answers must be re-rendered
    kept: set[str]  # warmed names whose answers must survive


WARM = [
    "web.default.svc.cluster.local.",
    "api.default.svc.cluster.local.",
    "nope.default.svc.cluster.local.",
    "20.0.96.10.in-addr.arpa.",
    "5.0.244.10.in-addr.arpa.",
    "foo.cluster.local.",
]

CASES = [
    Case(
        "web service IP",
        {"web.default.svc.cluster.local.", "20.0.96.10.in-addr.arpa.", "5.0.244.10.in-addr.arpa."},
        {"api.default.svc.cluster.local.", "nope.default.svc.cluster.local.", "foo.cluster.local."},
    ),
    Case(
        "web endpoints",
        {"web.default.svc.cluster.local.", "5.0.244.10.in-addr.arpa."},
        {"api.default.svc.cluster.local.", "20.0.96.10.in-addr.arpa.", "foo.cluster.local."},
    ),
    Case("new service nope", {"nope.default.svc.cluster.local."}, {"web.default.svc.cluster.local."}),
    Case("new namespace", set(WARM), set()),
]


def _change(store: Store, which: str) -> None:
    if which == "web service IP":
        store.apply([_svc("web", "10.96.0.21")], [])
    elif which == "web endpoints":
        store.apply([_slice("web", "10.244.0.9")], [])
    elif which == "new service nope":
        store.apply([_svc("nope", "10.96.0.40")], [])
    elif which == "new namespace":
        store.apply([Namespace("other")], [])
    else:
        raise AssertionError(which)


def _rtype(name: str) -> str:
    return "PTR" if name.endswith("arpa.") else "A"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.changed)
def test_change_drops_exactly_the_answers_it_touches(case: Case) -> None:
    engine, store = _engine()
    keys = {}
    for name in WARM:
        _ask(engine, name, _rtype(name))
        _ask(engine, name, _rtype(name))  # a negative answer is kept from its second ask (the doorkeeper)
        keys[name] = next(k for k in engine.table.entries if k.startswith(dns.name.from_text(name).to_wire()))
    _change(store, case.changed)
    for name in case.dropped:
        assert keys[name] not in engine.table.entries, f"{name} should have been dropped"
    for name in case.kept:
        assert keys[name] in engine.table.entries, f"{name} should have been kept"


def test_changed_answer_is_served_after_the_change() -> None:
    engine, store = _engine()
    first = _ask(engine, "web.default.svc.cluster.local.")
    assert first.answer[0] == dns.rrset.from_text("web.default.svc.cluster.local.", 5, "IN", "A", "10.96.0.20")
    store.apply([_svc("web", "10.96.0.21")], [])
    second = _ask(engine, "web.default.svc.cluster.local.")
    assert second.answer[0] == dns.rrset.from_text("web.default.svc.cluster.local.", 5, "IN", "A", "10.96.0.21")
    store.apply([], [("Service", "default", "web")])
    assert _ask(engine, "web.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN


def test_serial_is_patched_into_cached_negative_answers() -> None:
    engine, store = _engine()
    before = _ask(engine, "nope.default.svc.cluster.local.")
    _ask(engine, "nope.default.svc.cluster.local.")  # now an exact-query hit
    # A change elsewhere moves the serial (to the future here, so the clock cannot hide the move).
    store.serial = before.authority[0][0].serial + 100_000
    store.apply([_svc("unrelated", "10.96.0.99")], [])
    after = _ask(engine, "nope.default.svc.cluster.local.")
    assert after.authority[0][0].serial == before.authority[0][0].serial + 100_000


@pytest.mark.parametrize("qid", [0, 1, 0xBEEF, 0xFFFF])
def test_cached_reply_carries_each_query_id_and_rd(qid: int) -> None:
    engine, _ = _engine()
    _ask(engine, "web.default.svc.cluster.local.")  # warm
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    q.id = qid
    q.flags = 0  # RD clear
    wire = engine.handle(q.to_wire(), False)
    assert wire is not None
    assert struct.unpack("!H", wire[:2])[0] == qid
    assert not wire[2] & 0x01, "RD must be copied, and it was clear"


def test_mixed_case_hit_is_spelled_as_asked() -> None:
    engine, _ = _engine()
    _ask(engine, "_http._tcp.web.default.svc.cluster.local.", "SRV")  # warm the lower-case template
    reply = _ask(engine, "_HTTP._tcp.Web.default.SVC.Cluster.LOCAL.", "SRV")
    assert reply.question[0].name.to_text() == "_HTTP._tcp.Web.default.SVC.Cluster.LOCAL."
    assert reply.answer[0].name.to_text() == "_HTTP._tcp.Web.default.SVC.Cluster.LOCAL."
    # The zone part of the target is spelled as in the query; the service part comes from the object.
    assert reply.answer[0][0].target.to_text() == "web.default.svc.Cluster.LOCAL."


def test_table_is_bounded() -> None:
    engine, _ = _engine()
    engine.table.max_entries = 50
    for i in range(200):
        _ask(engine, f"x{i}.default.svc.cluster.local.")
    assert len(engine.table) <= 50
    assert sum(len(engine.table.tagged(tag)) for tag in engine.table.by_tag) <= 50


def test_random_names_share_one_invalidation_tag() -> None:
    """A flood of absent names must not grow the invalidation index: they share one tag per namespace."""
    engine, _ = _engine()
    for i in range(300):
        for _ in range(2):  # asked twice: a negative answer is kept from its second ask (the doorkeeper)
            _ask(engine, f"random{i}.default.svc.cluster.local.")
            _ask(engine, f"{i % 250}.{i // 250}.0.10.in-addr.arpa.", "PTR")
    assert len(engine.table) >= 600
    assert len(engine.table.by_tag) <= 4, sorted(engine.table.by_tag)


def test_absent_answers_go_when_the_name_appears() -> None:
    engine, store = _engine()
    assert _ask(engine, "77.0.244.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN
    assert _ask(engine, "new.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
    store.apply([_svc("new", "10.96.0.77"), _slice("new", "10.244.0.77")], [])
    ptr = _ask(engine, "77.0.244.10.in-addr.arpa.", "PTR")
    assert ptr.answer[0][0].target.to_text() == "10-244-0-77.new.default.svc.cluster.local."
    assert _ask(engine, "new.default.svc.cluster.local.").answer[0][0].address == "10.96.0.77"


# ---------------------------------------------------------------- memory bounded by bytes


def _exact_cost(table: FastTable) -> int:
    """What the exact tables hold, counted from their contents (not from the table's own counter)."""
    return sum(len(k) + len(v.rest) + EXACT_OVERHEAD for t in table.exact for k, v in t.items())


@pytest.mark.parametrize(
    ("entry_budget", "exact_budget"),
    [(20_000, 1_000_000), (1_000_000, 8_000), (6_000, 3_000), (1_000_000, 100)],
    ids=["entries-bound", "exact-bound", "both-bound", "exact-smaller-than-a-slot"],
)
def test_tables_stay_within_their_byte_budgets(entry_budget: int, exact_budget: int) -> None:
    engine, store = _engine()
    engine.table.entry_budget = entry_budget
    engine.table.exact_budget = exact_budget
    peak_entries = peak_exact = 0
    for i in range(400):
        for tcp in (False, False, True, True):  # the second ask gets a negative answer kept (the doorkeeper)
            q = dns.message.make_query(f"name{i}.default.svc.cluster.local.", "A")
            assert engine.handle(q.to_wire(), tcp) is not None
            table = engine.table
            assert table.entry_bytes <= entry_budget
            assert table.exact_bytes <= exact_budget
            assert table.exact_bytes == _exact_cost(table)
            peak_entries, peak_exact = max(peak_entries, table.entry_bytes), max(peak_exact, table.exact_bytes)
            assert table.entry_bytes == sum(
                len(k) + len(e.rendered.data) + ENTRY_OVERHEAD for k, e in table.entries.items()
            )
    # A change that drops everything (a new namespace: ALL) leaves nothing counted.
    store.apply([Namespace("other")], [])
    assert (engine.table.entry_bytes, engine.table.exact_bytes, len(engine.table)) == (0, 0, 0)
    # 800 entries and 800 exact slots were made: each small budget must have dropped some, and only when the
    # budget was (nearly) used: one more entry or slot (under 400 octets here) would not have fitted.
    if entry_budget < 100_000:
        assert len(engine.table) < 800, "the entry budget should have evicted entries"
        assert peak_entries > entry_budget - 400, f"entries evicted early: at most {peak_entries} of {entry_budget}"
    if 1_000 < exact_budget < 100_000:
        assert peak_exact > exact_budget - 400, f"exact tables cleared early: at most {peak_exact} of {exact_budget}"
    if exact_budget < 100_000:
        assert len(engine.table.exact_udp) + len(engine.table.exact_tcp) < 800, "the exact budget should have cleared"


PADDINGS = [b"\x00", b"garbage", bytes(300)]


@pytest.mark.parametrize("pad", PADDINGS, ids=["1 octet", "7 octets", "300 octets"])
@pytest.mark.parametrize("edns", [False, True], ids=["plain", "edns"])
def test_query_with_trailing_octets_gets_no_exact_slot(pad: bytes, edns: bool) -> None:
    """The parser ignores octets after the last record; the exact table keys on whole queries, so a padded query
    must neither take a slot nor match one (each distinct padding would otherwise take its own)."""
    engine, _ = _engine()
    q = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=0 if edns else None)
    plain = q.to_wire()
    for data in (plain + pad, plain + pad, plain, plain):
        reply = engine.handle(data, False)
        assert reply is not None and reply[:2] == data[:2]
    assert list(engine.table.exact_udp) == [plain[2:]]


def test_entry_gets_exact_slots_again_after_the_exact_tables_are_cleared() -> None:
    engine, _ = _engine()
    name = "web.default.svc.cluster.local."
    # Distinct spellings (RFC 4343: one name): the n-th upper-cases the letters where n has a bit set.
    spellings = [
        "".join(c.upper() if (n >> i) & 1 else c for i, c in enumerate(name.replace(".", ""))) for n in range(18)
    ]
    spellings = [s[:3] + "." + s[3:10] + "." + s[10:13] + "." + s[13:20] + "." + s[20:] + "." for s in spellings]
    for s in spellings:
        engine.handle(dns.message.make_query(s, "A").to_wire(), False)
    assert len(engine.table.exact_udp) == MAX_EXACT_PER_ENTRY, "the entry holds its maximum of exact slots"
    # Other names overflow the exact budget: the tables are cleared.
    engine.table.exact_budget = engine.table.exact_bytes + 1
    engine.handle(dns.message.make_query("api.default.svc.cluster.local.", "A").to_wire(), False)
    assert len(engine.table.exact_udp) == 1
    engine.table.exact_budget = EXACT_BUDGET
    last = dns.message.make_query(spellings[-1], "A").to_wire()
    engine.handle(last, False)
    hits = engine.counters.fast_hits
    engine.handle(last, False)
    assert last[2:] in engine.table.exact_udp, "the entry must get exact slots again after the clear"
    assert engine.counters.fast_hits == hits + 1


def _q(*, edns: bool = False, tsig: bool = False, ixfr_soa: bool = False) -> bytes:
    """A query after its ID: one question, optionally a SOA in authority, an OPT and a TSIG in additional."""
    name = b"\x03web\x07default\x03svc\x07cluster\x05local\x00"
    auth = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 0, 22) + b"\x00\x00" + bytes(20) if ixfr_soa else b""
    add = b""
    if edns:
        add += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 4) + struct.pack("!HH", 3, 0)
    if tsig:
        rdata = b"\x00" + struct.pack("!HIHH", 0, 0, 300, 0) + struct.pack("!HHH", 1, 0, 0)
        add += b"\x03key\x00" + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    flags_counts = struct.pack("!5H", 0x0100, 1, 0, 1 if ixfr_soa else 0, int(edns) + int(tsig))
    return flags_counts + name + struct.pack("!HH", 251 if ixfr_soa else 1, 1) + auth + add


PARSED = [
    ("question only", _q(), len(_q())),
    ("with OPT", _q(edns=True), len(_q(edns=True))),
    ("with OPT and TSIG", _q(edns=True, tsig=True), len(_q(edns=True, tsig=True))),
    ("IXFR with a SOA (owner a pointer)", _q(ixfr_soa=True), len(_q(ixfr_soa=True))),
    ("trailing octets", _q(edns=True) + b"\x00\xff", len(_q(edns=True))),
    ("shorter than a header", b"\x01\x00\x00\x01", -1),
    ("9 octets", bytes(9), -1),
    ("record cut in its RDLENGTH", _q(edns=True)[:-5], -1),
    ("name cut", _q()[:20], -1),
    ("name cut right after a label", _q()[:14], -1),
    ("record fixed part cut", _q(edns=True)[:-8], -1),
    ("record data cut", _q(edns=True)[:-2], -1),
]


@pytest.mark.parametrize(("data", "want"), [(d, w) for _, d, w in PARSED], ids=[n for n, _, _ in PARSED])
def test_parsed_length(data: bytes, want: int) -> None:
    """The octets the parser reads, which is what an exact-query slot may be keyed on; -1 past the end."""
    assert parsed_length(data) == want


def _spellings(name: str, n: int) -> list[str]:
    """n distinct spellings of one name (RFC 4343): the k-th upper-cases the letters where k has a bit set."""
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    out = []
    for k in range(n):
        chars = list(name)
        for bit, i in enumerate(letters):
            if (k >> bit) & 1:
                chars[i] = chars[i].upper()
        out.append("".join(chars))
    return out


def test_exact_tables_hold_up_to_twice_max_entries() -> None:
    """The count bound of the exact tables (besides the byte budget): 2 x max_entries slots are kept, one more
    clears them."""
    engine, _ = _engine()
    engine.table.max_entries = 10
    for name in ("web.default.svc.cluster.local.", "api.default.svc.cluster.local."):
        for s in _spellings(name, 10):
            engine.handle(dns.message.make_query(s, "A").to_wire(), False)
    assert len(engine.table.exact_udp) == 20, "2 x max_entries slots must all be kept"
    engine.handle(dns.message.make_query("web.DEFAULT.svc.cluster.local.", "A").to_wire(), False)  # a new spelling
    assert len(engine.table.exact_udp) == 1, "one more slot clears the tables"


def test_serial_change_keeps_exact_slots_without_a_serial() -> None:
    """Only replies that carry the SOA serial lose their exact slots when it moves; an A answer keeps its slot."""
    engine, store = _engine()
    web = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
    engine.handle(web, False)
    engine.handle(web, False)
    hits = engine.counters.fast_hits
    store.serial += 100_000  # to the future, so that the clock cannot hide the move
    store.apply([_svc("unrelated", "10.96.0.99")], [])  # touches absent names of default, not web
    engine.handle(web, False)
    assert engine.counters.fast_hits == hits + 1, "the A answer holds no serial: its exact slot must stay"


def test_evicted_entry_leaves_its_tag_to_the_others() -> None:
    """Two answers share a tag (absent names of one namespace); when one is evicted, a change on the tag still
    drops the other."""
    engine, store = _engine()
    engine.table.max_entries = 3
    for _ in range(2):  # a negative answer is kept from its second ask (the doorkeeper)
        _ask(engine, "gone1.default.svc.cluster.local.")  # evicted below
        _ask(engine, "gone2.default.svc.cluster.local.")  # shares the tag, stays
    _ask(engine, "web.default.svc.cluster.local.")
    _ask(engine, "api.default.svc.cluster.local.")  # evicts gone1
    assert len(engine.table) == 3
    store.apply([_svc("gone2", "10.96.0.42")], [])
    assert _ask(engine, "gone2.default.svc.cluster.local.").answer, "a stale NXDOMAIN was served after the change"

"""The table of pre-rendered answers: keyed on the lower-cased question plus the EDNS variant, dropped by tag.

A store change names the tags it touches (answer.Tag); every rendered answer that depended on one of them is
removed at once, so nothing the store no longer holds is served again. Entries are rebuilt on the next query.

In front of it sits the exact-query table: the bytes of a whole query after its ID (flags, counts, question, OPT)
map to the bytes of the finished reply after its ID. A hit is one slice, one dict lookup and one concatenation,
with no parsing at all; every exact key belongs to an entry and goes when the entry goes. Only a query that is
exactly its parsed records gets a slot: bytes after the last record are ignored by the parser (as BIND and NSD
do), so padded copies of one question would otherwise each take a slot as large as the padding.

Memory is bounded by bytes, not by counts (a 64 KB TCP answer and a 60-octet NXDOMAIN are not the same cost, and
a count that fits a small cluster is outgrown by a big one): the pre-rendered entries by ENTRY_BUDGET, the exact
tables together by EXACT_BUDGET. A byte count is the octets of the key and value plus a fixed per-slot overhead
for the Python objects and the dict slot.

Names asked once must not evict the names asked all the time (a stream of random labels, each one NXDOMAIN): a
negative answer is kept only when its question is asked a second time while the doorkeeper (a bounded set of
question hashes, as TinyLFU's) still remembers the first. Until then it is answered from its zone's negative
tail: the reply rendered once per zone, link and EDNS variant with the zone itself as the question, and moved
behind the question asked (render.behind), so a one-off name costs neither a render nor a table slot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from dnsd.observe.counts import Key, QueryCounts, Slot
from dnsd.proto.answer import ALL, Tag
from dnsd.proto.render import Rendered

MAX_EXACT_PER_ENTRY = 16  # spellings/flag variants remembered per entry (bounds memory under 0x20 or odd clients)
ENTRY_BUDGET = 64 * 1024 * 1024  # octets of pre-rendered entries (keys, replies, overhead) before the oldest go
EXACT_BUDGET = 32 * 1024 * 1024  # octets of the UDP and TCP exact tables together before they are cleared
# What a slot costs besides its octets (64-bit CPython, measured with tracemalloc over 20,000 A, SRV and NXDOMAIN
# entries): an exact slot is two bytes objects (33 octets of header each), its Slot, the dict's entry and index
# and the entry's reference to it; an entry is its key, the Rendered and its data, the Entry, its tags and its
# places in the entry and tag indexes.
EXACT_OVERHEAD = 200
ENTRY_OVERHEAD = 480
DOORKEEPER = 65_536  # question hashes remembered for admission (about 3 MB); forgotten all at once when full
MAX_TAG_SETS = 4096  # shared tag-set copies (absent names per namespace...); dropped all at once when full
_OWN_TAGS = frozenset({"svc", "ip"})  # tag kinds naming one object: their sets are not shared
MAX_TAILS = 1024  # negative tails (one per zone, link, rcode and EDNS variant); dropped all at once when full

# What a negative tail is kept under: (link, zone, rcode, aa, ra, EDNS variant).
TailKey = tuple[str, tuple[str, ...], int, bool, bool, int]


@dataclass(slots=True)
class Entry:
    rendered: Rendered
    tags: tuple[Tag, ...]  # a tuple: a frozenset of one tag costs 216 octets, a tuple 48
    link: str = "cluster"  # the link that answered (the metrics' link label for its hits)
    exact: list[tuple[int, bytes]] = field(default_factory=list)  # (table index, exact key) pairs that point here


def table_index(tcp: bool, v6: bool) -> int:
    """Which exact table: one per transport and address family, so that a hit's slot knows both labels."""
    return (2 if tcp else 0) + (1 if v6 else 0)


class FastTable:
    """Bounded by bytes: when full, the oldest entry goes (dicts keep insertion order). max_entries adds a count
    bound (tests; None: bytes only)."""

    def __init__(
        self,
        max_entries: int | None = None,
        entry_budget: int = ENTRY_BUDGET,
        exact_budget: int = EXACT_BUDGET,
        counts: QueryCounts | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.entry_budget = entry_budget
        self.exact_budget = exact_budget
        self.entry_bytes = 0  # what the entries cost, as counted against entry_budget
        self.exact_bytes = 0  # what both exact tables cost, as counted against exact_budget
        self.entries: dict[bytes, Entry] = {}
        # Tag -> the keys of the entries holding it: one key as itself, more as a set (most tags are one
        # service's, held by one or two entries; a set costs 216 octets).
        self.by_tag: dict[Tag, bytes | set[bytes]] = {}
        self.with_serial: set[bytes] = set()  # entries holding an SOA serial (negative answers, SOA queries)
        # UDP/IPv4, UDP/IPv6, TCP/IPv4, TCP/IPv6 (table_index): query after its ID -> the Slot of its reply.
        self.exact: tuple[dict[bytes, Slot], ...] = ({}, {}, {}, {})
        self.exact_udp, self.exact_udp6, self.exact_tcp, self.exact_tcp6 = self.exact
        # Where a slot's hits go when it leaves its table (the metrics read live slots at scrape time).
        self.counts = counts if counts is not None else QueryCounts()
        self._tag_sets: dict[tuple[Tag, ...], tuple[Tag, ...]] = {}
        self._seen: set[int] = set()  # the doorkeeper: hashes of negative questions asked once
        # Negative tails (see the module doc): dropped at every invalidation, as the SOA they hold may change.
        self.tails: dict[TailKey, Rendered] = {}

    def admit(self, key: bytes) -> bool:
        """Whether a negative answer for key is worth a table slot: it is when its question was asked before
        (while the doorkeeper remembered it). A hash collision only admits a name early."""
        h = hash(key)
        seen = self._seen
        if h in seen:
            seen.discard(h)
            return True
        if len(seen) >= DOORKEEPER:
            seen.clear()
        seen.add(h)
        return False

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: bytes, rendered: Rendered, tags: frozenset[Tag], link: str = "cluster") -> Entry:
        if key in self.entries:
            self._remove(key)
        cost = _entry_cost(key, rendered)
        limit = self.max_entries
        while self.entries and (self.entry_bytes + cost > self.entry_budget or (limit and len(self.entries) >= limit)):
            self._remove(next(iter(self.entries)))
        kept = tuple(tags)
        if not any(tag.kind in _OWN_TAGS for tag in kept):
            # Most negative answers share a tag set (every absent name of a namespace has the same one): one
            # copy for all. Sets naming one service or address are not worth a slot here.
            if len(self._tag_sets) >= MAX_TAG_SETS:
                self._tag_sets.clear()  # only a cache of shared copies: dropping it loses nothing
            kept = self._tag_sets.setdefault(kept, kept)
        entry = Entry(rendered, kept, link)
        self.entries[key] = entry
        self.entry_bytes += cost
        by_tag = self.by_tag
        for tag in tags:
            held = by_tag.get(tag)
            if held is None:
                by_tag[tag] = key
            elif isinstance(held, bytes):
                if held != key:
                    by_tag[tag] = {held, key}
            else:
                held.add(key)
        if rendered.serial_at >= 0:
            self.with_serial.add(key)
        return entry

    def remember_exact(
        self, entry: Entry, tcp: bool, query_after_id: bytes, reply_after_id: bytes, key: Key, v6: bool = False
    ) -> None:
        """Map this query (after its ID) to this reply (after its ID), counted under key. query_after_id must be a
        query that wire.parse_query accepted; one with octets after its last record gets no slot (see the module
        doc)."""
        if len(entry.exact) >= MAX_EXACT_PER_ENTRY or parsed_length(query_after_id) != len(query_after_id):
            return
        index = table_index(tcp, v6)
        table = self.exact[index]
        if query_after_id in table:
            return  # already there (a slot of another entry for the same octets: keep that one)
        cost = len(query_after_id) + len(reply_after_id) + EXACT_OVERHEAD
        if cost > self.exact_budget:
            return  # would not fit even in empty tables
        limit = self.max_entries
        if self.exact_bytes + cost > self.exact_budget or (limit and len(table) >= 2 * limit):
            self.clear_exact()  # a cheap bound; hot queries come back on their next ask
        table[query_after_id] = Slot(reply_after_id, key, len(query_after_id) + 2)
        self.exact_bytes += cost
        entry.exact.append((index, query_after_id))

    def clear_exact(self) -> None:
        """Empty the exact tables; every entry may collect MAX_EXACT_PER_ENTRY slots again."""
        self._fold_all()
        for table in self.exact:
            table.clear()
        self.exact_bytes = 0
        for entry in self.entries.values():
            entry.exact.clear()

    def _fold_all(self) -> None:
        fold = self.counts.fold
        for table in self.exact:
            for k, slot in table.items():
                if slot.hits:
                    fold(slot, k)

    def _forget_exact(self, entry: Entry) -> None:
        for index, k in entry.exact:
            slot = self.exact[index].pop(k, None)
            if slot is not None:
                self.exact_bytes -= len(k) + len(slot.rest) + EXACT_OVERHEAD
                if slot.hits:
                    self.counts.fold(slot, k)
        entry.exact.clear()

    def _remove(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.entry_bytes -= _entry_cost(key, entry.rendered)
        self._forget_exact(entry)
        self.with_serial.discard(key)
        by_tag = self.by_tag
        for tag in entry.tags:
            held = by_tag.get(tag)
            if isinstance(held, bytes):
                if held == key:
                    del by_tag[tag]
            elif held is not None:
                held.discard(key)
                if not held:
                    del by_tag[tag]

    def invalidate(self, tags: set[Tag]) -> int:
        """Drop every answer that depended on one of tags; ALL drops everything. Returns how many went. The
        negative tails go too: a few renders rebuild them."""
        self.tails.clear()
        if ALL in tags:
            n = len(self.entries)
            self.clear()
            return n
        n = 0
        for tag in tags:
            for key in self.tagged(tag):
                self._remove(key)
                n += 1
        return n

    def serial_changed(self) -> None:
        """Replies carrying the old SOA serial may not be served exactly any more; the entries stay and the
        serial is patched in when each is next finished."""
        for key in self.with_serial:
            entry = self.entries.get(key)
            if entry is not None:
                self._forget_exact(entry)

    def tagged(self, tag: Tag) -> tuple[bytes, ...]:
        """The keys of the entries that depend on tag."""
        held = self.by_tag.get(tag)
        if held is None:
            return ()
        return (held,) if isinstance(held, bytes) else tuple(held)

    def clear(self) -> None:
        self._tag_sets.clear()
        self.tails.clear()
        self._seen.clear()
        self.entries.clear()
        self.entry_bytes = 0
        self.by_tag.clear()
        self.with_serial.clear()
        self._fold_all()
        for table in self.exact:
            table.clear()
        self.exact_bytes = 0


def _entry_cost(key: bytes, rendered: Rendered) -> int:
    return len(key) + len(rendered.data) + ENTRY_OVERHEAD


def parsed_length(query_after_id: bytes) -> int:
    """The octets of a query after its ID that the parser reads: the rest of the header, the question, and the
    authority and additional records the header counts (wire.parse_query); -1 when the walk runs off the end."""
    n = len(query_after_id)
    if n < 10:
        return -1
    ns, ar = struct.unpack_from("!HH", query_after_id, 6)
    off = 10  # the header after its ID
    for record in range(1 + ns + ar):  # the question, then the records
        while True:  # a name: labels up to the root label or a compression pointer (RFC 1035 4.1.4)
            if off >= n:
                return -1
            length = query_after_id[off]
            if length >= 0xC0:
                off += 2
                break
            off += length + 1
            if length == 0:
                break
        off += 4  # type and class
        if record:  # TTL, RDLENGTH and RDATA follow in a record
            if off + 6 > n:
                return -1
            (rdlen,) = struct.unpack_from("!H", query_after_id, off + 4)
            off += 6 + rdlen
    return off if off <= n else -1

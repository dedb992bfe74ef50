"""The table of pre-rendered answers: keyed on the lower-cased question plus the EDNS variant, dropped by tag.

A store change names the tags it touches (answer.Tag); every rendered answer that depended on one of them is
removed at once, so nothing the store no longer holds is served again. Entries are rebuilt on the next query.

In front of it sits the exact-query table: the bytes of a whole query after its ID (flags, counts, question, OPT)
map to the bytes of the finished reply after its ID. A hit is one slice, one dict lookup and one concatenation,
with no parsing at all; every exact key belongs to an entry and goes when the entry goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsd.proto.answer import ALL, Tag
from dnsd.proto.render import Rendered

MAX_EXACT_PER_ENTRY = 16  # spellings/flag variants remembered per entry (bounds memory under 0x20 or odd clients)


@dataclass(slots=True)
class Entry:
    rendered: Rendered
    tags: frozenset[Tag]
    exact: list[tuple[bool, bytes]] = field(default_factory=list)  # (tcp, exact key) pairs that point here


class FastTable:
    """Bounded: when full, the oldest entry goes (dicts keep insertion order)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, Entry] = {}
        self.by_tag: dict[Tag, set[bytes]] = {}
        self.with_serial: set[bytes] = set()  # entries holding an SOA serial (negative answers, SOA queries)
        self.exact_udp: dict[bytes, bytes] = {}
        self.exact_tcp: dict[bytes, bytes] = {}
        self._tag_sets: dict[frozenset[Tag], frozenset[Tag]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: bytes, rendered: Rendered, tags: frozenset[Tag]) -> Entry:
        if key in self.entries:
            self._remove(key)
        while len(self.entries) >= self.max_entries:
            self._remove(next(iter(self.entries)))
        if len(self._tag_sets) >= self.max_entries:
            self._tag_sets.clear()  # only a cache of shared copies: dropping it loses nothing
        # Most answers share a tag set (every absent name of a namespace has the same one): keep one copy.
        tags = self._tag_sets.setdefault(tags, tags)
        entry = Entry(rendered, tags)
        self.entries[key] = entry
        for tag in tags:
            self.by_tag.setdefault(tag, set()).add(key)
        if rendered.serial_at >= 0:
            self.with_serial.add(key)
        return entry

    def remember_exact(self, entry: Entry, tcp: bool, query_after_id: bytes, reply_after_id: bytes) -> None:
        if len(entry.exact) >= MAX_EXACT_PER_ENTRY:
            return
        table = self.exact_tcp if tcp else self.exact_udp
        if len(table) >= 2 * self.max_entries:
            table.clear()  # a cheap bound; hot queries come back on their next ask
        table[query_after_id] = reply_after_id
        entry.exact.append((tcp, query_after_id))

    def _forget_exact(self, entry: Entry) -> None:
        for tcp, k in entry.exact:
            (self.exact_tcp if tcp else self.exact_udp).pop(k, None)
        entry.exact.clear()

    def _remove(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self._forget_exact(entry)
        self.with_serial.discard(key)
        for tag in entry.tags:
            keys = self.by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_tag[tag]

    def invalidate(self, tags: set[Tag]) -> int:
        """Drop every answer that depended on one of tags; ALL drops everything. Returns how many went."""
        if ALL in tags:
            n = len(self.entries)
            self.clear()
            return n
        n = 0
        for tag in tags:
            for key in list(self.by_tag.get(tag, ())):
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

    def clear(self) -> None:
        self._tag_sets.clear()
        self.entries.clear()
        self.by_tag.clear()
        self.with_serial.clear()
        self.exact_udp.clear()
        self.exact_tcp.clear()

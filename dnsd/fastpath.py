"""The table of pre-rendered answers: keyed on the lower-cased question plus the EDNS variant, dropped by tag.

A store change names the tags it touches (answer.Tag); every rendered answer that depended on one of them is
removed at once, so nothing the store no longer holds is served again. Entries are rebuilt on the next query.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnsd.answer import Tag
from dnsd.render import Rendered

ALL: Tag = ("all",)


@dataclass(slots=True)
class Entry:
    rendered: Rendered
    tags: frozenset[Tag]
    # For lower-case questions the reply is head + tail with only the ID and two flag bits changed.
    flags2: int
    flags3: int
    tail: bytes
    serial: int


class FastTable:
    """Bounded: when full, the oldest entry goes (dicts keep insertion order)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, Entry] = {}
        self.by_tag: dict[Tag, set[bytes]] = {}
        # Raw question bytes (after the header) of lower-case queries -> (expected counts, key): a hit costs
        # two dict lookups and no parsing at all.
        self.raw_udp: dict[bytes, tuple[bytes, bytes]] = {}
        self.raw_tcp: dict[bytes, tuple[bytes, bytes]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: bytes, rendered: Rendered, tags: frozenset[Tag], serial: int) -> Entry:
        if key in self.entries:
            self._remove(key)
        while len(self.entries) >= self.max_entries:
            self._remove(next(iter(self.entries)))
        data = rendered.data
        entry = Entry(rendered, tags, data[2], data[3], data[4:], serial)
        self.entries[key] = entry
        for tag in tags:
            self.by_tag.setdefault(tag, set()).add(key)
        return entry

    def remember_raw(self, tcp: bool, raw: bytes, counts: bytes, key: bytes) -> None:
        table = self.raw_tcp if tcp else self.raw_udp
        if len(table) >= self.max_entries:
            table.clear()  # cheap bound; the hot names come back on their next query
        table[raw] = (counts, key)

    def _remove(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
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

    def clear(self) -> None:
        self.entries.clear()
        self.by_tag.clear()
        self.raw_udp.clear()
        self.raw_tcp.clear()

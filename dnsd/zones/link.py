"""The zone-file link of the chain: the longest loaded zone that contains the name answers it."""

from __future__ import annotations

from dnsd.proto.answer import Answer, Labels
from dnsd.proto.wire import Query
from dnsd.zones.zone import Zone


class ZoneHandler:
    name = "zone"

    def __init__(self) -> None:
        # Replaced whole by the source (never mutated), so a lookup always sees one consistent set of zones.
        self.zones: dict[Labels, Zone] = {}

    def resolve(self, q: Query) -> Answer | None:
        zones = self.zones
        if not zones:
            return None
        name = q.labels
        for i in range(len(name) + 1):  # longest suffix first: the most specific zone wins
            zone = zones.get(name[i:])
            if zone is not None:
                return zone.lookup(name, q.qtype)
        return None

"""The zone-file link of the chain: the longest loaded zone that contains the name answers it."""

from __future__ import annotations

from dnsd.proto.answer import Answer, Labels
from dnsd.proto.wire import Query
from dnsd.zones.zone import MAX_CHASE, Zone


class ZoneHandler:
    name = "zone"

    def __init__(self) -> None:
        # Replaced whole by the source (never mutated), so a lookup always sees one consistent set of zones.
        self.zones: dict[Labels, Zone] = {}

    def zone_of(self, name: Labels) -> Labels | None:
        """The origin of the loaded zone holding name, if any."""
        zone = _zone_of(self.zones, name) if self.zones else None
        return zone.origin if zone is not None else None

    def classify(self, labels: Labels) -> tuple[str, str] | None:
        """For the metrics: the origin of the zone file a name is in (with its trailing dot); None: none."""
        origin = self.zone_of(labels)
        return (".".join(origin) + ".", "") if origin is not None else None

    def resolve(self, q: Query) -> Answer | None:
        zones = self.zones
        if not zones:
            return None
        zone = _zone_of(zones, q.labels)
        if zone is None:
            return None
        ans = zone.new_answer()
        target = zone.answer_into(q.labels, q.qtype, ans)
        hops = 0
        # A CNAME into another of our zones is chased there, as NSD chases across the zones it serves; the
        # answer then depends on both zones (their tags). A target in no zone of ours: the CNAME alone.
        while target is not None and hops < MAX_CHASE:
            zone = _zone_of(zones, target)
            if zone is None:
                break
            ans.tags = ans.tags | {zone.tag}
            target = zone.answer_into(target, q.qtype, ans)
            hops += 1
        return ans


def _zone_of(zones: dict[Labels, Zone], name: Labels) -> Zone | None:
    """The longest loaded zone containing name: the most specific zone wins."""
    for i in range(len(name) + 1):
        zone = zones.get(name[i:])
        if zone is not None:
            return zone
    return None

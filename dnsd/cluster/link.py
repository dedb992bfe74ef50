"""The cluster link of the chain: answers the cluster domain and its reverse zones from the endpoint store."""

from __future__ import annotations

from dnsd.cluster.records import ClusterRecords
from dnsd.proto.answer import Answer, Labels
from dnsd.proto.wire import Query


class ClusterHandler:
    name = "cluster"

    def __init__(self, records: ClusterRecords) -> None:
        self.records = records
        self._zone_text = {zone: ".".join(zone) + "." for zone in records.zones}

    def resolve(self, q: Query) -> Answer | None:
        return self.records.lookup(q.labels, q.qtype)

    def classify(self, labels: Labels) -> tuple[str, str] | None:
        """For the metrics: the zone of ours a name is in (with its trailing dot) and, under the cluster domain,
        its namespace (`<svc>.<ns>.svc.<zone>`, `<pod>.<ns>.pod.<zone>`, `<ns>.svc.<zone>`); None: not ours."""
        records = self.records
        zone = records.zone_of(labels)
        if zone is None:
            return None
        text = self._zone_text[zone]
        if zone != records.domain:
            return text, ""
        rel = labels[: len(labels) - len(zone)]
        if len(rel) >= 2 and rel[-1] in ("svc", "pod"):
            return text, rel[-2]
        return text, ""

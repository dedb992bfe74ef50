"""The cluster link of the chain: answers the cluster domain and its reverse zones from the endpoint store."""

from __future__ import annotations

from dnsd.cluster.records import ClusterRecords
from dnsd.proto.answer import Answer
from dnsd.proto.wire import Query


class ClusterHandler:
    name = "cluster"

    def __init__(self, records: ClusterRecords) -> None:
        self.records = records

    def resolve(self, q: Query) -> Answer | None:
        return self.records.lookup(q.labels, q.qtype)

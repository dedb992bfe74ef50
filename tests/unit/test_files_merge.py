"""The files source's merge (FileSource._merge): which store changes a change of some files makes, when several
files define the same object (the file sorting last wins) and the source keeps only one dict per file and one
path tuple per object. The integration tests in tests/integration/test_store.py check the same through DNS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsd.sources.files import FileSource
from dnsd.store.model import KubeObject, Service, object_key
from dnsd.store.store import Store

A, B, C = Path("/m/a.yaml"), Path("/m/b.yaml"), Path("/m/c.yaml")


def web(ip: str, name: str = "web") -> Service:
    return Service("shop", name, "ClusterIP", (ip,), False, (), "", False)


@dataclass(frozen=True)
class Step:
    changed: dict[Path, list[KubeObject]]  # the files read (an empty list: the file is gone or empty)
    upserts: list[str]  # "name@ip" of what the store gets
    deletes: list[str]  # names withdrawn
    served: dict[str, str]  # name -> ip of the winner afterwards


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[Step]


CASES = [
    Case(
        "later file wins, earlier takes over when it drops the object",
        [
            Step({A: [web("10.0.0.1")]}, ["web@10.0.0.1"], [], {"web": "10.0.0.1"}),
            Step({B: [web("10.0.0.2")]}, ["web@10.0.0.2"], [], {"web": "10.0.0.2"}),
            Step({A: [web("10.0.0.3")]}, [], [], {"web": "10.0.0.2"}),  # a change that loses changes nothing
            Step({B: []}, ["web@10.0.0.3"], [], {"web": "10.0.0.3"}),
            Step({A: []}, [], ["web"], {}),
        ],
    ),
    Case(
        "a file sorting earlier never wins, whatever the order of reading",
        [
            Step({C: [web("10.0.0.3")]}, ["web@10.0.0.3"], [], {"web": "10.0.0.3"}),
            Step({A: [web("10.0.0.1")], B: [web("10.0.0.2")]}, [], [], {"web": "10.0.0.3"}),
            Step({C: []}, ["web@10.0.0.2"], [], {"web": "10.0.0.2"}),
            Step({B: []}, ["web@10.0.0.1"], [], {"web": "10.0.0.1"}),
        ],
    ),
    Case(
        "a second definition in one file replaces the first; re-reading the same content changes nothing",
        [
            Step({A: [web("10.0.0.1"), web("10.0.0.2")]}, ["web@10.0.0.2"], [], {"web": "10.0.0.2"}),
            Step({A: [web("10.0.0.1"), web("10.0.0.2")]}, [], [], {"web": "10.0.0.2"}),
        ],
    ),
    Case(
        "objects of one file come and go independently",
        [
            Step(
                {A: [web("10.0.0.1"), web("10.0.1.1", "api")]},
                ["web@10.0.0.1", "api@10.0.1.1"],
                [],
                {"web": "10.0.0.1", "api": "10.0.1.1"},
            ),
            Step({A: [web("10.0.1.2", "api")]}, ["api@10.0.1.2"], ["web"], {"api": "10.0.1.2"}),
            Step({B: [web("10.0.1.2", "api")]}, [], [], {"api": "10.0.1.2"}),  # equal in a later file: no change
            Step({A: []}, [], [], {"api": "10.0.1.2"}),
            Step({B: []}, [], ["api"], {}),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge(case: Case) -> None:
    source = FileSource(Path("/m"), Store())
    for i, step in enumerate(case.steps):
        upserts, deletes = source._merge({path: [(obj, 1) for obj in objs] for path, objs in step.changed.items()})
        got = [f"{o.name}@{o.cluster_ips[0]}" for o in upserts if isinstance(o, Service)]
        assert sorted(got) == sorted(step.upserts), f"step {i}"
        assert sorted(name for _, _, name in deletes) == sorted(step.deletes), f"step {i}"
        served = {key[2]: source._winner(key) for key in source.merged}
        assert {n: o.cluster_ips[0] for n, o in served.items() if isinstance(o, Service)} == step.served, f"step {i}"
        # one key tuple per object, shared by the per-file tables and the definitions
        for path, objects in source._by_file.items():
            for key, obj in objects.items():
                assert key == object_key(obj) and path in source._defs[key]

"""Change events re-read only the files they name (issue 5 section 3.3), through a real server.

A write to one file of many is applied by reading that file alone, without a walk of the tree; events that
need a walk (a new directory, a ConfigMap-style hidden directory) still get one. Counted with the source's
walks/reads counters, asserted together with the DNS answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import DnsdHandle, a_answer, a_ok, svc_yaml, wait_until

N_FILES = 300
TIMEOUT = 10.0


def in_place(root: Path) -> None:
    (root / "d1" / "s150.yaml").write_text(svc_yaml("s150", "10.97.0.1"))


def renamed_into_place(root: Path) -> None:
    tmp = root / "d1" / ".s150.yaml.tmp"  # a hidden temporary file, renamed over the manifest
    tmp.write_text(svc_yaml("s150", "10.97.0.1"))
    os.rename(tmp, root / "d1" / "s150.yaml")


def new_file(root: Path) -> None:
    (root / "d1" / "z.yaml").write_text(svc_yaml("s150", "10.97.0.1"))  # sorts after s150.yaml: wins


def new_directory(root: Path) -> None:
    (root / "e").mkdir()
    (root / "e" / "s150.yaml").write_text(svc_yaml("s150", "10.97.0.1"))


def hidden_directory(root: Path) -> None:
    (root / "..2026_12_01").mkdir()
    (root / "..2026_12_01" / "x.yaml").write_text(svc_yaml("s150", "10.97.0.1"))
    (root / "x.yaml").symlink_to("..2026_12_01/x.yaml")


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[Path], None]
    walks: bool  # the change needs a walk of the tree
    reads: int  # files parsed for it


CASES = [
    Case("in-place-write", in_place, False, 1),
    Case("temporary-file-renamed", renamed_into_place, False, 1),
    Case("new-file", new_file, False, 1),
    Case("new-directory", new_directory, True, 1),
    Case("configmap-hidden-directory", hidden_directory, True, 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_event_reads_only_what_changed(dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path, case: Case) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
    for i in range(N_FILES):
        d = root / f"d{i // 100}"
        d.mkdir(exist_ok=True)
        (d / f"s{i}.yaml").write_text(svc_yaml(f"s{i}", f"10.96.{i // 250}.{i % 250 + 1}"))
    h = dnsd_factory(root)
    source = h.app.source
    h.call(lambda: setattr(source, "rescan_s", 3600.0))  # no periodic walk during the test
    assert a_answer(h, "s150") == a_ok("s150", "10.96.0.151")
    # Let the start-up events settle (the watch's own catch-up walk included).
    wait_until(lambda: source.walks >= 2, TIMEOUT)
    walks, reads = source.walks, source.reads
    case.change(root)
    wait_until(lambda: a_answer(h, "s150") == a_ok("s150", "10.97.0.1"), TIMEOUT)
    assert (source.walks > walks) == case.walks
    assert source.reads - reads == case.reads
    assert a_answer(h, "s299") == a_ok("s299", "10.96.1.50")

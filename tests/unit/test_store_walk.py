"""The walk of the manifest directory (dnsd.sources.files.walk): which files it finds, which directories it read
completely, and so which known files a scan may withdraw (Walk.covers). Issue 5 section 3.1 and 3.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsd.sources import files
from dnsd.sources.files import walk


def tree(root: Path, rels: list[str]) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")


@pytest.mark.parametrize(
    ("rels", "links", "found"),
    [
        (["a.yaml", "b.yml", "c.json", "d.txt", ".hidden.yaml"], {}, ["a.yaml", "b.yml", "c.json"]),
        (["sub/a.yaml", ".git/x.yaml"], {}, ["sub/a.yaml"]),
        (["sub/a.yaml"], {"loop": ".", "sub/up": ".."}, ["sub/a.yaml"]),
        (["sub/a.yaml"], {"link.yaml": "sub/a.yaml"}, ["link.yaml", "sub/a.yaml"]),  # file links: each read
        (["sub/a.yaml"], {"dangling.yaml": "nowhere.yaml", "self.yaml": "self.yaml"}, ["sub/a.yaml"]),
    ],
    ids=["suffixes", "hidden-directory", "loops", "file-link", "broken-links"],
)
def test_walk_finds(tmp_path: Path, rels: list[str], links: dict[str, str], found: list[str]) -> None:
    tree(tmp_path, rels)
    for rel, target in links.items():
        (tmp_path / rel).symlink_to(target)
    w = walk(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in w.files) == found
    assert w.problems == {}


def test_outside_link_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree(tmp_path, ["root/a.yaml", "elsewhere/b.yaml"])
    (root / "out").symlink_to(tmp_path / "elsewhere")
    w = walk(root)
    assert sorted(p.name for p in w.files) == ["a.yaml"]
    assert any("outside the manifest directory" in m for m in w.problems.values())


def test_entry_bound_keeps_what_was_not_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, [f"a/{i}.yaml" for i in range(5)] + [f"b/{i}.yaml" for i in range(5)])
    monkeypatch.setattr(files, "MAX_ENTRIES", 8)
    w = walk(tmp_path)
    assert "entries" in w.problems
    # a/ (2 + 5 entries) was read completely; b/ would pass the bound: not read, its files keep their objects.
    assert sorted(str(p.relative_to(tmp_path)) for p in w.files) == [f"a/{i}.yaml" for i in range(5)]
    assert w.covers(tmp_path / "a" / "gone.yaml")
    assert not w.covers(tmp_path / "b" / "0.yaml")


def test_covers(tmp_path: Path) -> None:
    tree(tmp_path, ["a/x.yaml"])
    w = walk(tmp_path)
    assert w.covers(tmp_path / "a" / "gone.yaml")  # its directory was read: gone
    assert w.covers(tmp_path / "removed" / "deep" / "x.yaml")  # its directory is gone from a read one
    missing = walk(tmp_path / "absent")
    assert not missing.covers(tmp_path / "absent" / "x.yaml")
    assert "does not exist" in missing.problems["root"]

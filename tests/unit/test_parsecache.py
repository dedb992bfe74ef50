"""The parse workers and the parse cache of the files source (dnsd/sources/files.py, dnsd/sources/parsecache.py),
through FileSource's scan, without a server: a big read spread over parse children, its result cached by file
signature, and every way an entry must stop counting (a changed file, even with the same size and mtime; a
renamed-over file; a corrupt or foreign entry; a file changed too recently to trust its times)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsd.sources import files, parsecache
from dnsd.sources.files import FileSource
from dnsd.store.model import Service
from dnsd.store.store import Store

SERVICES = 50  # per file


def manifest(first_ip: int, n: int = SERVICES, ns: str = "default") -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"]
    for i in range(n):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: {ns}\n"
            f"spec:\n  clusterIP: 10.96.{first_ip}.{i + 1}\n"
            f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-abc\n"
            f"  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: s{i}\naddressType: IPv4\n"
            f"endpoints:\n- addresses:\n  - 10.244.{first_ip}.{i + 1}\n  hostname: {'bad.name' if i == 0 else 'h'}\n"
        )
    return "---\n".join(docs)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A manifest directory of three files and an empty cache directory; every read counts as big (so parse
    children and the cache are used) and no file is too recent to cache."""
    root = tmp_path / "m"
    root.mkdir()
    for i, ns in enumerate(("a", "b", "c")):
        (root / f"{ns}.yaml").write_text(manifest(i, ns=ns))
        past = (time.time_ns() - 60 * 10**9,) * 2
        os.utime(root / f"{ns}.yaml", ns=past)  # settled: no scan waits for it
    monkeypatch.setattr(files, "BIG_READ_BYTES", 0)
    monkeypatch.setattr(parsecache, "RACY_S", 0.0)
    return root, tmp_path / "cache"


def scan(root: Path, cache: Path | None) -> tuple[FileSource, Store]:
    store = Store()
    src = FileSource(root, store, cache_dir=cache)
    result = src._scan(None)
    assert result is not None and not result.waiting
    store.commit(result.batch)
    return src, store


def served(store: Store) -> dict[tuple[str, str], tuple[str, ...]]:
    return {k: v.cluster_ips for k, v in store.services.items() if isinstance(v, Service)}


def test_big_read_is_parsed_in_children_like_here(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tree
    apart, store = scan(root, None)
    assert (apart.reads, apart.reads_apart, apart.cache_hits) == (3, 3, 0)
    monkeypatch.setattr(files, "BIG_READ_BYTES", 1 << 40)
    here, reference = scan(root, None)
    assert here.reads_apart == 0
    assert apart.files == here.files  # the same objects with the same lines, file by file
    assert served(store) == served(reference) and len(served(store)) == 3 * SERVICES


def test_restart_reads_the_cache(tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    root, cache = tree
    first, store = scan(root, cache)
    assert (first.reads_apart, first.cache_hits) == (3, 0)
    warnings = sorted(r.getMessage() for r in caplog.records if "hostname" in r.getMessage())
    assert len(warnings) == 3
    caplog.clear()
    second, again = scan(root, cache)
    assert (second.reads, second.cache_hits) == (0, 3)
    assert second.files == first.files and served(again) == served(store)
    # The warnings of the first read are logged again on a hit.
    assert sorted(r.getMessage() for r in caplog.records if "hostname" in r.getMessage()) == warnings


def same_size_same_mtime(path: Path) -> None:
    """Rewrite in place: the same length, the same mtime (restored), another address; only ctime tells."""
    st = path.stat()
    text = path.read_text().replace("10.96.0.7\n", "10.96.0.9\n", 1)
    assert len(text) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def rename_over(path: Path) -> None:
    """A new file (another inode) renamed over the old one, with the old size and mtime."""
    st = path.stat()
    tmp = path.with_suffix(".new")
    tmp.write_text(path.read_text().replace("10.96.0.7\n", "10.96.0.9\n", 1))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def corrupt_entries(cache: Path) -> None:
    for entry in cache.glob("*.bin"):
        data = bytearray(entry.read_bytes())
        data[-10] ^= 0xFF
        entry.write_bytes(bytes(data))


def truncate_entries(cache: Path) -> None:
    for entry in cache.glob("*.bin"):
        entry.write_bytes(entry.read_bytes()[:200])


def foreign_entries(cache: Path) -> None:
    for entry in cache.glob("*.bin"):
        entry.write_bytes(b"dnsd-parse-cache 0\n" + entry.read_bytes()[len(parsecache.FORMAT) :])


@dataclass(frozen=True)
class Miss:
    id: str
    change: Callable[[Path, Path], None]  # (the file a.yaml, the cache directory)
    misses: int  # files read again
    ip: str  # what Service a/s6 serves afterwards


MISSES = [
    Miss("same-size-same-mtime", lambda f, c: same_size_same_mtime(f), 1, "10.96.0.9"),
    Miss("renamed-over", lambda f, c: rename_over(f), 1, "10.96.0.9"),
    Miss("corrupt-entry", lambda f, c: corrupt_entries(c), 3, "10.96.0.7"),
    Miss("truncated-entry", lambda f, c: truncate_entries(c), 3, "10.96.0.7"),
    Miss("other-format", lambda f, c: foreign_entries(c), 3, "10.96.0.7"),
]


@pytest.mark.parametrize("case", MISSES, ids=[c.id for c in MISSES])
def test_cache_miss(tree: tuple[Path, Path], case: Miss) -> None:
    root, cache = tree
    scan(root, cache)
    case.change(root / "a.yaml", cache)
    src, store = scan(root, cache)
    assert (src.reads_apart, src.cache_hits) == (case.misses, 3 - case.misses)
    assert store.services[("a", "s6")].cluster_ips == (case.ip,)
    assert len(served(store)) == 3 * SERVICES


def test_recently_changed_file_is_not_cached(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tree
    monkeypatch.setattr(parsecache, "RACY_S", 3600.0)  # everything was written "just now"
    scan(root, cache)
    assert list(cache.glob("*.bin")) == []
    src, _ = scan(root, cache)
    assert (src.reads_apart, src.cache_hits) == (3, 0)


def test_cache_directory_of_another_mode_is_not_used(tree: tuple[Path, Path]) -> None:
    root, cache = tree
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)  # writable by anyone: an entry there could be anyone's pickle
    src, store = scan(root, cache)
    assert (src.reads_apart, src.cache_hits) == (3, 0) and list(cache.iterdir()) == []
    assert len(served(store)) == 3 * SERVICES


def test_child_that_dies_is_read_again_with_pyyaml(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash in native code (yaml_rs) costs the child only: its files are read again, PyYAML alone."""
    root, cache = tree
    dying = "import os, sys\nif sys.argv[1] == 'fast':\n    os._exit(-11)\n" + files._CHILD
    monkeypatch.setattr(files, "_CHILD", dying)
    src, store = scan(root, cache)
    assert (src.reads, src.reads_apart) == (3, 3)
    assert len(served(store)) == 3 * SERVICES and not src.bad


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for i in range(5):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(b"x")
        os.utime(p, ns=(i * 10**9, i * 10**9))
    assert parsecache.prune(tmp_path, keep=2) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.bin", "4.bin"]

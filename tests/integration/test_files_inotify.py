"""The files source's inotify watch (issue 9, "milliseconds from write to answer"), through a real server.

A file whose writer is done (it closed the file after writing, or renamed it into place) is read at once: these
tests set the settle window to an hour, so an answer within the deadline can only come from the kernel's signal.
A writer that keeps the file open is never read half-written while it writes (the settle window, set long) and is
read once quiet for the settle window (set short). Lost events (the kernel's queue overflowed, or more paths than
the watch keeps) end in a fresh watch and a full walk. DNSD_FILES_WATCH=watchfiles forces the portable watch.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import NS_YAML, DnsdHandle, a_answer, a_ok, svc_yaml, wait_until

from dnsd.sources import inotify
from dnsd.sources.files import SETTLE_S

TIMEOUT = 10.0
HOUR = 3600.0  # a settle window nothing outlasts: what is served came from a close or a rename
NX = ("NXDOMAIN", set[str]())


def start(dnsd_factory: Callable[..., DnsdHandle], root: Path, settle_s: float) -> DnsdHandle:
    h = dnsd_factory(root)
    source = h.app.source
    h.call(lambda: setattr(source, "settle_s", settle_s))
    h.call(lambda: setattr(source, "rescan_s", HOUR))  # no periodic walk: it would read any file in the end
    wait_until(lambda: source.armed.is_set(), TIMEOUT)
    return h


def populate(root: Path) -> None:
    (root / "ns.yaml").write_text(NS_YAML)
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.20"))
    (root / "shop").mkdir()
    (root / "shop" / "cart.yaml").write_text(svc_yaml("cart", "10.96.1.30"))


def closed_new(root: Path) -> None:
    with open(root / "fresh.yaml", "w") as f:
        f.write(svc_yaml("fresh", "10.96.0.50"))


def closed_in_place(root: Path) -> None:
    with open(root / "web.yaml", "w") as f:
        f.write(svc_yaml("web", "10.96.0.21"))


def renamed(root: Path) -> None:
    tmp = root / ".web.yaml.tmp"
    tmp.write_text(svc_yaml("web", "10.96.0.21"))
    os.rename(tmp, root / "web.yaml")


def renamed_from_outside(root: Path) -> None:
    tmp = root.parent / "staged.yaml"  # written and closed outside the watched tree: only IN_MOVED_TO is seen
    tmp.write_text(svc_yaml("fresh", "10.96.0.50"))
    os.rename(tmp, root / "fresh.yaml")


def deleted(root: Path) -> None:
    (root / "shop" / "cart.yaml").unlink()


def in_subdirectory(root: Path) -> None:
    with open(root / "shop" / "fresh.yaml", "w") as f:
        f.write(svc_yaml("fresh", "10.96.0.50"))


def configmap_swap(root: Path) -> None:
    """The kubelet's AtomicWriter: a new timestamped directory, a symlink to it renamed onto ..data."""
    stamp = "..2026_12_02_00_00_00.000000002"
    (root / stamp).mkdir()
    (root / stamp / "cm.yaml").write_text(svc_yaml("web", "10.96.0.21"))
    os.symlink(stamp, root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")
    shutil.rmtree(root / "..2026_12_01_00_00_00.000000001")


def as_configmap(root: Path) -> None:
    """web.yaml becomes a ConfigMap volume's key: cm.yaml -> ..data/cm.yaml -> ..<timestamp>/cm.yaml."""
    stamp = "..2026_12_01_00_00_00.000000001"
    (root / stamp).mkdir()
    (root / "web.yaml").rename(root / stamp / "cm.yaml")
    os.symlink(stamp, root / "..data")
    os.symlink("..data/cm.yaml", root / "cm.yaml")


@dataclass(frozen=True)
class Writer:
    id: str
    write: Callable[[Path], None]
    name: str  # the service whose answer changes
    want: tuple[str, set[str]]
    settle_s: float = HOUR  # with inotify: HOUR, the change must be read on the kernel's signal alone
    setup: Callable[[Path], None] | None = None


WRITERS = [
    Writer("write-close-new-file", closed_new, "fresh", a_ok("fresh", "10.96.0.50")),
    Writer("write-close-in-place", closed_in_place, "web", a_ok("web", "10.96.0.21")),
    Writer("temporary-file-renamed", renamed, "web", a_ok("web", "10.96.0.21")),
    Writer("renamed-from-outside", renamed_from_outside, "fresh", a_ok("fresh", "10.96.0.50")),
    Writer("delete", deleted, "cart", NX),
    Writer("write-close-in-subdirectory", in_subdirectory, "fresh", a_ok("fresh", "10.96.0.50")),
    # The files behind a ..data swap were written before their directory was watched: the settle window reads them.
    Writer("configmap-data-swap", configmap_swap, "web", a_ok("web", "10.96.0.21"), SETTLE_S, as_configmap),
]


@pytest.mark.parametrize("watcher", ["inotify", "watchfiles"])
@pytest.mark.parametrize("case", WRITERS, ids=[c.id for c in WRITERS])
def test_writer_is_served(
    dnsd_factory: Callable[..., DnsdHandle],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: Writer,
    watcher: str,
) -> None:
    if watcher == "watchfiles":
        monkeypatch.setenv(inotify.ENV, "watchfiles")
    populate(root)
    if case.setup is not None:
        case.setup(root)
    h = start(dnsd_factory, root, case.settle_s if watcher == "inotify" else SETTLE_S)
    assert (h.app.source._tree is not None) == (watcher == "inotify")
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    case.write(root)
    wait_until(lambda: a_answer(h, case.name) == case.want, TIMEOUT)
    # The watch is still in place: one more file, closed, is served too.
    closed_probe(root, "10.96.0.99")
    wait_until(lambda: a_answer(h, "probe") == a_ok("probe", "10.96.0.99"), TIMEOUT)
    assert a_answer(h, case.name) == case.want


def closed_probe(root: Path, ip: str, where: str = "probe.yaml") -> None:
    with open(root / where, "w") as f:
        f.write(svc_yaml("probe", ip))


def test_new_directories_are_watched(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """Directories created at once, three deep: the walk the first event starts finds the inner ones, which are
    watched from then on (a later close in the deepest one is read on its own signal)."""
    populate(root)
    h = start(dnsd_factory, root, SETTLE_S)
    deep = root / "teams" / "blue" / "apps"
    deep.mkdir(parents=True)
    (deep / "blue.yaml").write_text(svc_yaml("blue", "10.96.2.1"))
    wait_until(lambda: a_answer(h, "blue") == a_ok("blue", "10.96.2.1"), TIMEOUT)
    source = h.app.source
    h.call(lambda: setattr(source, "settle_s", HOUR))
    with open(deep / "blue.yaml", "w") as f:
        f.write(svc_yaml("blue", "10.96.2.2"))
    wait_until(lambda: a_answer(h, "blue") == a_ok("blue", "10.96.2.2"), TIMEOUT)
    (deep / "blue.yaml").unlink()
    wait_until(lambda: a_answer(h, "blue") == NX, TIMEOUT)


def first_half_and_rest() -> tuple[str, str]:
    """web.yaml's new content in two halves; the first is valid YAML on its own (web2 only: web withdrawn)."""
    text = svc_yaml("web2", "10.96.0.41") + "---\n" + svc_yaml("web", "10.96.0.21")
    cut = text.index("---")
    return text[:cut], text[cut:]


def test_open_writer_is_never_served_half_written(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """A writer keeps the file open and pauses half-way: while it holds the file, the half is not read (the
    settle window, set long here, is what waits) and other files' changes are served; once it closes the file,
    the whole is served at once."""
    populate(root)
    h = start(dnsd_factory, root, HOUR)
    first, rest = first_half_and_rest()
    with open(root / "web.yaml", "w") as f:
        f.write(first)
        f.flush()
        # The half is being waited for (its write read, the source busy with it); the pause: another file,
        # closed, is served meanwhile (a writer holding its file open holds up nothing else) and after the
        # half's events were read.
        source, web = h.app.source, str(root / "web.yaml")
        wait_until(lambda: web in source._tree._states and source._lock.locked(), TIMEOUT)
        closed_probe(root, "10.96.0.99")
        wait_until(lambda: a_answer(h, "probe") == a_ok("probe", "10.96.0.99"), TIMEOUT)
        assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
        assert a_answer(h, "web2") == NX
        f.write(rest)
    wait_until(lambda: a_answer(h, "web") == a_ok("web", "10.96.0.21"), TIMEOUT)
    assert a_answer(h, "web2") == a_ok("web2", "10.96.0.41")


def test_open_writer_is_served_after_the_settle_window(dnsd_factory: Callable[..., DnsdHandle], root: Path) -> None:
    """A writer that never closes the file: once it has been quiet for the settle window, the file is read."""
    populate(root)
    h = start(dnsd_factory, root, SETTLE_S)
    with open(root / "web.yaml", "w") as f:
        f.write(svc_yaml("web", "10.96.0.21"))
        f.flush()
        wait_until(lambda: a_answer(h, "web") == a_ok("web", "10.96.0.21"), TIMEOUT)


def _stall(h: DnsdHandle) -> inotify.TreeWatch:
    """Stop reading the watch's descriptor, as a server too busy to keep up would."""
    tree = h.app.source._tree
    assert tree is not None
    h.call(lambda: tree._loop.remove_reader(tree._fd))
    return tree


def _lose_events_and_overflow(tree: inotify.TreeWatch) -> None:
    """Drop what the kernel queued and report IN_Q_OVERFLOW, as the kernel does when its queue is full."""
    with tree._lock:
        while True:
            try:
                os.read(tree._fd, 65536)
            except BlockingIOError:
                break
        tree._parse(struct.pack("iIII", -1, inotify.IN_Q_OVERFLOW, 0, 0))
    tree._ready.set()


def _resume(tree: inotify.TreeWatch) -> None:
    tree._loop.add_reader(tree._fd, tree._readable)


@pytest.mark.parametrize("how", ["kernel-queue-overflow", "too-many-paths"])
def test_lost_events_end_in_a_full_rescan(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    populate(root)
    h = start(dnsd_factory, root, SETTLE_S)  # what was written while events were lost is read after the window
    source = h.app.source
    tree = _stall(h)
    walks = source.walks
    for i in range(6):
        with open(root / f"new{i}.yaml", "w") as f:
            f.write(svc_yaml(f"new{i}", f"10.96.3.{i + 1}"))
    if how == "kernel-queue-overflow":
        h.call(lambda: _lose_events_and_overflow(tree))
    else:
        monkeypatch.setattr(inotify, "MAX_PENDING", 3)
        h.call(lambda: _resume(tree))
    for i in range(6):
        wait_until(lambda: a_answer(h, f"new{i}") == a_ok(f"new{i}", f"10.96.3.{i + 1}"), TIMEOUT)  # noqa: B023
    assert source.walks > walks
    wait_until(lambda: source._tree is not None and source._tree is not tree, TIMEOUT)  # watching anew
    closed_probe(root, "10.96.0.99", "shop/probe.yaml")
    wait_until(lambda: a_answer(h, "probe") == a_ok("probe", "10.96.0.99"), TIMEOUT)

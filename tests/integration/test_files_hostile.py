"""The files source under a hostile file system (issue 5 section 3), through a real server.

A directory that cannot be read is not a deletion (fd exhaustion, a root replaced by a file); a symlink loop is
read once; a symlink to / is not walked and does not keep dnsd from stopping; a tree deeper than MAX_DEPTH stops
the walk there. Each case asserts DNS answers and the ERROR lines (path and errno) dnsd logs.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import pytest
from support import (
    NS_YAML,
    DnsdHandle,
    DnsdProcess,
    a_answer,
    a_ok,
    start_dnsd_process,
    svc_yaml,
    wait_until,
)

from dnsd.sources.files import MAX_DEPTH

TIMEOUT = 10.0


NX: tuple[str, set[str]] = ("NXDOMAIN", set())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "ns.yaml").write_text(NS_YAML)
    return d


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.INFO, logger="dnsd")
    return lambda: [r.getMessage() for r in list(caplog.records) if r.levelno >= logging.ERROR]


@pytest.fixture
def procs() -> Iterator[list[DnsdProcess]]:
    started: list[DnsdProcess] = []
    yield started
    for p in started:
        p.stop()


def start(root: Path, procs: list[DnsdProcess]) -> DnsdProcess:
    p = start_dnsd_process(["--listen", "127.0.0.1:0", "--http", "off", "--manifests", str(root)])
    procs.append(p)
    return p


def logged(p: DnsdProcess, *needles: str) -> list[str]:
    return [line for line in list(p.lines) if all(n in line for n in needles)]


# ---------------------------------------------------------------- a failed read is not a deletion


def test_fd_exhaustion_keeps_serving(root: Path, procs: list[DnsdProcess]) -> None:
    """The attack of the issue: the process runs out of file descriptors (here: its limit is lowered to what it
    has open and TCP connections take the rest), then a rescan (SIGHUP) cannot open the directory. It must log
    the path and EMFILE and withdraw nothing."""
    for i in range(5):
        (root / f"s{i}.yaml").write_text(svc_yaml(f"s{i}", f"10.96.0.{10 + i}"))
    p = start(root, procs)
    pid = p.proc.pid
    assert a_answer(p, "s4") == a_ok("s4", "10.96.0.14")
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 4, hard))
        for _ in range(20):  # more connections than free descriptors
            held.append(socket.create_connection((p.host, p.port), timeout=2))
        wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= resource.prlimit(pid, resource.RLIMIT_NOFILE)[0])
        p.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: logged(p, "ERROR", str(root), "EMFILE"), TIMEOUT)
        for i in range(5):
            assert a_answer(p, f"s{i}") == a_ok(f"s{i}", f"10.96.0.{10 + i}")
    finally:
        for s in held:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Once descriptors are free again, changes (and deletions) are seen as before.
    (root / "s0.yaml").unlink()
    wait_until(lambda: a_answer(p, "s0") == NX, TIMEOUT)
    assert a_answer(p, "s1") == a_ok("s1", "10.96.0.11")
    assert not logged(p, "removed", "s1.yaml")


def test_root_removed_then_a_file_keeps_serving(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, errors: Callable[[], list[str]]
) -> None:
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.20"))
    h = dnsd_factory(root)
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    shutil.rmtree(root)
    # Removed: reported, nothing withdrawn (a directory being replaced, an unmounted volume).
    wait_until(lambda: [e for e in errors() if str(root) in e and "does not exist" in e], TIMEOUT)
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    root.write_text(NS_YAML)
    wait_until(lambda: [e for e in errors() if str(root) in e and "is a file" in e], TIMEOUT)
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    # A directory again: its content is what serves.
    root.unlink()
    root.mkdir()
    (root / "ns.yaml").write_text(NS_YAML)
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.21"))
    wait_until(lambda: a_answer(h, "web") == a_ok("web", "10.96.0.21"), TIMEOUT)


# ---------------------------------------------------------------- symlinks and bounds


def _answers(p: DnsdProcess, name: str, ip: str) -> bool:
    """The answer has moved to ip; a query that times out while the files are re-read (on a loaded machine the
    walk's thread competes for the interpreter) counts as not yet, and the deadline still bounds the wait."""
    try:
        return a_answer(p, name) == a_ok(name, ip)
    except dns.exception.Timeout:
        return False


def test_symlink_to_slash_is_not_walked_and_stop_is_prompt(root: Path, procs: list[DnsdProcess]) -> None:
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.20"))
    (root / "everything").symlink_to("/")
    t0 = time.monotonic()
    p = start(root, procs)
    assert time.monotonic() - t0 < TIMEOUT
    assert a_answer(p, "web") == a_ok("web", "10.96.0.20")
    wait_until(lambda: logged(p, "ERROR", str(root / "everything"), "outside"), TIMEOUT)
    # Changes keep flowing (the scan is not stuck), and the link is reported once, not per rescan.
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.21"))
    wait_until(lambda: _answers(p, "web", "10.96.0.21"), TIMEOUT)
    p.proc.send_signal(signal.SIGHUP)
    (root / "more").mkdir()  # a directory event: another walk
    (root / "more" / "cart.yaml").write_text(svc_yaml("cart", "10.96.0.30"))
    wait_until(lambda: _answers(p, "cart", "10.96.0.30"), TIMEOUT)
    assert len(logged(p, "ERROR", "everything")) == 1
    t1 = time.monotonic()
    assert p.stop(timeout=TIMEOUT) == 0
    assert time.monotonic() - t1 < 5.0


SUB = ["ns.yaml", "sub/cart.yaml", "web.yaml"]


@pytest.mark.parametrize(
    ("links", "read"),
    [
        pytest.param({"loop": "."}, SUB, id="loop-to-itself"),
        pytest.param({"sub/up": ".."}, SUB, id="loop-to-parent"),
        # Two paths to one directory: the first in sorted order is read.
        pytest.param({"again": "sub", "sub/deeper/back": "../.."}, ["again/cart.yaml", "ns.yaml", "web.yaml"],
                     id="second-link-and-loop"),
        pytest.param({"zz": "sub"}, SUB, id="second-link-sorting-later"),
    ],
)  # fmt: skip
def test_symlink_loops_are_read_once(
    dnsd_factory: Callable[..., DnsdHandle],
    root: Path,
    caplog: pytest.LogCaptureFixture,
    links: dict[str, str],
    read: list[str],
) -> None:
    """Each directory is read once, whatever the number of paths leading to it: each file is read once (no
    "defined in two files" warnings), and a loop is not walked round."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "web.yaml").write_text(svc_yaml("web", "10.96.0.20"))
    (root / "sub" / "cart.yaml").write_text(svc_yaml("cart", "10.96.0.30"))
    for rel, target in links.items():
        (root / rel).symlink_to(target)
    caplog.set_level(logging.INFO, logger="dnsd")
    h = dnsd_factory(root)
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    assert a_answer(h, "cart") == a_ok("cart", "10.96.0.30")
    files = h.call(lambda: sorted(str(p.relative_to(root)) for p in h.app.source.files))
    assert files == read
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    # A change under the looped directory is still seen, once.
    (root / "sub" / "cart.yaml").write_text(svc_yaml("cart", "10.96.0.31"))
    wait_until(lambda: a_answer(h, "cart") == a_ok("cart", "10.96.0.31"), TIMEOUT)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_tree_deeper_than_the_bound_is_not_read(
    dnsd_factory: Callable[..., DnsdHandle], root: Path, errors: Callable[[], list[str]]
) -> None:
    shallow = root.joinpath(*(f"d{i}" for i in range(MAX_DEPTH)))
    deep = shallow / "toodeep"
    deep.mkdir(parents=True)
    (shallow / "web.yaml").write_text(svc_yaml("web", "10.96.0.20"))
    (deep / "cart.yaml").write_text(svc_yaml("cart", "10.96.0.30"))
    h = dnsd_factory(root)
    assert a_answer(h, "web") == a_ok("web", "10.96.0.20")
    assert a_answer(h, "cart") == NX
    assert [e for e in errors() if str(deep) in e and f"deeper than {MAX_DEPTH}" in e]

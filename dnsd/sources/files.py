"""The `files` source: a watched directory of Kubernetes manifests (YAML or JSON, multi-document, kind: List).

Every change is applied as one batch, so answers always come from one consistent snapshot: the batch is worked
out in a thread (reading, parsing, merging and Store.prepare) and swapped into the store on the event loop in one
step (Store.commit), so even a file of 100,000 objects does not hold up answers. A file over PARSE_APART_BYTES
is parsed in a child process, which keeps libyaml's GIL-holding calls and its memory peak (about 50 times the
file) out of the server. A file that does not parse, or holds an invalid object, is reported once with its
path, line and reason, and the objects it held before keep serving.

Only a directory that was read completely can lose files: when a directory cannot be read (EMFILE, EACCES, EIO,
...) or the walk stops at one of its bounds (MAX_DEPTH, MAX_ENTRIES), the files below it keep their last good
objects and the problem is logged once at ERROR with the path and errno. Directories are followed once each (by
device and inode), so a symlink loop is read once; a directory symlink leading outside the manifest directory is
not followed (logged once). A change event re-reads only the files it names; anything else (a directory, a
ConfigMap `..data` swap) and the periodic rescan walk the tree, which costs one stat per file: a file is parsed
only when its signature changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import dataclasses
import errno
import gc
import io
import itertools
import logging
import operator
import os
import pickle
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsd.observe.counts import LATENCY_BUCKETS, Histogram
from dnsd.sources import parsecache
from dnsd.sources.manifests import Parsed, parse_file
from dnsd.store.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    Pod,
    Service,
    ServicePort,
    describe,
    object_key,
)
from dnsd.store.store import ObjectKey, Prepared, Store, release_freed_memory

if TYPE_CHECKING:
    from dnsd.sources.inotify import Token, TreeWatch
    from dnsd.sources.watch import Watch

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")

Signature = tuple[int, int, int, str]  # mtime_ns, size, inode, real path
Located = tuple[KubeObject, int]  # (object, line)
# A file must be this quiet before it is read (see FileSource._scan), unless the inotify watch saw its writer finish
# (closed it after writing, or renamed it into place; see dnsd.sources.inotify).
SETTLE_S = 0.03
MAX_SETTLE_ROUNDS = 100  # then give up until the next change event or periodic rescan
# Bounds of one walk of the directory tree. Beyond them the walk stops, logs an ERROR once, and what it did not
# reach keeps its last good objects: a tree this deep or this big is a mistake or an attack, not a cluster.
MAX_DEPTH = 16  # directory levels below the manifest directory
MAX_ENTRIES = 200_000  # directory entries looked at (files, directories, anything else)
# A scan reading more than this parses with the cyclic garbage collector paused and freezes what it built: a
# full collection over a million objects holds the GIL, and so the event loop, for a second or more each time.
BIG_READ_BYTES = 8 * 1024 * 1024
# A file bigger than this is parsed in a child process (see _parse_apart): libyaml builds a `kind: List` as one
# document in one call that holds the GIL (over a second for 60 MB) and takes 50 bytes of memory per byte read.
PARSE_APART_BYTES = 8 * 1024 * 1024
# A sync that changed this many objects is followed by release_freed_memory: the parse's and the batch's
# garbage is freed then, and the C heap would keep its pages (measured: 28 MB at 100,000 services).
TRIM_CHANGED = 10_000
_CHUNK = 2000  # objects per message from the child: each is unpickled in one GIL-holding call of a few ms
# Entry errors that mean "this entry is not there" (removed while we looked, a dangling or looping symlink).
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG)


def _oserror(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{exc.strerror or exc} ({code})"


@dataclass
class Walk:
    """One walk of the manifest directory: the files found, and which directories were read completely."""

    root: Path
    files: dict[Path, Signature] = field(default_factory=dict)
    listed: dict[Path, bool] = field(default_factory=dict)  # read completely -> reached through a symlink
    unreached: set[Path] = field(default_factory=set)  # found, not read completely (error or bound)
    problems: dict[str, str] = field(default_factory=dict)  # what went wrong -> the ERROR to log once
    stopped: bool = False  # the source is stopping; the walk is incomplete and must not be used

    def covers(self, path: Path) -> bool:
        """Whether path's place was looked at completely, so a file not found there is gone. The nearest
        ancestor the walk knows decides: read completely (yes) or not (no: keep the file's last good state)."""
        d = path.parent
        while True:
            if d in self.listed:
                return True
            if d in self.unreached or d == self.root or d.parent == d:
                return False
            d = d.parent


def walk(root: Path, halt: threading.Event | None = None, known: dict[str, Path] | None = None) -> Walk:
    """Every manifest below root with its signature. Names starting with '.' are skipped (editor files and the
    ConfigMap volume's ..data / ..<timestamp> directories, whose files are reached through the top-level links).
    Each directory is read once (by device and inode); the walk is bounded by MAX_DEPTH and MAX_ENTRIES.
    known maps path text to the Path objects of the last walk, which are reused (building a Path costs as much
    as the stat)."""
    known = known or {}
    w = Walk(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        w.unreached.add(root)
        if exc.errno == errno.ENOENT:
            w.problems["root"] = f"{root}: manifest directory does not exist (until it does, nothing is withdrawn)"
        else:
            w.problems["root"] = f"{root}: cannot read the manifest directory: {_oserror(exc)} (nothing is withdrawn)"
        return w
    if not stat.S_ISDIR(st.st_mode):
        w.unreached.add(root)
        what = "a file" if stat.S_ISREG(st.st_mode) else "not a directory"
        w.problems["root"] = f"{root}: the manifest directory is {what}, not a directory (nothing is withdrawn)"
        return w
    real_root = os.path.realpath(root)
    seen: dict[tuple[int, int], Path] = {(st.st_dev, st.st_ino): root}
    stack: list[tuple[Path, int, bool]] = [(root, 0, False)]  # (directory, depth, reached through a symlink)
    looked = 0
    while stack:
        if halt is not None and halt.is_set():
            w.stopped = True
            return w
        d, depth, linked = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if d != root and exc.errno in (errno.ENOENT, errno.ENOTDIR):
                w.listed[d] = linked  # removed (or replaced by a file) since its parent was read: nothing below
            else:
                w.unreached.add(d)
                w.problems[f"dir {d}"] = (
                    f"{d}: cannot read directory: {_oserror(exc)} (the files below it keep their last good objects)"
                )
            continue
        looked += len(entries)
        if looked > MAX_ENTRIES:
            w.unreached.add(d)
            w.unreached.update(s for s, _, _ in stack)
            w.problems["entries"] = (
                f"{root}: more than {MAX_ENTRIES} directory entries; the walk stopped at {d}, and the files it "
                "did not reach keep their last good objects"
            )
            return w
        complete = True
        subdirs: list[tuple[Path, int, bool]] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            path = known.get(e.path) or Path(e.path)
            try:
                link = e.is_symlink()
                if e.is_dir():
                    if link and not _inside(os.path.realpath(path), real_root):
                        w.problems[f"outside {path}"] = (
                            f"{path}: a symlink to {os.path.realpath(path)}, outside the manifest directory; "
                            "not followed"
                        )
                        continue
                    est = e.stat()
                    ident = (est.st_dev, est.st_ino)
                    if ident in seen:
                        continue  # a directory already read under another path (a symlink loop, a second link)
                    seen[ident] = path
                    if depth + 1 > MAX_DEPTH:
                        w.unreached.add(path)
                        w.problems["depth"] = (
                            f"{path}: deeper than {MAX_DEPTH} directory levels; not read (its files keep their "
                            "last good objects)"
                        )
                        continue
                    subdirs.append((path, depth + 1, linked or link))
                elif e.name.endswith(SUFFIXES) and e.is_file():
                    est = e.stat()
                    real = os.path.realpath(path) if linked or link else str(path)
                    w.files[path] = (est.st_mtime_ns, est.st_size, est.st_ino, real)
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                complete = False
                w.problems[f"entry {path}"] = f"{path}: cannot stat: {_oserror(exc)} (nothing in {d} is withdrawn)"
        if complete:
            w.listed[d] = linked
        else:
            w.unreached.add(d)
        stack.extend(reversed(subdirs))
    return w


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


_CHILD = """
import sys
from dnsd.sources.files import _parse_child
_parse_child(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:])
"""


def _constructor(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    """How the parse child pickles a model object: its class and its __init__ arguments. Unpickling then calls
    the class (half the cost of the dataclass default, whose __setstate__ looks the fields up per object)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    get = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (cls, (get(obj),))
    return lambda obj: (cls, get(obj))


_PICKLE_TABLE: dict[type, Any] = {
    **copyreg.dispatch_table,
    **{cls: _constructor(cls) for cls in (Namespace, Service, ServicePort, EndpointSlice, Endpoint, EndpointPort, Pod)},
}


def _frame(message: tuple[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _PICKLE_TABLE
    pickler.dump(message)
    data = out.getbuffer()
    struct.pack_into("!I", data, 0, len(data) - 4)
    return bytes(data)


class _Forward(logging.Handler):
    """In the parse child: every log record goes to the parent, which logs it as its own."""

    def __init__(self, send: Callable[[tuple[str, Any]], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        self.send(("log", {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                           "msg": record.getMessage(), "args": None}))  # fmt: skip


def _parse_child(mode: str, cache: str, racy_s: float, paths: list[str]) -> None:
    """The child process: parse each file (mode "fast": fastyaml first) and send, after ("file", index), its
    log records, its head and its objects in chunks. With a cache directory, those bytes are also kept there
    (dnsd/sources/parsecache.py), unless the file changed while it was read."""
    gc.disable()  # a short-lived process: collections over the parse's millions of objects would only cost
    out = sys.stdout.buffer
    body = bytearray()

    def send(message: tuple[str, Any]) -> None:
        data = _frame(message)
        body.extend(data)
        out.write(data)

    root = logging.getLogger()
    root.handlers[:] = [_Forward(send)]
    root.setLevel(logging.DEBUG)
    directory = Path(cache) if cache else None
    for index, name in enumerate(paths):
        path = Path(name)
        out.write(_frame(("file", index)))
        body.clear()
        before = _stat_key(path)
        result = parse_file(path, fast=mode == "fast")
        objects = result.objects or ()
        send(("head", (replace(result, objects=None if result.objects is None else ()), len(objects))))
        for i in range(0, len(objects), _CHUNK):
            send(("objects", objects[i : i + _CHUNK]))
        out.flush()
        if directory is not None and before is not None and _stat_key(path) == before:
            parsecache.store(directory, path, before, bytes(body), time.time_ns(), racy_s)


def _stat_key(path: Path) -> parsecache.Key | None:
    try:
        return parsecache.key_of(os.stat(path))
    except OSError:
        return None


class _Receiver:
    """Rebuilds one file's Parsed from a parse child's messages (or from a parse cache entry)."""

    def __init__(self) -> None:
        self.head: Parsed | None = None
        self.want = -1
        self.objects: list[Located] = []

    def feed(self, kind: str, payload: Any) -> None:
        if kind == "log":
            logging.getLogger(payload["name"]).log(payload["levelno"], "%s", payload["msg"])
        elif kind == "head":
            self.head, self.want = payload
        elif kind == "objects":
            self.objects.extend(payload)

    def result(self) -> Parsed | None:
        if self.head is None or len(self.objects) != self.want:
            return None
        return self.head if self.head.objects is None else replace(self.head, objects=tuple(self.objects))


def _replay(body: bytes) -> Parsed | None:
    """A parse cache entry's Parsed (its log records logged again); None when it does not decode."""
    receiver = _Receiver()
    view = memoryview(body)
    pos = 0
    try:
        while pos < len(view):
            (size,) = struct.unpack_from("!I", view, pos)
            kind, payload = pickle.loads(view[pos + 4 : pos + 4 + size])
            receiver.feed(kind, payload)
            pos += 4 + size
    except Exception as exc:  # a corrupt entry is a miss, whatever unpickling it raised
        log.debug("parse cache entry unusable: %s", exc)
        return None
    return receiver.result()


def _parse_apart(
    paths: Sequence[Path],
    children: set[subprocess.Popen[bytes]] | None = None,
    *,
    fast: bool = True,
    cache: Path | None = None,
) -> dict[Path, Parsed]:
    """parse_file for each path, in one child process: the parse's GIL-holding calls and its memory peak stay
    out of the server; the objects come back in chunks, so unpickling them never holds the GIL long either.
    Returns the files the child finished; a child that dies (out of memory, a crash in native code) leaves the
    rest out (the caller reads them again with PyYAML, then reports them)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "fast" if fast else "safe", str(cache or ""), str(parsecache.RACY_S)]
        + [str(p) for p in paths],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    if children is not None:
        children.add(proc)  # so that stop() can end it: stopping never waits for a parse
    done: dict[Path, Parsed] = {}
    current: tuple[Path, _Receiver] | None = None
    try:
        while True:
            size = proc.stdout.read(4)
            if len(size) < 4:
                break
            kind, payload = pickle.loads(proc.stdout.read(struct.unpack("!I", size)[0]))
            if kind == "file":
                if current is not None and (result := current[1].result()) is not None:
                    done[current[0]] = result
                current = (paths[payload], _Receiver())
            elif current is not None:
                current[1].feed(kind, payload)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, IndexError) as exc:
        log.debug("%s: parse child: %s", paths[0] if paths else "-", exc)
        current = None
    finally:
        proc.stdout.close()
        code = proc.wait()
        if children is not None:
            children.discard(proc)
    if current is not None and code == 0 and (result := current[1].result()) is not None:
        done[current[0]] = result
    return done


def _spread(files: list[tuple[Path, int]], n: int) -> list[list[Path]]:
    """Files (with sizes) into at most n groups of about equal bytes: the biggest first, each to the lightest."""
    groups: list[tuple[int, int, list[Path]]] = [(0, i, []) for i in range(max(1, min(n, len(files))))]
    for path, size in sorted(files, key=lambda f: -f[1]):
        total, i, group = min(groups)
        group.append(path)
        groups[groups.index((total, i, group))] = (total + size, i, group)
    return [sorted(g) for _, _, g in groups if g]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def manifest_files(root: Path) -> list[Path]:
    """Every manifest below root, sorted by path (see walk)."""
    return sorted(walk(root).files)


def _dir_identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory, following a symlink; None when it is missing."""
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def signature(path: Path, linked: bool = True) -> Signature | None:
    """The signature of a regular file (following symlinks); None when it is not one (any more)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None
        real = os.path.realpath(path) if linked or path.is_symlink() else str(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino, real)
    except OSError:
        return None


@dataclass
class _Round:
    """What one scan (a walk, or the files a change event named) worked out, ready to commit."""

    batch: Prepared
    waiting: set[Path]  # files still being written: look at them again in `wait` seconds
    wait: float
    changed_at: float | None = None  # the newest mtime among the files read (Unix time): the change's moment


class FileSource:
    """Keeps the store equal to the merge of every good file: later files (in sorted path order) win."""

    name = "files"

    def __init__(
        self,
        root: Path,
        store: Store,
        *,
        step_ms: int = 10,
        rescan_s: float = 10.0,
        cache_dir: Path | bool | None = True,
    ) -> None:
        self.root = root
        # The parse cache (dnsd/sources/parsecache.py): True for its default directory, None for none.
        self.cache_dir: Path | None = parsecache.default_dir() if cache_dir is True else (cache_dir or None)
        self._cache: Path | None = None  # cache_dir once checked usable
        self._cache_checked = False
        self.store = store
        self.step_ms = step_ms
        self.rescan_s = rescan_s
        self.files: dict[Path, Signature] = {}  # files whose objects are served, with the signature read
        self.bad: dict[Path, Signature] = {}  # files whose current content failed, reported once
        self.reload_errors = 0
        self.confirmed_at = 0.0  # Unix time the last scan completed (data_age)
        self.watching = False  # a directory watch is in place now
        self.programming = Histogram(LATENCY_BUCKETS)  # change (file mtime) to the changed answer being served
        self.scan_errors = 0
        self.walks = 0  # walks of the directory tree so far
        self.reads = 0  # files parsed so far
        self.reads_apart = 0  # of which in a child process (bigger than PARSE_APART_BYTES, or a big read)
        self.cache_hits = 0  # files whose parse came from the parse cache instead
        # What the merge keeps, one entry per object and file (at 100,000 services every byte here counts
        # 200,000 times): each file's objects by key, and for each key the files defining it in sorted order
        # (the last one wins; a one-file tuple is shared by every key of that file).
        self._by_file: dict[Path, dict[ObjectKey, KubeObject]] = {}
        self._defs: dict[ObjectKey, tuple[Path, ...]] = {}
        self._ones: dict[Path, tuple[Path]] = {}
        self._dirs: dict[Path, bool] = {}  # read completely by the last walk -> reached through a symlink
        self._known: dict[str, Path] = {}  # the files of the last walk, by path text
        self._problems: dict[str, str] = {}  # walk problems reported and not cleared yet
        self._warned_dupes: set[tuple[ObjectKey, Path, Path]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._halt = threading.Event()  # the same for the scan thread: give up and return
        self._scanning = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()  # parse children running now (see _parse_apart)
        self._lock = asyncio.Lock()  # one scan at a time (watch, SIGHUP): a batch is prepared against the last
        self.armed = asyncio.Event()  # set once the directory watch is in place
        self.settle_s = SETTLE_S
        self._tree: TreeWatch | None = None  # the inotify watch, while it is in place (else watchfiles, or none)

    # ------------------------------------------------------------ scanning (in a thread)

    def _scan(self, targets: set[Path] | None) -> _Round | None:
        """Runs off the loop: find the files (a walk, or just `targets`), parse those whose signature changed
        and that have settled, fold them into the file table and prepare the store batch. None: stopping.

        A file written less than settle_s ago may still be being written (`kubectl get ... > file` streams,
        an editor truncates then writes): a prefix of it can be valid YAML holding fewer objects, or a cut-off
        value. Such a file keeps serving its last good objects and is read once it has been quiet for
        settle_s, or at once when the inotify watch saw its writer finish (see _closed)."""
        present: dict[Path, Signature] = {}
        gone: list[Path] = []
        if targets is None:
            w = walk(self.root, self._halt, self._known)
            self.walks += 1
            if w.stopped:
                return None
            self._report(w)
            present = w.files
            gone = [p for p in (*self.files, *self.bad) if p not in present and w.covers(p)]
            self._dirs = dict(w.listed)
            self._known = {str(p): p for p in w.files}
        else:
            for path in targets:
                sig = signature(path, self._dirs.get(path.parent, True))
                if sig is not None:
                    present[path] = sig
                elif path in self.files or path in self.bad:
                    gone.append(path)
        todo = [
            (path, sig)
            for path, sig in present.items()
            if not (self.files.get(path) == sig or self.bad.get(path) == sig)
        ]
        big = sum(sig[1] for _, sig in todo) > BIG_READ_BYTES and gc.isenabled()
        if big:
            gc.disable()
        try:
            return self._read(todo, present, gone)
        finally:
            if big:
                gc.freeze()  # what the batch built lives on: never scan it again (refcounting still frees it)
                gc.enable()

    def _read(
        self, todo: list[tuple[Path, Signature]], present: dict[Path, Signature], gone: list[Path]
    ) -> _Round | None:
        """Parse the changed files that have settled, fold them in and prepare the store batch.

        A big read (over BIG_READ_BYTES, as the first scan of a big directory) is spread over one parse child
        per CPU, each reading its share of the files with fastyaml first, after the parse cache has given what
        it holds; otherwise only files over PARSE_APART_BYTES are parsed in a child, the rest here."""
        waiting: set[Path] = set()
        wait = 0.0
        settled: list[tuple[Path, Signature, Token | None]] = []
        for path, sig in todo:
            if self._halt.is_set():
                return None
            closed = self._closed(path, sig)
            age = (time.time_ns() - sig[0]) / 1e9
            if closed is None and 0 <= age < self.settle_s:
                wait = max(wait, self.settle_s - age)
                waiting.add(path)
            else:
                settled.append((path, sig, closed))
        big = sum(sig[1] for _, sig, _ in settled) > BIG_READ_BYTES
        apart = [(path, sig[1]) for path, sig, _ in settled if big or sig[1] > PARSE_APART_BYTES]
        here = [path for path, sig, _ in settled if not (big or sig[1] > PARSE_APART_BYTES)]
        parsed = self._parse_all(apart, here)
        if parsed is None:
            return None
        for path, sig, closed in settled:
            if signature(path, sig[3] != str(path)) != sig or not self._still_closed(closed):
                wait = max(wait, self.settle_s)  # it changed while we read it
                waiting.add(path)
                parsed.pop(path, None)
        upserts, deletes = self._fold(present, gone, parsed)
        newest = max((present[path][0] for path in parsed), default=None)
        return _Round(self.store.prepare(upserts, deletes), waiting, wait, newest / 1e9 if newest else None)

    def _closed(self, path: Path, sig: Signature) -> Token | None:
        """Whether the inotify watch saw the file's writer finish (IN_CLOSE_WRITE, IN_MOVED_TO) with no write
        since: then it is complete and read at once. None: the settle window decides."""
        tree = self._tree
        return None if tree is None else tree.complete(str(path), sig[3])

    def _still_closed(self, closed: Token | None) -> bool:
        """After the read: no write to a file read as complete was queued meanwhile (a writer reopened it)."""
        tree = self._tree
        return closed is None or (tree is not None and tree.still(closed))

    def _parse_all(self, apart: list[tuple[Path, int]], here: list[Path]) -> dict[Path, Parsed] | None:
        """Parse the files: those of `apart` from the parse cache or in parse children (one per CPU, in
        threads that only wait for them), those of `here` in this thread meanwhile. None: stopping."""
        parsed: dict[Path, Parsed] = {}
        cache = self._cache_dir()
        missed: list[tuple[Path, int]] = []
        for path, size in apart:
            key = _stat_key(path) if cache is not None else None
            body = parsecache.load(cache, path, key) if cache is not None and key is not None else None
            result = _replay(body) if body is not None else None
            if result is None:
                missed.append((path, size))
            else:
                parsed[path] = result
                self.cache_hits += 1
        groups = _spread(missed, _cpus())
        threads = [
            threading.Thread(target=lambda g=g: parsed.update(_parse_apart(g, self._children, cache=cache)),
                             name="dnsd-files-parse", daemon=True)
            for g in groups
        ]  # fmt: skip
        for t in threads:
            t.start()
        for path in here:
            if self._halt.is_set():
                break
            parsed[path] = parse_file(path)
            self.reads += 1
        for t in threads:
            t.join()
        if self._halt.is_set():
            return None
        for path, _ in missed:
            if path not in parsed:
                # The child ended before this file was done (a crash in native code, memory): PyYAML alone, in a
                # child of its own; if that ends early too, it is the file's error.
                again = _parse_apart([path], self._children, fast=False)
                if self._halt.is_set():
                    return None
                parsed[path] = again.get(path) or Parsed(None, f"{path}: cannot read: the parser process ended early")
            self.reads += 1
            self.reads_apart += 1
        return parsed

    def _cache_dir(self) -> Path | None:
        """The parse cache directory, checked (and pruned) once; None: no cache."""
        if not self._cache_checked:
            self._cache_checked = True
            if self.cache_dir is not None and parsecache.usable(self.cache_dir):
                self._cache = self.cache_dir
                parsecache.prune(self._cache)
        return self._cache

    def _report(self, w: Walk) -> None:
        """Log each walk problem once at ERROR (and once at INFO when it has cleared)."""
        for key, message in w.problems.items():
            if self._problems.get(key) != message:
                self.scan_errors += 1
                log.error("%s", message)
        for key, message in self._problems.items():
            if key not in w.problems:
                log.info("%s: resolved", message.split(": ", 1)[0])
        self._problems = dict(w.problems)

    @property
    def merged(self) -> Mapping[ObjectKey, object]:
        """The keys of every object served (what the source holds)."""
        return self._defs

    def _fold(
        self, sigs: dict[Path, Signature], gone: list[Path], parsed: dict[Path, Parsed]
    ) -> tuple[list[KubeObject], list[ObjectKey]]:
        """Fold the scan into the file table; return the store changes (only for the objects of changed files)."""
        changed: dict[Path, Sequence[Located]] = {}
        for path in gone:
            if path in self.files:
                del self.files[path]
                changed[path] = ()
                log.info("%s: removed; its objects are withdrawn", path)
            self.bad.pop(path, None)
        for path, result in parsed.items():
            if result.objects is None:
                self.reload_errors += 1
                self.bad[path] = sigs[path]
                kept = "its previous objects keep serving" if path in self.files else "nothing from it is served"
                log.error("%s (%s)", result.error, kept, extra={"file": str(path)})
            else:
                self.bad.pop(path, None)
                # Per object: invalid objects are reported and keep their last good version (Parsed.resolve; the
                # lines of the previous objects are not kept, nothing reads them after a parse).
                objects: Sequence[Located] = result.objects
                reports: list[str] = []
                if result.errors:
                    previous = [(obj, 0) for obj in self._by_file.get(path, {}).values()]
                    objects, reports = result.resolve(previous)
                self.files[path] = sigs[path]
                changed[path] = objects
                for report in reports:
                    self.reload_errors += 1
                    log.error("%s", report, extra={"file": str(path)})
        return self._merge(changed)

    def _winner(self, key: ObjectKey) -> KubeObject | None:
        paths = self._defs.get(key)
        return self._by_file[paths[-1]][key] if paths else None

    def _merge(self, changed: dict[Path, Sequence[Located]]) -> tuple[list[KubeObject], list[ObjectKey]]:
        """Update the definitions of the changed files and re-decide only their objects: the definition in the
        file sorting last wins, with a warning naming both files."""
        before: dict[ObjectKey, KubeObject | None] = {}  # in file order: the store order PTR answers follow
        for path in sorted(changed):
            old = self._by_file.get(path, {})
            new: dict[ObjectKey, KubeObject] = {}
            for obj, _line in changed[path]:
                new[object_key(obj)] = obj  # a second definition in the same file replaces the first
            for key in itertools.chain(new, old):
                if key not in before:
                    before[key] = self._winner(key)
            for key in old.keys() - new.keys():
                rest = tuple(p for p in self._defs[key] if p != path)
                if rest:
                    self._defs[key] = rest
                else:
                    del self._defs[key]
            one = self._ones.setdefault(path, (path,))
            for key in new.keys() - old.keys():
                paths = self._defs.get(key)
                self._defs[key] = tuple(sorted((*paths, path))) if paths else one
            if new:
                self._by_file[path] = new
            else:
                self._by_file.pop(path, None)
                self._ones.pop(path, None)
        deletes: list[ObjectKey] = []
        upserts: list[KubeObject] = []
        for key, prev in before.items():
            paths = self._defs.get(key)
            if not paths:
                if prev is not None:
                    deletes.append(key)
                continue
            for earlier, later in itertools.pairwise(paths):
                dupe = (key, earlier, later)
                if dupe not in self._warned_dupes:
                    self._warned_dupes.add(dupe)
                    log.warning("%s is defined in %s and %s; the later file wins", describe(key), earlier, later)
            obj = self._by_file[paths[-1]][key]
            if prev is None or prev != obj:
                upserts.append(obj)
        return upserts, deletes

    # ------------------------------------------------------------ applying (on the loop)

    async def resync(self) -> None:
        """Walk the directory and re-read every file whose signature changed now (SIGHUP), as the periodic
        rescan does."""
        await self._sync_logged()

    async def sync(self, targets: set[Path] | None = None) -> int:
        """Apply what changed: in the files named (targets), or anywhere (a walk, targets None)."""
        changed = 0
        async with self._lock:
            for _ in range(MAX_SETTLE_ROUNDS):
                result = await self._off_loop(targets)
                if result is None:
                    break
                committed = self.store.commit(result.batch)
                changed += committed
                if committed and result.changed_at is not None and self.store.synced:
                    # Committed means served: the store's listeners dropped the stale answers synchronously.
                    self.programming.observe(max(0.0, time.time() - result.changed_at))
                if targets is None and self._tree is not None and self._tree.track(self._dirs):
                    continue  # the walk found directories not watched yet: walk them again, now watched
                if result.wait <= 0:
                    break
                if self._tree is not None:
                    # A close ends the wait early; other changes end it too, and the files still being written
                    # are handed back to the watch, to be looked at again with those changes.
                    if not await self._tree.closed(result.waiting, result.wait):
                        break
                else:
                    await asyncio.sleep(result.wait)
                targets = result.waiting  # look again at just the files still being written
            result = None  # what the batch built is freed here: give the pages back (off the loop)
            if changed >= TRIM_CHANGED:
                await asyncio.to_thread(release_freed_memory)
        self.confirmed_at = time.time()
        return changed

    def data_age(self) -> float:
        """Seconds since the source last confirmed its data is current: 0 while the directory watch is in place
        (every change reaches the store as it happens), else the time since the last complete scan."""
        if self.watching:
            return 0.0
        return max(0.0, time.time() - self.confirmed_at) if self.confirmed_at else float("inf")

    async def _off_loop(self, targets: set[Path] | None) -> _Round | None:
        """Run _scan in a daemon thread of its own rather than the loop's executor: a scan parsing a big file
        cannot be interrupted, and the executor's threads are waited for when the process exits, so a SIGTERM
        would wait for the parse. A scan left behind by stop() ends with the process."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Round | None] = loop.create_future()

        def settle(result: _Round | None, exc: BaseException | None) -> None:
            if fut.done():
                return  # cancelled (stop): nobody waits for it
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def run() -> None:
            with self._scanning:  # one scan thread at a time, even when a cancelled one is still finishing
                result: _Round | None = None
                error: BaseException | None = None
                try:
                    result = self._scan(targets)
                except BaseException as exc:
                    error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is exiting
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="dnsd-files-scan", daemon=True).start()
        return await fut

    def _targets(self, changes: set[tuple[Any, str]]) -> set[Path] | None:
        """The files a batch of change events names, when re-reading just them is enough; None: walk.

        Enough means every event is about a manifest file (or a plain hidden file, such as an editor's swap
        file or a temporary file renamed into place) in a directory the last walk read completely. A
        directory event, a symlink, anything under a hidden directory (a ConfigMap `..data` swap) needs a walk."""
        base = self.root.absolute()
        out: set[Path] = set()
        for _, text in changes:
            named = Path(text)
            try:
                # watchfiles names absolute paths, the inotify watch the walk's own (relative when the root is)
                rel = named.relative_to(base if named.is_absolute() else self.root)
            except ValueError:
                return None
            path = self.root / rel
            if not rel.parts or any(p.startswith(".") for p in rel.parts[:-1]) or path.parent not in self._dirs:
                return None
            if path in self._dirs or path.is_dir():
                return None
            if rel.name.startswith("."):
                if rel.name.startswith("..") or path.is_symlink():
                    return None  # a ConfigMap volume's ..data link or ..<timestamp> directory
                continue  # an editor or temporary file: never read
            if not rel.name.endswith(SUFFIXES):
                continue
            out.add(path)
        return out

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.sync()
        self.store.mark_synced()
        log.info("loaded %d objects from %s", len(self.merged), self.root)
        self._task = asyncio.create_task(self._watch(), name="dnsd-files-watch")
        if self.root.is_dir():
            # Report started only once changes cannot be missed (a write right after start must be seen).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.armed.wait(), 5.0)

    async def _watch(self) -> None:
        from dnsd.sources import inotify
        from dnsd.sources.watch import Watch

        why = inotify.unavailable()
        if why is not None:
            log.info("%s: watching with watchfiles (%s): files are read once quiet for %.0f ms", self.root, why,
                     self.settle_s * 1000)  # fmt: skip
        absent: int | None = None  # while the directory is absent: the file type found in its place (0: none)
        while not self._stop.is_set():
            ident = _dir_identity(self.root)
            if ident is None:
                try:
                    now = stat.S_IFMT(self.root.stat().st_mode)
                except OSError:
                    now = 0
                if now != absent:
                    absent = now
                    await self._sync_logged()  # reports it (gone, or a file now) and withdraws nothing
                # The directory is gone (or not there yet): look again shortly, then catch up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                continue
            absent = None
            try:
                if why is None:
                    await self._watch_tree(inotify.TreeWatch, ident)
                else:
                    await self._watch_once(Watch, ident)
            except Exception:
                log.exception("%s: watching failed; retrying", self.root)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _watch_once(self, watch: type[Watch], ident: tuple[int, int]) -> None:
        """Watch one incarnation of the directory until it is replaced or removed."""
        root_text = str(self.root)
        async with watch(
            self.root, self._stop, debounce=200, step=self.step_ms, rust_timeout=1000, recursive=True
        ) as w:
            # The watches are armed: only now catch up, so nothing written in between is missed.
            self.armed.set()
            self.watching = True
            try:
                await self._watch_changes(w, ident, root_text)
            finally:
                self.watching = False

    async def _watch_tree(self, watch: type[TreeWatch], ident: tuple[int, int]) -> None:
        """Watch one incarnation of the directory with inotify: a file is read as soon as its writer closes it
        or renames it into place, not after the settle window (see dnsd.sources.inotify)."""
        async with watch(self.root, self._stop) as w:
            w.track(self._dirs)  # the directories of the last walk; the catch-up walk adds the ones new since
            self._tree = w
            self.armed.set()
            self.watching = True
            try:
                await self._watch_changes(w, ident, str(self.root))
            finally:
                self.watching = False
                self._tree = None

    async def _watch_changes(self, w: Watch | TreeWatch, ident: tuple[int, int], root_text: str) -> None:
        """Apply the watch's changes until the directory is replaced or removed, or the source stops."""
        await self._sync_logged()
        last_full = time.monotonic()
        while (changes := await w.next()) is not None:
            if _dir_identity(self.root) != ident or any(p == root_text for _, p in changes):
                # The directory itself was replaced or removed (its inode may even be reused by the new
                # one, so its own deletion event counts too): the old watch is dead, watch the new one.
                return
            if time.monotonic() - last_full >= self.rescan_s:
                await self._sync_logged()  # the periodic walk: stats only, parses only what changed
                last_full = time.monotonic()
            elif changes:
                targets = self._targets(changes)
                await self._sync_logged(targets)
                if targets is None:
                    last_full = time.monotonic()

    async def _sync_logged(self, targets: set[Path] | None = None) -> None:
        try:
            await self.sync(targets)
        except Exception:
            log.exception("%s: rescan failed; the last good objects keep serving", self.root)

    async def stop(self) -> None:
        """Stop watching. A scan running in its thread is told to give up (it looks at the flag between
        directories and files) and is not waited for: stopping never depends on the file system."""
        self._stop.set()
        self._halt.set()
        for child in list(self._children):
            with contextlib.suppress(OSError):
                child.kill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

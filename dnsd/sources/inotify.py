"""The manifest directory's watch on Linux: inotify(7) itself, so a file closed after writing is read at once.

watchfiles reports that a file changed, not that its writer is done with it, so the files source had to wait for a
file to be quiet (the settle window) before reading it. The kernel says when a write is complete: IN_CLOSE_WRITE
(the writer closed the file) and IN_MOVED_TO (a file renamed into place). This module keeps, per file, whether the
last event was such a completion; a file whose writer is done is read at once, and the settle window is left for
writers that keep a file open (IN_MODIFY without a close) and for files whose writes were not watched.

One inotify descriptor, registered with the event loop (loop.add_reader), holds a watch per directory the last walk
read completely; a new directory is watched as soon as its IN_CREATE / IN_MOVED_TO is read, and the walk that the
directory event starts finds what was written into it before. The events read are bounded (per wake-up, and the
distinct paths pending); past a bound, or when the kernel's own queue overflowed (IN_Q_OVERFLOW), the watch reports
the root itself, which makes the source start over: a fresh watch and a full walk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

Changes = set[tuple[int, str]]  # (inotify mask, path): what the files source's _targets looks at
Token = tuple[str, int]  # (path, event number) of a completed write: see TreeWatch.complete

ENV = "DNSD_FILES_WATCH"  # "watchfiles" forces the portable watch (for tests, or a file system without inotify)

# <sys/inotify.h>
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip
_DONE = IN_CLOSE_WRITE | IN_MOVED_TO  # the writer is done with the file
_GONE = IN_DELETE | IN_MOVED_FROM
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)

READ_BYTES = 64 * 1024  # one read(2) of the descriptor
MAX_READS = 64  # per wake-up (4 MiB); the rest waits for the next one (the descriptor stays readable)
MAX_PENDING = 10_000  # distinct paths waiting to be handed over; more: start over (a full walk)
MAX_STATES = 200_000  # files whose last event is remembered; more: forget them all (they get the settle window)
# A deletion waits until the events have been quiet for STEP_S (at most DEBOUNCE_S): `rm -r` of the manifest
# directory deletes its files one by one before the directory itself, and a directory that goes away withdraws
# nothing (see files.walk), so the files' deletions must not be applied on their own first. Writes never wait.
STEP_S = 0.01
DEBOUNCE_S = 0.2
WAKE_S = 1.0  # next() returns an empty batch after this long without events (the periodic walk's clock)


class _Libc:
    """inotify_init1, inotify_add_watch and inotify_rm_watch from the C library (glibc and musl have them)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.init1 = lib.inotify_init1
        self.init1.argtypes, self.init1.restype = (ctypes.c_int,), ctypes.c_int
        self.add = lib.inotify_add_watch
        self.add.argtypes, self.add.restype = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32), ctypes.c_int
        self.rm = lib.inotify_rm_watch
        self.rm.argtypes, self.rm.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int


_libc: _Libc | None = None


def unavailable() -> str | None:
    """Why the inotify watch cannot be used here (None: it can)."""
    global _libc
    if os.environ.get(ENV, "").strip().lower() == "watchfiles":
        return f"{ENV}=watchfiles"
    if not sys.platform.startswith("linux"):
        return f"no inotify on {sys.platform}"
    if _libc is None:
        try:
            _libc = _Libc()
        except (OSError, AttributeError) as exc:
            return f"no inotify in the C library ({exc})"
    return None


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class TreeWatch:
    """`async with TreeWatch(root, stop) as w:` watches root; track() sets the directories watched, next() is the
    next batch of changed paths (empty after WAKE_S without one; None once stop is set). complete() and still()
    may be called from the scan thread."""

    def __init__(self, root: Path, stop: asyncio.Event) -> None:
        self.root = str(root)
        self._stop = stop
        self._fd = -1
        self._path_of: dict[int, str] = {}  # watch descriptor -> directory (as the walk names it)
        self._wd_of: dict[str, int] = {}
        self._changes: Changes = set()
        self._restart = False  # events were lost (the kernel's queue or MAX_PENDING): start over
        self._deleted = False  # a deletion is pending: wait for the rest of it (STEP_S)
        self._moved_out: set[int] = set()  # cookies of IN_MOVED_FROM not followed by their IN_MOVED_TO (yet)
        self._writing: set[str] = set()  # files of the pending changes whose writer is not done (yet)
        self._seq = 0
        self._states: dict[str, tuple[int, bool]] = {}  # file -> (event number, the writer is done)
        self._lock = threading.Lock()  # the descriptor and the tables: the loop and the scan thread both read
        self._ready = asyncio.Event()  # changes are pending (or stop)
        self._done = asyncio.Event()  # a file's writer finished (see closed())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._full_logged = False

    async def __aenter__(self) -> TreeWatch:
        if _libc is None and unavailable() is not None:
            raise OSError(errno.ENOSYS, "inotify is not available")
        assert _libc is not None
        self._loop = asyncio.get_running_loop()
        self._fd = _check(_libc.init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        try:
            self._add(self.root)
            self._loop.add_reader(self._fd, self._readable)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._stopper = asyncio.create_task(self._wake_on_stop(), name="dnsd-files-inotify-stop")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stopper
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        with self._lock:
            os.close(self._fd)  # drops every watch
            self._fd = -1
            self._path_of.clear()
            self._wd_of.clear()
            self._states.clear()

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._ready.set()

    # ------------------------------------------------------------ the watched directories (on the loop)

    def track(self, dirs: Iterable[Path]) -> bool:
        """Watch exactly these directories (and the root); True when one was not watched before, so a walk must
        look at it again: what was written into it before its watch was added raised no event."""
        wanted = {str(d) for d in dirs}
        wanted.add(self.root)
        added = False
        with self._lock:
            for path in wanted - self._wd_of.keys():
                added |= self._add(path)
            for path in self._wd_of.keys() - wanted:
                wd = self._wd_of.pop(path)
                del self._path_of[wd]
                with contextlib.suppress(OSError):
                    assert _libc is not None
                    _check(_libc.rm(self._fd, wd), "inotify_rm_watch")
        return added

    def _add(self, path: str) -> bool:
        """Add (or re-aim: a moved directory keeps its descriptor) the watch on a directory. Only the walk reads
        errors out loud (a directory it cannot list is logged there); the watch limit is reported here, once."""
        assert _libc is not None
        try:
            wd = _check(_libc.add(self._fd, os.fsencode(path), MASK), "inotify_add_watch")
        except OSError as exc:
            if exc.errno == errno.ENOSPC and not self._full_logged:
                self._full_logged = True
                log.error(
                    "%s: cannot watch %s: the inotify watch limit is reached (fs.inotify.max_user_watches); changes "
                    "below it are seen by the periodic walk",
                    self.root,
                    path,
                )
            return False
        old = self._path_of.get(wd)
        if old is not None and old != path:
            self._wd_of.pop(old, None)
        self._path_of[wd] = path
        self._wd_of[path] = wd
        return old != path

    # ------------------------------------------------------------ events

    def _readable(self) -> None:
        with self._lock:
            done = self._drain()
        if self._changes or self._restart:
            self._ready.set()
            self._done.set()  # also ends a wait in closed(): other changes come first
        elif done:
            self._done.set()

    def _drain(self) -> bool:
        """Read what the kernel queued (at most MAX_READS reads) into the tables; True when a write completed.
        Called with the lock held."""
        done = False
        for _ in range(MAX_READS):
            if self._fd < 0:
                break
            try:
                data = os.read(self._fd, READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("%s: reading inotify events failed: %s; rescanning", self.root, exc)
                self._restart = True
                break
            done |= self._parse(data)
            if len(data) < READ_BYTES // 2:
                break  # the queue is (nearly) empty: save the read(2) that would say EAGAIN
        return done

    def _parse(self, data: bytes) -> bool:
        done = False
        pos = 0
        while pos + _HEADER.size <= len(data):
            wd, mask, cookie, size = _HEADER.unpack_from(data, pos)
            name = data[pos + _HEADER.size : pos + _HEADER.size + size].split(b"\0", 1)[0]
            pos += _HEADER.size + size
            if mask & IN_Q_OVERFLOW:
                log.warning("%s: the inotify event queue overflowed; watching anew with a full walk", self.root)
                self._restart = True
                continue
            d = self._path_of.get(wd)
            if d is None:
                continue  # a watch removed meanwhile
            if mask & IN_IGNORED:  # the directory is gone (or its watch removed): the walk will see to it
                self._deleted = True
                del self._path_of[wd]
                self._wd_of.pop(d, None)
                self._changes.add((mask, d))
                continue
            if not name:  # IN_DELETE_SELF, IN_MOVE_SELF, or an event on the directory itself: walk
                self._changes.add((mask, d))
                continue
            path = os.path.join(d, os.fsdecode(name))
            self._seq += 1
            if mask & IN_DELETE:
                self._deleted = True
            elif mask & IN_MOVED_FROM:
                self._moved_out.add(cookie)
            elif mask & IN_MOVED_TO:
                self._moved_out.discard(cookie)  # a rename inside the tree, not a deletion
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO) and not name.startswith(b"."):
                    self._add(path)  # before the walk this event starts: nothing written into it is missed
            elif mask & _GONE:
                self._states.pop(path, None)
                self._writing.discard(path)
            elif mask & (IN_MODIFY | IN_CREATE | _DONE):
                finished = bool(mask & _DONE)
                self._states[path] = (self._seq, finished)
                done |= finished
                if finished:
                    self._writing.discard(path)
                else:
                    self._writing.add(path)
            self._changes.add((mask, path))
        if len(self._changes) > MAX_PENDING:
            log.warning("%s: over %d paths changed at once; watching anew with a full walk", self.root, MAX_PENDING)
            self._restart = True
        if len(self._states) > MAX_STATES:
            self._states.clear()
        if self._restart:
            self._changes.clear()
        return done

    async def next(self) -> Changes | None:
        """The paths changed since the last call (waiting up to WAKE_S for one); None once stop is set. After
        lost events, the root itself: the caller starts over."""
        if not self._changes and not self._restart:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), WAKE_S)
        if self._writing:
            await self._writers()
        if self._deleted or self._moved_out:
            await self._quiet()
        if self._stop.is_set():
            return None
        with self._lock:
            self._ready.clear()
            if self._restart:
                return {(IN_Q_OVERFLOW, self.root)}
            changes, self._changes = self._changes, set()
            self._deleted = False
            self._moved_out.clear()
            self._writing.clear()
        return changes

    async def _writers(self) -> None:
        """Wait (at most STEP_S) for the writers of the changed files to finish: write(2) and close(2) are two
        calls, and a scan started between them would find the file still being written and have to wait again.
        A writer that keeps its file open is left to the settle window."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_S
        while self._writing and not self._stop.is_set() and not self._restart:
            self._done.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._done.wait(), remaining)
            except TimeoutError:
                return

    async def _quiet(self) -> None:
        """Wait until no event came for STEP_S, at most DEBOUNCE_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEBOUNCE_S
        while not self._stop.is_set() and not self._restart and loop.time() < deadline:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), STEP_S)
            except TimeoutError:
                return

    # ------------------------------------------------------------ completed writes (the scan thread asks)

    def complete(self, path: str, real: str) -> Token | None:
        """A token when the last event for the file (its real path, for a file reached through a symlink) was its
        writer finishing: closed after writing, or renamed into place. None: unknown, or still being written."""
        with self._lock:
            key = real if real != path and real in self._states else path
            state = self._states.get(key)
        return (key, state[0]) if state is not None and state[1] else None

    def still(self, token: Token | None) -> bool:
        """After reading a complete file: no write to it was queued since (the kernel's queue is read first, so a
        writer that reopened the file meanwhile is seen)."""
        if token is None:
            return True
        with self._lock:
            done = self._drain()
            state = self._states.get(token[0])
        if (self._changes or done) and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is exiting
                self._loop.call_soon_threadsafe(self._wake)
        return state == (token[1], True)

    def _wake(self) -> None:
        """What _readable would have done for the events still() read."""
        if self._changes or self._restart:
            self._ready.set()
        self._done.set()

    async def closed(self, paths: Iterable[Path], within: float) -> bool:
        """Wait until one of these files' writers finishes, or `within` seconds (the settle window): True. False
        as soon as other changes are pending: the files go back among the changes (next() hands them over with
        the others), so a writer holding a file open never holds up the rest of the directory."""
        files = list(paths)
        keys = _keys(files)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            with self._lock:
                if any(self._states.get(k, (0, False))[1] for k in keys):
                    return True
                if self._changes or self._restart:
                    self._changes.update((IN_MODIFY, str(p)) for p in files)
                    return False
            self._done.clear()
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stop.is_set():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), remaining)


def _keys(paths: Iterable[Path]) -> set[str]:
    """The names a file's events may carry: its path, and its real path when it is reached through a symlink."""
    files = list(paths)
    return {str(p) for p in files} | {os.path.realpath(p) for p in files}

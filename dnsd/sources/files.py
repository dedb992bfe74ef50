"""The `files` source: a watched directory of Kubernetes manifests (YAML or JSON, multi-document, kind: List).

Every change is applied as one batch, so answers always come from one consistent snapshot. A file that does not
parse, or holds an invalid object, is reported once with its path, line and reason, and the objects it held
before keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from dnsd.sources.manifests import Parsed, parse_file
from dnsd.store.model import KubeObject, object_key
from dnsd.store.store import ObjectKey, Store

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")

Signature = tuple[int, int, int, str]  # mtime_ns, size, inode, real path
SETTLE_S = 0.03  # a file must be this quiet before it is read (see FileSource._scan)
MAX_SETTLE_ROUNDS = 100  # then give up until the next change event or periodic rescan


def manifest_files(root: Path) -> list[Path]:
    """Every manifest below root, sorted by path; names starting with '.' are skipped (editor files and the
    ConfigMap volume's ..data / ..<timestamp> directories, whose files are reached through the top-level links)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            path = Path(e.path)
            try:
                if e.is_dir():
                    stack.append(path)
                elif e.name.endswith(SUFFIXES) and e.is_file():
                    found.append(path)
            except OSError:
                continue
    return sorted(found)


def _dir_identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory, following a symlink; None when it is missing."""
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if root.is_dir() else None


def signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino, os.path.realpath(path))
    except OSError:
        return None


class FileSource:
    """Keeps the store equal to the merge of every good file: later files (in sorted path order) win."""

    name = "files"

    def __init__(self, root: Path, store: Store, *, step_ms: int = 10, rescan_s: float = 10.0) -> None:
        self.root = root
        self.store = store
        self.step_ms = step_ms
        self.rescan_s = rescan_s
        self.files: dict[Path, tuple[Signature, tuple[tuple[KubeObject, int], ...]]] = {}
        self.bad: dict[Path, Signature] = {}  # files whose current content failed, reported once
        self.merged: dict[ObjectKey, tuple[KubeObject, Path]] = {}
        self.reload_errors = 0
        self._warned_dupes: set[tuple[ObjectKey, Path, Path]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.armed = asyncio.Event()  # set once the directory watch is in place

    # ------------------------------------------------------------ scanning

    def _scan(self) -> tuple[dict[Path, Signature], dict[Path, Parsed], float]:
        """Runs off the loop: list the files, parse those whose signature changed and that have settled.

        A file written less than SETTLE_S ago may still be being written (`kubectl get ... > file` streams,
        an editor truncates then writes): a prefix of it can be valid YAML holding fewer objects, or a cut-off
        value. Such a file keeps serving its last good objects and is read once it has been quiet for
        SETTLE_S; the third value says how long until the next look is due (0: none)."""
        sigs: dict[Path, Signature] = {}
        parsed: dict[Path, Parsed] = {}
        wait = 0.0
        for path in manifest_files(self.root):
            sig = signature(path)
            if sig is None:
                continue
            sigs[path] = sig
            known = self.files.get(path)
            if (known is not None and known[0] == sig) or self.bad.get(path) == sig:
                continue
            age = (time.time_ns() - sig[0]) / 1e9
            if 0 <= age < SETTLE_S:
                wait = max(wait, SETTLE_S - age)
                continue
            result = parse_file(path)
            if signature(path) != sig:
                wait = max(wait, SETTLE_S)  # it changed while we read it
                continue
            parsed[path] = result
        return sigs, parsed, wait

    def _apply(self, sigs: dict[Path, Signature], parsed: dict[Path, Parsed]) -> int:
        """Runs on the loop: fold the scan into the file table and apply the difference to the store."""
        for path in list(self.files):
            if path not in sigs:
                del self.files[path]
                log.info("%s: removed; its objects are withdrawn", path)
        for path in list(self.bad):
            if path not in sigs:
                del self.bad[path]
        for path, result in parsed.items():
            if result.objects is None:
                self.reload_errors += 1
                self.bad[path] = sigs[path]
                kept = "its previous objects keep serving" if path in self.files else "nothing from it is served"
                log.error("%s (%s)", result.error, kept)
            else:
                self.bad.pop(path, None)
                # Per object: invalid objects are reported and keep their last good version (Parsed.resolve).
                objects, reports = result.resolve(self.files[path][1] if path in self.files else ())
                self.files[path] = (sigs[path], objects)
                for report in reports:
                    self.reload_errors += 1
                    log.error("%s", report)
        merged: dict[ObjectKey, tuple[KubeObject, Path]] = {}
        for path in sorted(self.files):
            for obj, _line in self.files[path][1]:
                key = object_key(obj)
                prev = merged.get(key)
                if prev is not None and prev[1] != path:
                    dupe = (key, prev[1], path)
                    if dupe not in self._warned_dupes:
                        self._warned_dupes.add(dupe)
                        log.warning(
                            "%s %s/%s is defined in %s and %s; the later file wins",
                            key[0],
                            key[1],
                            key[2],
                            prev[1],
                            path,
                        )
                merged[key] = (obj, path)
        deletes = [k for k in self.merged if k not in merged]
        upserts = [obj for k, (obj, _) in merged.items() if self.merged.get(k, (None,))[0] != obj]
        self.merged = merged
        return self.store.apply(upserts, deletes)

    async def resync(self) -> None:
        """Re-read every file whose signature changed now (SIGHUP), as the periodic rescan does."""
        await self._sync_logged()

    async def sync(self) -> int:
        changed = 0
        for _ in range(MAX_SETTLE_ROUNDS):
            sigs, parsed, wait = await asyncio.to_thread(self._scan)
            changed += self._apply(sigs, parsed)
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        return changed

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self.root.is_dir():
            log.error("%s: manifest directory does not exist; serving no cluster objects until it does", self.root)
        await self.sync()
        self.store.mark_synced()
        log.info("loaded %d objects from %s", len(self.merged), self.root)
        self._task = asyncio.create_task(self._watch(), name="dnsd-files-watch")
        if self.root.is_dir():
            # Report started only once changes cannot be missed (a write right after start must be seen).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.armed.wait(), 5.0)

    async def _watch(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            ident = _dir_identity(self.root)
            if ident is None:
                # The directory is gone (or not there yet): look again shortly, then catch up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                continue
            try:
                await self._watch_once(awatch, ident)
            except Exception:
                log.exception("%s: watching failed; retrying", self.root)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _watch_once(self, awatch: Any, ident: tuple[int, int]) -> None:
        """Watch one incarnation of the directory until it is replaced or removed."""
        changes_iter = awatch(
            self.root,
            stop_event=self._stop,
            debounce=200,
            step=self.step_ms,
            rust_timeout=1000,
            yield_on_timeout=True,
            recursive=True,
        )
        root_text = str(self.root)
        pending: asyncio.Future[set[Any]] = asyncio.ensure_future(changes_iter.__anext__())
        try:
            # The first step of the iterator sets up the inotify watches (synchronously, before its first
            # wait); only then catch up, so nothing written in between is missed.
            for _ in range(3):
                await asyncio.sleep(0)
            self.armed.set()
            await self._sync_logged()
            last_full = time.monotonic()
            while True:
                try:
                    changes = await pending
                except StopAsyncIteration:
                    return
                if _dir_identity(self.root) != ident or any(p == root_text for _, p in changes):
                    # The directory itself was replaced or removed (its inode may even be reused by the new
                    # one, so its own deletion event counts too): the old watch is dead, watch the new one.
                    return
                if changes or time.monotonic() - last_full >= self.rescan_s:
                    await self._sync_logged()
                    last_full = time.monotonic()
                pending = asyncio.ensure_future(changes_iter.__anext__())
        finally:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
            with contextlib.suppress(BaseException):
                await changes_iter.aclose()

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception:
            log.exception("%s: rescan failed; the last good objects keep serving", self.root)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

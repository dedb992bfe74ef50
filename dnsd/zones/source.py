"""The watched `zones:` directory: every zone file parsed off the event loop, swapped in only when valid."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnsd.proto.answer import Labels, Tag, zone_tag
from dnsd.zones.link import ZoneHandler
from dnsd.zones.zone import Zone, ZoneError, is_zone_file, load_zone

if TYPE_CHECKING:
    from dnsd.sources.watch import Watch

log = logging.getLogger(__name__)

Sig = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns): a file whose stat is unchanged is not re-read
WAKE_MS = 1000  # the watcher wakes at least this often and re-stats the directory (a missed event costs <= 1 s)
MAX_FILES = 10_000  # zone files read from one directory; more are ignored and reported
MAX_ZONE_BYTES = 256 * 1024 * 1024  # a bigger file is reported and not read (memory is bounded per file)


@dataclass(frozen=True, slots=True)
class Scan:
    """What one pass over the directory found: every zone file's stat, and what changed files parsed to."""

    present: bool
    sigs: dict[Path, Sig]
    parsed: dict[Path, Zone | ZoneError]
    too_many: bool


def scan(root: Path, known: dict[Path, Sig]) -> Scan:
    """Stat every zone file and parse the changed ones (runs in a thread: parsing a big zone takes a while)."""
    sigs: dict[Path, Sig] = {}
    parsed: dict[Path, Zone | ZoneError] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return Scan(False, {}, {}, False)
    too_many = False
    for entry in entries:
        path = Path(entry.path)
        if not is_zone_file(path):
            continue
        try:
            if not entry.is_file():
                continue
            st = entry.stat()
        except OSError:
            continue
        if len(sigs) >= MAX_FILES:
            too_many = True
            break
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        sigs[path] = sig
        if known.get(path) != sig:
            if st.st_size > MAX_ZONE_BYTES:
                parsed[path] = ZoneError(f"{path}: larger than {MAX_ZONE_BYTES} octets; not read")
                continue
            try:
                parsed[path] = load_zone(path)
            except ZoneError as exc:
                parsed[path] = exc
    return Scan(True, sigs, parsed, too_many)


class ZoneSource:
    """Keeps the link's zones equal to the valid files of the directory. A broken file is reported once (until
    it changes again) and its previous version keeps serving; a deleted file withdraws its zone."""

    name = "zones"

    def __init__(
        self,
        root: Path,
        link: ZoneHandler,
        reserved: Sequence[Labels],
        on_change: Callable[[set[Tag]], None],
    ) -> None:
        self.root = root
        self.link = link
        self.reserved = list(reserved)  # the cluster link's zones: a zone file at or below one is refused
        self.on_change = on_change
        self.sigs: dict[Path, Sig] = {}
        self.loaded: dict[Path, Zone] = {}  # the last valid version of every file
        self.reported: set[str] = set()  # the conflicts reported (duplicate origins, cluster zones), once each
        self.missing_reported = False
        self.too_many = False
        self.ready = asyncio.Event()  # set once the first load is applied
        self.armed = asyncio.Event()  # set once the watcher sees changes (tests wait on it)
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.sync()
        self.ready.set()
        log.info("serving %d zones from %s", len(self.link.zones), self.root)
        self._task = asyncio.create_task(self._watch(), name="dnsd-zones-watch")
        if self.root.is_dir():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.armed.wait(), 5.0)

    async def resync(self) -> None:
        await self.sync()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # ------------------------------------------------------------ loading

    async def sync(self) -> None:
        """One pass: stat everything, parse what changed (off the loop), apply the valid results."""
        async with self._lock:
            result = await asyncio.to_thread(scan, self.root, dict(self.sigs))
            self._apply(result)

    def _apply(self, result: Scan) -> None:
        if not result.present:
            if not self.missing_reported:
                log.warning("%s: zone directory missing or unreadable; no zone files until it appears", self.root)
                self.missing_reported = True
        else:
            self.missing_reported = False
        self.too_many = result.too_many
        for path, got in result.parsed.items():
            if isinstance(got, ZoneError):
                # Reported once per version of the file (it is re-read only when its stat changes).
                kept = "its previous version keeps serving" if path in self.loaded else "not served"
                log.error("%s; %s", got, kept, extra={"file": str(path)})
            else:
                self.loaded[path] = got
        for path in list(self.loaded):
            if path not in result.sigs:
                del self.loaded[path]  # deleted: its zone is withdrawn
        self.sigs = result.sigs
        self._publish()

    def _publish(self) -> None:
        """Swap in the zone set the loaded files make, and drop the pre-rendered answers of what changed."""
        served: dict[Labels, Zone] = {}
        problems: set[str] = set()
        if self.too_many:
            problems.add(f"{self.root}: more than {MAX_FILES} zone files; the rest are ignored")
        for path in sorted(self.loaded):
            zone = self.loaded[path]
            origin = ".".join(zone.origin) + "."
            clash = next((r for r in self.reserved if zone.origin[len(zone.origin) - len(r) :] == r), None)
            if clash is not None:
                problems.add(f"{path}: zone {origin} is inside {'.'.join(clash)}., the cluster's zone; not served")
            elif zone.origin in served:
                problems.add(f"{path}: zone {origin} is already served from {served[zone.origin].path}; not served")
            else:
                served[zone.origin] = zone
        for msg in sorted(problems - self.reported):
            log.error("%s", msg)
        self.reported = problems
        old = self.link.zones
        changed = {o for o in served.keys() | old.keys() if served.get(o) is not old.get(o)}
        if not changed:
            return
        self.link.zones = served
        if served.keys() == old.keys():
            tags = {zone_tag(".".join(o)) for o in changed}
        else:
            # A zone that appears or goes also changes the answers of others: its parent's names below it, and
            # every CNAME into it from another zone (chased there now, or no longer). Rare: drop every zone's.
            tags = {zone_tag(".".join(o)) for o in served.keys() | old.keys()}
        for o in sorted(changed):
            if o in served:
                log.info("zone %s. loaded from %s", ".".join(o), served[o].path)
            else:
                log.info("zone %s. withdrawn", ".".join(o))
        self.on_change(tags)

    # ------------------------------------------------------------ watching

    async def _watch(self) -> None:
        from dnsd.sources.watch import Watch

        while not self._stop.is_set():
            if not self.root.is_dir():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), WAKE_MS / 1000)
                await self._sync_logged()
                continue
            try:
                await self._watch_once(Watch)
            except Exception:
                log.exception("%s: watching failed; retrying", self.root)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _watch_once(self, watch: type[Watch]) -> None:
        """Watch the directory until it goes; every wake (a change, or WAKE_MS without one) re-stats it."""
        ident = self.root.stat().st_ino
        async with watch(self.root, self._stop, debounce=100, step=20, rust_timeout=WAKE_MS, recursive=False) as w:
            # The watch is armed: catch up once, so a write between the first load and the watch is not missed.
            self.armed.set()
            await self._sync_logged()
            while await w.next() is not None:
                await self._sync_logged()
                try:
                    if self.root.stat().st_ino != ident:
                        return  # replaced: watch the new directory
                except OSError:
                    return

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception:
            log.exception("%s: rescan failed; the zones loaded keep serving", self.root)

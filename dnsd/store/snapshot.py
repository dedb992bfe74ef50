"""The last-known-good snapshot of the store (cluster.snapshot): written atomically after changes, loaded at start.

Format (JSON lines, version 1): the first line is a header object, then one object of the store per line, as a
JSON array [kind, field, field, ...] in the model's field order (nested objects as arrays too):

    {"format": "dnsd-snapshot", "version": 1, "model": "<hash of the model's fields>", "dnsd": "0.1.0",
     "domain": "cluster.local", "source": {"kind": "files", "path": "/etc/dnsd/cluster"},
     "written_at": 1767225600.5, "written": "2026-01-01T00:00:00Z", "objects": 2, "sha256": "<of the lines>"}
    ["Namespace", "default"]
    ["Service", "default", "api", "ClusterIP", ["10.0.0.1"], false, [["http", 80, "tcp"]], "", false]

The checksum covers every byte after the header line, so a truncated or altered file is caught before any object
is used. A snapshot whose format version, model hash, cluster domain or source identity differs from ours is
foreign and ignored; so is one that does not parse. Every such case is one WARNING naming the file and the reason,
and dnsd then starts as without a snapshot (never fatal).

Writing: the whole store, at most once every MIN_INTERVAL seconds after a change and once at stop, in a thread,
into a temporary file in the same directory that is fsynced and renamed over the snapshot (rename(2) is atomic
within a file system, POSIX), then the directory is fsynced so the rename itself survives a crash. A kill at any
moment leaves the old snapshot or the new one, never a mix; the temporary files a kill leaves are removed at the
next start.

Confirmation: a loaded snapshot is served at once and the store marked synced; the source is then started in a
task. Until it has applied a complete listing, the data is stale: its age is counted from the snapshot's
written_at, /ready carries the reason, and nothing is written (rewriting the same data would date it as fresh).
Once the source confirms, every object of the snapshot that the source did not list is deleted: the keys the
source puts into the store are recorded from the moment the snapshot is loaded, so this works with any source
that lists through Store.prepare/apply. A source tells that its listing is complete by returning from start()
and, when it has one, by `complete()` returning True (a source whose start() returns before a listing succeeded,
such as an API server that is down, must provide it). The files source is complete once its directory can be
read (it reports an absent directory and withdraws nothing until the directory appears).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dnsd import __version__
from dnsd.config import Config, EtcdSource, FilesSource, KubernetesSource
from dnsd.config import Source as SourceConfig
from dnsd.sources.base import Source
from dnsd.store.model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeObject,
    Namespace,
    Pod,
    Service,
    ServicePort,
    object_key,
)
from dnsd.store.store import ObjectKey, Prepared, Store

log = logging.getLogger(__name__)

FORMAT = "dnsd-snapshot"
VERSION = 1
MIN_INTERVAL = 2.0  # seconds between two writes: a burst of changes costs one write, not one per change
STOP_WRITE_TIMEOUT = 10.0  # the write at stop is given this long; the old snapshot stays if it takes longer
CONFIRM_POLL = 0.2  # how often a source's complete() is looked at until it says True
MAX_BYTES = 2 << 30  # a bigger file is not a snapshot we wrote (150,000 pods take about 30 MB)

KINDS: dict[str, type[Any]] = {
    "Namespace": Namespace,
    "Service": Service,
    "EndpointSlice": EndpointSlice,
    "Pod": Pod,
}
_NESTED: dict[str, type[Any]] = {"Endpoint": Endpoint, "EndpointPort": EndpointPort, "ServicePort": ServicePort}


class SnapshotError(Exception):
    """Why a snapshot file cannot be used (the warning's text)."""


# ---------------------------------------------------------------- the model as arrays


def _fields(cls: Any) -> tuple[dataclasses.Field[Any], ...]:
    """The fields that make an object's value (not the ones it works out itself, such as its cached key)."""
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _model_hash() -> str:
    """The model's classes and fields: a change to the model makes older snapshots foreign, not misread."""
    parts = []
    for cls in (*KINDS.values(), *_NESTED.values()):
        hints = typing.get_type_hints(cls)
        parts.append(f"{cls.__name__}({','.join(f'{f.name}:{hints[f.name]}' for f in _fields(cls))})")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


MODEL = _model_hash()


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return [_encode(getattr(value, f.name)) for f in _fields(value)]
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def encode(obj: KubeObject) -> list[Any]:
    """One object as [kind, fields...] (a v1 Endpoints object is an EndpointSlice with from_endpoints set)."""
    return [type(obj).__name__, *_encode(obj)]


def _decode(cls: type[Any], raw: Any) -> Any:
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    if not isinstance(raw, list) or len(raw) != len(fields):
        raise SnapshotError(f"a {cls.__name__} does not have its {len(fields)} fields")
    return cls(*(_value(hints[f.name], v, f"{cls.__name__}.{f.name}") for f, v in zip(fields, raw, strict=True)))


def _value(hint: Any, raw: Any, what: str) -> Any:
    """raw checked against the field's type: str, int, bool, a model class, tuple[X, ...] of one of those, or a
    union of those (the first that fits)."""
    if isinstance(hint, types.UnionType):
        for arm in typing.get_args(hint):
            with contextlib.suppress(SnapshotError):
                return _value(arm, raw, what)
        raise SnapshotError(f"{what} is {type(raw).__name__}, none of {hint}")
    if typing.get_origin(hint) is tuple:
        if not isinstance(raw, list):
            raise SnapshotError(f"{what} is not a list")
        inner = typing.get_args(hint)[0]
        return tuple(_value(inner, v, what) for v in raw)
    if dataclasses.is_dataclass(hint):
        return _decode(typing.cast(type[Any], hint), raw)
    # bool is an int in Python: check it first, and refuse a bool where an int belongs.
    if hint is bool:
        ok = isinstance(raw, bool)
    elif hint is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    else:
        ok = isinstance(raw, hint)
    if not ok:
        raise SnapshotError(f"{what} is {type(raw).__name__}, not {getattr(hint, '__name__', hint)}")
    return raw


def decode(raw: Any) -> KubeObject:
    if not isinstance(raw, list) or not raw or raw[0] not in KINDS:
        raise SnapshotError(f"not an object of a known kind: {str(raw)[:80]}")
    obj: KubeObject = _decode(KINDS[raw[0]], raw[1:])
    return obj


# ---------------------------------------------------------------- identity


def source_identity(source: SourceConfig) -> dict[str, Any]:
    """What the data came from. A snapshot from another source (another directory, API server, etcd cluster or
    prefix) is foreign: its objects would be served as ours until our source's listing replaced them."""
    if isinstance(source, FilesSource):
        return {"kind": "files", "path": str(source.path.absolute().resolve(strict=False))}
    if isinstance(source, EtcdSource):
        return {"kind": "etcd", "endpoints": sorted(source.endpoints), "prefix": source.prefix}
    if isinstance(source, KubernetesSource):
        return {"kind": "kubernetes", "server": _kube_server(source)}
    return {"kind": type(source).__name__}


def _kube_server(source: KubernetesSource) -> str:
    """The API server's URL as the source will find it: in-cluster from the service environment, else the
    kubeconfig's context's cluster (the file is read, never the network). When it cannot be told, the
    kubeconfig path and context stand in for it."""
    if source.in_cluster:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    path = source.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    fallback = f"kubeconfig {path} context {source.context or '(current)'}"
    try:
        with open(os.path.expanduser(path), "rb") as f:
            doc = yaml.safe_load(f.read(1 << 20))
        name = source.context or doc["current-context"]
        context = next(c["context"] for c in doc["contexts"] if c["name"] == name)
        server = next(c["cluster"]["server"] for c in doc["clusters"] if c["name"] == context["cluster"])
        return str(server)
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return fallback


def header_for(cfg: Config) -> dict[str, Any]:
    """The header fields that must match for a snapshot to be ours."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": MODEL,
        "domain": cfg.cluster.domain,
        "source": source_identity(cfg.cluster.source),
    }


# ---------------------------------------------------------------- reading and writing (in a thread)


@dataclass(frozen=True, slots=True)
class Loaded:
    objects: tuple[KubeObject, ...]
    written_at: float  # Unix time
    dnsd: str  # the version that wrote it


def when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_snapshot(path: Path, expect: Mapping[str, Any]) -> Loaded:
    """The snapshot's objects, or SnapshotError saying why it cannot be used (FileNotFoundError: none yet)."""
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SnapshotError(f"bigger than {MAX_BYTES} bytes")
    first, sep, body = data.partition(b"\n")
    try:
        header = json.loads(first)
    except ValueError:
        raise SnapshotError("the header line is not JSON (not a dnsd snapshot, or corrupt)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError("not a dnsd snapshot (no dnsd-snapshot header)")
    for key in ("version", "model", "domain", "source"):
        if header.get(key) != expect[key]:
            raise SnapshotError(f"foreign: its {key} is {header.get(key)!r}, ours is {expect[key]!r}")
    count, digest, written = header.get("objects"), header.get("sha256"), header.get("written_at")
    if not isinstance(count, int) or not isinstance(digest, str) or not isinstance(written, (int, float)):
        raise SnapshotError("the header lacks objects, sha256 or written_at")
    if not sep or hashlib.sha256(body).hexdigest() != digest:
        raise SnapshotError("checksum mismatch (truncated or altered)")
    lines = body.splitlines()
    if len(lines) != count:
        raise SnapshotError(f"{len(lines)} objects where the header says {count}")
    objects: list[KubeObject] = []
    for n, line in enumerate(lines, 2):
        try:
            objects.append(decode(json.loads(line)))
        except (ValueError, SnapshotError) as exc:
            raise SnapshotError(f"line {n}: {exc}") from None
    return Loaded(tuple(objects), float(written), str(header.get("dnsd")))


_write_lock = threading.Lock()  # one write at a time per process: a write left running by stop() and the last


def write_snapshot(path: Path, header: Mapping[str, Any], objects: Iterable[KubeObject], now: float) -> int:
    """Write the snapshot atomically; return the number of objects written. OSError when it cannot."""
    body = b"".join(json.dumps(encode(o), separators=(",", ":")).encode() + b"\n" for o in objects)
    head = {
        **header,
        "dnsd": __version__,
        "written_at": now,
        "written": when(now),
        "objects": body.count(b"\n"),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    with _write_lock:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(head, separators=(",", ":")).encode() + b"\n")
                f.write(body)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)  # the rename itself is durable
        finally:
            os.close(dirfd)
    return int(head["objects"])


def remove_leftovers(path: Path) -> int:
    """Remove the temporary files a killed writer left next to the snapshot (ours only: .NAME.*.tmp)."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(f".{path.name}.") and entry.name.endswith(".tmp") and entry.is_file():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


# ---------------------------------------------------------------- the keeper (on the loop)


def _readable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.R_OK | os.X_OK)


class _Recorder:
    """Records every key the source upserts into the store, from the snapshot's load to the confirmation: what
    the source listed. Store.prepare is wrapped on the instance (the source may call it in a thread: set.update
    of a list is one step under the GIL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: set[ObjectKey] = set()
        original = store.prepare

        def prepare(upserts: Iterable[KubeObject], deletes: Iterable[ObjectKey]) -> Prepared:
            ups = list(upserts)
            self.seen.update([object_key(o) for o in ups])
            return original(ups, deletes)

        store.prepare = prepare  # type: ignore[method-assign]

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            del self.store.prepare  # the class's method again


class Snapshots:
    """Loads the snapshot into the store at start, waits for the source to confirm it, and keeps it written."""

    def __init__(self, path: Path, cfg: Config, store: Store, *, interval: float = MIN_INTERVAL) -> None:
        self.path = path
        self.store = store
        self.interval = interval
        self.header = header_for(cfg)
        self.loaded_at: float | None = None  # written_at of the snapshot serving now, until the source confirms
        self.loaded_keys: set[ObjectKey] = set()
        self.writes = 0
        self.write_errors = 0
        self.last_write = 0.0  # monotonic time of the last write
        self.written_at = 0.0  # Unix time of the last good write
        self.withdrawn = 0  # objects of the snapshot the source did not list, deleted at confirmation
        self._dirty = False
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._confirm_task: asyncio.Task[None] | None = None
        self._recorder: _Recorder | None = None
        self._warned: str | None = None  # the last write error logged (logged once until it changes)
        store.subscribe(self._changed)

    @property
    def stale(self) -> bool:
        return self.loaded_at is not None

    # ------------------------------------------------------------ start: load, then confirm

    async def restore(self) -> bool:
        """Load the snapshot into the store and mark it synced; False when there is none that can be used."""
        removed = await asyncio.to_thread(remove_leftovers, self.path)
        if removed:
            log.info("%s: removed %d temporary files of an interrupted write", self.path, removed)
        try:
            loaded = await asyncio.to_thread(read_snapshot, self.path, self.header)
        except FileNotFoundError:
            log.info("%s: no snapshot yet; one is written once the source has synced", self.path)
            return False
        except (OSError, SnapshotError) as exc:
            log.warning("%s: snapshot ignored: %s", self.path, exc, extra={"file": str(self.path)})
            return False
        if self.store.objects or self.store.synced:
            return False  # the source got there first (never: restore runs before it starts)
        self._recorder = _Recorder(self.store)
        batch = await asyncio.to_thread(self.store.prepare, loaded.objects, ())
        self.store.commit(batch)
        self._recorder.seen.clear()  # what the snapshot itself put in is not the source's listing
        self.loaded_keys = {object_key(o) for o in loaded.objects}
        self.loaded_at = loaded.written_at
        self.store.mark_synced()
        log.warning(
            "%s: serving the snapshot of %s (%d objects, written by dnsd %s) until the source confirms it",
            self.path,
            when(loaded.written_at),
            len(loaded.objects),
            loaded.dnsd,
            extra={"file": str(self.path)},
        )
        return True

    def confirm_later(self, source: Source) -> None:
        """Start the source in a task of ours: answers come from the snapshot meanwhile."""
        self._confirm_task = asyncio.create_task(self._confirm(source), name="dnsd-snapshot-confirm")

    async def _confirm(self, source: Source) -> None:
        try:
            await source.start()
            await self._until_complete(source)
        except asyncio.CancelledError:
            raise
        except Exception:
            assert self.loaded_at is not None
            log.exception(
                "source %s failed to start; the snapshot of %s keeps serving", source.name, when(self.loaded_at)
            )
            return
        seen = self._recorder.seen if self._recorder is not None else set()
        gone = [key for key in self.loaded_keys if key not in seen and key in self.store.objects]
        if gone:
            self.store.apply([], gone)
        self._end_stale()
        self.withdrawn = len(gone)
        log.info(
            "source %s confirmed the snapshot: %d of its %d objects were not listed by the source and are withdrawn",
            source.name,
            len(gone),
            len(self.loaded_keys),
        )
        self._dirty = True
        self._wake.set()

    async def _until_complete(self, source: Source) -> None:
        """Wait until the source has applied a complete listing (see the module's docstring)."""
        complete: Callable[[], bool] | None = getattr(source, "complete", None)
        root: Path | None = getattr(source, "root", None)
        if complete is None and source.name == "files" and root is not None:
            # The files source withdraws nothing while its directory is absent or unreadable: its listing
            # counts once the directory can be read, with one full walk after that (the watch may not have
            # read it yet when the directory just appeared).
            while True:
                if await asyncio.to_thread(_readable_dir, root):
                    break
                await asyncio.sleep(CONFIRM_POLL)
            await source.resync()
            return
        while complete is not None:
            if complete():
                break
            await asyncio.sleep(CONFIRM_POLL)

    def _end_stale(self) -> None:
        self.loaded_at = None
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    async def stop_confirming(self) -> None:
        """The source is stopping or being replaced: no confirmation can come from it any more."""
        task, self._confirm_task = self._confirm_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def source_replaced(self, cfg: Config) -> None:
        """A reload changed cluster.source and the new source has listed (and the App removed what it did not
        list): the store is the new source's, written under its identity from now on."""
        self.header = header_for(cfg)
        self._end_stale()
        self._dirty = True
        self._wake.set()

    def ready_notes(self) -> list[str]:
        if self.loaded_at is None:
            return []
        return [f"serving the snapshot of {when(self.loaded_at)}; the source has not confirmed it yet"]

    def data_age(self) -> float | None:
        """Seconds since the snapshot serving now was written; None once the source has confirmed."""
        return None if self.loaded_at is None else max(0.0, time.time() - self.loaded_at)

    # ------------------------------------------------------------ writing

    def start_writing(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dnsd-snapshot-write")
            self._dirty = True  # the first synced store is written at once
            self._wake.set()

    def _changed(self, _tags: set[Any]) -> None:
        self._dirty = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Rate limit: a burst of changes (a rolling restart, a relist) costs one write per interval.
            pause = self.last_write + self.interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            if self._dirty and not self.stale and self.store.synced:
                ok = await self._write()
                if not ok:
                    # Try again after an interval even if nothing changes (a full disk may be freed).
                    self._wake.set()

    async def _write(self) -> bool:
        # The tables change in place at each commit (on the loop): the thread writes a list taken here, in one step.
        objects = list(self.store.objects.values())
        self._dirty = False
        self.last_write = time.monotonic()
        now = time.time()
        try:
            n = await asyncio.to_thread(write_snapshot, self.path, self.header, objects, now)
        except OSError as exc:
            self._dirty = True
            self.write_errors += 1
            text = f"{self.path}: cannot write the snapshot: {exc}"
            if text != self._warned:
                self._warned = text
                log.error("%s", text, extra={"file": str(self.path)})
            return False
        if self._warned is not None:
            log.info("%s: snapshot written again", self.path)
            self._warned = None
        self.writes += 1
        self.written_at = now
        log.debug("%s: snapshot of %d objects written", self.path, n)
        return True

    async def close(self) -> None:
        """Stop writing; write once more when something changed since the last write (and the data is the
        source's). Bounded: past STOP_WRITE_TIMEOUT the old snapshot stays (the write finishes or not: atomic)."""
        await self.stop_confirming()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if self._dirty and not self.stale and self.store.synced:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._write(), STOP_WRITE_TIMEOUT)
        self._end_stale()

"""The `etcd` source: Kubernetes objects as JSON under a key prefix, ranged then watched through etcd's v3 JSON gateway.

Key layout: every key under the prefix holds one Kubernetes object as JSON (apiVersion and kind included), the
same objects the files source reads. The key names nothing: the object's kind, namespace and name come from the
value. The layout we document and use is `<prefix><kind>/<namespace>/<name>` (`/dnsd/Service/default/web`,
`/dnsd/Namespace/-/default`), but any key under the prefix works. When two keys hold the same object, the key
sorting last wins, with a warning. Keys outside the prefix are never read. For example:

    etcdctl put /dnsd/Namespace/-/shop '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}'

How it stays current: a paginated range of the prefix (`/v3/kv/range`, pinned to the first page's revision),
then a watch from the next revision (`/v3/watch`, a streaming POST of newline-delimited JSON, with
progress_notify). Each watch message is applied as one store batch. A compaction (`canceled` with
`compact_revision`), any other cancel, or a resync (SIGHUP) leads to a new range that is diffed against what the
source holds: only the objects that changed are upserted or deleted, in one batch, so no live name blinks out.

Failures: the endpoints are tried in turn; once each has failed, the next attempt waits a jittered backoff that
doubles up to BACKOFF_CAP_S. A watch that stays silent past its deadline (SILENT_S, jittered; run etcd with
`--experimental-watch-progress-notify-interval` below it, its default is 10 minutes) is dropped and restarted.
During an outage the last data keeps serving and data_age() grows. A value that is not JSON, or an object of ours
with invalid fields, is skipped, counted (`invalid`) and logged at ERROR with its key; the key's last good
object keeps serving. A value of a kind DNS does not use is ignored (debug log).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from dnsd.config import ClusterConfig
from dnsd.config import EtcdSource as EtcdConfig
from dnsd.errors import ManifestError
from dnsd.observe.counts import LATENCY_BUCKETS, Histogram
from dnsd.store.model import KubeObject, Skipped, convert, describe, object_key
from dnsd.store.store import ObjectKey, Store

log = logging.getLogger(__name__)

RANGE_PAGE = 1000  # keys per range request: one response is parsed on the loop, so keep each bounded
RANGE_TRIES = 3  # a range compacted mid-way is started again, this many times at most in a row
CONNECT_S = 3.0  # TCP connect to one endpoint
REQUEST_S = 30.0  # one range page, end to end
SILENT_S = 60.0  # a watch with no message (event, progress notification) for this long is restarted
BACKOFF_BASE_S = 0.2  # the first wait once every endpoint has failed; doubles per round, jittered
BACKOFF_CAP_S = 10.0
MAX_MESSAGE = 64 * 1024 * 1024  # one watch message (a line of JSON); longer means a broken stream
BIG_BATCH = 2000  # objects: a batch this big is prepared in a thread, so the loop keeps answering
COMPACTED = 11  # gRPC OUT_OF_RANGE: "mvcc: required revision has been compacted"


class _Broken(Exception):
    """The endpoint failed (refused, reset, an error reply, a silent or truncated stream): try the next one."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: Any) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) else b""


def range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with prefix (etcd's prefix range: the last byte plus one)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else b"\0"


def _key_text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


class EtcdSource:
    """Mirrors the Kubernetes objects under one etcd key prefix into the store (see the module docstring)."""

    name = "etcd"

    def __init__(self, cfg: EtcdConfig, store: Store) -> None:
        self.endpoints = [e.rstrip("/") for e in cfg.endpoints]
        self.prefix = cfg.prefix.encode()
        self.end = range_end(self.prefix)
        self.store = store
        self.programming = Histogram(LATENCY_BUCKETS)  # an event's arrival to its commit
        self.invalid = 0  # values skipped as invalid
        self.watches = 0  # watches created (the first, then one per reconnect or restart of a silent watch)
        self.ranges = 0  # full ranges applied (the first, then one per compaction, resync or reconnect gap)
        self.revision = 0  # every change up to this revision is in the store
        self.endpoint = self.endpoints[0]  # the one in use (or tried last)
        self.watching = False
        self._keys: dict[bytes, tuple[int, KubeObject | None]] = {}  # key -> (mod_revision, its object)
        self._defs: dict[ObjectKey, dict[bytes, KubeObject]] = {}  # object -> the keys holding it
        self._served: dict[ObjectKey, KubeObject] = {}  # what this source has put in the store
        self._warned_dupes: set[tuple[ObjectKey, bytes, bytes]] = set()
        self._index = 0
        self._failures = 0  # in a row, since the last watch was created
        self._outage_logged = False
        self._confirmed = 0.0  # time.time() the data was last known current (a range, any watch message)
        self._last_message = 0.0  # time.monotonic() of the last watch message
        self._silent_s = SILENT_S
        self._listed = asyncio.Event()
        self._ranged = asyncio.Event()
        self._want_range = False
        self._resp: aiohttp.ClientResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Returns once the first range is in the store (retrying every endpoint meanwhile): until then absent
        names get SERVFAIL and /ready says the sources are loading."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_S, sock_read=None),
            read_bufsize=1 << 20,
        )
        self._task = asyncio.create_task(self._run(), name="dnsd-etcd-watch")
        await self._listed.wait()
        log.info("loaded %d objects from etcd %s prefix %s", len(self._served), self.endpoint, _key_text(self.prefix))

    async def resync(self) -> None:
        """Range the prefix again now and diff it against what is held (SIGHUP); waits up to REQUEST_S for it."""
        self._ranged.clear()
        self._want_range = True
        if self._resp is not None:
            self._resp.close()  # the watch loop sees its stream end and ranges again
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ranged.wait(), REQUEST_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.watching = False

    def data_age(self) -> float:
        """0 while the watch is open and messages (events, progress notifications) arrive within its deadline;
        else seconds since the data was last known current (inf before the first range)."""
        if self.watching and time.monotonic() - self._last_message <= self._silent_s:
            return 0.0
        return max(0.0, time.time() - self._confirmed) if self._confirmed else float("inf")

    def keys(self) -> set[ObjectKey]:
        """The objects this source serves (a source switch deletes whatever else the store holds)."""
        return set(self._served)

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        need_range = True
        while True:
            self.endpoint = self.endpoints[self._index]
            try:
                if need_range or self._want_range:
                    self._want_range = False
                    await self._range()
                    need_range = False
                need_range = await self._watch()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _Broken) as exc:
                self.watching = False
                if self._want_range:
                    continue  # resync closed the stream on purpose
                self._failed(exc)
                self._index = (self._index + 1) % len(self.endpoints)
                if self._failures % len(self.endpoints) == 0:
                    # Every endpoint failed in turn: wait, exponentially longer with full jitter (so that many
                    # replicas do not come back at the same instant), bounded by BACKOFF_CAP_S.
                    rounds = self._failures // len(self.endpoints)
                    cap = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(rounds - 1, 16))
                    await asyncio.sleep(random.uniform(cap / 2, cap))
            finally:
                self.watching = False
                if self._resp is not None:
                    self._resp.close()
                    self._resp = None

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "etcd %s: %s; the last data keeps serving, trying %s",
                self.endpoint,
                reason,
                "the next endpoint" if len(self.endpoints) > 1 else "again",
            )
        else:
            log.debug("etcd %s: %s", self.endpoint, reason)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(
            self.endpoint + path, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_S, connect=CONNECT_S)
        ) as resp:
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise _Broken(f"{path}: not a JSON object")
        return data

    # ------------------------------------------------------------ range

    async def _range(self) -> None:
        """Read every key under the prefix at one revision (paginated) and apply the difference."""
        for _ in range(RANGE_TRIES):
            found: dict[bytes, tuple[int, bytes]] = {}
            rev = 0
            start = self.prefix
            compacted = False
            while True:
                body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(self.end), "limit": str(RANGE_PAGE)}
                if rev:
                    body["revision"] = str(rev)  # every page from the first page's snapshot
                data = await self._post("/v3/kv/range", body)
                if "error" in data or "code" in data:
                    if data.get("code") == COMPACTED and rev:
                        compacted = True  # compacted between two pages: start over at the newest revision
                        break
                    raise _Broken(f"range: {data.get('error') or data.get('message')} (code {data.get('code')})")
                rev = rev or int(data["header"]["revision"])
                kvs = data.get("kvs") or []
                for kv in kvs:
                    found[_unb64(kv.get("key"))] = (int(kv.get("mod_revision", 0)), _unb64(kv.get("value")))
                if not data.get("more") or not kvs:
                    break
                start = _unb64(kvs[-1].get("key")) + b"\0"
            if not compacted:
                await self._apply_range(found, rev)
                return
        raise _Broken(f"range: compacted {RANGE_TRIES} times in a row while reading")

    async def _apply_range(self, found: dict[bytes, tuple[int, bytes]], rev: int) -> None:
        updates: dict[bytes, tuple[int, bytes | None]] = {}
        for key, (mod, value) in found.items():
            held = self._keys.get(key)
            if held is None or held[0] != mod:
                updates[key] = (mod, value)
        for key in self._keys.keys() - found.keys():
            updates[key] = (rev, None)  # deleted while we were not watching
        upserts, deletes = self._changes(updates)
        if upserts or deletes:
            batch = (
                await asyncio.to_thread(self.store.prepare, upserts, deletes)
                if len(upserts) + len(deletes) > BIG_BATCH
                else self.store.prepare(upserts, deletes)
            )
            self.store.commit(batch)
        if self.ranges:
            log.info(
                "etcd %s: ranged again at revision %d: %d changed, %d deleted",
                self.endpoint, rev, len(upserts), len(deletes),
            )  # fmt: skip
        self.ranges += 1
        self.revision = rev
        self._confirmed = time.time()
        self.store.mark_synced()
        self._listed.set()
        self._ranged.set()

    # ------------------------------------------------------------ watch

    async def _watch(self) -> bool:
        """Watch from the next revision until the stream fails (raises) or needs a new range (returns True)."""
        assert self._session is not None
        create = {
            "key": _b64(self.prefix),
            "range_end": _b64(self.end),
            "start_revision": str(self.revision + 1),
            "progress_notify": True,
        }
        # A randomized deadline (as Kubernetes' timeoutSeconds): replicas restarting silent watches spread out.
        self._silent_s = SILENT_S * random.uniform(0.9, 1.1)
        resp = await asyncio.wait_for(
            self._session.post(self.endpoint + "/v3/watch", json={"create_request": create}), CONNECT_S + 2.0
        )
        self._resp = resp
        if resp.status != 200:
            raise _Broken(f"watch: HTTP {resp.status}")
        buf = b""
        while True:
            if self._want_range:
                return True
            try:
                chunk = await asyncio.wait_for(resp.content.readany(), self._silent_s)
            except TimeoutError:
                raise _Broken(f"watch silent for {self._silent_s:.0f} s") from None
            if not chunk:
                raise _Broken("watch stream ended")
            arrived = time.monotonic()
            buf += chunk
            if len(buf) > MAX_MESSAGE:
                raise _Broken(f"watch message over {MAX_MESSAGE} bytes")
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip() and self._message(json.loads(line), arrived):
                    return True

    def _message(self, msg: Any, arrived: float) -> bool:
        """Apply one watch message; True when a new range is needed (the watch was cancelled)."""
        result = msg.get("result") if isinstance(msg, dict) else None
        if not isinstance(result, dict):
            raise _Broken(f"watch: {msg.get('error') if isinstance(msg, dict) else msg!r}")
        self._last_message = arrived
        self._confirmed = time.time()
        if result.get("created"):
            self.watches += 1
            self.watching = True
            self._failures = 0
            if self._outage_logged:
                self._outage_logged = False
                log.info("etcd %s: watching again from revision %d", self.endpoint, self.revision + 1)
        if result.get("canceled"):
            self.watching = False
            compact = int(result.get("compact_revision", 0))
            if compact:
                log.info(
                    "etcd %s: revision %d is compacted (up to %d); ranging again",
                    self.endpoint, self.revision + 1, compact,
                )  # fmt: skip
            else:
                log.warning("etcd %s: watch cancelled (%s); ranging again", self.endpoint, result.get("cancel_reason"))
            return True
        events = result.get("events") or []
        if events:
            updates: dict[bytes, tuple[int, bytes | None]] = {}
            top = self.revision
            for ev in events:
                kv = ev.get("kv") or {}
                mod = int(kv.get("mod_revision", 0))
                top = max(top, mod)
                value = None if ev.get("type") == "DELETE" else _unb64(kv.get("value"))
                updates[_unb64(kv.get("key"))] = (mod, value)  # a later event for the same key wins
            upserts, deletes = self._changes(updates)
            if self.store.commit(self.store.prepare(upserts, deletes)):
                self.programming.observe(max(0.0, time.monotonic() - arrived))
            self.revision = top
        elif not result.get("created"):
            # A progress notification: every event up to header.revision has been sent (a message with events
            # may carry a newer header revision while more events are still to come, so only this one counts).
            self.revision = max(self.revision, int((result.get("header") or {}).get("revision", 0)))
        return False

    # ------------------------------------------------------------ keys to objects

    def _decode(self, key: bytes, mod: int, value: bytes) -> KubeObject | ManifestError | None:
        """The object a value holds; None for a value DNS does not use; the error for an invalid one."""
        try:
            doc = json.loads(value)
            if not isinstance(doc, dict):
                raise ManifestError(f"not a JSON object but {type(doc).__name__}")
            obj = convert(doc)
        except ManifestError as exc:
            return exc
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            return ManifestError(f"{type(exc).__name__}: {exc}")
        if isinstance(obj, Skipped):
            log.debug("etcd key %s: skipped: %s", _key_text(key), obj.reason)
            return None
        return obj

    def _changes(self, updates: dict[bytes, tuple[int, bytes | None]]) -> tuple[list[KubeObject], list[ObjectKey]]:
        """Fold key changes (value None: deleted) into the key table; the store changes they make."""
        affected: dict[ObjectKey, None] = {}
        for key, (mod, value) in updates.items():
            held = self._keys.get(key)
            old = held[1] if held else None
            if value is None:
                new = None
                self._keys.pop(key, None)
            else:
                decoded = self._decode(key, mod, value)
                if isinstance(decoded, ManifestError):
                    self.invalid += 1
                    kept = "its last good object keeps serving" if old is not None else "nothing from it is served"
                    log.error("etcd key %s (revision %d): %s (%s)", _key_text(key), mod, decoded, kept)
                    self._keys[key] = (mod, old)
                    continue
                new = decoded
                self._keys[key] = (mod, new)
            if old is not None:
                okey = object_key(old)
                defs = self._defs.get(okey, {})
                defs.pop(key, None)
                if not defs:
                    self._defs.pop(okey, None)
                affected[okey] = None
            if new is not None:
                okey = object_key(new)
                self._defs.setdefault(okey, {})[key] = new
                affected[okey] = None
        return self._decide(affected)

    def _decide(self, affected: Iterable[ObjectKey]) -> tuple[list[KubeObject], list[ObjectKey]]:
        upserts: list[KubeObject] = []
        deletes: list[ObjectKey] = []
        for okey in affected:
            defs = self._defs.get(okey)
            if not defs:
                if self._served.pop(okey, None) is not None:
                    deletes.append(okey)
                continue
            keys = sorted(defs)
            if len(keys) > 1:
                dupe = (okey, keys[-2], keys[-1])
                if dupe not in self._warned_dupes:
                    self._warned_dupes.add(dupe)
                    log.warning(
                        "%s is held by etcd keys %s and %s; the later key wins",
                        describe(okey), _key_text(keys[-2]), _key_text(keys[-1]),
                    )  # fmt: skip
            obj = defs[keys[-1]]
            if self._served.get(okey) != obj:
                self._served[okey] = obj
                upserts.append(obj)
        return upserts, deletes


def make(source_cfg: EtcdConfig, cluster_cfg: ClusterConfig, store: Store) -> EtcdSource:
    """The etcd source for cluster.source.etcd (dnsd.app.make_source)."""
    return EtcdSource(source_cfg, store)

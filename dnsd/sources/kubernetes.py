"""The `kubernetes` source: list then watch Services, EndpointSlices, Namespaces (and Pods) from the API server.

Client: a thin aiohttp client of raw JSON, not kubernetes_asyncio. Measured listing 10,000 Services from the
fake, 500 a page (`python bench/kube_scale.py clients --repeat 2`, 2026-12-02): the thin client took 0.35-0.57 s
with a peak of 1.8 MiB of Python allocations; kubernetes_asyncio 36.1 took 1.6-2.6 s and 3.6 MiB, because it builds
a generated model object per field that the store would then have to turn back into a dict; its watch helper also
hides the bookmark and 410 details this source must act on. Credentials are read as kubectl reads them by
dnsd.sources.kubecreds, so no dependency beyond aiohttp and PyYAML is needed.

Protocol (client-go's reflector): each resource is listed in pages (limit=500, `continue`), then watched from
the list's resourceVersion (watch=1, allowWatchBookmarks=true, a random timeoutSeconds in 240-360 s so replicas
do not reconnect in step). An ERROR 410 event or an HTTP 410 (on a watch, or on a `continue` token that expired)
leads to a relist that is diffed against what the source holds and applied as one batch: deleted objects go, no
live name blinks out. A watch that sends nothing (no event, no bookmark) for SILENCE_S is restarted; errors back
off exponentially with jitter, bounded by BACKOFF_MAX_S; during an outage the last data keeps serving and
data_age() grows. Pods (pods: verified only) are filtered server-side to the phases DNS answers for
(fieldSelector status.phase!=Succeeded,status.phase!=Failed): a pod that finishes leaves the watch as DELETED.

Batches: events go through one bounded queue to one applier, which coalesces them per object (up to BATCH_MAX
events, or what arrives within BATCH_WINDOW_S), converts and prepares the store batch in a thread, and commits
it on the loop, so a storm costs a few commits a second and the server keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from dnsd.errors import ManifestError
from dnsd.observe.counts import LATENCY_BUCKETS, Histogram
from dnsd.sources import kubecreds
from dnsd.store.model import KubeObject, Skipped, convert, describe, identity, object_key
from dnsd.store.store import ObjectKey, Prepared, Store

if TYPE_CHECKING:
    from dnsd import config

log = logging.getLogger(__name__)

PAGE = 500  # items per list page (client-go's reflector uses 500 too)
WATCH_TIMEOUT_S = (240, 360)  # timeoutSeconds, chosen at random per watch
WATCH_MARGIN_S = 30.0  # the server should have ended the watch by timeoutSeconds plus this
SILENCE_S = 120.0  # twice the API server's bookmark interval (about a minute): a watch silent longer is dead
REQUEST_TIMEOUT_S = 60.0  # one list page
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 10.0
BATCH_WINDOW_S = 0.01  # events arriving within this are applied together
BATCH_MAX = 1000  # events per batch at most
QUEUE_MAX = 10_000  # events waiting to be applied; a full queue holds the watch streams back (TCP flow control)
MAX_LINE = 16 * 1024 * 1024  # one watch event line (etcd's object limit is 1.5 MiB)
MAX_BODY = 512 * 1024 * 1024  # one list page
FREEZE_OBJECTS = 20_000  # a first list this big is moved out of the cyclic collector's reach (gc.freeze)
FREEZE_EVERY_S = 1.0  # after that, what later batches built is frozen too, at most this often


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    api_version: str
    path: str
    field_selector: str = ""


SERVICES = Resource("Service", "v1", "/api/v1/services")
ENDPOINT_SLICES = Resource("EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices")
NAMESPACES = Resource("Namespace", "v1", "/api/v1/namespaces")
# Succeeded and Failed pods get no DNS answers (Store.pod_has_ip); the API filters them out for us. Unknown is
# rare and transient, so it stays (the store skips it).
PODS = Resource("Pod", "v1", "/api/v1/pods", "status.phase!=Succeeded,status.phase!=Failed")


class Gone(Exception):
    """410: the resourceVersion (or continue token) is too old; relist."""


class Unauthorized(Exception):
    """401: the token is stale; read it again."""


class ApiError(Exception):
    """Any other failure of one request (the message says what)."""


@dataclass(slots=True)
class _Event:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    doc: dict[str, Any]
    arrived: float  # time.monotonic()


@dataclass(slots=True)
class _Listing:
    """A complete list of one resource, converted: replaces everything the source holds of that kind."""

    kind: str
    objects: dict[ObjectKey, KubeObject]
    present: set[ObjectKey]  # every listed key, invalid ones too (their last good version stays)


@dataclass(slots=True)
class _Page:
    objects: list[KubeObject] = field(default_factory=list)
    present: list[ObjectKey] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    rv: str = ""
    cont: str = ""


def _stamp(doc: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """List items (and some watch objects) lack kind/apiVersion: convert() needs them."""
    doc.setdefault("kind", kind)
    doc.setdefault("apiVersion", api_version)
    return doc


def _rv(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return rv if isinstance(rv, str) else ""


def convert_page(body: bytes, res: Resource) -> _Page:
    """One list page: JSON to slim objects (run in a thread: the big pages would hold up the loop)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ApiError(f"{res.path}: list page is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ApiError(f"{res.path}: list page has no items")
    kind = str(doc.get("kind") or res.kind + "List").removesuffix("List")
    api = str(doc.get("apiVersion") or res.api_version)
    page = _Page()
    meta = doc.get("metadata") or {}
    page.rv = str(meta.get("resourceVersion") or "")
    page.cont = str(meta.get("continue") or "")
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        _stamp(item, kind, api)
        key = identity(item)
        try:
            obj = convert(item)
        except ManifestError as exc:
            page.invalid.append(_invalid_text(key, item, exc))
            if key is not None:
                page.present.append(key)
            continue
        if isinstance(obj, Skipped):
            continue
        page.objects.append(obj)
        page.present.append(object_key(obj))
    return page


def _invalid_text(key: ObjectKey | None, doc: Mapping[str, Any], exc: Exception) -> str:
    what = describe(key) if key is not None else f"a {doc.get('kind')} without a readable name"
    return f"{what}: invalid, skipped (its last good version, if any, keeps serving): {exc}"


class KubernetesSource:
    """Keeps the store equal to what the API server holds of the watched resources."""

    name = "kubernetes"

    def __init__(self, creds: kubecreds.Credentials, store: Store, *, pods: bool = False) -> None:
        self.creds = creds
        self.store = store
        self.resources = [NAMESPACES, SERVICES, ENDPOINT_SLICES] + ([PODS] if pods else [])
        self.held: dict[ObjectKey, KubeObject] = {}  # what the source has put in the store
        self._next_freeze = 0.0  # monotonic time before which no batch is frozen (FREEZE_EVERY_S)
        self.programming = Histogram(LATENCY_BUCKETS)  # an event's arrival to its commit
        self.invalid_objects = 0
        self.relists = 0  # lists after the first (410, resync)
        self.watch_restarts = 0  # watches ended by an error or silence (not by their timeout)
        self.events = 0
        self.batches = 0
        self._queue: asyncio.Queue[_Event | _Listing] = asyncio.Queue(QUEUE_MAX)
        self._seen: dict[str, float] = {}  # kind -> Unix time something last arrived (or a list completed)
        self._watching: dict[str, bool] = {}
        self._first: dict[str, asyncio.Future[None]] = {}
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._applier: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._down: dict[str, str] = {}  # kind -> the failure logged at WARNING (once per outage)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Return once every resource has been listed and applied and the store is marked synced. Until the API
        answers this waits (retrying with backoff): the server answers SERVFAIL for unknown names meanwhile."""
        loop = asyncio.get_running_loop()
        ctx = self.creds.ssl_context()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx if ctx is not None else False, limit=32),
            headers={"Accept": "application/json", "User-Agent": "dnsd"},
        )
        self._applier = asyncio.create_task(self._apply_loop(), name="dnsd-kube-apply")
        for res in self.resources:
            self._first[res.kind] = loop.create_future()
            self._followers[res.kind] = asyncio.create_task(self._follow(res), name=f"dnsd-kube-{res.kind}")
        await asyncio.gather(*(asyncio.shield(f) for f in self._first.values()))
        if len(self.held) >= FREEZE_OBJECTS:
            # What the first list built lives on: keep the cyclic collector from walking it again (a full
            # collection over a big cluster's objects holds the GIL, and so the answers, for hundreds of ms).
            gc.freeze()
        self.store.mark_synced()
        log.info("%s: listed %d objects; watching", self.creds.target.origin, len(self.held))

    async def resync(self) -> None:
        """SIGHUP: relist every resource now (diffed against the store like a 410)."""
        loop = asyncio.get_running_loop()
        for res in self.resources:
            old = self._followers.pop(res.kind, None)
            if old is not None:
                old.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await old
            self._first[res.kind] = loop.create_future()
            self._followers[res.kind] = asyncio.create_task(
                self._follow(res, relist=True), name=f"dnsd-kube-{res.kind}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(f) for f in self._first.values())), REQUEST_TIMEOUT_S
            )

    async def stop(self) -> None:
        tasks = [*self._followers.values(), *([self._applier] if self._applier else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._followers.clear()
        self._applier = None
        for fut in self._first.values():
            if not fut.done():
                fut.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def keys(self) -> set[ObjectKey]:
        """What the source holds (a source switch deletes the rest, see App._restart_source)."""
        return set(self.held)

    def complete(self) -> bool:
        """Every resource has been listed and applied (the snapshot waits for this before it withdraws)."""
        return bool(self._first) and all(f.done() and not f.cancelled() for f in self._first.values())

    def data_age(self) -> float:
        """0 while every watch is connected and heard from within SILENCE_S; else the seconds since the
        stalest resource last heard from the API (inf before the first list)."""
        if not self.store.synced or len(self._seen) < len(self.resources):
            return float("inf")
        now = time.time()
        age = 0.0
        for res in self.resources:
            seen = self._seen[res.kind]
            if not (self._watching.get(res.kind) and now - seen <= SILENCE_S):
                age = max(age, now - seen)
        return age

    # ------------------------------------------------------------ HTTP

    async def _request(self, path: str, params: dict[str, str], limits: aiohttp.ClientTimeout) -> Any:
        assert self._session is not None
        headers = await self.creds.headers()
        return self._session.get(
            self.creds.target.server + path,
            params=params,
            headers=headers,
            timeout=limits,
            server_hostname=self.creds.server_hostname(),
        )

    @staticmethod
    async def _check(resp: aiohttp.ClientResponse, what: str) -> None:
        if resp.status == 200:
            return
        if resp.status == 410:
            raise Gone(f"{what}: 410 Gone")
        if resp.status == 401:
            raise Unauthorized(f"{what}: 401 Unauthorized")
        text = (await resp.content.read(2000)).decode(errors="replace")
        message = text
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(text).get("message") or text
        raise ApiError(f"{what}: HTTP {resp.status}: {message.strip()[:300]}")

    @staticmethod
    async def _body(resp: aiohttp.ClientResponse, what: str) -> bytes:
        """The whole body, bounded by MAX_BODY (StreamReader.read(n) returns what has arrived, not n bytes)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(f"{what}: a page over {MAX_BODY} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _list(self, res: Resource) -> str:
        """List every page; queue the whole listing as one change; return its resourceVersion."""
        objects: dict[ObjectKey, KubeObject] = {}
        present: set[ObjectKey] = set()
        cont = ""
        rv = ""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        while True:
            params = {"limit": str(PAGE)}
            if cont:
                params["continue"] = cont
            if res.field_selector:
                params["fieldSelector"] = res.field_selector
            async with await self._request(res.path, params, timeout) as resp:
                await self._check(resp, f"list {res.path}")
                body = await self._body(resp, f"list {res.path}")
            page = await asyncio.to_thread(convert_page, body, res)
            for text in page.invalid:
                self.invalid_objects += 1
                log.error("%s", text)
            for obj in page.objects:
                objects[object_key(obj)] = obj
            present.update(page.present)
            rv, cont = page.rv, page.cont
            if not cont:
                break
        self._seen[res.kind] = time.time()
        await self._queue.put(_Listing(res.kind, objects, present))
        return rv

    async def _watch(self, res: Resource, rv: str) -> str:
        """Follow one watch from rv until the server ends it; return the last resourceVersion seen."""
        seconds = random.randint(*WATCH_TIMEOUT_S)
        params = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        if res.field_selector:
            params["fieldSelector"] = res.field_selector
        # sock_read: a watch that sends nothing for SILENCE_S raises a timeout and is restarted.
        timeout = aiohttp.ClientTimeout(total=seconds + WATCH_MARGIN_S, sock_read=SILENCE_S)
        async with await self._request(res.path, params, timeout) as resp:
            await self._check(resp, f"watch {res.path}")
            self._watching[res.kind] = True
            self._seen[res.kind] = time.time()
            self._recovered(res)
            try:
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    self._seen[res.kind] = time.time()
                    buf += chunk
                    start = 0
                    while (end := buf.find(b"\n", start)) >= 0:
                        line = bytes(buf[start:end])
                        start = end + 1
                        if line.strip():
                            rv = await self._event(res, line, rv)
                    del buf[:start]
                    if len(buf) > MAX_LINE:
                        raise ApiError(f"watch {res.path}: an event line over {MAX_LINE} bytes")
                if buf.strip():
                    # The connection ended in the middle of an event: drop the half line and resume from the
                    # last whole event (the server sends it again).
                    log.warning("watch %s: stream ended inside an event (%d bytes dropped)", res.path, len(buf))
                    self.watch_restarts += 1
            finally:
                self._watching[res.kind] = False
        return rv

    async def _event(self, res: Resource, line: bytes, rv: str) -> str:
        try:
            ev = json.loads(line)
            etype = ev["type"]
            obj = ev["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a map")
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(f"watch {res.path}: not a watch event ({exc}): {line[:200]!r}") from None
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise Gone(f"watch {res.path}: {obj.get('message') or '410 Gone'}")
            raise ApiError(f"watch {res.path}: error event: {obj.get('code')} {obj.get('message')}")
        new_rv = _rv(obj) or rv
        if etype == "BOOKMARK":
            return new_rv
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            log.debug("watch %s: event type %r ignored", res.path, etype)
            return new_rv
        self.events += 1
        await self._queue.put(_Event(res.kind, etype, _stamp(obj, res.kind, res.api_version), time.monotonic()))
        return new_rv

    # ------------------------------------------------------------ following one resource

    async def _follow(self, res: Resource, relist: bool = False) -> None:
        """List then watch, forever: 410 relists, other errors back off, a watch ending normally restarts."""
        rv = ""
        attempt = 0
        first = not relist
        while True:
            try:
                if not rv:
                    if not first:
                        self.relists += 1
                    first = False
                    rv = await self._list(res)
                    attempt = 0
                rv = await self._watch(res, rv)
                attempt = 0
                continue
            except Gone as exc:
                log.info("%s; relisting", exc)
                rv = ""
                attempt += 1
                delay = 0.0 if attempt == 1 else self._backoff(attempt)
            except Unauthorized as exc:
                self.creds.invalidate()  # read the token file again, run the exec plugin again
                attempt += 1
                self._failed(res, str(exc))
                delay = 0.0 if attempt == 1 else self._backoff(attempt)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                self.watch_restarts += 1
                self._failed(res, f"{res.path}: no answer or a silent watch (over {SILENCE_S:.0f} s); restarting")
                attempt += 1
                delay = 0.0 if attempt == 1 else self._backoff(attempt)
            except (aiohttp.ClientError, OSError, ApiError, kubecreds.CredentialError) as exc:
                self.watch_restarts += 1
                attempt += 1
                self._failed(res, f"{res.path}: {exc or type(exc).__name__}")
                delay = self._backoff(attempt)
            if delay:
                await asyncio.sleep(delay)

    @staticmethod
    def _backoff(attempt: int) -> float:
        """Exponential backoff with jitter (half to all of the step), bounded by BACKOFF_MAX_S."""
        step = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** min(attempt, 30))
        return step * random.uniform(0.5, 1.0)

    def _failed(self, res: Resource, reason: str) -> None:
        if res.kind not in self._down:
            self._down[res.kind] = reason
            log.warning("kubernetes API: %s (the last data keeps serving; retrying)", reason)
        else:
            log.debug("kubernetes API: %s", reason)

    def _recovered(self, res: Resource) -> None:
        if self._down.pop(res.kind, None) is not None:
            log.info("kubernetes API: watching %s again", res.path)

    # ------------------------------------------------------------ applying (batches)

    async def _apply_loop(self) -> None:
        while True:
            batch: list[_Event | _Listing] = [await self._queue.get()]
            if self._queue.empty():
                await asyncio.sleep(BATCH_WINDOW_S)  # let a burst gather
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._apply(batch)
            except Exception:
                # A bug, not the API: what `held` says may be off now, so start over with a relist of everything
                # (the followers are other tasks; the applier goes on taking their listings).
                log.exception("kubernetes API: applying %d changes failed; relisting", len(batch))
                self._restart_followers()

    def _restart_followers(self) -> None:
        for res in self.resources:
            task = self._followers.get(res.kind)
            if task is not None:
                task.cancel()
            self._followers[res.kind] = asyncio.create_task(
                self._follow(res, relist=True), name=f"dnsd-kube-{res.kind}"
            )

    async def _apply(self, batch: list[_Event | _Listing]) -> None:
        prepared, arrivals, firsts, reports = await asyncio.to_thread(self._work, batch)
        self.store.commit(prepared)
        now = time.monotonic()
        if len(self.held) >= FREEZE_OBJECTS and self.store.synced and now >= self._next_freeze:
            # The tables this batch built live on like the first list's: out of the cyclic collector's reach too,
            # or a full collection walks the whole store and holds the answers for hundreds of ms (measured: storm
            # max 500 -> 121 ms). The young generations are collected first, so that recent cyclic garbage is not
            # made immortal; once a second at most (gc.freeze itself is O(1) per generation).
            self._next_freeze = now + FREEZE_EVERY_S
            gc.collect(1)
            gc.freeze()
        self.batches += 1
        for text in reports:
            self.invalid_objects += 1
            log.error("%s", text)
        if self.store.synced and arrivals:
            now = time.monotonic()
            for arrived in arrivals:
                self.programming.observe(max(0.0, now - arrived))
        for kind in firsts:
            fut = self._first.get(kind)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _work(self, batch: list[_Event | _Listing]) -> tuple[Prepared, list[float], list[str], list[str]]:
        """Coalesce the batch per object, convert, diff listings against what is held, prepare the store batch
        (in a thread). Only the applier runs this, one batch at a time, so `held` has one writer."""
        changes: dict[ObjectKey, KubeObject | None] = {}
        arrivals: list[float] = []
        firsts: list[str] = []
        reports: list[str] = []
        for op in batch:
            if isinstance(op, _Listing):
                for key in [k for k in (*self.held, *changes) if k[0] == op.kind]:
                    if key not in op.present:
                        changes[key] = None
                changes.update(op.objects)  # an invalid listed object is present: its last good version stays
                firsts.append(op.kind)
                continue
            arrivals.append(op.arrived)
            ident = identity(op.doc)
            if op.type == "DELETED":
                if ident is not None:
                    changes[ident] = None
                continue
            try:
                got = convert(op.doc)
            except ManifestError as exc:
                reports.append(_invalid_text(ident, op.doc, exc))
                continue
            if isinstance(got, Skipped):
                if ident is not None:
                    changes[ident] = None  # no longer ours (a slice that lost its service label)
                continue
            changes[object_key(got)] = got
        upserts: list[KubeObject] = []
        deletes: list[ObjectKey] = []
        for key, obj in changes.items():
            if obj is None:
                if self.held.pop(key, None) is not None:
                    deletes.append(key)
            else:
                self.held[key] = obj
                upserts.append(obj)
        return self.store.prepare(upserts, deletes), arrivals, firsts, reports


def make(source_cfg: config.KubernetesSource, cluster_cfg: config.ClusterConfig, store: Store) -> KubernetesSource:
    """The source for cluster.source.kubernetes; the credentials are found now (a missing kubeconfig or an
    in-cluster run outside a pod is a start-up error)."""
    from pathlib import Path

    if source_cfg.in_cluster:
        target = kubecreds.in_cluster()
    else:
        assert source_cfg.kubeconfig is not None
        path = Path(source_cfg.kubeconfig).expanduser()
        target = kubecreds.from_kubeconfig(path, source_cfg.context)
    return KubernetesSource(kubecreds.Credentials(target), store, pods=cluster_cfg.pods == "verified")

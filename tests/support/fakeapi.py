"""A FAKE Kubernetes API server for tests (aiohttp on loopback, its own loop in its own thread): list and watch of
Services, EndpointSlices, Endpoints, Pods and Namespaces with the API's resource-version semantics, plus switches
for the faults a real control plane produces. It is not kube-apiserver; tests/integration/test_fakeapi.py runs a
real kubectl against it to keep its dialect honest."""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import ssl
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace or "", name)

KUBE_FIXTURES = Path(__file__).resolve().parent.parent / "data" / "kube"

# The Warning header kube-apiserver 1.33+ sends on every v1 Endpoints request (KEP-4974).
ENDPOINTS_WARNING = '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'


@dataclass(frozen=True)
class Resource:
    """One served resource type, as its discovery document describes it."""

    name: str  # plural, the URL segment
    group: str  # "" for the core group
    version: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Field-selector labels the real API accepts for this type (everything else is a 400, as there).
    fields: tuple[str, ...] = ("metadata.name", "metadata.namespace")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("services", "", "v1", "Service", True, ("svc",), ("metadata.name", "metadata.namespace", "spec.type")),
        Resource("endpoints", "", "v1", "Endpoints", True, ("ep",)),
        Resource(
            "pods",
            "",
            "v1",
            "Pod",
            True,
            ("po",),
            ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "status.podIP"),
        ),
        Resource("namespaces", "", "v1", "Namespace", False, ("ns",), ("metadata.name", "status.phase")),
        Resource("endpointslices", "discovery.k8s.io", "v1", "EndpointSlice", True),
    )
}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES.values()}


def resource_for(kind_or_resource: str) -> Resource:
    """'Service', 'services' or 'svc' -> the Resource."""
    if kind_or_resource in BY_KIND:
        return BY_KIND[kind_or_resource]
    for r in RESOURCES.values():
        if kind_or_resource == r.name or kind_or_resource in r.short_names:
            return r
    raise KeyError(f"the fake serves no resource {kind_or_resource!r}")


def status(code: int, reason: str, message: str, **extra: Any) -> Obj:
    """A metav1.Status object as the API sends it for errors."""
    out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    out.update({"reason": reason, "code": code}, **extra)
    return out


def load_objects(*paths: str | Path) -> list[Obj]:
    """Kubernetes objects from YAML/JSON files (multi-document; a List's items are expanded)."""
    out: list[Obj] = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc:
                continue
            if doc.get("kind", "").endswith("List") and "items" in doc:
                item_kind = doc["kind"][: -len("List")]
                for item in doc["items"]:
                    out.append({"kind": item_kind, **item} if "kind" not in item and item_kind else item)
            else:
                out.append(doc)
    return out


def fixture_objects(*names: str) -> list[Obj]:
    """The objects of tests/data/kube/<name>.yaml (default: every valid file there, not invalid/)."""
    paths = [KUBE_FIXTURES / f"{n}.yaml" for n in names] if names else sorted(KUBE_FIXTURES.glob("*.yaml"))
    return load_objects(*paths)


# --- selectors -------------------------------------------------------------------------------------------------


def _split_terms(text: str) -> list[str]:
    """Comma-separated terms; commas inside `in (a,b)` parentheses do not split."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur.strip())
    return terms


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


Match = Callable[[Obj], bool]


def field_selector(text: str, res: Resource) -> Match:
    """`a.b=v`, `a.b==v`, `a.b!=v` terms ANDed, on the fields the real API supports for the type (400 otherwise)."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        if "!=" in term:
            path, value = term.split("!=", 1)
            neg = True
        elif "=" in term:
            path, value = term.replace("==", "=", 1).split("=", 1)
            neg = False
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        if path.strip() not in res.fields:
            raise SelectorError(f"field label not supported: {path.strip()}")
        checks.append((path.strip(), neg, value.strip()))
    return lambda obj: all((_field(obj, p) == v) != neg for p, neg, v in checks)


def label_selector(text: str) -> Match:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)` terms ANDed (labels.Parse's grammar)."""
    checks: list[Match] = []
    for term in _split_terms(text):
        checks.append(_label_term(term))
    return lambda obj: all(c((obj.get("metadata") or {}).get("labels") or {}) for c in checks)


def _label_term(term: str) -> Match:
    words = term.split(None, 1)
    if len(words) == 2 and words[1].split("(", 1)[0].strip() in ("in", "notin"):
        op, rest = words[1].split("(", 1)
        values = {v.strip() for v in rest.rstrip(")").split(",")}
        key = words[0]
        if op.strip() == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in term:
        k, v = (s.strip() for s in term.split("!=", 1))
        return lambda labels: labels.get(k) != v
    if "=" in term:
        k, v = (s.strip() for s in term.replace("==", "=", 1).split("=", 1))
        return lambda labels: labels.get(k) == v
    if term.startswith("!"):
        k = term[1:].strip()
        return lambda labels: k not in labels
    k = term.strip()
    return lambda labels: k in labels


class SelectorError(ValueError):
    """A selector the real API would refuse with 400 BadRequest."""


# --- the store --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One change: the RV it made, its type, the key, the object after it (None for a deletion's "after") and
    before it (None for a creation)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: Obj  # the object as stored after the change (for DELETED: the last state, stamped with the deletion RV)
    prev: Obj | None


@dataclass(frozen=True)
class Request:
    """One request the fake received (for tests to assert on the client's behaviour)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float  # time.monotonic()

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


class Store:
    """Objects by key, with every version since the compaction point kept (an MVCC store like etcd's), and one
    monotonically increasing resource version across every type, as kube-apiserver's etcd revision is. Keys of
    one type are kept sorted as "namespace/name" text, the order of etcd's keys and so of the API's lists."""

    def __init__(self, start_rv: int = 1) -> None:
        self.rv = start_rv
        self.compacted = 0  # versions and events at or below this RV are gone
        self.objects: dict[Key, Obj] = {}
        self.versions: dict[str, dict[str, list[tuple[int, Obj | None]]]] = {r: {} for r in RESOURCES}
        self.keys: dict[str, list[str]] = {r: [] for r in RESOURCES}  # every key with history, sorted
        self.live: dict[str, list[str]] = {r: [] for r in RESOURCES}  # the keys that exist now, sorted
        self.events: list[Event] = []
        self.event_rvs: list[int] = []

    def put(self, res: Resource, obj: Obj) -> Event:
        obj = copy.deepcopy(obj)  # the caller's dict is never changed or shared
        obj.pop("kind", None)  # stored as the API stores it; kind/apiVersion added per response
        obj.pop("apiVersion", None)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError(f"a {res.kind} needs metadata.name")
        ns = (meta.get("namespace") or "default") if res.namespaced else ""
        if res.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        key = (res.name, ns, str(meta["name"]))
        prev = self.objects.get(key)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if prev is None:
            meta.setdefault("uid", str(uuid.UUID(int=self.rv)))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        else:
            for field_name in ("uid", "creationTimestamp"):
                if field_name in prev["metadata"]:
                    meta.setdefault(field_name, prev["metadata"][field_name])
        self.objects[key] = obj
        if prev is None:
            _insort(self.live[res.name], _key_text(key))
        return self._record("ADDED" if prev is None else "MODIFIED", key, obj, prev, obj)

    def delete(self, key: Key) -> Event | None:
        prev = self.objects.pop(key, None)
        if prev is None:
            return None
        self.rv += 1
        gone = copy.deepcopy(prev)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        live = self.live[key[0]]
        del live[bisect.bisect_left(live, _key_text(key))]
        return self._record("DELETED", key, gone, prev, None)

    def _record(self, etype: str, key: Key, obj: Obj, prev: Obj | None, stored: Obj | None) -> Event:
        ev = Event(self.rv, etype, key, obj, prev)
        versions = self.versions[key[0]]
        text = _key_text(key)
        if text not in versions:
            versions[text] = []
            _insort(self.keys[key[0]], text)
        versions[text].append((self.rv, stored))
        self.events.append(ev)
        self.event_rvs.append(self.rv)
        return ev

    def compact(self, rv: int | None = None) -> int:
        """Forget history at or below rv (default: everything up to now), as etcd's compaction does."""
        upto = self.rv if rv is None else min(rv, self.rv)
        self.compacted = max(self.compacted, upto)
        cut = bisect.bisect_right(self.event_rvs, self.compacted)
        del self.events[:cut]
        del self.event_rvs[:cut]
        for name, versions in self.versions.items():
            for text in list(versions):
                vs = versions[text]
                older = bisect.bisect_right([v for v, _ in vs], self.compacted)
                if older > 1:
                    del vs[: older - 1]  # keep the newest version at or below the compaction point
                if vs[0][0] <= self.compacted and vs[0][1] is None and len(vs) == 1:
                    del versions[text]  # deleted before the compaction point: gone from history too
            self.keys[name] = sorted(versions)
        return self.compacted

    def page(self, res: Resource, ns: str, rv: int, after: str, limit: int, match: Match) -> tuple[list[Obj], str, int]:
        """Up to limit objects (0: all) of one type (one namespace, or all for ns "") as they were at rv, after the
        key `after`, in key order; with the last key returned when more follow ("" otherwise) and how many
        remain (-1 when unknown: the API omits remainingItemCount when a selector is used)."""
        current = rv == self.rv
        keys = self.live[res.name] if current else self.keys[res.name]
        versions = self.versions[res.name]
        prefix = f"{ns}/" if ns else ""
        i = bisect.bisect_right(keys, max(after, prefix))
        out: list[Obj] = []
        last = ""
        while i < len(keys):
            text = keys[i]
            if prefix and not text.startswith(prefix):
                break
            i += 1
            if current:
                obj: Obj | None = versions[text][-1][1]
            else:
                vs = versions[text]
                at = bisect.bisect_right([v for v, _ in vs], rv)
                obj = vs[at - 1][1] if at else None
            if obj is None or not match(obj):
                continue
            if limit and len(out) == limit:
                remaining = -1
                if current and match is _all:
                    end = bisect.bisect_left(keys, prefix + "\U0010ffff") if prefix else len(keys)
                    remaining = end - (i - 1)
                return out, last, remaining
            out.append(obj)
            last = text
        return out, "", 0

    def events_after(self, rv: int) -> list[Event]:
        return self.events[bisect.bisect_right(self.event_rvs, rv) :]


def _insort(keys: list[str], text: str) -> None:
    i = bisect.bisect_left(keys, text)
    if i == len(keys) or keys[i] != text:
        keys.insert(i, text)


# --- continue tokens --------------------------------------------------------------------------------------------


def encode_continue(rv: int, start: str) -> str:
    """The apiserver's token shape: base64 of {"v":"meta.k8s.io/v1","rv":N,"start":"<key>\\x00"}."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    pad = "=" * (-len(token) % 4)
    data = json.loads(base64.urlsafe_b64decode(token + pad))
    if data.get("v") != "meta.k8s.io/v1" or not isinstance(data.get("rv"), int):
        raise ValueError("bad continue token")
    return int(data["rv"]), str(data["start"]).rstrip("\x00")


def _key_text(key: Key) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


# --- the server -------------------------------------------------------------------------------------------------


class _Watch:
    """One open watch stream: the server can abort it (outage) or make it write a half line."""

    def __init__(self, res: Resource, response: web.StreamResponse, request: web.Request) -> None:
        self.res = res
        self.response = response
        self.request = request
        self.half_line = False  # write half of the next event, then close (set by inject_half_line)
        self.queue: deque[Event | bytes] = deque()  # changes to this type (or start-state lines) not yet written
        self.overflow = False
        self.wake = asyncio.Event()


class FakeApiServer:
    """A FAKE kube-apiserver on 127.0.0.1 (port 0 unless given) in a thread of its own, started on construction.

    Auth: `Authorization: Bearer <token>` must equal the current token (`token`, or the contents of `token_file`
    when given, re-read on every request); rotate_token() changes it. `token=None` and no file: no auth.
    Watch defaults: `bookmark_interval` seconds between BOOKMARKs (when the client asked for them),
    `default_watch_timeout` when the client sent no timeoutSeconds (the real one picks 30-60 minutes).
    Control methods are called from the test's thread and run on the fake's loop."""

    def __init__(
        self,
        *,
        token: str | None = "fake-token",
        token_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        objects: list[Obj] | None = None,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float = 1800.0,
        ssl_context: ssl.SSLContext | None = None,
        start_rv: int = 1,
        watch_queue_limit: int = 200_000,
    ) -> None:
        self.host = host
        self.port = port
        self.token_file = Path(token_file) if token_file else None
        self._token = token
        if self.token_file is not None and token is not None and not self.token_file.exists():
            self.token_file.write_text(token)
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.ssl_context = ssl_context
        self.store = Store(start_rv)
        self.watch_queue_limit = watch_queue_limit
        self.list_delay = 0.0  # seconds before every non-watch answer (a slow or loaded apiserver)
        self._failures: list[tuple[int, int | None, Resource | None, bool | None]] = []
        self.silent = False  # watches send nothing and never close (a hung connection)
        self.requests: deque[Request] = deque(maxlen=10_000)
        self._watches: set[_Watch] = set()
        self._runner: web.AppRunner | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fake-apiserver")
        self.thread.start()
        self._call(self._init())
        for obj in objects or []:
            self.upsert(obj)
        self.start()

    # --- control (test thread) ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError:
                return None
        return self._token

    @property
    def rv(self) -> int:
        """The store's current resource version."""
        return self.store.rv

    @property
    def listening(self) -> bool:
        return self._runner is not None

    def upsert(self, obj: Obj, kind: str | None = None) -> int:
        """Create or replace an object as-is (no validation: invalid fields are served as given); returns its RV.
        The kind comes from obj["kind"] unless given."""
        res = resource_for(kind or obj["kind"])
        return int(self._call(self._mutate(lambda: self.store.put(res, obj))))

    def upsert_all(self, objs: list[Obj]) -> int:
        """Many upserts in one call on the fake's loop (an event storm: one event each); returns the last RV."""
        pairs = [(resource_for(o["kind"]), o) for o in objs]

        async def put_all() -> int:
            for res, obj in pairs:
                self._fan_out(self.store.put(res, obj))
            return self.store.rv

        return int(self._call(put_all(), timeout=60))

    def delete(self, kind: str, namespace: str, name: str) -> int | None:
        """Delete one object (namespace "" for cluster-scoped types); its RV, or None when it did not exist."""
        res = resource_for(kind)
        key = (res.name, namespace if res.namespaced else "", name)
        return self._call(self._mutate(lambda: self.store.delete(key)))  # type: ignore[no-any-return]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        res = resource_for(kind)
        obj = self.store.objects.get((res.name, namespace if res.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def compact(self, rv: int | None = None) -> int:
        """Drop the history up to rv (default: all of it): older watches get ERROR 410, older continue tokens
        HTTP 410. Returns the compaction RV."""
        return int(self._call(self._sync(lambda: self.store.compact(rv))))

    def rotate_token(self, new: str) -> None:
        """The old token stops working at once (401); in file mode the file is rewritten atomically."""
        if self.token_file is not None:
            tmp = self.token_file.with_suffix(".tmp")
            tmp.write_text(new)
            tmp.replace(self.token_file)
        else:
            self._token = new

    def fail_requests(
        self, code: int = 500, count: int | None = 1, resource: str | None = None, *, watch: bool | None = None
    ) -> None:
        """The next `count` requests (None: all until clear_failures()) of one resource (or any; lists only with
        watch=False, watches only with watch=True) get an HTTP error with the API's Status body: 429 and 503 carry
        Retry-After: 1, as the API's priority-and-fairness and a starting apiserver send. Auth is checked first."""
        res = resource_for(resource) if resource else None
        self._call(self._sync(lambda: self._failures.append((code, count, res, watch))))

    def clear_failures(self) -> None:
        self._call(self._sync(self._failures.clear))

    def set_silent(self, silent: bool = True) -> None:
        """Silent: every watch (open or new) holds its stream open and sends nothing, not even its close at
        timeoutSeconds; lists still answer. Turned off, the watches go on where they were."""
        self.silent = silent
        self._call(self._sync(self._notify))

    def inject_half_line(self, resource: str | None = None) -> int:
        """The open watches (of one resource, or all) write the first half of their next event's JSON line and
        close the connection, as a connection cut mid-write does. Returns how many watches were armed."""
        res = resource_for(resource) if resource else None

        def arm() -> int:
            n = 0
            for w in self._watches:
                if res is None or w.res == res:
                    w.half_line = True
                    n += 1
            return n

        return int(self._call(self._sync(arm)))

    def watch_count(self, resource: str | None = None) -> int:
        """Open watch streams now (of one resource, or all)."""
        res = resource_for(resource) if resource else None
        return sum(1 for w in list(self._watches) if res is None or w.res == res)

    def requests_for(self, resource: str, *, watch: bool | None = None) -> list[Request]:
        res = resource_for(resource)
        return [
            r
            for r in list(self.requests)
            if r.path.rstrip("/").split("/")[-1] == res.name and (watch is None or r.watch == watch)
        ]

    def stop(self) -> None:
        """Outage: open connections are cut and new ones refused; start() comes back on the same port."""
        self._call(self._stop())

    def start(self) -> None:
        self._call(self._start())

    def close(self) -> None:
        """Stop for good: the listener, then the loop and its thread."""
        if self.loop.is_closed():
            return
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self) -> FakeApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        context: str = "fake",
        namespace: str | None = None,
    ) -> Path:
        """A kubeconfig whose current context points at this fake with a bearer token (the current one unless
        given; or `tokenFile`), over plain HTTP or, with ssl, HTTPS checked against ca_file."""
        user: Obj = {"tokenFile": str(token_file)} if token_file else {"token": token or self.token or ""}
        cluster: Obj = {"server": self.url}
        if ca_file:
            cluster["certificate-authority"] = str(ca_file)
        ctx: Obj = {"cluster": f"{context}-cluster", "user": f"{context}-user"}
        if namespace:
            ctx["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": f"{context}-cluster", "cluster": cluster}],
            "users": [{"name": f"{context}-user", "user": user}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
            "preferences": {},
        }
        out = Path(path)
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return out

    # --- loop side ---------------------------------------------------------------------------------------------

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _init(self) -> None:
        pass

    async def _sync(self, fn: Callable[[], Any]) -> Any:
        return fn()

    async def _mutate(self, fn: Callable[[], Event | None]) -> int | None:
        ev = fn()
        if ev is not None:
            self._fan_out(ev)
        return ev.rv if ev else None

    def _fan_out(self, ev: Event) -> None:
        """Queue a change on every open watch of its type (the watch cache's fan-out, bounded per watcher)."""
        for w in self._watches:
            if w.res.name == ev.key[0] and not w.overflow:
                w.queue.append(ev)
                if len(w.queue) > self.watch_queue_limit:
                    w.overflow = True
                    w.queue.clear()
                w.wake.set()

    def _notify(self) -> None:
        for w in self._watches:
            w.wake.set()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/api", self._api_versions)
        r.add_get("/apis", self._api_groups)
        r.add_get("/api/v1", self._resource_list("v1"))
        r.add_get("/apis/discovery.k8s.io/v1", self._resource_list("discovery.k8s.io/v1"))
        for res in RESOURCES.values():
            r.add_get(f"{res.prefix}/{res.name}", self._collection(res))
            if res.namespaced:
                r.add_get(f"{res.prefix}/namespaces/{{ns}}/{res.name}", self._collection(res))
                r.add_get(f"{res.prefix}/namespaces/{{ns}}/{res.name}/{{name}}", self._one(res))
            else:
                r.add_get(f"{res.prefix}/{res.name}/{{name}}", self._one(res))
        return app

    async def _start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for w in list(self._watches):
            if w.request.transport is not None:
                w.request.transport.abort()  # a dying apiserver's connections reset, not a clean end
        self._watches.clear()
        await runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        code = 500
        try:
            want = self.token
            got = request.headers.get("Authorization", "")
            if want is not None and got != f"Bearer {want}":
                code = 401
                return _json(status(401, "Unauthorized", "Unauthorized"), 401)
            failure = self._take_failure(request)
            if failure is not None:
                code = failure.status
                return failure
            if self.list_delay and request.query.get("watch") not in ("1", "true"):
                await asyncio.sleep(self.list_delay)
            resp: web.StreamResponse = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = 499  # the client went away (nginx's code for it; the API has none)
            raise
        finally:
            if not request.get(_LOGGED):
                self._log(request, code)

    def _take_failure(self, request: web.Request) -> web.Response | None:
        for i, (code, left, resource, watch) in enumerate(self._failures):
            if resource is not None and request.path.rstrip("/").split("/")[-1] != resource.name:
                continue
            if watch is not None and (request.query.get("watch") in ("1", "true")) != watch:
                continue
            if left is not None:
                if left <= 1:
                    del self._failures[i]
                else:
                    self._failures[i] = (code, left - 1, resource, watch)
            reason, message = _FAILURES.get(code, ("InternalError", "an error on the server has prevented the request"))
            headers = {"Retry-After": "1"} if code in (429, 503) else None
            return _json(status(code, reason, message), code, headers)
        return None

    def _log(self, request: web.Request, code: int) -> None:
        request[_LOGGED] = True
        self.requests.append(Request(request.method, request.path, dict(request.query), code, time.monotonic()))

    async def _version(self, request: web.Request) -> web.Response:
        return _json(
            {
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        addr = [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addr})

    async def _api_groups(self, request: web.Request) -> web.Response:
        gv = {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
        group = {"name": "discovery.k8s.io", "versions": [gv], "preferredVersion": gv}
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})

    def _resource_list(self, group_version: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return _json(self._resources(group_version))

        return handler

    def _resources(self, group_version: str) -> Obj:
        resources = []
        for res in RESOURCES.values():
            if res.api_version != group_version:
                continue
            entry: Obj = {
                "name": res.name,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": ["get", "list", "watch"],
            }
            if res.short_names:
                entry["shortNames"] = list(res.short_names)
            resources.append(entry)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    def _one(self, res: Resource) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            ns = request.match_info.get("ns", "")
            obj = self.store.objects.get((res.name, ns, request.match_info["name"]))
            if obj is None:
                msg = f'{res.name} "{request.match_info["name"]}" not found'
                return _json(status(404, "NotFound", msg, details={"name": request.match_info["name"]}), 404)
            return _json(_typed(res, obj), headers=_warn(res))

        return handler

    def _collection(self, res: Resource) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            q = request.query
            try:
                match = _matcher(res, q)
            except SelectorError as exc:
                return _json(status(400, "BadRequest", str(exc)), 400)
            if q.get("watch") in ("1", "true"):
                return await self._serve_watch(res, request, match)
            return self._serve_list(res, request.match_info.get("ns", ""), q, match)

        return handler

    def _serve_list(self, res: Resource, ns: str, q: Any, match: Match) -> web.Response:
        store = self.store
        rv = store.rv
        start = ""
        if q.get("continue"):
            try:
                rv, start = decode_continue(q["continue"])
            except (ValueError, KeyError, TypeError):
                return _json(status(400, "BadRequest", "continue key is not valid: incorrect encoded start "), 400)
            if rv <= store.compacted:
                # The apiserver's own words for an expired continue token (storage/etcd3 and the API concepts page).
                msg = (
                    "The provided continue parameter is too old to display a consistent list result. You can start "
                    "a new list without the continue parameter, or use the continue token in this response to "
                    "retrieve the remainder of the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted between the time the "
                    "first chunk was returned and now may show up in the list."
                )
                return _json(status(410, "Expired", msg, metadata={"continue": encode_continue(store.rv, start)}), 410)
        elif q.get("resourceVersion") not in (None, "", "0"):
            try:
                asked = int(q["resourceVersion"])
            except ValueError:
                return _json(status(400, "BadRequest", f"invalid resource version: {q['resourceVersion']}"), 400)
            if q.get("resourceVersionMatch") == "Exact":
                if asked <= store.compacted:
                    msg = f"The resourceVersion for the provided list is too old. ({asked} <= {store.compacted})"
                    return _json(status(410, "Expired", msg), 410)
                if asked > store.rv:
                    return _json(
                        status(504, "Timeout", f"Too large resource version: {asked}, current: {store.rv}"), 504
                    )
                rv = asked
            elif asked > store.rv:
                return _json(status(504, "Timeout", f"Too large resource version: {asked}, current: {store.rv}"), 504)
        try:
            limit = max(0, int(q.get("limit") or 0))
        except ValueError:
            return _json(status(400, "BadRequest", f"invalid limit: {q['limit']}"), 400)
        items, last, remaining = store.page(res, ns, rv, start, limit, match)
        meta: Obj = {"resourceVersion": str(rv)}
        if last:
            meta["continue"] = encode_continue(rv, last)
            if remaining >= 0:
                meta["remainingItemCount"] = remaining
        body = {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}
        return _json(body, headers=_warn(res))

    async def _serve_watch(self, res: Resource, request: web.Request, match: Match) -> web.StreamResponse:
        q = request.query
        store = self.store
        rv_param = q.get("resourceVersion", "")
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        initial_events = q.get("sendInitialEvents") in ("true", "1")
        try:
            timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
            pos = int(rv_param) if rv_param else 0
        except ValueError:
            return _json(status(400, "BadRequest", f"invalid resource version or timeout: {dict(q)}"), 400)
        ns = request.match_info.get("ns", "")
        resp = web.StreamResponse(headers={"Content-Type": "application/json", **_warn(res)})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._log(request, resp.status)  # logged when the stream opens, so tests see a watch that is still open
        watch = _Watch(res, resp, request)
        # From here to the registration there is no await: no change can fall between the start state and the queue.
        replay: list[Event] = []
        initial: list[Obj] = []
        if initial_events or rv_param in ("", "0"):
            # RV unset or "0" (and sendInitialEvents): synthetic ADDED for the current state, then changes.
            initial = store.page(res, ns, store.rv, "", 0, match)[0]
        elif pos < store.compacted:
            # kube-apiserver's watch cache: "too old resource version: <asked> (<oldest kept>)", 410 Expired.
            msg = f"too old resource version: {pos} ({store.compacted + 1})"
            with contextlib.suppress(ConnectionError, _Closed):
                await self._write(watch, _error_line(410, "Expired", msg))
            return resp
        else:
            replay = [ev for ev in store.events_after(pos) if ev.key[0] == res.name]
        # The start state goes through the queue too, so a silent fake sends none of it.
        watch.queue.extend(_line("ADDED", res, obj) for obj in initial)
        if initial_events and bookmarks:  # the watch-list stream's end-of-initial-state marker (KEP-3157)
            watch.queue.append(_bookmark_line(res, store.rv, initial_end=True))
        watch.queue.extend(replay)
        self._watches.add(watch)
        try:
            await self._stream(watch, ns, match, bookmarks, time.monotonic() + timeout)
        except (ConnectionError, _Closed):
            pass
        finally:
            self._watches.discard(watch)
        return resp

    async def _stream(self, watch: _Watch, ns: str, match: Match, bookmarks: bool, deadline: float) -> None:
        res, store = watch.res, self.store
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            watch.wake.clear()
            if not self.silent:
                while watch.queue and not self.silent:
                    item = watch.queue.popleft()
                    line = item if isinstance(item, bytes) else _event_line(item, res, ns, match)
                    if line is not None:
                        await self._write(watch, line)
                if watch.overflow:
                    return  # a watcher too slow for its queue is closed, as the watch cache does
                now = time.monotonic()
                if now >= deadline and not watch.queue:
                    if bookmarks:  # a last bookmark so the client resumes from here (watch cache, 1.27+)
                        await self._write(watch, _bookmark_line(res, store.rv))
                    return
                if bookmarks and now >= next_bookmark and not watch.queue:
                    # store.rv read with the queue empty: every change up to it was written to this stream
                    await self._write(watch, _bookmark_line(res, store.rv))
                    next_bookmark = now + self.bookmark_interval
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            else:
                wait = 1.0
            if watch.queue and not self.silent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), timeout=max(0.0, wait))

    async def _write(self, watch: _Watch, line: bytes) -> None:
        if watch.half_line:
            await watch.response.write(line[: len(line) // 2])
            if watch.request.transport is not None:
                watch.request.transport.close()
            raise _Closed
        await watch.response.write(line)


_LOGGED = web.RequestKey("fakeapi_logged", bool)

# Status reason and message per HTTP code, as the API words them (k8s.io/apimachinery/pkg/api/errors).
_FAILURES = {
    403: ("Forbidden", 'forbidden: User "system:serviceaccount:kube-system:dnsd" cannot list resource'),
    429: ("TooManyRequests", "too many requests, please try again later"),
    500: ("InternalError", "Internal error occurred: fake failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing"),
}


class _Closed(Exception):
    """The fake cut a watch on purpose."""


def _all(obj: Obj) -> bool:
    return True


def _matcher(res: Resource, q: Any) -> Match:
    """The selectors of a request as one predicate (`_all` itself when there are none)."""
    checks: list[Match] = []
    if q.get("fieldSelector"):
        checks.append(field_selector(q["fieldSelector"], res))
    if q.get("labelSelector"):
        checks.append(label_selector(q["labelSelector"]))
    if not checks:
        return _all
    return lambda obj: all(c(obj) for c in checks)


def _typed(res: Resource, obj: Obj) -> Obj:
    """A single object or watch event object carries kind and apiVersion (list items do not)."""
    return {"kind": res.kind, "apiVersion": res.api_version, **obj}


def _line(etype: str, res: Resource, obj: Obj) -> bytes:
    return json.dumps({"type": etype, "object": _typed(res, obj)}, separators=(",", ":")).encode() + b"\n"


def _event_line(ev: Event, res: Resource, ns: str, match: Match) -> bytes | None:
    """The line one change makes on a watch of (res, ns, selectors): an object leaving the selection is DELETED
    for this watch and one entering it ADDED, as the apiserver's watch cache filters."""
    if ev.key[0] != res.name or (ns and ev.key[1] != ns):
        return None
    now_in = ev.type != "DELETED" and match(ev.obj)
    was_in = ev.prev is not None and match(ev.prev)
    if ev.type == "DELETED":
        return _line("DELETED", res, ev.obj) if was_in else None
    if now_in and was_in:
        return _line("MODIFIED", res, ev.obj)
    if now_in:
        return _line("ADDED", res, ev.obj)
    if was_in:
        return _line("DELETED", res, ev.obj)
    return None


def _bookmark_line(res: Resource, rv: int, initial_end: bool = False) -> bytes:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
    return json.dumps({"type": "BOOKMARK", "object": obj}, separators=(",", ":")).encode() + b"\n"


def _error_line(code: int, reason: str, message: str) -> bytes:
    return (
        json.dumps({"type": "ERROR", "object": status(code, reason, message)}, separators=(",", ":")).encode() + b"\n"
    )


def _json(body: Obj, code: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=code,
        content_type="application/json",
        headers=headers,
    )


def _warn(res: Resource) -> dict[str, str]:
    return {"Warning": ENDPOINTS_WARNING} if res.name == "endpoints" else {}


def iter_lines(body: bytes) -> Iterator[Obj]:
    """A watch body's JSON lines, parsed."""
    for line in body.splitlines():
        if line.strip():
            yield json.loads(line)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: str | Path) -> TlsFiles:
    """Generate the CA and server certificate with openssl (P-256, valid one day) into directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ext = d / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
    )
    steps = [
        [
            *("openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "1"),
            *("-subj", "/CN=fake-apiserver-ca", "-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        ["openssl", "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=fake-apiserver"],
        [
            *("openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key"),
            *("-CAcreateserial", "-out", d / "server.crt", "-days", "1", "-extfile", ext),
        ],
    ]
    for cmd in steps:
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=30)
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")

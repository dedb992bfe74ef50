"""The supervisor's HTTP listener (workers > 1): one scrape target for all workers. /health: the supervisor runs;
/ready: 200 only when every worker is serving and says ready itself; /metrics: the workers' metrics added up
(dnsd.workers.scrape) with the supervisor's own; / and /status.json: the status page, with one worker's data.
Each worker serves its own on a private unix socket, which this reads."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from dnsd.config import ListenAddress
from dnsd.http.server import status_page, status_page_response
from dnsd.workers.scrape import Families, MetricsSum

if TYPE_CHECKING:
    from dnsd.workers.supervisor import Supervisor, Worker

log = logging.getLogger(__name__)

WORKER_TIMEOUT = 2.0  # seconds for one worker's answer; a worker that takes longer counts as not answering


class SupervisorHttp:
    def __init__(self, sup: Supervisor, addr: ListenAddress) -> None:
        self.sup = sup
        self.addr = addr
        self.page = status_page()
        self.sum = MetricsSum()
        self._lock = asyncio.Lock()  # one scrape at a time: the carried counts are updated by each
        self.web = web.Application()
        self.web.add_routes(
            [
                web.get("/health", self.health),
                web.get("/ready", self.ready),
                web.get("/metrics", self.metrics),
                web.get("/", self.index),
                web.get("/status.json", self.status_json),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.addr.host, self.addr.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        sockname = server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("HTTP on %s:%d (/health /ready /metrics for all workers, status page /)", *self.address)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _get(self, w: Worker, path: str) -> tuple[int, str] | None:
        """A worker's answer on its unix socket: (status, body); None when it is not serving or does not answer."""
        if not (w.alive and w.started) or w.http is None:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=WORKER_TIMEOUT)
            connector = aiohttp.UnixConnector(path=w.http)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as s,
                s.get(f"http://worker{path}") as r,
            ):
                return r.status, await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _request: web.Request) -> web.Response:
        if self.sup.stop.is_set():
            return web.Response(status=503, text="draining: dnsd is stopping\n")
        answers = await asyncio.gather(*(self._get(w, "/ready") for w in self.sup.workers))
        reasons: list[str] = []
        notes: list[str] = []
        for w, got in zip(self.sup.workers, answers, strict=True):
            if got is None:
                reasons.append(f"worker {w.index}: not serving yet (starting or restarting)")
                continue
            status, body = got
            lines = [ln for ln in body.splitlines() if ln and ln != "OK"]
            if status != 200:
                reasons += [f"worker {w.index}: {ln}" for ln in lines] or [f"worker {w.index}: HTTP {status}"]
            else:
                notes += [f"worker {w.index}: {ln}" for ln in lines]
        if reasons:
            return web.Response(status=503, text="".join(f"{r}\n" for r in reasons))
        return web.Response(text="OK\n" + "".join(f"{n}\n" for n in notes))

    async def metrics(self, request: web.Request) -> web.Response:
        async with self._lock:
            workers = self.sup.workers
            texts = await asyncio.gather(*(self._get(w, "/metrics") for w in workers))
            scraped = {
                w.index: (w.pid, got[1] if got is not None and got[0] == 200 else None)
                for w, got in zip(workers, texts, strict=True)
            }
            families = self.sum.fold(scraped, self._own())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Families(families))
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    def _own(self) -> list[Metric]:
        """The supervisor's own families: how many workers, which serve, how often each was restarted."""
        workers = self.sup.workers
        configured = GaugeMetricFamily("dnsd_workers", "Worker processes configured (workers)", value=len(workers))
        up = GaugeMetricFamily("dnsd_worker_up", "1 while the worker is serving", labels=["worker"])
        restarts = CounterMetricFamily("dnsd_worker_restarts", "Times the worker was restarted", labels=["worker"])
        for w in workers:
            up.add_metric([str(w.index)], 1.0 if w.alive and w.started else 0.0)
            restarts.add_metric([str(w.index)], w.total_restarts)
        return [configured, up, restarts]

    async def index(self, _request: web.Request) -> web.Response:
        return status_page_response(self.page)

    async def status_json(self, _request: web.Request) -> web.Response:
        """The first serving worker's status (its own counts and rates, not the sum: the page is a glance;
        /metrics has the totals)."""
        for w in self.sup.workers:
            got = await self._get(w, "/status.json")
            if got is not None and got[0] == 200:
                return web.Response(text=got[1], content_type="application/json", headers={"Cache-Control": "no-store"})
        return web.json_response({"error": "no worker is serving yet"}, status=503)

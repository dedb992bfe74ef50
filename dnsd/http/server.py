"""The HTTP listener (aiohttp, in the DNS event loop): `/health`, `/ready`, `/metrics`, the status page `/` and its
data `/status.json`; bound once at start and kept open for the life of the process (a config reload never closes
it, unless its address changes, and then the new one is bound before the old one closes)."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from dnsd.config import ListenAddress
from dnsd.http.status import SAMPLE_EVERY, Sampler, status

if TYPE_CHECKING:
    from dnsd.app import App

log = logging.getLogger(__name__)


def status_page() -> bytes | None:
    """The status page: one HTML document with its CSS and JS inline (package data of dnsd.http); None when the
    installed package lacks it (the rest of the HTTP side, and DNS, do not depend on it)."""
    try:
        return resources.files("dnsd.http").joinpath("status.html").read_bytes()
    except OSError as exc:
        log.error("status page not installed: %s", exc)
        return None


def status_page_response(page: bytes | None) -> web.Response:
    """The status page as served at `/`, by a single dnsd and by the workers' supervisor alike."""
    if page is None:
        return web.Response(status=500, text="status page not installed (dnsd/http/status.html)\n")
    # The page fetches only /status.json from its own origin; the policy forbids anything else (no external
    # assets, and a page that tried to load one would show it in the browser test's console).
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'"
    return web.Response(
        body=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"},
    )


class HttpServer:
    def __init__(
        self, app: App, addr: ListenAddress, sample_every: float = SAMPLE_EVERY, unix: str | None = None
    ) -> None:
        self.app = app
        self.addr = addr
        self.unix = unix  # a worker's (dnsd.workers): served on this unix socket instead, for its supervisor
        self.page = status_page()  # read once
        self.sampler = Sampler(app, sample_every)  # the query rate and rcode mix over the last minutes
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
        self.site: web.TCPSite | None = None
        self.address: tuple[str, int] | None = None  # where it listens (port 0 resolved)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self.runner.setup()
        if self.unix is not None:
            unix_site = web.UnixSite(self.runner, self.unix)
            await unix_site.start()
            self.sampler.start()
            log.debug("HTTP on %s for the supervisor", self.unix)
            return
        self.site = web.TCPSite(self.runner, self.addr.host, self.addr.port, reuse_address=True)
        await self.site.start()
        server = self.site._server  # the asyncio server, for the port the kernel chose (port 0)
        sockets = getattr(server, "sockets", None)  # asyncio.Server or uvloop's Server: both have .sockets
        assert sockets
        sockname = sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        self.sampler.start()
        log.info("HTTP on %s:%d (/health /ready /metrics, status page /)", *self.address)

    async def close(self) -> None:
        await self.sampler.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _request: web.Request) -> web.Response:
        reasons = self.app.not_ready()
        if reasons:
            return web.Response(status=503, text="".join(f"{r}\n" for r in reasons))
        # Serving but stale (a snapshot not yet confirmed by the source): 200, with the reason (App.ready_notes).
        return web.Response(text="OK\n" + "".join(f"{n}\n" for n in self.app.ready_notes()))

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.app.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, _request: web.Request) -> web.Response:
        return status_page_response(self.page)

    async def status_json(self, _request: web.Request) -> web.Response:
        return web.json_response(status(self.app, self.sampler, self.address), headers={"Cache-Control": "no-store"})

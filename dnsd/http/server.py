"""The HTTP listener (aiohttp, in the DNS event loop): `/health`, `/ready`, `/metrics`; bound once at start and
kept open for the life of the process (a config reload never closes it, unless its address changes, and then the
new one is bound before the old one closes)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from dnsd.config import ListenAddress

if TYPE_CHECKING:
    from dnsd.app import App

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, app: App, addr: ListenAddress) -> None:
        self.app = app
        self.addr = addr
        self.web = web.Application()
        self.web.add_routes(
            [web.get("/health", self.health), web.get("/ready", self.ready), web.get("/metrics", self.metrics)]
        )
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.address: tuple[str, int] | None = None  # where it listens (port 0 resolved)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.addr.host, self.addr.port, reuse_address=True)
        await self.site.start()
        server = self.site._server  # the asyncio server, for the port the kernel chose (port 0)
        sockets = getattr(server, "sockets", None)  # asyncio.Server or uvloop's Server: both have .sockets
        assert sockets
        sockname = sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("HTTP on %s:%d (/health /ready /metrics)", *self.address)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _request: web.Request) -> web.Response:
        reasons = self.app.not_ready()
        if reasons:
            return web.Response(status=503, text="".join(f"{r}\n" for r in reasons))
        return web.Response(text="OK\n")

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.app.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

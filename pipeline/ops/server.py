"""The one HTTP server: /metrics, /healthz, /readyz, on the event loop."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.ops.health import HealthRegistry, Status


class ServerError(Exception):
    """The server cannot listen where it was told to."""


class OpsServer:
    """Serves metrics and health; `start` binds, `aclose` unbinds (both idempotent)."""

    def __init__(self, registry: CollectorRegistry, health: HealthRegistry,
                 host: str, port: int) -> None:
        self._registry = registry
        self._health = health
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ServerError(f"server.listen {self.host}:{self._port}: {exc.strerror}") from None
        self._runner = runner
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def _metrics(self, _request: web.Request) -> web.Response:
        # Rendered without awaiting: no event-loop update can interleave, so the scrape is
        # one consistent snapshot and the reconciliation identities hold in it.
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        status, body = self._health.report()
        return web.json_response(body, status=503 if status is Status.UNHEALTHY else 200)

    async def aclose(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

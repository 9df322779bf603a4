"""The one HTTP server: /metrics, /healthz, /readyz, on the event loop.

With a web config (`server.web_config_file`) it serves TLS and asks for basic auth on
/metrics and /readyz; /healthz always answers without credentials (a liveness probe
carries none, and it tells nothing but "alive"). /readyz names its components and their
messages (broker addresses, sink errors) only when asked (`?verbose`) or to a loopback
peer; anyone else gets the status alone. Password checks are bounded (`BasicAuth`): past
the bound an attempt is answered 503 unchecked and its connection closed (`auth_busy`).
"""

from __future__ import annotations

import ipaddress
import json

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from pipeline.ops.auth import BasicAuth, Verdict
from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.http import CloseReason, HttpLimits, HttpServer, Request, Response
from pipeline.ops.webconfig import WebConfig

JSON = "application/json"
UNAUTHORIZED = Response(401, b"unauthorized\n",
                        headers={"WWW-Authenticate": 'Basic realm="govpipe", charset="UTF-8"'})
AUTH_BUSY = Response(503, b"too many authentication attempts\n", headers={"Retry-After": "1"},
                     close=CloseReason.AUTH_BUSY)


class ServerError(Exception):
    """The server cannot listen where it was told to."""


class OpsServer:
    """Serves metrics and health; `start` binds, `aclose` unbinds and stops the password
    checks (both idempotent). `auth` replaces the one built from `web.users` (tests)."""

    def __init__(self, registry: CollectorRegistry, health: HealthRegistry,
                 host: str, port: int, *, limits: HttpLimits | None = None,
                 web: WebConfig | None = None, auth: BasicAuth | None = None) -> None:
        self._registry = registry
        self._health = health
        self.host = host
        self._port = port
        web = web if web is not None else WebConfig()
        self._auth = auth if auth is not None else BasicAuth(web.users)
        self.scheme = "https" if web.ssl_context is not None else "http"
        closed = Counter("govpipe_server_connections_closed",
                         "Ops server connections closed before a full answer, by reason.",
                         ["reason"], registry=registry)
        for reason in CloseReason:
            closed.labels(reason.value)
        self._http = HttpServer(self._route, host, port, limits or HttpLimits(),
                                ssl_context=web.ssl_context, default_headers=web.headers,
                                count_close=lambda reason: closed.labels(reason.value).inc())
        self._started = False
        self.bound_port: int | None = None

    async def start(self) -> None:
        if self._started:
            return
        try:
            self.bound_port = await self._http.start()
        except OSError as exc:
            raise ServerError(f"server.listen {self.host}:{self._port}: {exc.strerror}") from None
        self._started = True

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self._http.aclose()
        self._auth.close()

    async def _route(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"})
        if request.path == "/healthz":
            return Response(200, b'{"status":"alive"}', JSON)
        if request.path not in ("/metrics", "/readyz"):
            return Response(404, b"not found\n")
        if self._auth.enabled:
            verdict = await self._auth.check(request.headers.get("authorization"))
            if verdict is not Verdict.ALLOWED:
                return AUTH_BUSY if verdict is Verdict.BUSY else UNAUTHORIZED
        if request.path == "/metrics":
            return self._metrics()
        return self._readyz(request)

    def _metrics(self) -> Response:
        # Rendered without awaiting: no event-loop update can interleave, so the scrape is
        # one consistent snapshot and the reconciliation identities hold in it.
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _readyz(self, request: Request) -> Response:
        status, body = self._health.report()
        if not (_asks_for_detail(request.query) or _is_loopback(request.peer)):
            body = {"status": body["status"]}
        return Response(503 if status is Status.UNHEALTHY else 200,
                        json.dumps(body).encode(), JSON)


def _asks_for_detail(query: str) -> bool:
    names = {part.partition("=")[0] for part in query.split("&")}
    return "verbose" in names


def _is_loopback(peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback

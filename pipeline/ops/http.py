"""A small HTTP/1.1 server for the ops endpoints, on the event loop, that a slow or
hostile client cannot hold open: every read and write has a deadline and the number of
open connections is capped.

The protocol itself is h11's (parsing, keep-alive, framing); this module only moves bytes
and keeps the limits. A connection over the cap is closed at once, before anything is
read from it, and so is one past its peer's share (`max_connections_per_peer`: one client
cannot take every slot and fail the liveness probes); one that sends its request head, its
body or reads the answer too slowly is closed when its deadline passes. Each such close is
reported by reason (`CloseReason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import h11

log = logging.getLogger(__name__)

READ_CHUNK = 16_384


class CloseReason(StrEnum):
    """Why the server closed a connection before answering it in full."""

    OVER_CAPACITY = "over_capacity"
    PEER_OVER_CAPACITY = "peer_over_capacity"
    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    WRITE_TIMEOUT = "write_timeout"
    BAD_REQUEST = "bad_request"
    TLS_ERROR = "tls_error"
    AUTH_BUSY = "auth_busy"  # answered 503: too many password checks under way


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Deadlines and sizes: the request head must arrive within `read_header_timeout_s` of
    the connection (TLS handshake included) or of the previous answer, its body within
    `read_body_timeout_s` of the head, and an answer be taken within `write_timeout_s`."""

    read_header_timeout_s: float = 10.0
    read_body_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    max_connections: int = 64
    max_connections_per_peer: int = 16
    max_header_bytes: int = 16_384
    max_body_bytes: int = 65_536


@dataclass(frozen=True, slots=True)
class Request:
    """A request as handlers see it: header names lower-case, the peer's IP address."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    peer: str


@dataclass(frozen=True, slots=True)
class Response:
    """An answer; with `close`, the connection is closed after it and counted so."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    close: CloseReason | None = None


Handler = Callable[[Request], Awaitable[Response]]
CloseCounter = Callable[[CloseReason], None]


class _Closed(Exception):
    """The connection is over; `reason` is why, when the server ended it early."""

    def __init__(self, reason: CloseReason | None = None,
                 answer: Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer  # sent before closing when the protocol still allows it


class HttpServer:
    """Serves `handler` on host:port (TLS when `ssl_context` is given); `start` binds and
    returns the bound port, `aclose` closes the listener and every connection."""

    def __init__(self, handler: Handler, host: str, port: int, limits: HttpLimits, *,
                 ssl_context: ssl.SSLContext | None = None,
                 count_close: CloseCounter = lambda reason: None,
                 default_headers: Mapping[str, str] | None = None) -> None:
        self._handler = handler
        self._host, self._port = host, port
        self._limits = limits
        self._ssl = ssl_context
        self._count_close = count_close
        self._default_headers = dict(default_headers or {})
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._per_peer: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=self._limits.max_header_bytes)
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The head's deadline starts at the connection, so the TLS handshake spends from it.
        deadline = asyncio.get_running_loop().time() + self._limits.read_header_timeout_s
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        refusal = self._refusal(address)
        if refusal is not None:
            # Refused before a byte is read: the cap bounds sockets and buffers alike.
            self._count_close(refusal)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._per_peer[address] = self._per_peer.get(address, 0) + 1
        try:
            await self._converse(reader, writer, address, deadline)
        except _Closed as closed:
            if closed.reason is not None:
                self._count_close(closed.reason)
        finally:
            self._connections.discard(task)
            self._release(address)
            writer.transport.abort()  # no lingering: the peer may be the slow one

    def _refusal(self, address: str) -> CloseReason | None:
        if len(self._connections) >= self._limits.max_connections:
            return CloseReason.OVER_CAPACITY
        if self._per_peer.get(address, 0) >= self._limits.max_connections_per_peer:
            return CloseReason.PEER_OVER_CAPACITY
        return None

    def _release(self, address: str) -> None:
        left = self._per_peer.pop(address, 1) - 1
        if left > 0:
            self._per_peer[address] = left

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        address: str, deadline: float) -> None:
        """Requests and answers on one connection until either side ends it; the first
        head (and the TLS handshake) must arrive by `deadline`."""
        await self._start_tls(writer, deadline)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
        while True:
            try:
                request = await self._read_head(conn, reader, address, deadline)
                await self._read_body(conn, reader)
            except _Closed as closed:
                if closed.answer is not None:
                    await self._send(conn, writer, closed.answer, head_only=False)
                raise
            response = await self._answer(request)
            await self._send(conn, writer, response, head_only=request.method == "HEAD")
            if response.close is not None:
                raise _Closed(response.close)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            deadline = asyncio.get_running_loop().time() + self._limits.read_header_timeout_s

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            log.exception("ops server: %s %s failed", request.method, request.path)
            return Response(500, b"internal error\n")

    async def _start_tls(self, writer: asyncio.StreamWriter, deadline: float) -> None:
        if self._ssl is None:
            return
        try:
            # The handshake counts against the head's deadline: a client that stalls in it
            # holds a connection as surely as one that stalls in its headers.
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(self._ssl)
        except TimeoutError:
            raise _Closed(CloseReason.HEADER_TIMEOUT) from None
        except (ssl.SSLError, ConnectionError, OSError):
            raise _Closed(CloseReason.TLS_ERROR) from None

    async def _read_head(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         peer: str, deadline: float) -> Request:
        try:
            async with asyncio.timeout_at(deadline):
                event = await _next_event(conn, reader)
        except TimeoutError:
            raise _Closed(CloseReason.HEADER_TIMEOUT) from None
        if isinstance(event, h11.ConnectionClosed):
            raise _Closed()
        if not isinstance(event, h11.Request):
            raise _Closed(CloseReason.BAD_REQUEST, Response(400, b"bad request\n"))
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        headers = {name.decode("ascii", "replace"): value.decode("latin-1")
                   for name, value in event.headers}
        return Request(event.method.decode("ascii", "replace"), path, query, headers, peer)

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        """Read and discard the body (no endpoint takes one), within its deadline and size."""
        size = 0
        try:
            async with asyncio.timeout(self._limits.read_body_timeout_s):
                while not isinstance(event := await _next_event(conn, reader),
                                     h11.EndOfMessage):
                    if isinstance(event, h11.ConnectionClosed):
                        raise _Closed()
                    if isinstance(event, h11.Data):
                        size += len(event.data)
                    if size > self._limits.max_body_bytes:
                        raise _Closed(CloseReason.BAD_REQUEST,
                                      Response(413, b"request body too large\n"))
        except TimeoutError:
            raise _Closed(CloseReason.BODY_TIMEOUT) from None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response, *, head_only: bool) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # too late for an answer: the protocol error came mid-response
        headers = {**self._default_headers, **response.headers,
                   "Content-Type": response.content_type,
                   "Content-Length": str(len(response.body))}
        if response.close is not None:
            headers["Connection"] = "close"
        data = conn.send(h11.Response(status_code=response.status,
                                      headers=list(headers.items()))) or b""
        if not head_only:
            data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        try:
            async with asyncio.timeout(self._limits.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            raise _Closed(CloseReason.WRITE_TIMEOUT) from None
        except ConnectionError:
            raise _Closed() from None


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading as needed; a malformed request is `_Closed` with the
    answer h11 suggests (400, or 431 for a head over the size limit)."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise _Closed(CloseReason.BAD_REQUEST,
                          Response(status, f"{h11_reason(status)}\n".encode())) from None
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await reader.read(READ_CHUNK)
        except (ConnectionError, ssl.SSLError):
            raise _Closed() from None
        conn.receive_data(data)


def h11_reason(status: int) -> str:
    return {400: "bad request", 413: "request body too large",
            431: "request header fields too large"}.get(status, "bad request")

"""The ops server against slow and hostile clients, on real sockets: half-sent requests are
closed when their deadline passes (the TLS handshake spending from the head's), connections
over the cap or over their peer's share are refused at once, password checks past their
bound are answered 503, and /metrics keeps answering. /readyz detail only when asked for or
on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from pipeline.ops.auth import BasicAuth
from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.http import CloseReason, HttpLimits, HttpServer, Request, Response
from pipeline.ops.server import OpsServer
from pipeline.ops.webconfig import WebConfig
from tests.support.fakes import HeldExecutor
from tests.support.infra.certs import make_pki
from tests.support.waiting import eventually

CAP = 8
LIMITS = HttpLimits(read_header_timeout_s=1.0, read_body_timeout_s=1.0, write_timeout_s=1.0,
                    max_connections=CAP, max_connections_per_peer=CAP)


@pytest.fixture
async def server() -> AsyncIterator[tuple[OpsServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    health = HealthRegistry()
    health.add("source", lambda: (Status.HEALTHY, "broker kafka-1.internal:9093 reachable"))
    ops = OpsServer(registry, health, "127.0.0.1", 0, limits=LIMITS)
    await ops.start()
    yield ops, registry
    await ops.aclose()


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET over a fresh connection: the status code and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Waits until the server ends the connection (EOF or reset); True if nothing came."""
    try:
        data = await reader.read()
    except ConnectionResetError:
        return True
    return data == b""


def closes(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("govpipe_server_connections_closed_total",
                                     {"reason": reason}) or 0.0


async def test_half_sent_requests_are_closed_and_over_the_cap_refused(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, registry = server
    assert ops.bound_port is not None
    half_sent = []
    for _ in range(CAP):
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        await writer.drain()
        half_sent.append((reader, writer))
    await eventually(lambda: ops._http.open_connections == CAP)
    extra = [await asyncio.open_connection("127.0.0.1", ops.bound_port) for _ in range(5)]
    for reader, writer in extra:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_server(reader), "a connection over the cap was served"
        writer.close()
    assert closes(registry, "over_capacity") == 5
    # The deadline closes every half-sent request, with no answer.
    for reader, writer in half_sent:
        assert await closed_by_server(reader)
        writer.close()
    assert closes(registry, "header_timeout") == CAP
    status, body = await get(ops.bound_port, "/metrics")
    assert status == 200
    assert b"govpipe_server_connections_closed_total" in body


async def test_metrics_answer_while_slow_clients_hold_connections_under_the_cap(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, _ = server
    assert ops.bound_port is not None
    slow = [await asyncio.open_connection("127.0.0.1", ops.bound_port) for _ in range(CAP - 1)]
    status, _ = await get(ops.bound_port, "/metrics")
    assert status == 200
    for _, writer in slow:
        writer.close()


async def test_a_body_that_never_comes_is_closed_after_its_deadline(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, registry = server
    assert ops.bound_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a bit")
    await writer.drain()
    assert await closed_by_server(reader)
    writer.close()
    assert closes(registry, "body_timeout") == 1
    assert closes(registry, "header_timeout") == 0


async def test_keep_alive_serves_several_requests_on_one_connection(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, _ = server
    assert ops.bound_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(await reader.readexactly(length)) == {"status": "alive"}
    writer.close()


async def test_garbage_gets_400_and_an_oversized_head_431(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, registry = server
    assert ops.bound_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 431")
    writer.close()
    assert closes(registry, "bad_request") == 2


async def test_readyz_detail_only_when_asked_or_on_loopback(
        server: tuple[OpsServer, CollectorRegistry]) -> None:
    ops, _ = server
    assert ops.bound_port is not None
    status, body = await get(ops.bound_port, "/readyz")  # loopback: detail
    assert status == 200
    assert json.loads(body)["components"][0]["message"] == "broker kafka-1.internal:9093 reachable"

    def remote(query: str) -> Request:
        return Request("GET", "/readyz", query, {}, "10.1.2.3")

    plain = await ops._route(remote(""))
    assert json.loads(plain.body) == {"status": "healthy"}
    assert b"kafka-1.internal" not in plain.body
    verbose = await ops._route(remote("verbose"))
    assert json.loads(verbose.body)["components"][0]["name"] == "source"
    mapped = await ops._route(Request("GET", "/readyz", "", {}, "::ffff:127.0.0.1"))
    assert "components" in json.loads(mapped.body)


async def test_unhealthy_without_detail_is_still_503() -> None:
    health = HealthRegistry()
    health.add("signer", lambda: (Status.UNHEALTHY, "no signing key"))
    ops = OpsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    answer = await ops._route(Request("GET", "/readyz", "", {}, "192.0.2.7"))
    assert answer.status == 503
    assert json.loads(answer.body) == {"status": "unhealthy"}


async def get_from(source: str, port: int, path: str) -> int:
    """The status of one GET sent from the loopback address `source`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return int(answer.split()[1])


async def test_one_peer_cannot_take_every_slot_from_the_liveness_probe() -> None:
    # Was: one client holding max_connections half-sent requests made /healthz refuse all.
    registry = CollectorRegistry()
    limits = HttpLimits(max_connections=CAP, max_connections_per_peer=CAP // 2)
    ops = OpsServer(registry, HealthRegistry(), "127.0.0.1", 0, limits=limits)
    await ops.start()
    assert ops.bound_port is not None
    held = [await asyncio.open_connection("127.0.0.1", ops.bound_port) for _ in range(CAP)]
    await eventually(lambda: closes(registry, "peer_over_capacity") == CAP // 2)
    assert ops._http.open_connections == CAP // 2
    assert await get_from("127.0.0.2", ops.bound_port, "/healthz") == 200  # the kubelet
    for _, writer in held:
        writer.close()
    await ops.aclose()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_password_checks_past_the_bound_get_503_and_are_counted() -> None:
    registry = CollectorRegistry()
    held = HeldExecutor()
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"alice": hashed}, executor=held, max_pending=1)
    ops = OpsServer(registry, HealthRegistry(), "127.0.0.1", 0,
                    web=WebConfig(users={"alice": hashed}), auth=auth)
    await ops.start()
    assert ops.bound_port is not None
    request = (f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: "
               f"{basic('alice', 'guess')}\r\n\r\n").encode()
    first_reader, first_writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    first_writer.write(request)
    await eventually(lambda: len(held.submitted) == 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    writer.write(request)
    answer = await reader.read()  # closed after the answer
    assert answer.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in answer
    assert len(held.submitted) == 1  # refused without a check
    assert closes(registry, "auth_busy") == 1
    held.settle(False)
    assert (await first_reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 401")
    first_writer.close()
    writer.close()
    await ops.aclose()
    assert held.shut_down  # the checks stop with the server


async def test_the_tls_handshake_spends_from_the_heads_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: the handshake and the head got a full read_header_timeout_s each. The loop's
    # clock is moved by hand: 6 s in the handshake and 6 s after it pass the 10 s deadline.
    loop = asyncio.get_running_loop()
    real_time, skipped = loop.time, [0.0]
    monkeypatch.setattr(loop, "time", lambda: real_time() + skipped[0])
    pki = make_pki(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    closed: list[CloseReason] = []

    async def answer(request: Request) -> Response:
        return Response(200)

    http = HttpServer(answer, "127.0.0.1", 0, HttpLimits(read_header_timeout_s=10.0),
                      ssl_context=server_tls, count_close=closed.append)
    port = await http.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await eventually(lambda: http.open_connections == 1)
    skipped[0] += 6.0  # a slow handshake, within the deadline
    await writer.start_tls(ssl.create_default_context(cafile=pki.ca_cert))
    skipped[0] += 6.0  # no head yet: 12 s since the connection
    await eventually(lambda: closed == [CloseReason.HEADER_TIMEOUT], timeout_s=5)
    assert await closed_by_server(reader)
    writer.close()
    await http.aclose()

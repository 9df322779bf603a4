"""The ops server against slow and hostile clients, on real sockets: half-sent requests are
closed when their deadline passes, connections over the cap are refused at once, and
/metrics keeps answering. /readyz detail only when asked for or on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.http import HttpLimits, Request
from pipeline.ops.server import OpsServer
from tests.support.waiting import eventually

CAP = 8
LIMITS = HttpLimits(read_header_timeout_s=1.0, read_body_timeout_s=1.0, write_timeout_s=1.0,
                    max_connections=CAP)


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

"""Publishing governance events onto govpipe's input topic, for producers.

`Publisher` (async) and `SyncPublisher` send one JSON object per record with an idempotent
producer (acks=all), keyed by `agent_id` so one agent's records stay on one partition (which
is what per-replica replay protection relies on, see README "Inbound authentication").
Given an inbound key and a sender id, each record carries the `agt-*` signature headers.

`AgentOsSink` has Agent OS's sink shape (`emit`, `shutdown`, `force_flush`), duck-typed, so a
`GovernanceEventProcessor` can publish straight onto the input topic without govpipe
importing Agent OS or Agent OS importing govpipe.
"""

from __future__ import annotations

import asyncio
import enum
import json
import threading
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from pipeline.inbound.signed_string import signature_headers
from pipeline.inbound.verifier import wall_clock_ms

T = TypeVar("T")


class PublishError(Exception):
    """A record could not be published (the broker refused it or could not be reached)."""


def event_payload(event: Any) -> dict[str, Any]:
    """A plain dict from an event object with `to_dict()` or from a mapping."""
    to_dict = getattr(event, "to_dict", None)
    payload = to_dict() if callable(to_dict) else event
    if not isinstance(payload, Mapping):
        raise TypeError(f"not an event: {type(event).__name__} (need a dict or to_dict())")
    return dict(payload)


class Publisher:
    """Async publisher onto one topic; `async with` or `start()` / `aclose()`."""

    def __init__(self, bootstrap_servers: str, topic: str, *, sign_key: bytes | None = None,
                 sender: str = "", timeout_s: float = 30.0,
                 client_options: Mapping[str, Any] | None = None) -> None:
        """`client_options`: more aiokafka connection keywords (security_protocol,
        ssl_context, sasl_*; `pipeline.kafka_connection.client_options` makes them)."""
        self.topic = topic
        self._sign_key = sign_key
        self._sender = sender
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(**{**(client_options or {}),
                                             "bootstrap_servers": bootstrap_servers},
                                          acks="all", enable_idempotence=True)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            try:
                await self._producer.start()
            except BaseException:
                await self._producer.stop()  # a failed start leaves connections behind
                raise
            self._started = True

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The `agt-*` headers for `value` (none without a key): fresh nonce, time now."""
        if self._sign_key is None:
            return []
        return signature_headers(self._sign_key, uuid.uuid4().hex, wall_clock_ms(),
                                 self._sender, value)

    async def publish(self, event: Any) -> None:
        """Send one event (a dict or an object with to_dict()) and wait for the broker."""
        error = (await self.publish_many([event]))[0]
        if error is not None:
            raise PublishError(error)

    async def publish_many(self, events: Sequence[Any]) -> list[str | None]:
        """Send events in order, then wait for the broker: per event None or the error."""
        items = []
        for event in events:
            payload = event_payload(event)
            value = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            items.append((value, payload.get("agent_id")))
        return await self.publish_values(items)

    async def publish_values(self, items: Sequence[tuple[bytes, object]]) -> list[str | None]:
        """Send each (JSON value as is, agent_id) in order, keyed by agent_id; wait for all.

        Returns, per item, None once the broker acknowledged it, else the error. The whole
        batch gets `timeout_s`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                deliveries = [await self._enqueue(value, agent_id) for value, agent_id in items]
                outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        except TimeoutError:
            return [f"no acknowledgement within {self._timeout_s:.0f}s"] * len(items)
        return [None if not isinstance(outcome, BaseException)
                else f"{type(outcome).__name__}: {outcome}" for outcome in outcomes]

    async def _enqueue(self, value: bytes, agent_id: object) -> asyncio.Future[Any]:
        key = agent_id.encode() if isinstance(agent_id, str) and agent_id else None
        try:
            delivery: asyncio.Future[Any] = await self._producer.send(
                self.topic, value, key=key, headers=self.headers(value))
        except Exception as exc:  # refused before sending (too large, producer closed…)
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(exc)
        return delivery


class SyncPublisher:
    """`Publisher` for synchronous code: its own event loop on a background thread."""

    def __init__(self, bootstrap_servers: str, topic: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="govpipe-publisher", daemon=True)
        self._thread.start()
        self._publisher: Publisher = self._call(_make(bootstrap_servers, topic, options))
        self._call(self._publisher.start())

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def publish(self, event: Any) -> None:
        """Send one event and wait for the broker's acknowledgement."""
        self._call(self._publisher.publish(event))

    def publish_many(self, events: Sequence[Any]) -> list[str | None]:
        """Send events in order and wait for all: per event None or the error."""
        return self._call(self._publisher.publish_many(events))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, stop the producer and the thread; callable twice."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._publisher.aclose(), timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
            self._loop.close()


async def _make(bootstrap_servers: str, topic: str, options: dict[str, Any]) -> Publisher:
    # The producer binds to the running loop, so it is built on the publisher's thread.
    return Publisher(bootstrap_servers, topic, **options)


class ExportResult(enum.IntEnum):
    """Agent OS `SinkExportResult` values."""

    SUCCESS = 0
    FAILURE = 1
    DROPPED = 2


class AgentOsSink:
    """An Agent OS governance event sink that publishes onto govpipe's input topic."""

    def __init__(self, bootstrap_servers: str, topic: str = "governance.events", *,
                 sign_key: bytes | None = None, sender: str = "",
                 client_options: Mapping[str, Any] | None = None) -> None:
        """`client_options`: TLS and SASL for a secured cluster, as `Publisher` takes them
        (`pipeline.kafka_connection.client_options(settings.kafka)` makes them)."""
        self._publisher = SyncPublisher(bootstrap_servers, topic, sign_key=sign_key,
                                        sender=sender, client_options=client_options)
        self._lock = threading.Lock()
        self._closed = False

    def emit(self, events: Sequence[Any]) -> ExportResult:
        """Publish a batch; never raises (the Agent OS contract): FAILURE on any error."""
        with self._lock:
            if self._closed:
                return ExportResult.DROPPED
            try:
                errors = self._publisher.publish_many(events)
            except Exception:
                return ExportResult.FAILURE
            return ExportResult.FAILURE if any(errors) else ExportResult.SUCCESS

    def force_flush(self, timeout_ms: int = 30000) -> bool:
        """Every emit already waited for the broker; nothing is buffered."""
        return True

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop the producer; True when it closed in time."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            try:
                self._publisher.close(timeout_ms / 1000)
            except Exception:
                return False
            return True

"""`DirectPublisher`: sends records straight to the broker and waits for its
acknowledgements, with no spool. For one-shot tools that report each record's outcome
(`govpipe publish`); agents use `Publisher`, which never blocks and never loses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.publisher.keys import RecordSigner


class DirectPublisher:
    """Async, one topic, idempotent producer (acks=all), records keyed by agent_id."""

    def __init__(self, bootstrap_servers: str, topic: str, *, sign_key: bytes | None = None,
                 sender: str = "", timeout_s: float = 30.0,
                 client_options: Mapping[str, Any] | None = None) -> None:
        """`sign_key`: the raw inbound key (`pipeline.publisher.keys` loads one).
        `client_options`: more aiokafka keywords (TLS, SASL)."""
        self.topic = topic
        self._signer = RecordSigner(sign_key, sender)
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(**{**(client_options or {}),
                                             "bootstrap_servers": bootstrap_servers},
                                          acks="all", enable_idempotence=True)
        self._started = False

    async def start(self) -> None:
        """Connect; callable twice."""
        if not self._started:
            try:
                await self._producer.start()
            except BaseException:
                await self._producer.stop()  # a failed start leaves connections behind
                raise
            self._started = True

    async def aclose(self) -> None:
        """Flush and stop the producer; callable twice."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> DirectPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def publish_values(self, items: Sequence[tuple[bytes, object]]) -> list[str | None]:
        """Send each (JSON value as is, agent_id) in order, keyed by agent_id; wait for all.

        Returns, per item, None once the broker acknowledged it, else the error. The whole
        batch gets `timeout_s`; a record reported as failed may still arrive later."""
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
                self.topic, value, key=key, headers=self._signer.headers(value))
        except Exception as exc:  # refused before sending (too large, producer closed…)
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(exc)
        return delivery

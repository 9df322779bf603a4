"""`DirectPublisher`: sends records straight to the broker and waits for its
acknowledgements, with no spool. For one-shot tools that report each record's outcome
(`govpipe publish`); agents use `Publisher`, which never blocks and never loses.

The broker answers for a whole batch of one partition: one record over the topic's
`max.message.bytes` fails its neighbours too. Records that failed that way are sent again
alone, so only the record the broker refuses alone is reported failed (with the reason,
`record_too_large` or `invalid_record`). After any failed record the producer is replaced:
the failed batch left a gap in its idempotence sequence, which would fail every later
batch of that partition (`OutOfOrderSequenceNumber`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.publisher.keys import RecordSigner
from pipeline.publisher.producer import stop_within
from pipeline.publisher.rejected import rejection_reason


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
        self._options = {**(client_options or {}), "bootstrap_servers": bootstrap_servers,
                         "acks": "all", "enable_idempotence": True}
        self._producer = AIOKafkaProducer(**self._options)
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

        Returns, per item, None once the broker acknowledged it, else the error (prefixed
        by the reason when Kafka refuses the record for good). The batch gets `timeout_s`,
        each record sent again alone `timeout_s` more; a record reported as failed may
        still arrive later."""
        outcomes = await self._send(items)
        if any(isinstance(outcome, BaseException) for outcome in outcomes):
            await self._renew()
            if len(items) > 1:
                await self._send_suspects_alone(items, outcomes)
        return [_describe(outcome) for outcome in outcomes]

    async def _send_suspects_alone(self, items: Sequence[tuple[bytes, object]],
                                   outcomes: list[BaseException | str | None]) -> None:
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException) and rejection_reason(outcome) is not None:
                outcomes[index] = (await self._send([items[index]]))[0]
                if isinstance(outcomes[index], BaseException):
                    await self._renew()

    async def _send(self, items: Sequence[tuple[bytes, object]]
                    ) -> list[BaseException | str | None]:
        """Per item: None (acknowledged), the error, or why there is no outcome (a str)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                deliveries = [await self._enqueue(value, agent_id) for value, agent_id in items]
                outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        except TimeoutError:
            return [f"no acknowledgement within {self._timeout_s:.0f}s"] * len(items)
        return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]

    async def _renew(self) -> None:
        """A new producer in place of the started one (see the module docstring)."""
        producer, self._producer = self._producer, AIOKafkaProducer(**self._options)
        await stop_within(producer, self._timeout_s)
        try:
            await self._producer.start()
        except BaseException:
            self._started = False
            await self._producer.stop()
            raise

    async def _enqueue(self, value: bytes, agent_id: object) -> asyncio.Future[Any]:
        key = agent_id.encode() if isinstance(agent_id, str) and agent_id else None
        try:
            delivery: asyncio.Future[Any] = await self._producer.send(
                self.topic, value, key=key, headers=self._signer.headers(value))
        except Exception as exc:  # refused before sending (too large, producer closed…)
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(exc)
        return delivery


def _describe(outcome: BaseException | str | None) -> str | None:
    if not isinstance(outcome, BaseException):
        return outcome
    error = f"{type(outcome).__name__}: {outcome}"
    reason = rejection_reason(outcome)
    return error if reason is None else f"{reason}: {error}"

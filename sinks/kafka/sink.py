"""Kafka sink: signed CloudEvents on one topic (``sinks.kafka.messages`` says how each
event becomes a message).

The producer is idempotent with ``acks=all``: a batch counts as delivered only when the
broker acknowledged every record of it. A producer whose idempotence state breaks is
replaced (``sinks.kafka.errors`` says which failures are retriable). A record too large for
the topic fails its event alone once every other record is acknowledged
(``sinks.kafka.sizes``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.model import SignedEvent
from sinks.base import closed_error
from sinks.kafka.batches import PartitionEntries, by_partition, record_batches, triage
from sinks.kafka.deadlines import abandon, stop_within, wait_acks
from sinks.kafka.errors import PRODUCER_STATE_ERRORS, to_sink_error
from sinks.kafka.messages import ContentMode
from sinks.kafka.sizes import over_limit, split_oversized, too_large_error

__all__ = ["KafkaSink"]

log = logging.getLogger(__name__)

_MIN_BATCH_BYTES = 16_384
RecordLimit = Callable[[], Awaitable[int | None]]


async def _no_limit() -> int | None:
    return None


class KafkaSink:
    """Produces each batch to one topic and waits for the broker's acknowledgement."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        content_mode: ContentMode = "structured",
        timeout_s: float = 30.0,
        name: str = "kafka",
        record_batch_bytes: int = 1_048_576,
        producer_options: Mapping[str, Any] | None = None,
        max_record_bytes: RecordLimit = _no_limit,
        producer_class: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
    ) -> None:
        """``timeout_s`` bounds metadata waits and delivery (aiokafka request_timeout_ms).

        ``max_record_bytes``: the largest record ``topic`` takes, measured as a record batch
        of it alone, or None when not known (the composition root learns it from the
        cluster, once the producer has started): a larger record is not sent.
        ``producer_class`` makes the producers (tests give a fake).

        ``record_batch_bytes``: aiokafka's producer puts one record batch per partition in a
        produce request and (idempotent) has one request in flight per broker, so with its
        16 KiB default a 500-event send took ~20 round trips; a batch of up to 1 MiB (the
        Kafka default max.message.bytes is 1048588) takes one or two.
        """
        self.name = name
        self._topic = topic
        self._content_mode = content_mode
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "enable_idempotence": True,
            "acks": "all",
            "request_timeout_ms": int(timeout_s * 1000),
            "max_batch_size": record_batch_bytes,
            **(producer_options or {}),
        }
        self._timeout_s = timeout_s
        self._max_record_bytes = max_record_bytes
        self._producer_class = producer_class
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False

    @property
    def bootstrap_servers(self) -> str:
        """The brokers this sink produces to."""
        return str(self._options["bootstrap_servers"])

    @property
    def record_batch_bytes(self) -> int:
        """The most bytes of one partition's records in one produce request."""
        return int(self._options["max_batch_size"])

    @property
    def content_mode(self) -> ContentMode:
        """``structured`` or ``binary``."""
        return self._content_mode

    async def start(self) -> None:
        """Connect the producer (done by the first send otherwise); safe to call twice."""
        if self._closed:
            raise closed_error("kafka")
        async with self._start_lock:
            if self._producer is not None:
                return
            producer = self._producer_class(**self._options)
            try:
                await producer.start()
            except BaseException as exc:
                await producer.stop()  # a half-started producer holds sockets and tasks
                if isinstance(exc, Exception):
                    raise to_sink_error(exc) from exc
                raise
            self._producer = producer

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Produce ``batch``; return once the broker acknowledged every record.

        An event whose record is too large for the topic (over the known limit, or refused
        by the broker in a record batch of its own) fails alone: once every other record
        is acknowledged, a non-retriable SinkError names those events (``only``). Any
        other failure fails the whole batch (retriable or not by its kind)."""
        if self._closed:
            raise closed_error("kafka")
        if not batch:
            return
        producer = await self._started()
        limit = await self._max_record_bytes()  # after start: the cluster answers
        entries, oversized = split_oversized(batch, self._content_mode, limit)
        grouped = await by_partition(producer, self._topic, entries)
        todo = list(grouped.items())
        refused: list[SignedEvent] = []
        while todo:
            # A round that met a refusal replaced the producer: the next one starts anew.
            todo, too_large = await self._send_round(await self._started(), todo)
            refused += too_large
        if oversized and limit is not None:
            raise over_limit(oversized, limit, self._topic, also=refused)
        if refused:
            raise too_large_error(refused, f"a record topic {self._topic} refused as too "
                                           "large")

    async def _started(self) -> AIOKafkaProducer:
        """The producer, started if there is none (raises SinkError if it cannot start)."""
        await self.start()
        assert self._producer is not None  # start() set it or raised
        return self._producer

    async def _send_round(self, producer: AIOKafkaProducer,
                          todo: Sequence[PartitionEntries]
                          ) -> tuple[list[PartitionEntries], list[SignedEvent]]:
        """Send each partition's records and wait for every acknowledgement; return what
        has to be sent again because the broker refused a record batch as too large, and
        the events it refused alone.

        A topic's max.message.bytes can be below ``record_batch_bytes``; the Java producer
        splits such a batch too. The refused batch goes back in halves (so the rounds end),
        and the producer is replaced, because the refused batch's sequence numbers leave a
        gap that fails every later batch of that partition (``OutOfOrderSequenceNumber``):
        those go back too. After a halving, the new producer makes batches half the size,
        so later sends fit. A single record over the limit is set apart, the rest goes on.
        Records sent again land after the partition's other batches, as with any retry.
        Any other failure ends the send for the whole batch (SinkError)."""
        sent, pending = await self._hand_over(producer, todo)
        outcome = triage(sent, await wait_acks(pending, self._timeout_s))
        if outcome.refused_partitions or isinstance(outcome.failure, PRODUCER_STATE_ERRORS):
            await self._replace_producer(shrink=outcome.halved)
        if outcome.failure is not None:
            raise to_sink_error(outcome.failure) from outcome.failure
        return outcome.again, outcome.too_large

    async def _hand_over(self, producer: AIOKafkaProducer, todo: Sequence[PartitionEntries]
                         ) -> tuple[list[PartitionEntries], list[asyncio.Future[Any]]]:
        """Give the producer every record batch; each with its future, in order."""
        sent: list[PartitionEntries] = []
        pending: list[asyncio.Future[Any]] = []
        try:
            # One record batch (one future) per partition and ~max_batch_size bytes, not one
            # future per event: per-event send() and its futures were a hot spot in profiles.
            for partition, entries in todo:
                for builder, packed in record_batches(producer, entries):
                    pending.append(await producer.send_batch(builder, self._topic,
                                                             partition=partition))
                    sent.append((partition, packed))
        except Exception as exc:  # KafkaError mostly; anything else must not leak futures
            await abandon(pending, self._timeout_s)
            raise to_sink_error(exc) from exc
        return sent, pending

    async def _replace_producer(self, shrink: bool = False) -> None:
        """Drop a producer whose idempotence state is broken; the next send starts anew.
        ``shrink``: a record batch was refused as too large, so the next producer makes
        batches half the size (not below 16 KiB, aiokafka's default)."""
        async with self._start_lock:
            producer, self._producer = self._producer, None
            if shrink:
                size = max(_MIN_BATCH_BYTES, self.record_batch_bytes // 2)
                if size < self.record_batch_bytes:
                    log.warning("kafka: a record batch was refused as too large for topic "
                                "%s; record batches are now %d bytes", self._topic, size)
                self._options["max_batch_size"] = size
        if producer is not None:
            await stop_within(producer, self._timeout_s)

    async def aclose(self) -> None:
        """Flush and stop the producer, within ``timeout_s``; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        async with self._start_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await stop_within(producer, self._timeout_s)

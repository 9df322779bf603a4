"""Kafka sink: signed CloudEvents on a topic, per the CloudEvents Kafka protocol binding.

- structured mode (default): value = the signed CloudEvent JSON, header
  ``content-type: application/cloudevents+json; charset=UTF-8``.
- binary mode: one ``ce_<name>`` header per attribute except ``data`` (extensions
  included), ``content-type`` = ``datacontenttype``, value = ``data`` as JSON bytes (or the
  decoded ``data_base64``). Header values are the attributes' canonical strings: booleans
  ``true``/``false``, integers in decimal, strings as they are.

The key is the ``partitionkey`` extension, so one agent's events stay in order on one
partition. The producer is idempotent with ``acks=all``: a batch counts as delivered only
when the broker acknowledged every record of it.

Failures: aiokafka's ``KafkaError.retriable`` decides, except that connection errors and
timeouts are always retriable (the broker may come back), and so are the errors that only
break the idempotent producer's state (``OutOfOrderSequenceNumber`` after a broker restart,
an invalid epoch, fencing): that producer is dropped and the retry starts a new one. The
reason is the error class in snake_case (``kafka_timeout_error``,
``message_size_too_large_error``…).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]
from aiokafka.errors import (  # type: ignore[import-untyped,unused-ignore]
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

from pipeline.model import SignedEvent
from sinks.base import SinkError

__all__ = ["STRUCTURED_CONTENT_TYPE", "KafkaSink", "binary_message"]

log = logging.getLogger(__name__)

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
ContentMode = Literal["structured", "binary"]
Headers = list[tuple[str, bytes]]
_Message = tuple[bytes | None, bytes | None, Headers]  # key, value, headers
_ALWAYS_RETRIABLE = (KafkaConnectionError, KafkaTimeoutError, TimeoutError, OSError)
# Fatal to an idempotent producer (its producer id / sequence numbers are out of step with
# the broker, e.g. after a broker restart), not to the sink: a new producer gets a new id.
_PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, InvalidProducerEpoch, ProducerFenced)
_MIN_BATCH_BYTES = 16_384
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _header_value(value: Any) -> bytes:
    """The CloudEvents canonical string form of an attribute value, UTF-8 encoded."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int):
        return str(value).encode("ascii")
    # Not a CloudEvents attribute type; keep it readable rather than fail the batch.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits are valid JSON that orjson will not write
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def binary_message(ce: Mapping[str, Any]) -> tuple[bytes | None, Headers]:
    """(value, headers) of a CloudEvent in Kafka binary content mode."""
    headers: Headers = []
    for name, value in ce.items():
        if name in ("data", "data_base64") or value is None:
            continue
        if name == "datacontenttype":
            headers.append(("content-type", _header_value(value)))
        else:
            headers.append((f"ce_{name}", _header_value(value)))
    if "data_base64" in ce:
        return base64.b64decode(ce["data_base64"]), headers
    if "data" in ce:
        return _json_bytes(ce["data"]), headers
    return None, headers


def _reason(exc: BaseException) -> str:
    return _CAMEL_BOUNDARY.sub("_", type(exc).__name__).lower()


def to_sink_error(exc: BaseException) -> SinkError:
    """The SinkError for a producer failure (see the module docstring)."""
    retriable = isinstance(exc, _ALWAYS_RETRIABLE + _PRODUCER_STATE_ERRORS) or bool(
        getattr(exc, "retriable", False))
    return SinkError(f"kafka: {type(exc).__name__}: {exc}", retriable=retriable,
                     reason=_reason(exc))


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
    ) -> None:
        """``timeout_s`` bounds metadata waits and delivery (aiokafka request_timeout_ms).

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
            raise SinkError("kafka sink is closed", retriable=False, reason="closed")
        async with self._start_lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException as exc:
                await producer.stop()  # a half-started producer holds sockets and tasks
                if isinstance(exc, Exception):
                    raise to_sink_error(exc) from exc
                raise
            self._producer = producer

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Produce ``batch``; return once the broker acknowledged every record."""
        if self._closed:
            raise SinkError("kafka sink is closed", retriable=False, reason="closed")
        if not batch:
            return
        todo = list((await self._by_partition(await self._started(), batch)).items())
        while todo:
            # A round that met a refusal replaced the producer: the next one starts anew.
            todo = await self._send_round(await self._started(), todo)

    async def _started(self) -> AIOKafkaProducer:
        """The producer, started if there is none (raises SinkError if it cannot start)."""
        await self.start()
        assert self._producer is not None  # start() set it or raised
        return self._producer

    async def _send_round(self, producer: AIOKafkaProducer,
                          todo: Sequence[tuple[int, list[_Message]]]
                          ) -> list[tuple[int, list[_Message]]]:
        """Send each partition's messages and wait for every acknowledgement; return what
        has to be sent again because the broker refused a record batch as too large.

        A topic's max.message.bytes can be below ``record_batch_bytes``; the Java producer
        splits such a batch too. The refused batch goes back in halves (so the rounds end),
        and the producer is replaced, because the refused batch's sequence numbers leave a
        gap that fails every later batch of that partition (``OutOfOrderSequenceNumber``):
        those go back too. The new producer makes batches half the size, so later sends
        fit. Only a single record over the limit fails the send (non-retriable). Records
        sent again land after the partition's other batches, as with any retry."""
        sent, pending = await self._hand_over(producer, todo)
        again, refused, failure = _triage(sent, await self._wait_acks(pending))
        if refused or isinstance(failure, _PRODUCER_STATE_ERRORS):
            await self._replace_producer(shrink=bool(refused))
        if failure is not None:
            raise to_sink_error(failure) from failure
        return again

    async def _hand_over(self, producer: AIOKafkaProducer,
                         todo: Sequence[tuple[int, list[_Message]]]
                         ) -> tuple[list[tuple[int, list[_Message]]], list[asyncio.Future[Any]]]:
        """Give the producer every record batch; each with its future, in order."""
        sent: list[tuple[int, list[_Message]]] = []
        pending: list[asyncio.Future[Any]] = []
        try:
            # One record batch (one future) per partition and ~max_batch_size bytes, not one
            # future per event: per-event send() and its futures were a hot spot in profiles.
            for partition, messages in todo:
                for builder, packed in self._record_batches(producer, messages):
                    pending.append(await producer.send_batch(builder, self._topic,
                                                             partition=partition))
                    sent.append((partition, packed))
        except Exception as exc:  # KafkaError mostly; anything else must not leak futures
            await self._abandon(pending)
            raise to_sink_error(exc) from exc
        return sent, pending

    async def _by_partition(self, producer: AIOKafkaProducer, batch: Sequence[SignedEvent]
                            ) -> dict[int, list[_Message]]:
        """The batch's messages grouped by the partition the producer's partitioner picks
        for their key, as send() would, in order within each partition."""
        await producer.partitions_for(self._topic)  # metadata first, as send() does
        grouped: dict[int, list[_Message]] = {}
        # One partition lookup per distinct key in the batch (agents repeat): the pure-Python
        # murmur2 per event was ~10% of the daemon's time. Keyless events are spread by the
        # partitioner, so they are not cached.
        by_key: dict[bytes, int] = {}
        for event in batch:
            value, headers = self._message(event)
            key = event.partition_key.encode("utf-8") if event.partition_key else None
            partition = by_key.get(key) if key is not None else None
            if partition is None:
                # aiokafka has no public "which partition for this key"; _partition is what
                # send() itself calls (configured partitioner, available partitions).
                partition = producer._partition(self._topic, None, key, value, key, value)
                if key is not None:
                    by_key[key] = partition
            grouped.setdefault(partition, []).append((key, value, headers))
        return grouped

    @staticmethod
    def _record_batches(producer: AIOKafkaProducer, messages: Sequence[_Message]
                        ) -> list[tuple[Any, list[_Message]]]:
        """``messages`` packed into record batches of at most the producer's batch size,
        each with the messages it holds."""
        batches: list[tuple[Any, list[_Message]]] = [(producer.create_batch(), [])]
        for message in messages:
            key, value, headers = message
            builder, packed = batches[-1]
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                builder, packed = producer.create_batch(), []  # full: the next one takes it
                builder.append(timestamp=None, key=key, value=value, headers=headers)
                batches.append((builder, packed))
            packed.append(message)
        return batches

    async def _wait_acks(self, pending: Sequence[asyncio.Future[Any]]) -> list[Any]:
        """Every future's outcome (a result or an exception), in order.

        An idempotent aiokafka producer never expires a batch: while the broker is down it
        retries forever, so the sink bounds the wait itself. Records still in flight at the
        deadline may land later; the retry then duplicates them (consumers dedupe on id)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                # All, not the first failure: every future's outcome must be observed.
                outcomes = await asyncio.gather(*pending, return_exceptions=True)
        except TimeoutError as exc:
            for future in pending:
                future.add_done_callback(_observe)
            raise SinkError(f"kafka: no acknowledgement within {self._timeout_s:g}s",
                            retriable=True, reason="kafka_timeout_error") from exc
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
        return outcomes

    async def _abandon(self, pending: Sequence[asyncio.Future[Any]]) -> None:
        """After a failed send_batch: give the batches already handed over ``timeout_s`` to
        settle (they never do while the broker is down), then leave their outcomes to
        ``_observe`` so none is logged as never retrieved."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                await asyncio.gather(*pending, return_exceptions=True)
        for future in pending:
            future.add_done_callback(_observe)

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
            await _stop_within(producer, self._timeout_s)

    def _message(self, event: SignedEvent) -> tuple[bytes | None, Headers]:
        if self._content_mode == "binary":
            return binary_message(event.attributes)
        return event.body, [("content-type", STRUCTURED_CONTENT_TYPE)]

    async def aclose(self) -> None:
        """Flush and stop the producer, within ``timeout_s``; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        async with self._start_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_within(producer, self._timeout_s)


def _triage(sent: Sequence[tuple[int, list[_Message]]], outcomes: Sequence[Any]
            ) -> tuple[list[tuple[int, list[_Message]]], set[int], BaseException | None]:
    """From a round's outcomes: what to send again (the halves of each refused batch of
    several records, and the batches behind a refusal's sequence gap), the partitions with
    a refusal, and the first failure that ends the send."""
    again: list[tuple[int, list[_Message]]] = []
    refused: set[int] = set()
    failure: BaseException | None = None
    for (partition, packed), outcome in zip(sent, outcomes, strict=True):
        if isinstance(outcome, MessageSizeTooLargeError):
            refused.add(partition)
            if len(packed) > 1:
                middle = len(packed) // 2
                again += [(partition, packed[:middle]), (partition, packed[middle:])]
            else:
                failure = failure or outcome  # one record over the limit: nothing to split
        elif isinstance(outcome, _PRODUCER_STATE_ERRORS) and partition in refused:
            again.append((partition, packed))
        elif isinstance(outcome, Exception):
            failure = failure or outcome
    return again, refused, failure


def _observe(future: asyncio.Future[Any]) -> None:
    """Retrieve a late outcome so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


async def _stop_within(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """producer.stop() flushes first, which never ends while an idempotent producer retries
    a dead broker; past the deadline, end its sender task (aiokafka has no public way) so
    stop() goes on to close the connections. Unflushed records were already reported as
    failed by send()."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    if not done:
        sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        if sender_task is not None:
            sender_task.cancel()
    await stopping

"""The sender's Kafka producer: idempotent (acks=all), started on demand, replaced when it
fails.

Starting is retried with a growing wait while the broker is unreachable, so a publisher can
be built, and accept events, before the broker is up. After any failed send the producer is
replaced: an idempotent producer whose sequence numbers are out of step with the broker
(after a broker restart: `OutOfOrderSequenceNumber`, an invalid epoch) fails every later
send, and a new producer gets a new producer id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.publisher.metrics import PublisherStats

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
_FIRST_BACKOFF_S = 0.1


def backoff_s(failures: int) -> float:
    """The wait after `failures` consecutive failures."""
    return min(MAX_BACKOFF_S, _FIRST_BACKOFF_S * float(2 ** min(failures, 16)))


async def stopped_within(stopping: asyncio.Event, delay_s: float) -> bool:
    """Wait `delay_s`, or less when `stopping` is set; True when it is."""
    try:
        async with asyncio.timeout(delay_s):
            await stopping.wait()
    except TimeoutError:
        return False
    return True


class ProducerLink:
    """Holds at most one started producer (see the module docstring)."""

    def __init__(self, options: Mapping[str, Any], stats: PublisherStats,
                 stop_timeout_s: float = 5.0,
                 producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer) -> None:
        """`options`: aiokafka producer keywords (bootstrap_servers, TLS, SASL…);
        `producer_factory` builds a producer from them (a fake one in unit tests)."""
        self._options = {**options, "acks": "all", "enable_idempotence": True}
        self._factory = producer_factory
        self._stats = stats
        self._stop_timeout_s = stop_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._failures = 0

    async def get(self, stopping: asyncio.Event) -> AIOKafkaProducer | None:
        """The started producer; None once `stopping` is set."""
        while self._producer is None:
            if stopping.is_set():
                return None
            producer = self._factory(**self._options)
            try:
                await producer.start()
            except asyncio.CancelledError:
                await _stop_quietly(producer)  # shut down while connecting: close it anyway
                raise
            except Exception as exc:
                await _stop_quietly(producer)  # a half-started producer holds sockets
                self._failures += 1
                delay = backoff_s(self._failures)
                log.warning("publisher: cannot connect to Kafka (%s: %s); events stay in "
                            "the spool; trying again in %.1fs", type(exc).__name__, exc, delay)
                await stopped_within(stopping, delay)
                continue
            if self._failures:
                log.info("publisher: connected to Kafka after %d failed attempts",
                         self._failures)
            self._failures = 0
            self._producer = producer
        return self._producer

    async def replace(self, reason: str) -> None:
        """Drop the producer (the next `get` starts a new one)."""
        producer, self._producer = self._producer, None
        self._stats.count_replaced(reason)
        if producer is not None:
            await stop_within(producer, self._stop_timeout_s)

    async def close(self, timeout_s: float) -> None:
        """Stop the producer within `timeout_s`; callable twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_within(producer, timeout_s)


async def stop_within(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """producer.stop() flushes first, which never ends while an idempotent producer retries
    a dead broker; past the deadline, end its sender task (aiokafka has no public way) so
    stop() goes on to close the connections. What it did not flush is still in the spool."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=max(0.0, timeout_s))
    if not done:
        sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        if sender_task is not None:
            sender_task.cancel()
    try:
        await stopping
    except Exception as exc:  # stopping a broken producer: its records are in the spool
        log.warning("publisher: Kafka producer stopped with %s: %s", type(exc).__name__, exc)


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception as exc:
        log.debug("publisher: stopping a producer that never started: %s", exc)

"""Bounded waits on an aiokafka producer: for its acknowledgements, and for its stop.

An idempotent aiokafka producer never expires a batch: while the broker is down it retries
forever, so neither its futures nor its ``stop()`` end on their own; the sink bounds both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from sinks.base import SinkError

__all__ = ["abandon", "stop_within", "wait_acks"]


async def wait_acks(pending: Sequence[asyncio.Future[Any]], timeout_s: float) -> list[Any]:
    """Every future's outcome (a result or an exception), in order, within ``timeout_s``.

    Records still in flight at the deadline may land later; the retry then duplicates them
    (consumers dedupe on id)."""
    try:
        async with asyncio.timeout(timeout_s):
            # All, not the first failure: every future's outcome must be observed.
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
    except TimeoutError as exc:
        _observe_all(pending)
        raise SinkError(f"kafka: no acknowledgement within {timeout_s:g}s",
                        retriable=True, reason="kafka_timeout_error") from exc
    for outcome in outcomes:
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
    return outcomes


async def abandon(pending: Sequence[asyncio.Future[Any]], timeout_s: float) -> None:
    """After a failed send_batch: give the batches already handed over ``timeout_s`` to
    settle (they never do while the broker is down), then leave their outcomes to be
    observed late so none is logged as never retrieved."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*pending, return_exceptions=True)
    _observe_all(pending)


async def stop_within(producer: AIOKafkaProducer, timeout_s: float) -> None:
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


def _observe_all(pending: Sequence[asyncio.Future[Any]]) -> None:
    for future in pending:
        future.add_done_callback(_observe)


def _observe(future: asyncio.Future[Any]) -> None:
    """Retrieve a late outcome so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()

"""The Kafka sink in exactly-once mode: each event becomes its Kafka message at once and is
handed to the transaction of its input partition (``stage``, given by the composition
root), which writes it together with the input offset past it. ``send`` returns once the
events are staged, not written; they are counted delivered when their transaction commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiokafka.record.default_records import (  # type: ignore[import-untyped,unused-ignore]
    DefaultRecordBatchBuilder,
)

from pipeline.model import SignedEvent
from sinks.base import SinkError, closed_error
from sinks.kafka.messages import ContentMode, Message, to_message

__all__ = ["StagedMessage", "StagingKafkaSink"]

StagedMessage = tuple[SignedEvent, Message]


async def _request_limit() -> int:
    return 1_048_576 - 512  # aiokafka's default max_request_size, less framing room


class StagingKafkaSink:
    """Stages each batch for the transactions that write it to ``topic``."""

    def __init__(self, topic: str, stage: Callable[[str, Sequence[StagedMessage]], None], *,
                 room: Callable[[], Awaitable[None]] | None = None,
                 content_mode: ContentMode = "structured",
                 max_record_bytes: Callable[[], Awaitable[int]] = _request_limit,
                 name: str = "kafka") -> None:
        """``room``: waited for before staging (the transactions' backlog is bounded);
        ``max_record_bytes``: the largest record ``topic`` takes, measured as a record
        batch of it alone (the composition root learns it from the cluster)."""
        self.name = name
        self._room = room
        self._topic = topic
        self._stage = stage
        self._content_mode = content_mode
        self._max_record_bytes = max_record_bytes
        self._closed = False

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Stage ``batch``. An event whose record is over the topic's limit is not staged (a
        transaction holding it could never commit): the others are, and the SinkError
        names it alone (``only``), non-retriable, so it is failed and dead-lettered."""
        if self._closed:
            raise closed_error(self.name)
        limit = await self._max_record_bytes()
        staged: list[StagedMessage] = []
        refused: list[tuple[SignedEvent, int]] = []
        for event in batch:
            message = to_message(event, self._content_mode)
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(*message)
            if size > limit:
                refused.append((event, size))
            else:
                staged.append((event, message))
        if self._room is not None and staged:
            await self._room()
        if staged:
            self._stage(self._topic, staged)
        if refused:
            event, size = refused[0]
            raise SinkError(f"kafka: event {event.id} is a {size}-byte record, over the "
                            f"{limit} bytes topic {self._topic} takes"
                            + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""),
                            retriable=False, reason="message_size_too_large_error",
                            only=[event for event, _ in refused])

    async def aclose(self) -> None:
        """Nothing to flush: the transactions write what is staged; safe to call twice."""
        self._closed = True

"""The Kafka sink in exactly-once mode: each event becomes its Kafka message at once and is
handed to the transaction of its input partition (``stage``, given by the composition
root), which writes it together with the input offset past it. ``send`` returns once the
events are staged, not written; they are counted delivered when their transaction commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pipeline.model import SignedEvent
from sinks.base import closed_error
from sinks.kafka.messages import ContentMode, Message
from sinks.kafka.sizes import over_limit, split_oversized

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
        staged, oversized = split_oversized(batch, self._content_mode, limit)
        if self._room is not None and staged:
            await self._room()
        if staged:
            self._stage(self._topic, staged)
        if oversized:
            raise over_limit(oversized, limit, self._topic)

    async def aclose(self) -> None:
        """Nothing to flush: the transactions write what is staged; safe to call twice."""
        self._closed = True

"""The Kafka sink in exactly-once mode: each event becomes its Kafka message at once and is
handed to the transaction of its input partition (``stage``, given by the composition
root), which writes it together with the input offset past it. ``send`` returns once the
events are staged, not written; they are counted delivered when their transaction commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pipeline.model import SignedEvent
from sinks.base import SinkError, closed_error
from sinks.kafka.messages import ContentMode, Message, to_message

__all__ = ["StagedMessage", "StagingKafkaSink"]

StagedMessage = tuple[SignedEvent, Message]
# Record overhead on top of key, value and headers (batch and record headers), so a staged
# record always fits the producer's max_request_size.
_RECORD_OVERHEAD = 512


class StagingKafkaSink:
    """Stages each batch for the transactions that write it to ``topic``."""

    def __init__(self, topic: str, stage: Callable[[str, Sequence[StagedMessage]], None], *,
                 room: Callable[[], Awaitable[None]] | None = None,
                 content_mode: ContentMode = "structured", max_record_bytes: int = 1_048_576,
                 name: str = "kafka") -> None:
        """``room``: waited for before staging (the transactions' backlog is bounded)."""
        self.name = name
        self._room = room
        self._topic = topic
        self._stage = stage
        self._content_mode = content_mode
        self._max_record_bytes = max_record_bytes
        self._closed = False

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Stage ``batch``; a record too large for one request fails the batch (before any
        of it is staged: a transaction holding it could never commit)."""
        if self._closed:
            raise closed_error(self.name)
        staged = [(event, to_message(event, self._content_mode)) for event in batch]
        for event, (key, value, headers) in staged:
            size = len(key or b"") + len(value) + sum(len(n) + len(v) for n, v in headers)
            if size + _RECORD_OVERHEAD > self._max_record_bytes:
                raise SinkError(f"kafka: event {event.id} is {size} bytes, over the "
                                f"{self._max_record_bytes}-byte request limit",
                                retriable=False, reason="message_size_too_large_error")
        if self._room is not None:
            await self._room()
        self._stage(self._topic, staged)

    async def aclose(self) -> None:
        """Nothing to flush: the transactions write what is staged; safe to call twice."""
        self._closed = True

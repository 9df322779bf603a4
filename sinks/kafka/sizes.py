"""Records too large for a topic, in both Kafka sinks: each event as its message, measured as
the producer and the broker measure a record (a record batch of it alone), those over the
topic's limit set apart before sending, and the SinkError that fails the refused events
alone (``only``), the others delivered."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.record.default_records import (  # type: ignore[import-untyped,unused-ignore]
    DefaultRecordBatchBuilder,
)

from pipeline.model import SignedEvent
from sinks.base import SinkError
from sinks.kafka.messages import ContentMode, Message, to_message

__all__ = ["TOO_LARGE_REASON", "Entry", "Oversized", "over_limit", "record_size",
           "split_oversized", "too_large_error"]

Entry = tuple[SignedEvent, Message]  # an event and its Kafka message
Oversized = tuple[SignedEvent, int]  # an event and the size of its record
TOO_LARGE_REASON = "message_size_too_large_error"


def split_oversized(batch: Sequence[SignedEvent], content_mode: ContentMode,
                    limit: int | None) -> tuple[list[Entry], list[Oversized]]:
    """``batch`` as messages, in order, less the events whose record is over ``limit``
    (none when the limit is not known), which come second with their size."""
    entries: list[Entry] = []
    oversized: list[Oversized] = []
    for event in batch:
        message = to_message(event, content_mode)
        size = 0 if limit is None else record_size(message)
        if limit is not None and size > limit:
            oversized.append((event, size))
        else:
            entries.append((event, message))
    return entries, oversized


def record_size(message: Message) -> int:
    """The bytes of a record batch holding ``message`` alone, uncompressed."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(*message))


def too_large_error(refused: Sequence[SignedEvent], why: str) -> SinkError:
    """The non-retriable SinkError for ``refused`` alone; ``why`` completes "event X is"
    for the first of them."""
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return SinkError(f"kafka: event {refused[0].id} is {why}{more}", retriable=False,
                     reason=TOO_LARGE_REASON, only=list(refused))


def over_limit(oversized: Sequence[Oversized], limit: int, topic: str, *,
               also: Sequence[SignedEvent] = ()) -> SinkError:
    """The SinkError for events set apart before sending (``split_oversized``), and ``also``
    those the broker refused all the same."""
    size = oversized[0][1]
    return too_large_error([event for event, _ in oversized] + list(also),
                           f"a {size}-byte record, over the {limit} bytes topic {topic} takes")

"""Staged records a transaction's broker refused as too large, set apart so that the rest
of their partition commits.

The Kafka sink refuses at staging an event over the output topic's limit, and dead-letter
entries are sized to theirs; this is for a limit not known then (unreadable, or lowered
since). The broker refuses a whole record batch, so a refusal names a record only when it
was the batch's only one: the records refused together are sent each in a batch of their
own in the partition's next transaction (`Refusals._alone`), which names the culprit. A
refused event is counted failed (`message_size_too_large_error`) and its dead-letter
entry staged in its place; a refused entry is replaced by its summary. A summary refused
too is a configuration error: logged, and retried until the topic is fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.delivery.ledger import Ledger
from pipeline.exactly_once.batches import Sent, send_batches
from pipeline.exactly_once.outbox import Outbox, Staged, whole_event
from pipeline.kafka_limits import TOO_LARGE, TOO_LARGE_REASON
from pipeline.model import SignedEvent

log = logging.getLogger(__name__)

SUMMARY_REFUSED_LOG_EVERY_S = 60.0


class RefusedRecords(Protocol):
    """What takes the place of a refused record: the dead-letter store's staged entries."""

    def failed_event(self, sink: str, event: SignedEvent, error: str) -> Staged:
        """The dead-letter entry of `sink`'s refused `event`."""
        ...

    def summary(self, item: Staged) -> Staged | None:
        """A refused entry's summary; None when `item` is the summary already."""
        ...


class Refusals:
    """Per partition, the records to send alone; the refused ones set apart from `outbox`
    (counted in `ledger`, replaced from `dead_letters`)."""

    def __init__(self, outbox: Outbox, ledger: Ledger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._outbox = outbox
        self._ledger = ledger
        self.dead_letters: RefusedRecords | None = None  # set once the store is built
        self._alone: dict[TopicPartition, set[int]] = {}  # ids of staged (outbox) items
        self._clock = clock
        self._summary_logged: float | None = None

    async def send(self, producer: AIOKafkaProducer, tp: TopicPartition,
                   items: Sequence[Staged], sent: list[Sent]) -> None:
        """`items` sent in `tp`'s transaction in record batches (`send_batches`), those
        refused with others before each in a batch of its own."""
        await send_batches(producer, items, self._alone.get(tp, ()), sent)

    def set_apart(self, refused: Sequence[tuple[Staged, BaseException]]) -> None:
        """Records refused as too large leave the outbox for something smaller in their
        place (`replacement`), so the rest of their partition commits without them."""
        for item, exc in refused:
            new = replacement(item, exc, self.dead_letters) if self.dead_letters else None
            if new is None:
                self._summary_refused(item)
                continue
            self._outbox.remove(item)
            if item.event is not None and item.sink is not None:
                self._ledger.failed(item.sink, [item.event], TOO_LARGE_REASON)
            self._outbox.stage([new])

    def judge(self, tp: TopicPartition, sent: Sequence[Sent], outcomes: Sequence[Any]
              ) -> list[tuple[Staged, BaseException]]:
        """From a failed transaction's outcomes (one per batch `sent`): the items refused as
        too large in a batch of their own. The others refused are sent alone next time."""
        known: list[tuple[Staged, BaseException]] = []
        alone = self._alone.setdefault(tp, set())
        for (_, items), outcome in zip(sent, outcomes, strict=True):
            if not isinstance(outcome, TOO_LARGE):
                continue
            if len(items) == 1:
                known.append((items[0], outcome))
                alone.discard(id(items[0]))
            else:
                alone.update(id(item) for item in items)
        return known

    def clear(self, tp: TopicPartition) -> None:
        """`tp` committed or was given up: its staged items are gone."""
        self._alone.pop(tp, None)

    def _summary_refused(self, item: Staged) -> None:
        """An entry's summary refused: the topic is misconfigured (once a minute)."""
        now = self._clock()
        if self._summary_logged is None or now - self._summary_logged >= \
                SUMMARY_REFUSED_LOG_EVERY_S:
            self._summary_logged = now
            log.error("topic %s refuses even a dead-letter entry's summary (%d bytes): its "
                      "partition's transactions fail until max.message.bytes is raised",
                      item.topic, len(item.value))


def replacement(item: Staged, exc: BaseException, dead_letters: RefusedRecords
                ) -> Staged | None:
    """What to stage in place of `item`, refused as too large: an event's dead-letter
    entry, or an entry's summary; None when nothing smaller exists."""
    if item.event is not None and item.sink is not None:
        error = f"kafka: {type(exc).__name__}: {exc} (topic {item.topic})"
        log.error("topic %s refused event %s as too large (%d bytes): failed, dead-lettered",
                  item.topic, item.event.id, len(item.value))
        return dead_letters.failed_event(item.sink, whole_event(item.event), error)
    log.warning("topic %s refused a dead-letter entry as too large; writing its summary",
                item.topic)
    return dead_letters.summary(item)

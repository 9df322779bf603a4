"""Events → spool entries: each event serialized and checked on its own, then the batch's
good events appended in one write. Every refusal is logged and counted; thread-safe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.publisher.events import EncodedEvent, EventRefused, encode_event
from pipeline.publisher.metrics import PublisherStats
from pipeline.publisher.spool import Spool
from pipeline.publisher.spool_files import SpoolClosed, SpoolError

log = logging.getLogger(__name__)


class EventSpooler:
    """Accepts events into a spool and wakes the sender."""

    def __init__(self, spool: Spool, stats: PublisherStats, max_event_bytes: int,
                 wake: Callable[[], None]) -> None:
        self._spool = spool
        self._stats = stats
        self._max_event_bytes = max_event_bytes
        self._wake = wake

    def spool(self, events: Iterable[Any]) -> list[str | None]:
        """Per event, None once it is in the spool, else the reason it was refused."""
        encoded: list[EncodedEvent] = []
        outcomes: list[str | None] = []
        for event in events:
            try:
                encoded.append(encode_event(event, self._max_event_bytes))
            except EventRefused as refused:
                log.warning("publisher: event %s refused (%s): %s", refused.event_id,
                            refused.reason, refused.detail)
                self._stats.count_refused(refused.reason, 1)
                outcomes.append(refused.reason)
                continue
            outcomes.append(None)
        if encoded and (failure := self._append(encoded)) is not None:
            outcomes = [failure if outcome is None else outcome for outcome in outcomes]
        return outcomes

    def _append(self, encoded: list[EncodedEvent]) -> str | None:
        try:
            accepted = self._spool.append([(event.key, event.value) for event in encoded])
        except (OSError, SpoolError) as exc:
            reason = "spool_closed" if isinstance(exc, SpoolClosed) else "spool_write_error"
            log.error("publisher: %d events refused (%s): spool %s: %s", len(encoded), reason,
                      self._spool.directory, getattr(exc, "strerror", None) or exc)
            self._stats.count_refused(reason, len(encoded))
            return reason
        if not accepted:
            counts = self._spool.counts()
            log.warning("publisher: spool %s is full (%d bytes waiting for the broker): %d "
                        "events refused (spool_full)", self._spool.directory, counts.bytes,
                        len(encoded))
            self._stats.count_refused("spool_full", len(encoded))
            return "spool_full"
        self._wake()
        return None

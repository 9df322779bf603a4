"""Back-pressure: whether the pipeline can take more records now."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger

log = logging.getLogger(__name__)


class Backlog(Protocol):
    """The dead-letter writer, as far as back-pressure goes."""

    @property
    def pending(self) -> int: ...

    @property
    def full(self) -> str | None: ...

    def has_room(self) -> bool: ...

    async def wait_for_room(self) -> None: ...


class PipelineRoom:
    """Room when every sink's queue has some and the dead-letter backlog is under its
    bound; each pause is counted in the ledger with its cause."""

    def __init__(self, dispatchers: Sequence[SinkDispatcher], deadletters: Backlog,
                 ledger: Ledger) -> None:
        self._dispatchers = dispatchers
        self._deadletters = deadletters
        self._ledger = ledger

    def available(self) -> bool:
        return self._deadletters.has_room() and all(d.has_room() for d in self._dispatchers)

    async def wait(self) -> None:
        # Only what is full is waited for: a sink that drops when full always has room,
        # though its queue may be full.
        for dispatcher in self._dispatchers:
            if not dispatcher.has_room():
                await dispatcher.wait_for_room()
        if not self._deadletters.has_room():
            await self._deadletters.wait_for_room()

    def note_pause(self) -> None:
        cause = ("sink_queue_full" if self._deadletters.has_room()
                 else "deadletter_full" if self._deadletters.full is not None
                 else "deadletter_backlog")
        self._ledger.paused(cause)
        log.debug("reading paused: %s", cause.replace("_", " "), extra={"fields": {
            "cause": cause, "deadletter_pending": self._deadletters.pending,
            "queued": {d.name: d.queued for d in self._dispatchers}}})

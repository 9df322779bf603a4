"""The Sink protocol and the one error type a sink raises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pipeline.model import SignedEvent


class SinkError(Exception):
    """A batch could not be delivered.

    `retriable` says whether sending the same batch again can succeed (a timeout, a broker
    that is restarting) or not (a closed pipe, a record the destination refuses).
    `reason` is a short, low-cardinality label used in metrics and dead-letter entries.
    `only`: the events that failed when not the whole batch did (a sink that refuses some
    records before sending and delivers the others); None means every event of the batch.
    """

    def __init__(self, message: str, *, retriable: bool, reason: str = "send_error",
                 only: Sequence[SignedEvent] | None = None) -> None:
        if only is not None and retriable:
            raise ValueError("a SinkError for some events only is not retriable: "
                             "the others were delivered")
        super().__init__(message)
        self.retriable = retriable
        self.reason = reason
        self.only = only


def closed_error(sink: str) -> SinkError:
    """What a sink raises when it is sent to after ``aclose()``."""
    return SinkError(f"{sink} sink is closed", retriable=False, reason="closed")


@runtime_checkable
class Sink(Protocol):
    """Sends batches of signed events to one destination."""

    name: str

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Deliver every event of `batch`, or raise `SinkError` (the whole batch failed, or
        the events of its `only`, the others delivered)."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources; safe to call twice."""
        ...

"""What every dead-letter store does: the daemon writes entries to it; `govpipe replay`
reads them back and marks the ones it put back on the input, so they go back once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.deadletter.entry import DeadLetterEntry


class DeadLetterError(Exception):
    """A dead-letter write failed; the entries are still pending."""


class DeadLetterRefused(DeadLetterError):
    """The store refuses an entry even as its summary (a Kafka topic whose
    max.message.bytes is below ~1 KiB): a configuration error; the entries are pending."""


class DeadLetterFull(DeadLetterError):
    """The store is at its size cap: the first `written` entries of the batch were written
    (durably), the rest were not and are still pending."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """Something stored that could not be read as JSON: where it is and what is wrong,
    never what it holds (it may be the rejected record)."""

    where: str
    what: str
    salvaged: bool = False  # the complete entry it held was read all the same

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(slots=True)
class StoredEntries:
    """What a store holds, read once."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    replayed: set[str] = field(default_factory=set)  # ids of the entries marked replayed
    problems: list[ReadProblem] = field(default_factory=list)  # unreadable entries
    # Unreadable markers: a lost marker only means its entry may go back twice.
    marker_problems: list[ReadProblem] = field(default_factory=list)


class DeadLetterStore(Protocol):
    """Where dead-letter entries are kept; `write` returns only when they are durable."""

    description: str

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        """Return once every one of `entries` is durable, or raise DeadLetterError: the
        caller keeps them and writes them again (an entry may then be stored twice,
        which replay puts back once, but never only in part). DeadLetterFull: a store
        with a size cap took only the first `written` entries."""
        ...

    def check(self) -> str | None:
        """None when entries can be written, else why not."""
        ...

    def recover(self) -> list[str]:
        """Repair what a crash left half-written (once, at start-up, before any write):
        one description per problem found, each also logged at ERROR."""
        ...

    async def read(self) -> StoredEntries:
        """Every entry stored so far, the ids marked replayed, and what could not be read."""
        ...

    async def mark_replayed(self, entry_ids: Sequence[str]) -> None:
        """Record `entry_ids` as put back on the input; a later `read` lists them in
        `replayed`."""
        ...

    async def aclose(self) -> None: ...

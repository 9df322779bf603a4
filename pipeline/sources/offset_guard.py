"""Checks that what the consumer hands over continues, per partition, where it left off.

Every record the Kafka consumer returns must be handed to the pipeline (and so tracked)
or rewound before anyone can commit past it. This guard is the second line behind that
rule: per partition it knows the next offset it expects (the position the partition was
resumed at, then one past the last record handed on) and looks at the first offset of
each fetch.

- Lower, inside what this assignment handed on: the consumer went back (a seek); those
  records are skipped, so no record is tracked twice in one assignment.
- Lower than where this assignment started: the consumer was reset backwards (an offset
  out of range, reset to the earliest): nothing is skipped; the partition starts afresh
  from there (`Admission.restart`), as after a new assignment.
- Higher: offsets were skipped. Transaction markers, aborted transactions and compacted
  records legitimately leave such holes, so the guard does not trust the fetch: it asks
  for a rewind to the expected offset and looks again. If the re-read starts at the same
  offset, the hole holds no records. If it starts earlier, records were consumed behind
  the pipeline's back: a bug, reported through `on_gap`, and healed by the re-read
  itself (nothing past the hole was handed on, so nothing was committed past it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition

GapReport = Callable[[TopicPartition, int, int], None]


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with one partition's fetched records."""

    skip: int  # hand on records[skip:]; len(records) hands on nothing
    rewind_to: int | None = None  # seek the partition here before the next fetch
    restart: bool = False  # read from before this assignment's start: begin a new one


class OffsetGuard:
    """Per partition: the next offset expected, and a hole being re-read."""

    def __init__(self, on_gap: GapReport) -> None:
        self._on_gap = on_gap
        self._expected: dict[TopicPartition, int] = {}
        self._start: dict[TopicPartition, int] = {}  # where this assignment began reading
        self._suspect: dict[TopicPartition, tuple[int, int]] = {}  # (expected, first seen)

    def resume(self, tp: TopicPartition, position: int) -> None:
        """The partition was assigned and will be read from `position` (unless records of
        it were already handed on, which then say where reading is)."""
        self._expected.setdefault(tp, position)
        self._start.setdefault(tp, position)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions were revoked; a later assignment starts afresh."""
        for tp in partitions:
            self._expected.pop(tp, None)
            self._start.pop(tp, None)
            self._suspect.pop(tp, None)

    def expected(self, tp: TopicPartition) -> int | None:
        return self._expected.get(tp)

    def admit(self, tp: TopicPartition, offsets: Sequence[int]) -> Admission:
        """Decide about the records at `offsets` (ascending, non-empty) of one fetch."""
        expected = self._expected.get(tp)
        restart = expected is not None and offsets[0] < self._start[tp]
        if restart:
            self.forget([tp])
        if expected is None or restart:  # an unknown position, or afresh: the fetch says
            self._start[tp] = offsets[0]
            self._expected[tp] = offsets[-1] + 1
            return Admission(0, restart=restart)
        skip = bisect.bisect_left(offsets, expected) if offsets[0] < expected else 0
        if skip == len(offsets):
            return Admission(skip)
        first = offsets[skip]
        suspect = self._suspect.pop(tp, None)
        if suspect is not None and suspect[0] != expected:
            suspect = None
        if first > expected and suspect is None:
            self._suspect[tp] = (expected, first)
            return Admission(len(offsets), rewind_to=expected)
        if suspect is not None and first < suspect[1]:
            self._on_gap(tp, expected, suspect[1])
        self._expected[tp] = offsets[-1] + 1
        return Admission(skip)

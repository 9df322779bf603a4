"""The offset guard: what is handed on continues where the last hand-over ended."""

from __future__ import annotations

from aiokafka import TopicPartition

from pipeline.sources.offset_guard import Admission, OffsetGuard

TP = TopicPartition("t", 0)


def guard_and_gaps() -> tuple[OffsetGuard, list[tuple[int, int]]]:
    gaps: list[tuple[int, int]] = []
    return OffsetGuard(lambda tp, start, end: gaps.append((start, end))), gaps


def test_contiguous_fetches_are_handed_on_whole() -> None:
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 10)
    assert guard.admit(TP, [10, 11, 12]) == Admission(0)
    assert guard.admit(TP, [13, 14]) == Admission(0)
    assert guard.expected(TP) == 15
    assert gaps == []


def test_a_hole_is_read_again_before_anything_past_it_is_handed_on() -> None:
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 10)
    assert guard.admit(TP, [20, 21]) == Admission(2, rewind_to=10)
    assert guard.expected(TP) == 10  # nothing past the hole was handed on
    # The re-read finds the records the first read skipped: a gap, reported once.
    assert guard.admit(TP, [10, 11, 12]) == Admission(0)
    assert gaps == [(10, 20)]
    assert guard.admit(TP, [13]) == Admission(0)
    assert gaps == [(10, 20)]


def test_a_hole_without_records_is_accepted_after_one_look() -> None:
    # Transaction markers and compaction leave holes with nothing to read in them.
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 10)
    assert guard.admit(TP, [12, 13]) == Admission(2, rewind_to=10)
    assert guard.admit(TP, [12, 13]) == Admission(0)
    assert guard.expected(TP) == 14
    assert gaps == []


def test_records_already_handed_on_are_not_handed_on_twice() -> None:
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 0)
    guard.admit(TP, [0, 1, 2, 3])
    assert guard.admit(TP, [2, 3, 4, 5]) == Admission(2)
    assert guard.admit(TP, [1, 2]) == Admission(2)
    assert guard.expected(TP) == 6
    assert gaps == []


def test_an_unknown_resume_position_is_learnt_from_the_first_fetch() -> None:
    guard, gaps = guard_and_gaps()
    assert guard.admit(TP, [40, 41]) == Admission(0)
    assert guard.admit(TP, [45]) == Admission(1, rewind_to=42)
    assert gaps == []


def test_records_handed_on_before_the_resume_position_is_known_win() -> None:
    # The assignment callback may learn the position after the first fetch came back.
    guard, _ = guard_and_gaps()
    guard.admit(TP, [5, 6])
    guard.resume(TP, 5)
    assert guard.expected(TP) == 7


def test_a_revoked_partition_starts_afresh() -> None:
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 0)
    guard.admit(TP, [5])  # suspect hole [0, 5)
    guard.forget([TP])
    guard.resume(TP, 100)
    assert guard.admit(TP, [100]) == Admission(0)
    assert gaps == []


def test_a_reset_before_the_assignment_start_is_read_not_skipped() -> None:
    # Was: records below the expected offset were all taken for ones already handed on,
    # so a reset to an earlier offset (out of range, reset to earliest) dropped them.
    guard, gaps = guard_and_gaps()
    guard.resume(TP, 1000)
    guard.admit(TP, [1000, 1001])
    assert guard.admit(TP, [0, 1, 2]) == Admission(0, restart=True)
    assert guard.expected(TP) == 3
    assert guard.admit(TP, [3]) == Admission(0)
    assert gaps == []

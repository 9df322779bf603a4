"""The publisher's spool: whole entries, acknowledged prefix, torn-tail repair, bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.publisher.frames import HEADER, SpoolEntry, encode
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.spool import Position, Spool, SpoolError


class Clock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def items(count: int, prefix: str = "e") -> list[tuple[bytes, bytes]]:
    return [(b"agent", f'{{"event_id":"{prefix}-{n}"}}'.encode()) for n in range(count)]


def open_spool(directory: Path, clock: Clock | None = None, **options: object) -> Spool:
    return Spool(SpoolOptions(directory, **options), clock or Clock())  # type: ignore[arg-type]


def read_all(spool: Spool) -> list[bytes]:
    values, position = [], spool.start
    while True:
        entries, position = spool.read(position, 1000)
        if not entries:
            return values
        values += [entry.value for entry in entries]


def test_appended_entries_read_back_in_order_until_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    assert spool.append(items(3))
    entries, after = spool.read(spool.start, 2)
    assert [e.value for e in entries] == [v for _, v in items(2)]
    spool.acknowledge(after, entries)
    assert read_all(spool) == [items(3)[2][1]]
    counts = spool.counts()
    assert (counts.spooled, counts.acknowledged, counts.entries) == (3, 2, 1)
    spool.close()


def test_a_reopened_spool_holds_exactly_the_unacknowledged_entries(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(items(5))
    entries, after = spool.read(spool.start, 3)
    spool.acknowledge(after, entries)
    spool.close()
    again = open_spool(tmp_path)
    assert read_all(again) == [v for _, v in items(5)[3:]]
    counts = again.counts()
    assert (counts.recovered, counts.entries) == (2, 2)
    again.close()


def test_a_torn_tail_is_cut_off_and_the_whole_entries_before_it_kept(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(items(2))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    torn = encode(SpoolEntry(b"agent", b'{"event_id":"torn"}', 1))[:-3]
    with segment.open("ab") as file:
        file.write(torn)
    again = open_spool(tmp_path)
    assert read_all(again) == [v for _, v in items(2)]
    again.append(items(1, "after"))
    assert read_all(again) == [v for _, v in items(2) + items(1, "after")]
    again.close()


def test_a_full_spool_refuses_the_whole_batch_and_accepts_again_after_acks(
        tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=400, max_event_bytes=100)
    assert spool.append(items(5))
    assert not spool.append(items(5, "more"))
    assert spool.counts().spooled == 5
    entries, after = spool.read(spool.start, 100)
    spool.acknowledge(after, entries)
    assert spool.append(items(5, "more"))
    spool.close()


def test_segments_roll_and_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=50)  # each batch is more
    for batch in range(4):
        spool.append(items(2, f"b{batch}"))
    assert len(list(tmp_path.glob("*.spool"))) == 4
    values = read_all(spool)
    assert len(values) == 8
    position, acked = spool.start, 0
    while acked < 8:
        entries, position = spool.read(position, 3)
        spool.acknowledge(position, entries)
        acked += len(entries)
    assert len(list(tmp_path.glob("*.spool"))) == 1
    assert spool.counts().entries == 0
    spool.close()
    assert read_all(open_spool(tmp_path)) == []


def test_oldest_unsent_time_follows_the_acknowledged_prefix(tmp_path: Path) -> None:
    clock = Clock(5_000)
    spool = open_spool(tmp_path, clock)
    assert spool.counts().oldest_spooled_at_ms is None
    spool.append(items(1, "first"))
    clock.now_ms = 9_000
    spool.append(items(1, "second"))
    assert spool.counts().oldest_spooled_at_ms == 5_000
    entries, after = spool.read(spool.start, 1)
    spool.acknowledge(after, entries)
    assert spool.counts().oldest_spooled_at_ms == 9_000
    entries, after = spool.read(after, 1)
    spool.acknowledge(after, entries)
    assert spool.counts().oldest_spooled_at_ms is None
    spool.close()


def test_a_second_publisher_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another publisher"):
        open_spool(tmp_path)
    spool.close()
    open_spool(tmp_path).close()


def test_a_failed_write_leaves_no_partial_entry(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spool = open_spool(tmp_path)
    spool.append(items(1))
    real_write = os.write

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        if len(data) > HEADER.size * 3:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        spool.append(items(4, "lost"))
    monkeypatch.undo()
    assert spool.end == Position(spool.end.segment, spool.counts().bytes)
    assert read_all(spool) == [items(1)[0][1]]
    spool.close()


def test_options_are_checked_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be one of"):
        SpoolOptions(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes must be > 0"):
        SpoolOptions(tmp_path, max_bytes=0)


def test_damage_in_an_older_segment_is_kept_aside_and_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Not a torn write (only the newest segment can have one): the bytes after the damage
    # may hold events, so they are kept beside the segment, never silently removed.
    spool = open_spool(tmp_path, segment_bytes=50)
    for batch in range(3):
        spool.append(items(2, f"b{batch}"))
    spool.close()
    first = sorted(tmp_path.glob("*.spool"))[0]
    data = first.read_bytes()
    first.write_bytes(data[:len(data) // 2 + 1] + b"\xff" + data[len(data) // 2 + 2:])
    again = open_spool(tmp_path)
    kept = first.with_name(first.name + ".damaged")
    assert kept.stat().st_size > 0
    assert len(read_all(again)) < 6
    assert any(r.levelname == "ERROR" and kept.name in r.getMessage() for r in caplog.records)
    again.close()

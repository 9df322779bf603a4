"""Choosing what `govpipe replay` puts back, and how an entry becomes a record again."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from pipeline.deadletter.entry import DeadLetterEntry, marker
from pipeline.deadletter.file import MARKER_FILE, FileDeadLetter
from pipeline.deadletter.replay import REPLAYED_HEADER, ReplayFilter, make_plan, to_record
from pipeline.model import Position

POS = Position("events", 0, 7)
GOVPIPE = Path(sys.executable).parent / "govpipe"


def entry(**fields: object) -> dict[str, object]:
    made = DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                           position=POS, value=b"{broken", time="2026-11-25T10:00:00+00:00")
    value: dict[str, object] = orjson.loads(made.to_json())
    value.update(fields)
    return value


def test_source_rejections_come_back_as_their_original_bytes_and_headers() -> None:
    made = DeadLetterEntry(origin="source", reason="bad_signature", error="x", position=POS,
                           value=b"\xff\x00", key=b"agent-1",
                           headers=(("agt-nonce", b"n1"),))
    record = to_record(orjson.loads(made.to_json()))
    assert record is not None
    assert (record.value, record.key) == (b"\xff\x00", b"agent-1")
    assert record.headers == (("agt-nonce", b"n1"), (REPLAYED_HEADER, made.entry_id.encode()))


def test_sink_failures_come_back_as_the_signed_event_keyed_by_partition_key() -> None:
    event = {"id": "e1", "partitionkey": "billing-bot", "agtsignature": "sig"}
    made = DeadLetterEntry(origin="otlp", reason="circuit_open", error="open", position=POS,
                           event=event, sink="otlp")
    record = to_record(orjson.loads(made.to_json()))
    assert record is not None
    assert orjson.loads(record.value) == event
    assert record.key == b"billing-bot"


def test_entry_ids_are_stable_and_distinct() -> None:
    first = DeadLetterEntry(origin="source", reason="r", error="e", position=POS, value=b"a")
    again = DeadLetterEntry(origin="source", reason="r2", error="e2", position=POS, value=b"a",
                            time="later")
    other = DeadLetterEntry(origin="source", reason="r", error="e",
                            position=Position("events", 0, 8), value=b"a")
    assert first.entry_id == again.entry_id != other.entry_id


def test_plan_filters_skips_replayed_and_counts_everything() -> None:
    entries = [entry(id="a"), entry(id="b", reason="too_large"), entry(id="c"),
               entry(id="d", value=None), {"replayed": "x"}]
    plan = make_plan(entries, done={"c"}, selected=ReplayFilter(reason="invalid_json"),
                     again=False)
    assert [r.entry_id for r in plan.records] == ["a"]
    assert (plan.already, plan.not_matching, plan.unusable) == (1, 1, 1)
    again = make_plan(entries, done={"c"}, selected=ReplayFilter(), again=True)
    assert [r.entry_id for r in again.records] == ["a", "b", "c"]


def test_time_window_filter() -> None:
    window = ReplayFilter(since=datetime(2026, 11, 25, 9, tzinfo=UTC),
                          until=datetime(2026, 11, 25, 11, tzinfo=UTC))
    assert window.matches(entry())
    assert not window.matches(entry(time="2026-11-25T12:00:00+00:00"))
    assert not window.matches(entry(time="garbage"))


async def test_file_markers_round_trip(tmp_path: Path) -> None:
    store = FileDeadLetter(tmp_path)
    (tmp_path / "deadletter-2026-11-25.jsonl").write_bytes(
        orjson.dumps(entry(id="a")) + b"\n" + b'{"cut short' )
    assert [e["id"] for e in (await store.read()).entries] == ["a"]
    await store.mark_replayed(["a"])
    assert (await store.read()).replayed == {"a"}


def test_an_entry_stored_twice_is_replayed_once() -> None:
    """A Kafka dead-letter batch retried after a partial failure may hold an entry twice."""
    twice = entry(id="a")
    plan = make_plan([twice, entry(id="b"), dict(twice)], done=set(), selected=ReplayFilter(),
                     again=False)
    assert [r.entry_id for r in plan.records] == ["a", "b"]
    assert plan.already == 1
    again = make_plan([twice, dict(twice)], done=set(), selected=ReplayFilter(), again=True)
    assert [r.entry_id for r in again.records] == ["a"]


def replay(directory: Path) -> tuple[int, bytes, str]:
    """`govpipe replay --from directory` with the embedded default config (to stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    done = subprocess.run([str(GOVPIPE), "replay", "--from", str(directory)], cwd=directory,
                          env=env, capture_output=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr.decode()


def test_replay_reports_every_unreadable_line_and_salvages_a_retried_entry(
        tmp_path: Path) -> None:
    good = orjson.dumps(entry(id="good", value="good-value"))
    # What the old retry bug left: a write cut short, then the whole batch after it.
    cut = orjson.dumps(entry(id="cut", value="PAYLOAD-cut"))[:60]
    retried = orjson.dumps(entry(id="retried", value="retried-value"))
    torn = orjson.dumps(entry(id="torn", value="PAYLOAD-torn"))[:50]
    (tmp_path / "deadletter-2026-11-25.jsonl").write_bytes(
        good + b"\n" + cut + retried + b"\n" + b"PAYLOAD not JSON\n" + torn)

    code, out, err = replay(tmp_path)
    assert code == 1
    assert out.splitlines() == [b"good-value", b"retried-value"]
    reported = err.splitlines()
    assert "deadletter-2026-11-25.jsonl:2: " in reported[0]
    assert "salvaged" in reported[0]
    assert "deadletter-2026-11-25.jsonl:3: " in reported[1]
    assert "deadletter-2026-11-25.jsonl:4: torn last line, probably a crash mid-write" \
        in reported[2]
    assert reported[-1] == ("replayed 2, already replayed 0, not matching 0, "
                            "without a record 0, unreadable 3, salvaged 1")
    assert "PAYLOAD" not in err  # where the bad lines are, never what they hold

    code, out, err = replay(tmp_path)  # the salvaged entry was marked like any other
    assert (code, out) == (1, b"")
    assert err.splitlines()[-1].startswith("replayed 0, already replayed 2")


def test_replay_of_readable_files_reports_nothing_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "deadletter-2026-11-25.jsonl").write_bytes(
        orjson.dumps(entry(id="a", value="a-value")) + b"\n")
    code, out, err = replay(tmp_path)
    assert (code, out) == (0, b"a-value\n")
    assert err.splitlines() == [
        "replayed 1, already replayed 0, not matching 0, without a record 0, "
        "unreadable 0, salvaged 0"]


async def test_a_torn_marker_is_reported_and_the_next_mark_starts_a_new_line(
        tmp_path: Path) -> None:
    (tmp_path / MARKER_FILE).write_bytes(marker("a") + b"\n" + marker("b")[:12])
    store = FileDeadLetter(tmp_path)
    stored = await store.read()
    assert stored.replayed == {"a"}
    assert [str(p) for p in stored.marker_problems] == [
        f"{tmp_path / MARKER_FILE}:2: torn last line, probably a crash mid-write; skipped"]
    await store.mark_replayed(["c"])
    assert (await store.read()).replayed == {"a", "c"}

"""`govpipe replay`: dead-lettered entries back onto the input, once each."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.cli.run import EXIT_CONFIG, add_config_argument, load_or_explain
from pipeline.deadletter.replay import FileEntries, ReplayFilter, ReplayRecord, is_marker, to_record
from pipeline.deadletter.replay_kafka import KafkaReplayWriter, read_topic, replayed_ids
from pipeline.ops.logs import configure_logging
from pipeline.settings import Settings

CHUNK = 500


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay", help="put dead-lettered entries back on the input",
        description="Read the dead-letter destination (deadletter.kind), select entries, and "
                    "put each back on the input: the source topic when source.kind = kafka, "
                    "else standard output as JSON lines (govpipe replay | govpipe run). "
                    "Replayed entries are marked and skipped next time (see --again).")
    add_config_argument(replay)
    replay.add_argument("--sink", help="only entries a given sink gave up on")
    replay.add_argument("--reason", help="only entries with this reason (e.g. circuit_open)")
    replay.add_argument("--origin", help="only entries of this origin (source or a sink name)")
    replay.add_argument("--since", type=_timestamp, metavar="TIME",
                        help="only entries written at or after TIME (ISO 8601)")
    replay.add_argument("--until", type=_timestamp, metavar="TIME",
                        help="only entries written at or before TIME (ISO 8601)")
    replay.add_argument("--again", action="store_true",
                        help="also replay entries that were replayed before")
    replay.add_argument("--dry-run", action="store_true", help="count, replay nothing")
    replay.add_argument("--from", dest="directory", type=Path, metavar="DIR",
                        help="dead-letter directory (default: deadletter.path)")
    replay.set_defaults(handler=main)


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Plan:
    """What a replay will do, counted."""

    records: list[ReplayRecord] = field(default_factory=list)
    already: int = 0
    not_matching: int = 0
    unusable: int = 0


def make_plan(entries: Sequence[dict[str, Any]], done: set[str], selected: ReplayFilter,
              again: bool) -> Plan:
    plan = Plan()
    # A dead-letter write retried after a partial failure can store an entry twice (same
    # id): it goes back once, and the copy counts as already replayed.
    planned: set[str] = set()
    for entry in entries:
        if is_marker(entry):
            continue
        entry_id = str(entry.get("id") or "")
        if not selected.matches(entry):
            plan.not_matching += 1
        elif (not again and entry_id in done) or (entry_id and entry_id in planned):
            plan.already += 1
        elif (record := to_record(entry)) is None:
            plan.unusable += 1
        else:
            plan.records.append(record)
            planned.add(record.entry_id)
    return plan


def main(args: argparse.Namespace) -> int:
    settings = load_or_explain(args.config)
    if settings is None:
        return EXIT_CONFIG
    if settings.deadletter_kind == "kafka" and settings.source.kind != "kafka":
        print("govpipe: replay from a Kafka dead-letter needs source.kind = \"kafka\"",
              file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level)  # aiokafka's warnings as JSON, like `run`
    selected = ReplayFilter(args.sink, args.reason, args.origin, args.since, args.until)
    return asyncio.run(_replay(settings, args, selected))


async def _replay(settings: Settings, args: argparse.Namespace, selected: ReplayFilter) -> int:
    store: FileEntries | None = None
    if settings.deadletter_kind == "kafka":
        values = await read_topic(settings.source.bootstrap_servers, settings.deadletter.topic)
        done = replayed_ids(values)
    else:
        store = FileEntries(args.directory or settings.deadletter.path)
        values, done = list(store.entries()), store.replayed()
    unreadable, salvaged = _report_problems(store)
    plan = make_plan(values, done, selected, args.again)
    if not args.dry_run:
        await _put_back(settings, plan.records, store)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(plan.records)}, already replayed {plan.already}, "
          f"not matching {plan.not_matching}, without a record {plan.unusable}, "
          f"unreadable {unreadable}, salvaged {salvaged}", file=sys.stderr)
    # An unreadable line may hold an entry nobody can replay: not a clean run.
    return 1 if unreadable else 0


def _report_problems(store: FileEntries | None) -> tuple[int, int]:
    """Each unreadable line on stderr; (unreadable, salvaged) entry lines.

    Marker lines are reported but not counted: a lost marker means its entry may be put
    back a second time, but no entry is lost.
    """
    if store is None:
        return 0, 0
    for problem in store.marker_problems:
        print(f"govpipe replay: {problem} (a lost marker: its entry may be replayed again)",
              file=sys.stderr)
    for problem in store.problems:
        print(f"govpipe replay: {problem}", file=sys.stderr)
    return len(store.problems), sum(problem.salvaged for problem in store.problems)


async def _put_back(settings: Settings, records: list[ReplayRecord],
                    store: FileEntries | None) -> None:
    chunks = [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]
    if settings.source.kind != "kafka":
        for sent, chunk in enumerate(chunks, start=1):
            sys.stdout.buffer.write(b"".join(r.value + b"\n" for r in chunk))
            sys.stdout.buffer.flush()
            _mark(store, chunk)
            _progress(min(sent * CHUNK, len(records)), len(records))
        return
    topic = settings.deadletter.topic if settings.deadletter_kind == "kafka" else None
    async with KafkaReplayWriter(settings.source.bootstrap_servers, settings.source.topic,
                                 topic) as writer:
        for sent, chunk in enumerate(chunks, start=1):
            await writer.send(chunk)
            _mark(store, chunk)
            _progress(min(sent * CHUNK, len(records)), len(records))


def _mark(store: FileEntries | None, chunk: list[ReplayRecord]) -> None:
    if store is not None:
        store.mark(record.entry_id for record in chunk)


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\rreplaying {done}/{total}", end=end, file=sys.stderr, flush=True)

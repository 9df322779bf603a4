"""`govpipe replay`: dead-lettered entries back onto the input, once each."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.app import build_deadletter_store
from pipeline.cli.run import (
    EXIT_CONFIG,
    add_config_argument,
    load_or_explain,
    warn_deprecated,
)
from pipeline.deadletter.kafka import start_producer
from pipeline.deadletter.replay import ReplayFilter, ReplayRecord, make_plan
from pipeline.deadletter.store import DeadLetterStore, StoredEntries
from pipeline.inbound.replay_seal import SEAL_HEADER, make_seal, seal_check, signed_by
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.kafka_connection import caught_causes, client_options, explain
from pipeline.ops.logs import configure_logging
from pipeline.settings import ConfigError, Settings
from pipeline.signing.keys import load_signer
from pipeline.signing.signers import SigningKeyError

CHUNK = 500
EXIT_FAILED = 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay", help="put dead-lettered entries back on the input",
        description="Read the dead-letter destination (deadletter.kind), select entries, and "
                    "put each back on the input: the source topic when source.kind = kafka, "
                    "else standard output as JSON lines (govpipe replay | govpipe run). "
                    "Replayed entries are marked and skipped next time (see --again). "
                    "With source.require_signature, each event govpipe signed goes back "
                    "with a replay seal (signed with signing.key_file or "
                    "GOVPIPE_SIGNING_KEY), so it is accepted once. "
                    "Ends with one line: replayed N, already replayed M, not matching K, "
                    "without a record U, unreadable X, salvaged S; exit 1 when a line of "
                    "a dead-letter file could not be read (each is named on stderr).")
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


def main(args: argparse.Namespace) -> int:
    settings = load_or_explain(args.config)
    if settings is None:
        return EXIT_CONFIG
    if args.directory is not None:
        deadletter = settings.deadletter.model_copy(update={"path": args.directory})
        settings = settings.model_copy(update={"deadletter": deadletter})
    configure_logging(settings.log.level)  # aiokafka's warnings as JSON, like `run`
    warn_deprecated(settings)
    selected = ReplayFilter(args.sink, args.reason, args.origin, args.since, args.until)
    try:
        with caught_causes() as catcher:
            return asyncio.run(_replay(settings, args, selected))
    except (ConfigError, SigningKeyError) as exc:  # a key or password file unreadable
        print(f"govpipe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KafkaError as exc:
        why = explain(exc, client_options(settings.kafka), catcher.cause)
        print(f"govpipe: replay stopped: {why}", file=sys.stderr)
        return EXIT_FAILED


async def _replay(settings: Settings, args: argparse.Namespace, selected: ReplayFilter) -> int:
    store = build_deadletter_store(settings)
    try:
        stored = await store.read()
        unreadable, salvaged = _report_problems(stored)
        plan = make_plan(stored.entries, stored.replayed, selected, args.again)
        if not args.dry_run:
            await _put_back(settings, plan.records, store)
    finally:
        await store.aclose()
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(plan.records)}, already replayed {plan.already}, "
          f"not matching {plan.not_matching}, without a record {plan.unusable}, "
          f"unreadable {unreadable}, salvaged {salvaged}", file=sys.stderr)
    # An unreadable line may hold an entry nobody can replay: not a clean run.
    return 1 if unreadable else 0


def _report_problems(stored: StoredEntries) -> tuple[int, int]:
    """Each unreadable line on stderr; (unreadable, salvaged) entry lines.

    Marker lines are reported but not counted: a lost marker means its entry may be put
    back a second time, but no entry is lost.
    """
    for problem in stored.marker_problems:
        print(f"govpipe replay: {problem} (a lost marker: its entry may be replayed again)",
              file=sys.stderr)
    for problem in stored.problems:
        print(f"govpipe replay: {problem}", file=sys.stderr)
    return len(stored.problems), sum(problem.salvaged for problem in stored.problems)


async def _put_back(settings: Settings, records: list[ReplayRecord],
                    store: DeadLetterStore) -> None:
    """`records` onto the input a chunk at a time, each chunk marked replayed once it is
    there (a crash in between puts that chunk back again next time, never loses it)."""
    records = _sealed(settings, records)
    async with _input(settings) as send:
        for start in range(0, len(records), CHUNK):
            chunk = records[start:start + CHUNK]
            await send(chunk)
            await store.mark_replayed([record.entry_id for record in chunk])
            _progress(start + len(chunk), len(records))


def _sealed(settings: Settings, records: list[ReplayRecord]) -> list[ReplayRecord]:
    """With producer signatures required, each event signed with the daemon's key (one a
    sink gave up on: it passed verification when it first arrived) gets a replay seal;
    other records go back as they were and are judged afresh."""
    if not settings.source.require_signature:
        return records
    signing = settings.signing
    signer = load_signer(signing.alg, signing.key_file, signing.key_id)
    if signer is None:
        print("govpipe replay: no signing key (signing.key_file or GOVPIPE_SIGNING_KEY): "
              "replayed events carry no replay seal and will be rejected unsigned",
              file=sys.stderr)
        return records
    check, now = seal_check(signer), wall_clock_ms()
    return [replace(record, headers=(*record.headers, (SEAL_HEADER, make_seal(
        signer, record.entry_id, now, record.value))))
        if signed_by(check, record.value) else record for record in records]


Send = Callable[[list[ReplayRecord]], Awaitable[None]]


@asynccontextmanager
async def _input(settings: Settings) -> AsyncIterator[Send]:
    """Where replayed records go: the source topic when the daemon reads Kafka, else
    standard output as JSON lines (for `govpipe replay | govpipe run`)."""
    if settings.source.kind != "kafka":
        yield _to_stdout
        return
    producer = await start_producer(client_options(settings.kafka))
    try:
        yield partial(_to_topic, producer, settings.source.topic)
    finally:
        await producer.stop()


async def _to_stdout(records: list[ReplayRecord]) -> None:
    sys.stdout.buffer.write(b"".join(record.value + b"\n" for record in records))
    sys.stdout.buffer.flush()


async def _to_topic(producer: AIOKafkaProducer, topic: str, records: list[ReplayRecord]) -> None:
    """`records` on `topic`, acknowledged."""
    futures = [await producer.send(topic, r.value, key=r.key, headers=list(r.headers))
               for r in records]
    await asyncio.gather(*futures)


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\rreplaying {done}/{total}", end=end, file=sys.stderr, flush=True)

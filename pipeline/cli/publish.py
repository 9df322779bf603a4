"""`govpipe publish`: JSON lines → the input topic, optionally with producer signatures."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cli.run import EXIT_CONFIG, add_config_argument, warn_deprecated
from pipeline.inbound.keys import load_inbound_keys
from pipeline.kafka_connection import CauseCatcher, caught_causes, client_options, explain
from pipeline.ops.logs import configure_logging
from pipeline.publisher.direct import DirectPublisher
from pipeline.settings import ConfigError, load_settings
from pipeline.signing.signers import SigningKeyError

EXIT_FAILED = 1
CHUNK = 500  # records in flight at once; progress is shown per chunk


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = commands.add_parser(
        "publish", help="publish JSON-lines events onto the input topic",
        description="Send each JSON line (from INPUT or stdin) as one record onto the input "
                    "topic, keyed by agent_id; with --sign-key, add the agt-* producer "
                    "signature headers. Prints `published N, failed M`; exit 1 when M > 0. "
                    "Defaults come from the config's [source] table.")
    add_config_argument(publish)
    publish.add_argument("--topic", help="input topic (default: source.topic)")
    publish.add_argument("--bootstrap-servers", metavar="B",
                         help="Kafka brokers (default: kafka.bootstrap_servers; the other [kafka] "
                              "keys, TLS and SASL, apply either way)")
    publish.add_argument("--sign-key", type=Path, metavar="FILE",
                         help="inbound HMAC key file (base64, as govpipe keygen --alg hmac "
                              "writes it): sign each record")
    publish.add_argument("--sender", default="", metavar="ID",
                         help="agt-sender value (the key's name in a per-sender key file)")
    publish.add_argument("input", nargs="?", type=Path, metavar="INPUT",
                         help="JSON-lines file (default: stdin)")
    publish.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        key = None
        if args.sign_key is not None:
            key = load_inbound_keys(args.sign_key).for_sender(args.sender)
            if key is None:
                raise SigningKeyError(f"{args.sign_key}: no key for sender {args.sender!r}")
        options = client_options(settings.kafka)
    except (ConfigError, SigningKeyError) as exc:
        print(f"govpipe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level)  # aiokafka's warnings as JSON, like `run`
    warn_deprecated(settings)
    if args.bootstrap_servers:
        options["bootstrap_servers"] = args.bootstrap_servers
    publisher_args = (options, args.topic or settings.source.topic)
    try:
        stream = sys.stdin.buffer if args.input is None else args.input.open("rb")
    except OSError as exc:
        print(f"govpipe: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    with stream:
        tally = asyncio.run(_publish(stream, *publisher_args, key, args.sender))
    print(f"published {tally.published}, failed {tally.failed}")
    return EXIT_FAILED if tally.failed or tally.unreachable else 0


async def _publish(lines: Iterable[bytes], options: dict[str, Any], topic: str,
                   key: bytes | None, sender: str) -> Tally:
    tally = Tally()
    progress = sys.stderr.isatty()
    events = _events(lines, tally)
    catcher = CauseCatcher()
    unsettled = 0  # lines of the chunk in flight, not yet counted
    try:
        with caught_causes() as catcher:
            publisher = DirectPublisher(options["bootstrap_servers"], topic, sign_key=key,
                                  sender=sender, client_options=options)
            await publisher.start()
        async with publisher:
            for chunk in _chunks(events):
                unsettled = len(chunk)
                errors = await publisher.publish_values([item for _, item in chunk])
                unsettled = 0
                for (number, _), error in zip(chunk, errors, strict=True):
                    if error is None:
                        tally.published += 1
                    else:
                        tally.failed += 1
                        print(f"line {number}: {error}", file=sys.stderr)
                if progress:
                    print(f"\rpublished {tally.published}, failed {tally.failed}…", end="",
                          file=sys.stderr, flush=True)
    except Exception as exc:  # the broker could not be reached (at all, or again)
        print(f"govpipe: cannot publish: {explain(exc, options, catcher.cause)}",
              file=sys.stderr)
        unsent = sum(1 for _ in events)  # draining also counts the non-JSON lines left
        tally.failed += unsettled + unsent  # every line not sent counts as failed
        tally.unreachable = True
    if progress:
        print("\r\033[K", end="", file=sys.stderr)
    return tally


Item = tuple[int, tuple[bytes, object]]


@dataclass
class Tally:
    """What a publish run did."""

    published: int = 0
    failed: int = 0
    unreachable: bool = False


def _events(lines: Iterable[bytes], tally: Tally) -> Iterator[Item]:
    """(line number, (value, agent_id)) for each JSON object line; others reported, counted."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            event = None
        if not isinstance(event, dict):
            print(f"line {number}: not_json", file=sys.stderr)
            tally.failed += 1
            continue
        # The line itself is sent, so the bytes the producer signs are the bytes it wrote.
        yield number, (line.strip(), event.get("agent_id"))


def _chunks(items: Iterable[Item]) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

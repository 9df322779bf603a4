"""`govpipe audit`: account for every input position from the signed output and dead-letter."""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial
from pathlib import Path

from aiokafka.errors import KafkaError

from pipeline.audit.files import expect_lines, read_deadletter, read_output
from pipeline.audit.progress import Progress
from pipeline.audit.report import AuditReport, account
from pipeline.audit.topics import MissingTopic, TopicTrail, audit_topics
from pipeline.audit.trail import TrailAudit
from pipeline.audit.workers import OutputChecker
from pipeline.cli.run import EXIT_CONFIG, add_config_argument, load_or_explain
from pipeline.cli.verify import load_key
from pipeline.kafka_connection import client_options
from pipeline.settings import ConfigError
from pipeline.signing.keys import KeySet
from pipeline.signing.signers import SigningKeyError
from pipeline.signing.verification import Verifier

EXIT_INCOMPLETE = 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="prove a trail complete: every input position accounted for",
        description="Read the input, the signed output and the signed dead-letter (Kafka "
                    "topics, or files with --input/--output), verify every signature with "
                    "the keys, and account for every input position: delivered, "
                    "dead-lettered or missing. Details go before the last line, one per "
                    "line (--json: one JSON report instead); the last line is `input N, "
                    "delivered D, dead-lettered R, missing M, duplicates X, bad signatures "
                    "B`. Exit 1 when M or B > 0 or an output names an unknown position, 2 "
                    "when the audit could not run. Progress goes to stderr.")
    add_config_argument(audit)
    audit.add_argument("--key", action="append", required=True, metavar="[ID=]FILE",
                       help="a verification key, as govpipe verify takes it; repeat for "
                            "rotated keys")
    audit.add_argument("--json", action="store_true",
                       help="the details as one JSON object (before the summary line)")
    kafka = audit.add_argument_group(
        "Kafka topics", "connection from the config's [kafka] table (output: the Kafka "
                        "sink's); topics default to source.topic, sinks.kafka.topic and, "
                        "with a Kafka dead-letter configured, deadletter.topic")
    kafka.add_argument("--bootstrap-servers", metavar="B", help="Kafka brokers")
    kafka.add_argument("--input-topic", metavar="T", help="the topic the daemon consumed")
    kafka.add_argument("--output-topic", metavar="O", help="the Kafka sink's topic")
    kafka.add_argument("--deadletter-topic", metavar="D", help="its dead-letter topic")
    files = audit.add_argument_group("files")
    files.add_argument("--input", type=Path, metavar="FILE",
                       help="the JSON lines the daemon read")
    files.add_argument("--input-name", metavar="NAME",
                       help="the name the daemon read it under: `stdin`, or source.path as "
                            "configured (default: FILE as given)")
    files.add_argument("--output", type=Path, metavar="FILE",
                       help="the signed CloudEvents it wrote (JSON lines)")
    files.add_argument("--jobs", type=_positive, default=1, metavar="N",
                       help="processes that check the output's signatures (default 1; "
                            "more pay off with Ed25519 keys on idle cores)")
    files.add_argument("--deadletter", type=Path, metavar="FILE_OR_DIR",
                       help="its dead-letter directory, or one dead-letter file (also with "
                            "Kafka topics, for a Kafka source with a file dead-letter)")
    audit.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    make_verifier = partial(load_verifier, tuple(args.key))
    try:
        verifier = make_verifier()
    except SigningKeyError as exc:
        print(f"govpipe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    audit = TrailAudit(verifier)
    try:
        if args.input is not None or args.output is not None:
            _audit_files(args, audit, OutputChecker(make_verifier, args.jobs))
        else:
            trail = _topic_trail(args)
            if trail is None:
                return EXIT_CONFIG
            asyncio.run(audit_topics(trail, audit, Progress()))
            if args.deadletter is not None:  # a Kafka source with a file dead-letter
                read_deadletter(audit, args.deadletter, Progress())
    except (OSError, KafkaError, MissingTopic, ConfigError, _Usage) as exc:
        print(f"govpipe: audit could not run: {_explained(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    report = account(audit)
    _print(report, args.json)
    _hint_input_name(report, args.input_name)
    return 0 if report.clean else EXIT_INCOMPLETE


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


class _Usage(Exception):
    """The arguments do not describe an audit."""


def load_verifier(key_specs: tuple[str, ...]) -> Verifier:
    """A verifier of the `--key` keys (module level: worker processes call it too)."""
    return Verifier(KeySet(load_key(spec) for spec in key_specs))


def _audit_files(args: argparse.Namespace, audit: TrailAudit, checker: OutputChecker) -> None:
    if args.input is None or args.output is None:
        raise _Usage("file mode needs both --input and --output")
    if args.input_topic or args.output_topic or args.deadletter_topic:
        raise _Usage("--input/--output read files; leave out the --*-topic options")
    progress = Progress()
    expect_lines(audit, args.input, args.input_name or str(args.input), progress)
    read_output(audit, args.output, progress, checker)
    if args.deadletter is not None:
        read_deadletter(audit, args.deadletter, progress)


def _topic_trail(args: argparse.Namespace) -> TopicTrail | None:
    settings = load_or_explain(args.config)
    if settings is None:
        return None
    input_options = client_options(settings.kafka)
    sink_table = "sinks.kafka.connection" if settings.sinks.kafka.connection else "kafka"
    output_options = client_options(settings.sink_kafka, sink_table)
    if args.bootstrap_servers:
        input_options["bootstrap_servers"] = args.bootstrap_servers
        output_options["bootstrap_servers"] = args.bootstrap_servers
    deadletter = args.deadletter_topic
    if deadletter is None and args.config is not None and settings.deadletter_kind == "kafka":
        deadletter = settings.deadletter.topic
    return TopicTrail(args.input_topic or settings.source.topic,
                      args.output_topic or settings.sinks.kafka.topic, deadletter,
                      input_options, output_options, settings.source.isolation_level)


def _hint_input_name(report: AuditReport, given: str | None) -> None:
    """Nothing delivered but lines of another input: most likely the daemon read it under
    another name (stdin, or source.path as configured)."""
    names = {span.stream.name for span in report.unknown_spans if span.stream.kind == "line"}
    if report.delivered == 0 and names and given is None:
        print(f"govpipe: the output names input {', '.join(sorted(names))}; if that is "
              "this input, pass it as --input-name", file=sys.stderr)


def _explained(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _print(report: AuditReport, as_json: bool) -> None:
    out = sys.stdout
    if as_json:
        out.write(report.to_json().decode("utf-8") + "\n")
    else:
        for line in report.detail_lines():
            out.write(line + "\n")
    out.write(report.summary() + "\n")
    out.flush()

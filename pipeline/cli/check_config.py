"""`govpipe check-config`: validate and print the effective configuration."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.run import EXIT_CONFIG, add_config_argument, load_or_explain
from pipeline.kafka_connection import check_files
from pipeline.settings import KafkaConnection, Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check-config", help="validate the configuration and print it (no secrets)",
        description="Validate the config file and GOVPIPE_<SECTION>__<KEY> overrides, then "
                    "print the effective settings with secrets masked.")
    add_config_argument(check)
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = load_or_explain(args.config)
    if settings is None:
        return EXIT_CONFIG
    for notice in settings.deprecations:
        print(f"govpipe: warning: {notice}", file=sys.stderr)
    problems = _unreadable_files(settings)
    for problem in problems:
        print(f"govpipe: config error: {problem}", file=sys.stderr)
    print(settings.model_dump_json(indent=2))  # SecretStr values print as **********
    return EXIT_CONFIG if problems else 0


def _unreadable_files(settings: Settings) -> list[str]:
    """Files the Kafka connections in use name that cannot be read now."""
    used: dict[str, KafkaConnection] = {}
    if settings.source.kind == "kafka" or settings.deadletter_kind == "kafka":
        used["kafka"] = settings.kafka
    if settings.sinks.kafka.enabled:
        table = "kafka" if settings.sinks.kafka.connection is None else "sinks.kafka.connection"
        used[table] = settings.sink_kafka
    return [problem for table, connection in used.items()
            for problem in check_files(connection, table)]

"""`govpipe check-config`: validate and print the effective configuration."""

from __future__ import annotations

import argparse

from pipeline.cli.run import EXIT_CONFIG, add_config_argument, load_or_explain


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
    print(settings.model_dump_json(indent=2))
    return 0

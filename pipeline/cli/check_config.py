"""`govpipe check-config`: validate and print the effective configuration."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.cli.run import EXIT_CONFIG, add_config_argument, load_or_explain, refusal
from pipeline.settings import ConfigError, Settings
from pipeline.startup import check_startup


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check-config", help="validate the configuration and print it (no secrets)",
        description="Validate the config file and GOVPIPE_<SECTION>__<KEY> overrides, and "
                    "load everything `govpipe run` loads before it starts (the signing key "
                    "from signing.key_file or GOVPIPE_SIGNING_KEY, inbound keys, Kafka and "
                    "OTLP TLS and SASL files, the source file), then print the effective "
                    "settings with secrets masked. Exit 2 with the line `run` would log "
                    "when `run` would refuse to start.")
    add_config_argument(check)
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = load_or_explain(args.config)
    if settings is None:
        return EXIT_CONFIG
    for notice in settings.deprecations:
        print(f"govpipe: warning: {notice}", file=sys.stderr)
    code = _check_startup(settings)
    print(settings.model_dump_json(indent=2))  # SecretStr values print as **********
    return code


def _check_startup(settings: Settings) -> int:
    """What `run` would load before starting: 0, or EXIT_CONFIG after the line it logs."""
    try:
        keys = check_startup(settings, os.environ)
    except ConfigError as exc:
        print(f"govpipe: {refusal(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    if keys.signer is None:
        print("govpipe: warning: no signing key configured (signing.key_file or "
              "GOVPIPE_SIGNING_KEY): run would sign with an ephemeral key nobody can "
              "verify later", file=sys.stderr)
    return 0

"""The govpipe command line: one module per command in pipeline/cli/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.cli import audit, check_config, keygen, publish, replay, run, verify

COMMANDS = (run, replay, verify, audit, keygen, check_config, publish)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="govpipe",
        description="Signed, reconciled delivery of AI-agent governance events.")
    parser.add_argument("--version", action="version", version=f"govpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

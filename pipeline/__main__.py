"""The govpipe command line (SPEC §7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline import __version__
from pipeline.daemon import Daemon
from pipeline.deadletter import FileDeadLetter
from pipeline.logs import configure_logging
from pipeline.server import ServerError
from pipeline.settings import ConfigError, Settings, SinkSettings, load_settings
from pipeline.signing import HmacSigner, SigningKeyError, ephemeral_hmac_key, load_hmac_key
from pipeline.source import LineSource
from sinks.base import Sink
from sinks.stdout import StdoutSink

log = logging.getLogger("govpipe")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="govpipe",
        description="Signed, reconciled delivery of AI-agent governance events.")
    parser.add_argument("--version", action="version", version=f"govpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the daemon",
        description="Run the daemon. With no config: JSON lines on stdin, signed CloudEvents "
                    "on stdout, dead-letters in ./deadletter/, /metrics on 127.0.0.1:9464; "
                    "exits 0 once input ends and every event has settled.")
    check = commands.add_parser(
        "check-config", help="validate the configuration and print it (no secrets)",
        description="Validate the config file and GOVPIPE_<SECTION>__<KEY> overrides.")
    for sub in (run, check):
        sub.add_argument("--config", type=Path, metavar="FILE",
                         help="TOML config file (default: the embedded default)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        _check_available(settings)
    except ConfigError as exc:
        print(f"govpipe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(settings.model_dump_json(indent=2))
        return 0
    configure_logging(settings.log.level)
    try:
        return asyncio.run(_run(settings, os.environ))
    except (SigningKeyError, ServerError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG


async def _run(settings: Settings, environ: Mapping[str, str]) -> int:
    daemon = Daemon(settings, source=_source(settings), sinks=_sinks(settings),
                    signer=_signer(settings, environ),
                    deadletter=FileDeadLetter(settings.deadletter.path),
                    registry=CollectorRegistry(auto_describe=True))
    daemon.install_signal_handlers()
    outcome = await daemon.run()
    return outcome.exit_code


def _check_available(settings: Settings) -> None:
    """Refuse, naming the key, what this version does not implement yet."""
    unavailable = {
        "source.kind": settings.source.kind == "kafka",
        "signing.alg": settings.signing.alg != "HMAC-SHA256",
        "sinks.otlp.enabled": settings.sinks.otlp.enabled,
        "sinks.kafka.enabled": settings.sinks.kafka.enabled,
        "deadletter.kind": settings.deadletter_kind == "kafka",
        "source.require_signature": settings.source.require_signature,
    }
    for key, refused in unavailable.items():
        if refused:
            raise ConfigError(f"config error: {key}: this setting is not implemented yet in "
                              f"govpipe {__version__}")
    if not settings.sinks.stdout.enabled:
        raise ConfigError("config error: sinks: no sink is enabled")


def _source(settings: Settings) -> LineSource:
    if settings.source.kind == "file" and settings.source.path is not None:
        return LineSource.file(settings.source.path)
    return LineSource.stdin()


def _sinks(settings: Settings) -> list[tuple[Sink, SinkSettings]]:
    return [(StdoutSink(), settings.sinks.stdout)] if settings.sinks.stdout.enabled else []


def _signer(settings: Settings, environ: Mapping[str, str]) -> HmacSigner:
    key = load_hmac_key(settings.signing.key_file, environ)
    if key is None:
        log.warning("NO SIGNING KEY CONFIGURED: signing with an ephemeral key that dies with "
                    "this process; nobody can verify these events later. Set "
                    "GOVPIPE_SIGNING_KEY or signing.key_file (make a key: govpipe keygen).")
        key = ephemeral_hmac_key()
    return HmacSigner(key, settings.signing.key_id)


if __name__ == "__main__":
    sys.exit(main())

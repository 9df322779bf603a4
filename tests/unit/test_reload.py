"""SIGHUP reloads: which changed keys need a restart, the reloader keeping the running
config when the new one is refused, and the live part (keys, log level) swapped in."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.app import apply_live_settings, build_processor
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.model import Position, Rejection, SignedEvent
from pipeline.ops.metrics import Metrics
from pipeline.processor import EventProcessor
from pipeline.reload import ConfigReloader, restart_needed
from pipeline.settings import ConfigError, Settings, load_settings
from pipeline.signing.signers import HmacSigner, ephemeral_signer, hmac_key_id
from tests.support.events import event_value
from tests.unit.test_inbound import signed

OLD, NEW = bytes(range(32)), bytes(range(100, 132))


def key_file(path: Path, key: bytes) -> Path:
    path.write_text(base64.b64encode(key).decode())
    return path


def processor(settings: Settings, signer: HmacSigner | None = None) -> EventProcessor:
    return build_processor(settings, signer or HmacSigner(OLD), Metrics(CollectorRegistry()))


def test_only_keys_a_reload_cannot_apply_are_named() -> None:
    running = load_settings(None, {})
    new = load_settings(None, {"GOVPIPE_SIGNING__KEY_FILE": "/k", "GOVPIPE_LOG__LEVEL": "debug",
                               "GOVPIPE_SINKS__STDOUT__QUEUE_SIZE": "7",
                               "GOVPIPE_SINKS__OTLP__HEADERS": "authorization=Bearer s3cret"})
    assert restart_needed(running, new) == ["sinks.otlp.headers", "sinks.stdout.queue_size"]
    assert restart_needed(running, running) == []


def test_a_refused_reload_keeps_the_running_settings(caplog: pytest.LogCaptureFixture) -> None:
    running = load_settings(None, {})
    applied: list[Settings] = []

    def apply(new: Settings) -> dict[str, object]:
        applied.append(new)
        return {}

    def unreadable() -> Settings:
        raise ConfigError("config file x.toml: invalid TOML")

    assert not ConfigReloader(running, unreadable, apply).reload()
    restart = ConfigReloader(running, lambda: load_settings(
        None, {"GOVPIPE_SHUTDOWN__TIMEOUT_S": "3"}), apply)
    assert not restart.reload()
    assert restart.settings is running
    assert not applied
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert messages == [
        "reload refused, the running configuration is kept: config file x.toml: invalid TOML",
        "reload refused, the running configuration is kept: config error: changed keys need "
        "a restart: shutdown.timeout_s"]


def test_an_applied_reload_becomes_the_running_settings() -> None:
    new = load_settings(None, {"GOVPIPE_LOG__LEVEL": "debug"})
    reloader = ConfigReloader(load_settings(None, {}), lambda: new, lambda _: {"key_id": "k"})
    assert reloader.reload()
    assert reloader.settings is new


def test_the_new_key_file_signs_what_comes_next(tmp_path: Path) -> None:
    settings = load_settings(None, {"GOVPIPE_SIGNING__KEY_FILE": str(key_file(
        tmp_path / "k", NEW))})
    current = processor(settings)
    fields = apply_live_settings(current, settings, {})
    assert fields == {"signing_alg": "HMAC-SHA256", "key_id": hmac_key_id(NEW)}
    assert current.signer.key_id == hmac_key_id(NEW)


def test_a_key_that_cannot_be_loaded_or_was_removed_changes_nothing(tmp_path: Path) -> None:
    current = processor(load_settings(None, {}))
    before = current.signer
    bad = key_file(tmp_path / "k", b"short")
    for settings in (load_settings(None, {"GOVPIPE_SIGNING__KEY_FILE": str(bad)}),
                     load_settings(None, {})):
        with pytest.raises(ConfigError, match=r"signing\.key_file"):
            apply_live_settings(current, settings, {})
        assert current.signer is before


def test_an_ephemeral_key_stays_when_no_key_is_configured() -> None:
    ephemeral = ephemeral_signer("HMAC-SHA256")
    current = build_processor(load_settings(None, {}), ephemeral, Metrics(CollectorRegistry()))
    apply_live_settings(current, load_settings(None, {}), {})
    assert current.signer is ephemeral


def test_rotated_inbound_keys_check_the_records_that_follow(tmp_path: Path) -> None:
    inbound = key_file(tmp_path / "inbound.key", OLD)
    settings = load_settings(None, {
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
        "GOVPIPE_SOURCE__INBOUND_KEY_FILE": str(inbound)})
    current = processor(settings)
    value = event_value(1, "in")
    assert isinstance(current.process(signed(value, nonce="a", ts=wall_clock_ms())),
                      SignedEvent)
    key_file(inbound, NEW)
    apply_live_settings(current, settings, {"GOVPIPE_SIGNING_KEY": base64.b64encode(
        OLD).decode()})
    refused = current.process(signed(value, nonce="b", ts=wall_clock_ms(), key=OLD))
    assert isinstance(refused, Rejection)
    assert refused.reason == "bad_signature"
    assert isinstance(current.process(signed(value, nonce="c", ts=wall_clock_ms(), key=NEW)),
                      SignedEvent)


async def test_dead_letter_entries_follow_the_rotated_key(tmp_path: Path) -> None:
    # A rejection must stay as verifiable as a delivery after a rotation: the dead-letter
    # store signs with the key the processor now signs with.
    settings = load_settings(None, {"GOVPIPE_SIGNING__KEY_FILE": str(key_file(
        tmp_path / "k", NEW))})
    store = FileDeadLetter(tmp_path / "dlq", HmacSigner(OLD))
    apply_live_settings(processor(settings), settings, {}, store)
    await store.write([DeadLetterEntry("source", "invalid_json", "not JSON",
                                       Position("t", 0, 7), value=b"{")])
    written = (await store.read()).entries
    assert [entry["agtkeyid"] for entry in written] == [hmac_key_id(NEW)]

"""SIGHUP: read the config (and through it the key files) again and apply what can change
while running, or refuse the whole reload and keep what runs.

What a reload applies: the signing key (`signing.*`, the key file's new contents), the
inbound keys (`source.inbound_key_file`), `log.level`. Every other key shapes the pipeline
itself (source, sinks, queues, dead-letter, server…) and changing it needs a restart: a
reload that changes one is refused, naming the keys, rather than draining and exiting, so
a SIGHUP (a key rotation script, a log rotator) never stops the daemon.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.deadletter.store import DeadLetterStore
from pipeline.processor import EventProcessor
from pipeline.settings import ConfigError, Settings
from pipeline.signing.signers import ephemeral_signer
from pipeline.startup import load_keys

log = logging.getLogger("govpipe")

LIVE_KEYS = frozenset({"signing.alg", "signing.key_file", "signing.key_id",
                       "source.inbound_key_file", "log.level"})


def restart_needed(running: Settings, new: Settings) -> list[str]:
    """The dotted keys whose values differ between `running` and `new` and that a reload
    cannot apply (names only: values may be secrets)."""
    old_values = dict(_leaves(running))
    new_values = dict(_leaves(new))
    changed = {key for key in old_values.keys() | new_values.keys()
               if old_values.get(key) != new_values.get(key)}
    return sorted(key for key in changed - LIVE_KEYS)


def _leaves(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting: tables are walked, anything else is a value
    (a table of headers too: it is one key)."""
    for key in type(model).model_fields:
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class ConfigReloader:
    """Re-reads the settings with `read` and hands them to `apply` (which loads the keys
    and swaps them in, or raises `ConfigError` having changed nothing)."""

    def __init__(self, running: Settings, read: Callable[[], Settings],
                 apply: Callable[[Settings], Mapping[str, object]]) -> None:
        self._running = running
        self._read = read
        self._apply = apply

    @property
    def settings(self) -> Settings:
        """The settings in force (the last reload applied, else those the run started with)."""
        return self._running

    def reload(self) -> bool:
        """Apply the config as it is now; False (logged, nothing changed) when it is refused."""
        try:
            new = self._read()
            if needs_restart := restart_needed(self._running, new):
                raise ConfigError(f"config error: changed keys need a restart: "
                                  f"{', '.join(needs_restart)}")
            applied = self._apply(new)
        except ConfigError as exc:
            log.error("reload refused, the running configuration is kept: %s", exc)
            return False
        self._running = new
        log.info("configuration reloaded", extra={"fields": dict(applied)})
        return True


def apply_live_settings(processor: EventProcessor, settings: Settings,
                        environ: Mapping[str, str] = os.environ,
                        store: DeadLetterStore | None = None) -> dict[str, object]:
    """What a reload changes while running (see `pipeline.reload`): the keys, loaded again
    from their files (the processor's, and the dead-letter `store`'s, which signs entries
    with the same key), and the log level. `ConfigError`, nothing changed, when a key cannot
    be loaded or a configured key was removed (no falling back to an ephemeral key)."""
    keys = load_keys(settings, environ)
    signer = keys.signer
    current = processor.signer
    if signer is None:
        if not current.ephemeral:
            raise ConfigError("config error: signing.key_file: no signing key configured any "
                              "more (neither signing.key_file nor GOVPIPE_SIGNING_KEY); "
                              "the current key stays")
        signer = current if current.alg == settings.signing.alg else \
            ephemeral_signer(settings.signing.alg)
    processor.use_keys(signer, keys.inbound)
    if isinstance(store, FileDeadLetter | KafkaDeadLetter):
        store.use_signer(signer)
    logging.getLogger().setLevel(settings.log.level.upper())
    return {"signing_alg": signer.alg, "key_id": signer.key_id}

"""The keys producers sign inbound records with: one shared key, or one per sender."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from pipeline.signing.signers import MIN_HMAC_KEY_BYTES, SigningKeyError, decode_key_text


class InboundKeys:
    """One shared key, or one key per sender."""

    def __init__(self, shared: bytes | None = None,
                 per_sender: Mapping[str, bytes] | None = None) -> None:
        for key in [shared, *(per_sender or {}).values()]:
            if key is not None and len(key) < MIN_HMAC_KEY_BYTES:
                raise SigningKeyError(f"an inbound key is {len(key)} bytes; at least "
                                      f"{MIN_HMAC_KEY_BYTES} needed")
        self._shared = shared
        self._per_sender = dict(per_sender or {})

    def __repr__(self) -> str:
        return f"InboundKeys(shared={self._shared is not None}, senders={len(self._per_sender)})"

    def for_sender(self, sender: str) -> bytes | None:
        """The key `sender` signs with, or None for an unknown sender."""
        if self._shared is not None:
            return self._shared
        return self._per_sender.get(sender)


def load_inbound_keys(path: Path, origin: str | None = None) -> InboundKeys:
    """Base64 key text (one shared key) or a TOML table `"sender" = "base64 key"`, read from
    `path`; errors name `origin` (default: the `source.inbound_key_file` setting)."""
    origin = origin or f"source.inbound_key_file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SigningKeyError(f"{origin}: cannot read: {reason}") from None
    return keys_from_text(text, origin)


def keys_from_text(text: str, origin: str) -> InboundKeys:
    """Base64 key text (one shared key) or a TOML table `"sender" = "base64 key"`, as a
    key file holds them; errors name `origin` (and the sender), never a key."""
    if not is_key_table(text):
        return InboundKeys(shared=long_enough(decode_key_text(text, origin), origin))
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise SigningKeyError(f"{origin}: neither base64 key text nor a TOML table of "
                              "sender = \"base64 key\"") from None
    keys = {}
    for sender, value in table.items():
        if not isinstance(value, str) or "|" in sender:
            raise SigningKeyError(f"{origin}: sender {sender!r}: expected \"base64 key\"")
        where = f"{origin}: sender {sender!r}"
        keys[sender] = long_enough(decode_key_text(value, where), where)
    if not keys:
        raise SigningKeyError(f"{origin}: no sender keys")
    return InboundKeys(per_sender=keys)


def is_key_table(text: str) -> bool:
    """A TOML table of sender keys rather than one base64 key: base64 has '=' only as
    trailing padding, a TOML table has it between name and key."""
    return "=" in text.strip().rstrip("=")


def long_enough(key: bytes, origin: str) -> bytes:
    """`key`, or `SigningKeyError` naming `origin` when it is too short for HMAC-SHA256."""
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise SigningKeyError(f"{origin}: the key is {len(key)} bytes; at least "
                              f"{MIN_HMAC_KEY_BYTES} needed (make one with govpipe keygen "
                              "--alg hmac)")
    return key

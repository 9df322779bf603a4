"""The producer's inbound signing key, from what `govpipe keygen --alg hmac` writes.

`sign_key` may be a path to a key file, the file's text or bytes (base64 of one shared key,
or a TOML table of per-sender keys, as the daemon's `source.inbound_key_file` takes), or the
raw key bytes. Whatever the form, the result is checked at construction: at least 32
bytes, and with a per-sender table a key for `sender`. Errors name the form and the
sender, never the key.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from pathlib import Path

from pipeline.inbound.keys import (
    InboundKeys,
    is_key_table,
    keys_from_text,
    load_inbound_keys,
    long_enough,
)
from pipeline.inbound.signed_string import signature_headers
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.signing.signers import MIN_HMAC_KEY_BYTES, SigningKeyError

SignKey = bytes | str | os.PathLike[str]


def load_producer_key(sign_key: SignKey | None, sender: str) -> bytes | None:
    """The key `sender` signs with, or None when there is no key (records go unsigned)."""
    if sign_key is None:
        return None
    if "|" in sender:
        raise SigningKeyError(f"sender {sender!r}: may not contain '|'")
    if isinstance(sign_key, bytes):
        keys = _keys_from_bytes(sign_key)
    elif isinstance(sign_key, str) and not _looks_like_path(sign_key):
        keys = keys_from_text(sign_key, "sign_key (no such file; read as key text)")
    else:
        keys = _keys_from_file(Path(sign_key))
    key = keys.for_sender(sender)
    if key is None:
        raise SigningKeyError(f"sign_key: no key for sender {sender!r} in the per-sender "
                              "key table")
    return key


def _keys_from_file(path: Path) -> InboundKeys:
    return load_inbound_keys(path, f"sign_key file {path}")


def _keys_from_bytes(data: bytes) -> InboundKeys:
    """Key file bytes (base64 text or a TOML table) or, failing that, the raw key."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return InboundKeys(shared=long_enough(data, "sign_key bytes"))
    if _is_base64_key(text) or is_key_table(text):
        return keys_from_text(text, "sign_key bytes")
    return InboundKeys(shared=long_enough(data, "sign_key bytes"))


def _is_base64_key(text: str, min_bytes: int = MIN_HMAC_KEY_BYTES) -> bool:
    try:
        return len(base64.b64decode(text.strip(), validate=True)) >= min_bytes
    except (binascii.Error, ValueError):
        return False


def _looks_like_path(text: str) -> bool:
    """A str is a path when such a file exists or it cannot be key text (a TOML table, or
    base64 of any length: a short key must be refused as short, never echoed as a path)."""
    return Path(text).is_file() or not (is_key_table(text) or _is_base64_key(text, 1))


class RecordSigner:
    """The `agt-*` headers of one record, made when it is sent (fresh nonce, time now), so
    a record that waited in the spool is as fresh as any other when the daemon checks it."""

    def __init__(self, key: bytes | None, sender: str) -> None:
        self._key = key
        self._sender = sender

    def __repr__(self) -> str:
        return f"RecordSigner(signing={self._key is not None}, sender={self._sender!r})"

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The headers for `value` (none without a key)."""
        if self._key is None:
            return []
        return signature_headers(self._key, uuid.uuid4().hex, wall_clock_ms(), self._sender,
                                 value)

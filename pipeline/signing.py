"""Signing of CloudEvents (SPEC §3).

HMAC-SHA256 is byte-compatible with Agent OS `GovernanceEventSigner`: the MAC covers the
canonical JSON of the envelope without `agtsignature` (but with `agtsignaturealg` and
`agtkeyid`), and is written as padded standard base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

HMAC_ALG = "HMAC-SHA256"
MIN_HMAC_KEY_BYTES = 32
KEY_ENV = "GOVPIPE_SIGNING_KEY"


class SigningKeyError(ValueError):
    """A signing key is missing, malformed or too short. Never carries key material."""


class Signer(Protocol):
    """Adds `agtsignaturealg`, `agtkeyid` and `agtsignature` to an unsigned CloudEvent."""

    alg: str
    key_id: str

    def sign(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]: ...


def canonical_hmac_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The bytes Agent OS signs: sorted keys, compact separators, raw UTF-8."""
    text = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return text.encode("utf-8")


class HmacSigner:
    """HMAC-SHA256 over the Agent OS canonical form."""

    alg = HMAC_ALG

    def __init__(self, key: bytes, key_id: str | None = None) -> None:
        if len(key) < MIN_HMAC_KEY_BYTES:
            raise SigningKeyError(
                f"HMAC key is {len(key)} bytes; at least {MIN_HMAC_KEY_BYTES} needed")
        self._key = key
        self.key_id = key_id or hmac_key_id(key)

    def __repr__(self) -> str:
        return f"HmacSigner(key_id={self.key_id!r})"

    def sign(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        signed = dict(cloudevent)
        signed.pop("agtsignature", None)
        signed["agtsignaturealg"] = self.alg
        signed["agtkeyid"] = self.key_id
        mac = hmac.new(self._key, canonical_hmac_bytes(signed), hashlib.sha256).digest()
        signed["agtsignature"] = base64.b64encode(mac).decode("ascii")
        return signed

    def verify(self, signed: Mapping[str, Any]) -> bool:
        """True when `signed` carries this key's valid HMAC-SHA256 signature."""
        signature = signed.get("agtsignature")
        if signed.get("agtsignaturealg") != self.alg or not isinstance(signature, str):
            return False
        unsigned = {key: value for key, value in signed.items() if key != "agtsignature"}
        expected = hmac.new(self._key, canonical_hmac_bytes(unsigned), hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64encode(expected).decode("ascii"), signature)


def hmac_key_id(key: bytes) -> str:
    """A stable, non-reversible name for an HMAC key (a domain-separated hash prefix)."""
    return "hmac-" + hashlib.sha256(b"govpipe-key-id\x00" + key).hexdigest()[:16]


def decode_key_text(text: str, origin: str) -> bytes:
    """Decode base64 key text (as `govpipe keygen` writes it); `origin` names where it was."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        message = f"{origin}: key is not valid base64 (make one with govpipe keygen)"
        raise SigningKeyError(message) from None


def load_hmac_key(key_file: Path | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The configured HMAC key: `key_file` first, then GOVPIPE_SIGNING_KEY; None when neither."""
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            message = f"signing.key_file: cannot read {key_file}: {exc.__class__.__name__}"
            raise SigningKeyError(message) from None
        return decode_key_text(text, f"signing.key_file {key_file}")
    if environ.get(KEY_ENV):
        return decode_key_text(environ[KEY_ENV], KEY_ENV)
    return None


def ephemeral_hmac_key() -> bytes:
    """A random key for the embedded default when none is configured."""
    return secrets.token_bytes(MIN_HMAC_KEY_BYTES)

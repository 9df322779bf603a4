"""Signing and verification keys: loading them from files or the environment, and `KeySet`.

Formats (what `govpipe keygen` writes):
- HMAC-SHA256: base64 text of at least 32 random bytes.
- Ed25519: a PKCS#8 private key PEM (signing) and a SubjectPublicKeyInfo public key PEM
  (verifying; a private PEM is accepted too and only its public half is used).

Every key object knows its algorithm, so a key can only ever check signatures of its own
algorithm (the pinning that stops algorithm-confusion attacks). Errors name where a key came
from, never what it contains.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)

from pipeline.signing.jcs import JcsError, canonicalize
from pipeline.signing.signers import (
    ED25519_ALG,
    HMAC_ALG,
    KEY_ENV,
    MIN_HMAC_KEY_BYTES,
    Ed25519Signer,
    HmacSigner,
    Signer,
    SigningKeyError,
    decode_key_text,
    ed25519_key_id,
    hmac_key_id,
    hmac_matches,
    sorted_orjson,
)

PEM_MARKER = b"-----BEGIN"
ED25519_SIGNATURE_BYTES = 64


class VerificationKey(Protocol):
    """One key that checks signatures of exactly one algorithm."""

    alg: str
    key_id: str

    def verify(self, envelope: Mapping[str, Any], signature: str) -> bool:
        """True when `signature` is valid for `envelope` (the event without agtsignature)."""
        ...


class HmacKey:
    """An HMAC-SHA256 secret, for verification."""

    alg = HMAC_ALG

    def __init__(self, secret: bytes, key_id: str | None = None) -> None:
        if len(secret) < MIN_HMAC_KEY_BYTES:
            raise SigningKeyError(
                f"HMAC key is {len(secret)} bytes; at least {MIN_HMAC_KEY_BYTES} needed")
        self._secret = secret
        self.key_id = key_id or hmac_key_id(secret)

    def __repr__(self) -> str:
        return f"HmacKey(key_id={self.key_id!r})"

    def verify(self, envelope: Mapping[str, Any], signature: str) -> bool:
        """True when `signature` is this key's HMAC of the Agent OS canonical form."""
        return hmac_matches(self._secret, envelope, signature)


class Ed25519Key:
    """An Ed25519 public key, for verification."""

    alg = ED25519_ALG

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self.public_key = public_key
        self.key_id = ed25519_key_id(public_key)

    def __repr__(self) -> str:
        return f"Ed25519Key(key_id={self.key_id!r})"

    def verify(self, envelope: Mapping[str, Any], signature: str) -> bool:
        """True when `signature` is this key's Ed25519 signature of the JCS form."""
        raw = _strict_b64(signature)
        if raw is None or len(raw) != ED25519_SIGNATURE_BYTES:
            return False
        fast = sorted_orjson(envelope)  # the pure-Python JCS costs as much as the check
        if fast is not None and self._signs(raw, fast):
            return True
        try:
            canonical = canonicalize(envelope)
        except JcsError:
            return False
        return canonical != fast and self._signs(raw, canonical)

    def _signs(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public_key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


def _strict_b64(text: str) -> bytes | None:
    # Only the one canonical base64 spelling counts, so a signature has a single valid text.
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


class KeySet:
    """Verification keys by key id: several HMAC secrets and/or Ed25519 public keys."""

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self._keys: dict[str, VerificationKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: VerificationKey) -> None:
        """Add a key; the same key twice is fine, two keys under one id are refused."""
        known = self._keys.get(key.key_id)
        if known is not None and (known.alg != key.alg or not _same_key(known, key)):
            raise SigningKeyError(f"two different keys have the key id {key.key_id!r}")
        self._keys[key.key_id] = key

    def get(self, key_id: str) -> VerificationKey | None:
        """The key named `key_id`, or None."""
        return self._keys.get(key_id)

    def of_alg(self, alg: str) -> list[VerificationKey]:
        """Every key of one algorithm (for events that name no key)."""
        return [key for key in self._keys.values() if key.alg == alg]

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)


def _same_key(a: VerificationKey, b: VerificationKey) -> bool:
    if isinstance(a, HmacKey) and isinstance(b, HmacKey):
        return hmac.compare_digest(a._secret, b._secret)
    # An Ed25519 key id is a fingerprint of the key itself.
    return isinstance(a, Ed25519Key) and isinstance(b, Ed25519Key)


def parse_verification_key(data: bytes, origin: str, key_id: str | None = None) -> VerificationKey:
    """A verification key from file contents: a PEM is Ed25519, anything else base64 HMAC."""
    if data.lstrip().startswith(PEM_MARKER):
        if key_id is not None:
            raise SigningKeyError(f"{origin}: an Ed25519 key id is its fingerprint; "
                                  "drop the ID= prefix")
        return Ed25519Key(_ed25519_public_key(data, origin))
    text = _text(data, origin)
    return HmacKey(decode_key_text(text, origin), key_id)


def load_verification_key(path: Path, key_id: str | None = None) -> VerificationKey:
    """A verification key from a file (see `parse_verification_key`)."""
    return parse_verification_key(_read(path, str(path)), str(path), key_id)


def _ed25519_public_key(data: bytes, origin: str) -> Ed25519PublicKey:
    try:
        public = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return parse_ed25519_private_key(data, origin).public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise SigningKeyError(f"{origin}: not an Ed25519 key ({type(public).__name__})")
    return public


def parse_ed25519_private_key(data: bytes, origin: str) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from PEM bytes."""
    if not data.lstrip().startswith(PEM_MARKER):
        raise SigningKeyError(f"{origin}: not a PEM key; signing.alg = \"Ed25519\" needs an "
                              "Ed25519 private key PEM (make one with govpipe keygen "
                              "--alg ed25519)")
    try:
        private = load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"{origin}: encrypted PEM keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{origin}: not a readable private key PEM "
                              "(a public key cannot sign)") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{origin}: not an Ed25519 key ({type(private).__name__})")
    return private


def load_signer(alg: str, key_file: Path | None, key_id: str | None = None,
                environ: Mapping[str, str] = os.environ) -> Signer | None:
    """The configured signer: key from `key_file`, else GOVPIPE_SIGNING_KEY; None when neither."""
    material = _signing_key_material(key_file, environ)
    if material is None:
        return None
    data, origin = material
    if alg == ED25519_ALG:
        return Ed25519Signer(parse_ed25519_private_key(data, origin))
    if data.lstrip().startswith(PEM_MARKER):
        raise SigningKeyError(f"{origin}: a PEM key, but signing.alg = \"HMAC-SHA256\" needs "
                              "base64 key text (make one with govpipe keygen --alg hmac)")
    secret = decode_key_text(_text(data, origin), origin)
    try:
        return HmacSigner(secret, key_id)
    except SigningKeyError as exc:  # too short: say which key
        raise SigningKeyError(f"{origin}: {exc}") from None


def _signing_key_material(key_file: Path | None,
                          environ: Mapping[str, str]) -> tuple[bytes, str] | None:
    if key_file is not None:
        origin = f"signing.key_file {key_file}"
        return _read(key_file, origin), origin
    if environ.get(KEY_ENV):
        return environ[KEY_ENV].encode("utf-8"), KEY_ENV
    return None


def _read(path: Path, origin: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{origin}: cannot read: {exc.strerror or type(exc).__name__}"
                              ) from None


def _text(data: bytes, origin: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        message = f"{origin}: key is not valid base64 (make one with govpipe keygen)"
        raise SigningKeyError(message) from None

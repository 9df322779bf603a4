"""Signing of CloudEvents: one `Signer` interface, two algorithms.

Both sign the envelope without `agtsignature` but with `agtsignaturealg` and `agtkeyid` set
first, so neither the algorithm nor the key name can be changed without breaking the
signature; both write padded standard base64.
- HMAC-SHA256 is byte-compatible with Agent OS `GovernanceEventSigner`: the MAC covers
  Python's `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
- Ed25519 covers the RFC 8785 (JCS) canonical form, reproducible in any language, and is
  verifiable with the public key alone; its key id is the public key's fingerprint.
Verification against a set of keys lives in `pipeline.signing.keys` and
`pipeline.signing.verification`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.signing.jcs import canonicalize

HMAC_ALG = "HMAC-SHA256"
ED25519_ALG = "Ed25519"
ALGORITHMS = (HMAC_ALG, ED25519_ALG)
# What a user may type for each algorithm, in any case (config, environment, keygen --alg).
_ALG_SPELLINGS = {"hmac-sha256": HMAC_ALG, "hmac": HMAC_ALG, "ed25519": ED25519_ALG}
SIGNATURE = "agtsignature"
SIGNATURE_ALG = "agtsignaturealg"
KEY_ID = "agtkeyid"
MIN_HMAC_KEY_BYTES = 32
KEY_ENV = "GOVPIPE_SIGNING_KEY"


def canonical_alg(name: str) -> str | None:
    """The canonical algorithm name ("HMAC-SHA256", "Ed25519") for `name` in any case
    ("hmac" and "hmac-sha256" both mean HMAC-SHA256); None for an unknown name."""
    return _ALG_SPELLINGS.get(name.strip().lower())


class SigningKeyError(ValueError):
    """A signing key is missing, malformed or too short. Never carries key material."""


class Signer(Protocol):
    """Adds `agtsignaturealg`, `agtkeyid` and `agtsignature` to an unsigned CloudEvent."""

    alg: str
    key_id: str
    # True for the random key of the embedded default: nothing signed with it can be
    # verified once the process exits, so health reports the signer unhealthy.
    ephemeral: bool

    def sign(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]: ...

    def sign_json(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        """`sign` for a CloudEvent made only of decoded JSON values: the same result."""
        ...


def canonical_hmac_bytes(envelope: Mapping[str, Any], *, json_values: bool = False) -> bytes:
    """The bytes Agent OS signs: sorted keys, compact separators, raw UTF-8.

    ``json_values``: the caller vouches that `envelope` holds only what decoding JSON gives
    (dicts, lists, strings, integers, finite floats, booleans, None); then orjson writes
    it, about twice as fast, whenever its bytes are provably the standard library's."""
    if json_values and (fast := _orjson_canonical(envelope)) is not None:
        return fast
    text = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return text.encode("utf-8")


def _orjson_canonical(envelope: Mapping[str, Any]) -> bytes | None:
    """orjson's sorted compact form of a JSON value, or None where it may differ from
    `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.

    For JSON values the two write the same bytes (keys sorted by code point, the same
    string escapes, the same shortest float digits) except for floats below 1e-4 in
    magnitude: Python writes `1e-05`, orjson `0.00001` or `1.5e-7`. Either of those forms
    leaves `0.0000` or a digit, `e-` and a digit in the text; seeing one (even inside a
    string) sends the event the exact way. Integers beyond 64 bits, lone surrogates and
    too deep nesting make orjson raise: the exact way too. A subclass of a builtin type,
    a dataclass or a datetime is refused (`default` raises), as no JSON value is one."""
    try:
        text = orjson.dumps(envelope, default=_not_json, option=_ORJSON_CANONICAL)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None
    if b"0.0000" in text or (b"e-" in text and _EXPONENT_MINUS.search(text)):
        return None
    return text


def _not_json(value: object) -> Any:
    raise TypeError(f"not a JSON value: {type(value).__name__}")


_ORJSON_CANONICAL = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
                     | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
_EXPONENT_MINUS = re.compile(rb"\de-\d")


def unsigned_envelope(cloudevent: Mapping[str, Any], alg: str, key_id: str) -> dict[str, Any]:
    """A copy of `cloudevent` ready to sign: old signature dropped, algorithm and key named."""
    envelope = dict(cloudevent)
    # All three go, so a re-signed event has the same member order as a fresh one.
    for name in (SIGNATURE, SIGNATURE_ALG, KEY_ID):
        envelope.pop(name, None)
    envelope[SIGNATURE_ALG] = alg
    envelope[KEY_ID] = key_id
    return envelope


def hmac_signature(key: bytes, envelope: Mapping[str, Any], *, json_values: bool = False
                   ) -> str:
    """base64 HMAC-SHA256 of the Agent OS canonical form of `envelope` (no agtsignature);
    ``json_values`` as for `canonical_hmac_bytes`."""
    canonical = canonical_hmac_bytes(envelope, json_values=json_values)
    mac = hmac.digest(key, canonical, "sha256")  # one-shot, in C
    return base64.b64encode(mac).decode("ascii")


def hmac_matches(key: bytes, envelope: Mapping[str, Any], signature: str) -> bool:
    """Constant-time check of a base64 HMAC-SHA256 `signature` over `envelope`."""
    claimed = signature.encode("utf-8", "surrogatepass")
    fast = sorted_orjson(envelope)
    if fast is not None and hmac.compare_digest(_b64_mac(key, fast), claimed):
        return True
    try:
        expected = hmac_signature(key, envelope).encode("ascii")
    except (ValueError, RecursionError):
        # No canonical form (a lone surrogate, absurd nesting): nothing could have been signed.
        return False
    return hmac.compare_digest(expected, claimed)


def sorted_orjson(envelope: Mapping[str, Any]) -> bytes | None:
    """orjson's sorted compact form: a verifier's first try, ten times quicker than the
    canonical forms (`json.dumps`, JCS) and the same bytes for nearly every event. Only a
    match is trusted: the signature then covers exactly these bytes, which read back as this
    envelope. Where the forms can differ (number layout, key order beyond the BMP, integers
    beyond 64 bits) a verifier falls back to the canonical form, so this never decides a
    failure. None when orjson cannot write the envelope."""
    try:
        return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def _b64_mac(key: bytes, data: bytes) -> bytes:
    return base64.b64encode(hmac.digest(key, data, "sha256"))


class HmacSigner:
    """HMAC-SHA256 over the Agent OS canonical form."""

    alg = HMAC_ALG
    ephemeral = False

    def __init__(self, key: bytes, key_id: str | None = None) -> None:
        if len(key) < MIN_HMAC_KEY_BYTES:
            raise SigningKeyError(
                f"HMAC key is {len(key)} bytes; at least {MIN_HMAC_KEY_BYTES} needed")
        self._key = key
        self.key_id = key_id or hmac_key_id(key)

    def __repr__(self) -> str:
        return f"HmacSigner(key_id={self.key_id!r})"

    def sign(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        """A signed copy of `cloudevent` (any previous signature replaced)."""
        signed = unsigned_envelope(cloudevent, self.alg, self.key_id)
        signed[SIGNATURE] = hmac_signature(self._key, signed)
        return signed

    def sign_json(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        """`sign` for a CloudEvent made only of decoded JSON values (the pipeline's): the
        same signature, with the faster canonical form where it is provably the same."""
        signed = unsigned_envelope(cloudevent, self.alg, self.key_id)
        signed[SIGNATURE] = hmac_signature(self._key, signed, json_values=True)
        return signed

    def verify(self, signed: Mapping[str, Any]) -> bool:
        """True when `signed` carries this key's valid HMAC-SHA256 signature."""
        signature = signed.get(SIGNATURE)
        if signed.get(SIGNATURE_ALG) != self.alg or not isinstance(signature, str):
            return False
        unsigned = {key: value for key, value in signed.items() if key != SIGNATURE}
        return hmac_matches(self._key, unsigned, signature)


class Ed25519Signer:
    """Ed25519 over the RFC 8785 canonical form; agtkeyid is the public key fingerprint."""

    alg = ED25519_ALG
    ephemeral = False

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = ed25519_key_id(self.public_key)

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r})"

    def sign(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        """A signed copy of `cloudevent`; raises `JcsError` for values JCS cannot represent."""
        signed = unsigned_envelope(cloudevent, self.alg, self.key_id)
        signature = self._private_key.sign(canonicalize(signed))
        signed[SIGNATURE] = base64.b64encode(signature).decode("ascii")
        return signed

    def sign_json(self, cloudevent: Mapping[str, Any]) -> dict[str, Any]:
        """`sign`: the JCS form has no faster equivalent here."""
        return self.sign(cloudevent)


def hmac_key_id(key: bytes) -> str:
    """A stable, non-reversible name for an HMAC key (a domain-separated hash prefix)."""
    return "hmac-" + hashlib.sha256(b"govpipe-key-id\x00" + key).hexdigest()[:16]


def ed25519_key_id(public_key: Ed25519PublicKey) -> str:
    """The public key's fingerprint: "ed25519-" + 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def decode_key_text(text: str, origin: str) -> bytes:
    """Decode base64 key text (as `govpipe keygen` writes it); `origin` names where it was."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        message = f"{origin}: key is not valid base64 (make one with govpipe keygen)"
        raise SigningKeyError(message) from None


def ephemeral_signer(alg: str) -> Signer:
    """A signer with a random key, for the embedded default when no key is configured."""
    signer: HmacSigner | Ed25519Signer
    if alg == ED25519_ALG:
        signer = Ed25519Signer(Ed25519PrivateKey.generate())
    else:
        signer = HmacSigner(secrets.token_bytes(MIN_HMAC_KEY_BYTES))
    signer.ephemeral = True
    return signer

"""The replay seal: how a dead-lettered event that passed inbound verification at first
arrival comes back through `govpipe replay` and is accepted once.

A sink's dead-letter entry holds the event govpipe signed, and govpipe signs only records
whose producer signature passed: the daemon's own signature on the event is the verdict of
the first arrival. `govpipe replay` checks that signature with the daemon's key and adds a
`govpipe-replay-seal` header: a small document signed with the same key,
    {"replayof": <dead-letter entry id>, "replayedat": <ms since the epoch>,
     "valuesha256": <hex SHA-256 of the record value>}
(plus `agtsignaturealg`, `agtkeyid`, `agtsignature` as the signer adds them). The daemon
accepts a sealed record when the seal verifies, covers the value, was made inside the
replay window, and its entry id was not seen before in that window (nonce "replayof",
sender `REPLAY_SENDER`, which no producer can use as it holds a "|").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.signing.keys import Ed25519Key
from pipeline.signing.signers import SIGNATURE, HmacSigner, Signer

SEAL_HEADER = "govpipe-replay-seal"
REPLAY_SENDER = "govpipe|replay"

SealCheck = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Seal:
    """A verified seal: which entry came back, and when `govpipe replay` sent it."""

    entry_id: str
    replayed_at_ms: int


def make_seal(signer: Signer, entry_id: str, replayed_at_ms: int, value: bytes) -> bytes:
    """The `govpipe-replay-seal` header value for one replayed record."""
    document = {"replayof": entry_id, "replayedat": replayed_at_ms,
                "valuesha256": hashlib.sha256(value).hexdigest()}
    return json.dumps(signer.sign(document), separators=(",", ":")).encode()


def seal_check(signer: Signer) -> SealCheck:
    """Checks documents signed by `signer`'s key (HMAC: the key; Ed25519: its public key)."""
    if isinstance(signer, HmacSigner):
        return signer.verify
    public_key = getattr(signer, "public_key", None)
    if public_key is None:
        return lambda _document: False
    key = Ed25519Key(public_key)

    def check(document: Mapping[str, Any]) -> bool:
        signature = document.get(SIGNATURE)
        envelope = {name: value for name, value in document.items() if name != SIGNATURE}
        return isinstance(signature, str) and key.verify(envelope, signature)
    return check


def read_seal(raw: bytes, value: bytes, check: SealCheck) -> Seal | None:
    """The seal in `raw` when it is well formed, verifies and covers `value`; else None."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or not check(document):
        return None
    entry_id, replayed_at = document.get("replayof"), document.get("replayedat")
    if (not isinstance(entry_id, str) or not entry_id or type(replayed_at) is not int
            or document.get("valuesha256") != hashlib.sha256(value).hexdigest()):
        return None
    return Seal(entry_id, replayed_at)


def signed_by(check: SealCheck, value: bytes) -> bool:
    """True when `value` is a CloudEvent (JSON) signed with the key `check` stands for."""
    try:
        event = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(event, dict) and check(event)

"""Verifying signed CloudEvents against a `KeySet`, with a reason for each failure.

The key is chosen by `agtkeyid` and fixes the algorithm: an event is checked only with a key
of the algorithm it claims, and only that algorithm's canonical form. So an event claiming
HMAC-SHA256 under an Ed25519 key id is refused before any MAC is computed, and a public key
is never used as an HMAC secret (the classic algorithm-confusion forgery). Events without
`agtkeyid` (plain Agent OS output) are tried against every HMAC key, never Ed25519 ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.signing.keys import KeySet, VerificationKey
from pipeline.signing.signers import ALGORITHMS, HMAC_ALG, KEY_ID, SIGNATURE, SIGNATURE_ALG

# Failure reasons (also what `govpipe verify` prints).
UNSIGNED = "unsigned"
UNSUPPORTED_ALG = "unsupported_alg"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"


class Verifier:
    """Checks signed CloudEvents against a set of keys; keys rotate by adding to the set."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def failure(self, cloudevent: Mapping[str, Any]) -> str | None:
        """None when `cloudevent` carries a valid signature, else the reason it does not."""
        signature = cloudevent.get(SIGNATURE)
        if not isinstance(signature, str):
            return UNSIGNED
        alg = cloudevent.get(SIGNATURE_ALG)
        if alg not in ALGORITHMS:
            return UNSUPPORTED_ALG
        candidates = self._candidates(cloudevent, alg)
        if isinstance(candidates, str):
            return candidates
        envelope = {name: value for name, value in cloudevent.items() if name != SIGNATURE}
        # Every candidate is checked (no early exit), so timing does not tell which matched.
        results = [key.verify(envelope, signature) for key in candidates]
        return None if any(results) else BAD_SIGNATURE

    def verify(self, cloudevent: Mapping[str, Any]) -> bool:
        """True when `cloudevent` carries a valid signature from one of the keys."""
        return self.failure(cloudevent) is None

    def _candidates(self, cloudevent: Mapping[str, Any],
                    alg: str) -> list[VerificationKey] | str:
        if KEY_ID not in cloudevent:
            keys = self._keys.of_alg(HMAC_ALG) if alg == HMAC_ALG else []
            return keys or UNKNOWN_KEY
        key_id = cloudevent[KEY_ID]
        key = self._keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            return UNKNOWN_KEY
        if key.alg != alg:
            # The pin: the key's type decides the algorithm, never the event's claim.
            return UNSUPPORTED_ALG
        return [key]

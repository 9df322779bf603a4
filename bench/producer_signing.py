"""Producer signatures on bench input, as `pipeline.publisher` writes them, for a daemon
with `source.require_signature`: the `agt-*` headers over each record's value, a fresh
uuid4 nonce and the time now per record, one of a few senders, one shared key in the key
file the daemon reads (`source.inbound_key_file`). Used by bench/run.py (scenario g) and
bench/inbound_rate.py.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.inbound.signed_string import signature_headers
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.signing.signers import MIN_HMAC_KEY_BYTES

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ProducerSigner:
    """Signs records with one shared key on behalf of ``senders`` senders in turn."""

    key: bytes
    senders: int = 8

    def __repr__(self) -> str:
        return f"ProducerSigner(senders={self.senders})"  # never the key

    @classmethod
    def with_key_file(cls, path: Path, senders: int = 8) -> ProducerSigner:
        """A signer with a new random key, written to ``path`` as base64 text (the form of
        `govpipe keygen --alg hmac`), readable by its owner only."""
        key = secrets.token_bytes(MIN_HMAC_KEY_BYTES)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(key).decode() + "\n")
        return cls(key, senders)

    def sender(self, n: int) -> str:
        """The sender of the ``n``th record."""
        return f"agent-{n % self.senders}"

    def headers(self, value: bytes, n: int) -> Headers:
        """The `agt-*` headers of the ``n``th record, ``value``: signed now, a new nonce."""
        return signature_headers(self.key, uuid.uuid4().hex, wall_clock_ms(), self.sender(n),
                                 value)

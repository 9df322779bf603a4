"""Inbound producer signatures: the `agt-*` Kafka headers of every record.

A producer signs each record with HMAC-SHA256 over the bytes
`"{nonce}|{timestamp_ms}|{sender}|".encode("utf-8") + value` (the record value exactly as
sent, not re-encoded) and sends headers `agt-nonce`, `agt-timestamp` (ms since the epoch,
decimal), `agt-sender` and `agt-signature` (standard padded base64 of the MAC).

Checks, in this order, each with its rejection reason:
1. `unsigned`: no `agt-signature` header.
2. `bad_signature`: a header missing, repeated or malformed (nonce and sender may not
   contain "|", so the signed string splits one way only), an unknown sender, or a MAC
   that does not match (constant-time compare). Checked before the nonce store is touched,
   so forged records cannot burn nonces.
3. `expired`: |now - timestamp| > replay window (both ends inclusive).
4. `replay` / `nonce_capacity`: see `pipeline.inbound.nonces`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.inbound.nonces import NonceStore, NonceVerdict
from pipeline.model import Record
from pipeline.ops.metrics import Metrics
from pipeline.signing.signers import MIN_HMAC_KEY_BYTES, SigningKeyError, decode_key_text

NONCE_HEADER = "agt-nonce"
TIMESTAMP_HEADER = "agt-timestamp"
SENDER_HEADER = "agt-sender"
SIGNATURE_HEADER = "agt-signature"
HEADERS = (NONCE_HEADER, TIMESTAMP_HEADER, SENDER_HEADER, SIGNATURE_HEADER)
MAX_NONCE_CHARS = 256  # bounds what one stored nonce can cost
_DIGITS = re.compile(r"[0-9]{1,18}")

WallClockMs = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, the unit of `agt-timestamp`."""
    return time.time_ns() // 1_000_000


def signed_bytes(nonce: str, timestamp_ms: int, sender: str, value: bytes) -> bytes:
    """What the inbound signature covers."""
    return f"{nonce}|{timestamp_ms}|{sender}|".encode() + value


def sign_record(key: bytes, nonce: str, timestamp_ms: int, sender: str, value: bytes) -> str:
    """The `agt-signature` header value for one record."""
    mac = hmac.new(key, signed_bytes(nonce, timestamp_ms, sender, value), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


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


def load_inbound_keys(path: Path) -> InboundKeys:
    """Base64 key text (one shared key) or a TOML table `"sender" = "base64 key"`."""
    origin = f"source.inbound_key_file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SigningKeyError(f"{origin}: cannot read: {reason}") from None
    if "=" not in text.strip().rstrip("="):
        return InboundKeys(shared=decode_key_text(text, origin))
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise SigningKeyError(f"{origin}: neither base64 key text nor a TOML table of "
                              "sender = \"base64 key\"") from None
    keys = {}
    for sender, value in table.items():
        if not isinstance(value, str) or "|" in sender:
            raise SigningKeyError(f"{origin}: sender {sender!r}: expected \"base64 key\"")
        keys[sender] = decode_key_text(value, f"{origin}: sender {sender!r}")
    if not keys:
        raise SigningKeyError(f"{origin}: no sender keys")
    return InboundKeys(per_sender=keys)


@dataclass(frozen=True, slots=True)
class _Headers:
    nonce: str
    timestamp_ms: int
    sender: str
    signature: bytes


class InboundVerifier:
    """Checks one record's producer signature; counts every result."""

    def __init__(self, keys: InboundKeys, window_s: float, capacity: int, metrics: Metrics,
                 clock: WallClockMs = wall_clock_ms) -> None:
        self._keys = keys
        self._window_ms = round(window_s * 1000)
        self._nonces = NonceStore(capacity)
        self._counter = metrics.inbound_verification
        self._clock = clock

    def use_keys(self, keys: InboundKeys) -> None:
        """Check records from now on against `keys` (a rotation; seen nonces still count)."""
        self._keys = keys

    def check(self, record: Record) -> str | None:
        """None when the record may pass, else the rejection reason."""
        result = self._check(record)
        self._counter.labels(result).inc()
        return None if result == "ok" else result

    def _check(self, record: Record) -> str:
        headers = _read_headers(record.headers)
        if isinstance(headers, str):
            return headers
        key = self._keys.for_sender(headers.sender)
        if key is None:
            return "bad_signature"
        expected = sign_record(key, headers.nonce, headers.timestamp_ms, headers.sender,
                               record.value).encode("ascii")
        if not hmac.compare_digest(expected, headers.signature):
            return "bad_signature"
        now = self._clock()
        if abs(now - headers.timestamp_ms) > self._window_ms:
            return "expired"
        position = record.position
        verdict = self._nonces.check_and_add(
            headers.sender, headers.nonce, headers.timestamp_ms + self._window_ms, now,
            (position.topic, position.partition, position.offset))
        if verdict in (NonceVerdict.FRESH, NonceVerdict.REDELIVERY):
            return "ok"
        return "replay" if verdict is NonceVerdict.REPLAY else "nonce_capacity"


def _read_headers(headers: tuple[tuple[str, bytes], ...]) -> _Headers | str:
    found: dict[str, list[bytes]] = {}
    for name, value in headers:
        if name in HEADERS:
            found.setdefault(name, []).append(value)
    if SIGNATURE_HEADER not in found:
        return "unsigned"
    if any(len(found.get(name, ())) != 1 for name in HEADERS):
        return "bad_signature"
    try:
        nonce, timestamp, sender = (found[name][0].decode("utf-8")
                                    for name in (NONCE_HEADER, TIMESTAMP_HEADER, SENDER_HEADER))
    except UnicodeDecodeError:
        return "bad_signature"
    if (not nonce or len(nonce) > MAX_NONCE_CHARS or "|" in nonce or "|" in sender
            or not _DIGITS.fullmatch(timestamp)):
        return "bad_signature"
    return _Headers(nonce, int(timestamp), sender, found[SIGNATURE_HEADER][0])
